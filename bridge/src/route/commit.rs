//! Source commits, off the route's path: the route signals after every batch it acked, and a
//! task commits, one commit at a time, each covering every ack made before it started. A
//! route does not wait for a commit round trip per batch (that bounded small batches: issue
//! 22's in-flight cliff); it waits only when what a crash would replay (events acked but not
//! yet covered by a confirmed commit, plus the batch about to be written) would exceed its
//! in-flight window. A commit the source is slow to confirm is waited for so long, then
//! reported, and replication goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tributary::Consumer;

use super::CancellationToken;

/// How long a commit may take before it is reported, and how long a route waits for one
/// (and shutdown too). Healthy commits take milliseconds.
pub(super) const COMMIT_PATIENCE: Duration = Duration::from_secs(5);

/// How long after a failed commit the next one is tried.
const RETRY_FAILED_COMMIT: Duration = Duration::from_secs(1);

/// `gave_up_at` when the route has not given up waiting.
const WAITING: u64 = u64::MAX;

/// The route's committer task.
pub(super) struct Committer {
    signal: Arc<Notify>,
    /// Events the route acked, in all.
    acked: Arc<AtomicU64>,
    /// Events covered by the last confirmed commit.
    committed: watch::Receiver<u64>,
    /// The `committed` figure at which the route last gave up waiting: it does not wait again
    /// until a commit is confirmed (a source slow to confirm must not cost every batch the
    /// whole patience).
    gave_up_at: AtomicU64,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Committer {
    pub(super) fn start(route: String, consumer: Arc<dyn Consumer>) -> Committer {
        let signal = Arc::new(Notify::new());
        let acked = Arc::new(AtomicU64::new(0));
        let (confirmed, committed) = watch::channel(0u64);
        let stop = CancellationToken::new();
        let task = tokio::spawn(commit_loop(
            route,
            consumer,
            signal.clone(),
            acked.clone(),
            confirmed,
            stop.clone(),
        ));
        Committer {
            signal,
            acked,
            committed,
            gave_up_at: AtomicU64::new(WAITING),
            stop,
            task,
        }
    }

    /// `events` were acked: have them committed (after the commit under way, if any).
    pub(super) fn acked(&self, events: u64) {
        self.acked.fetch_add(events, Ordering::AcqRel);
        self.signal.notify_one();
    }

    /// Waits until writing `events` more keeps what a crash would replay within `window`
    /// (or until nothing acked is uncommitted), for at most [`COMMIT_PATIENCE`].
    pub(super) async fn room_for(&self, route: &str, events: u64, window: u64) {
        let acked = self.acked.load(Ordering::Acquire);
        let fits = |committed: &u64| {
            let pending = acked.saturating_sub(*committed);
            pending == 0 || pending + events <= window
        };
        let committed = *self.committed.borrow();
        if fits(&committed) || self.gave_up_at.load(Ordering::Relaxed) == committed {
            return;
        }
        let mut confirmations = self.committed.clone();
        match tokio::time::timeout(COMMIT_PATIENCE, confirmations.wait_for(fits)).await {
            Ok(_) => self.gave_up_at.store(WAITING, Ordering::Relaxed),
            Err(_) => {
                tracing::warn!(route, patience = ?COMMIT_PATIENCE, pending = acked - committed, "source commit not confirmed yet; replicating on, so a crash now would replay more than the in-flight window");
                self.gave_up_at.store(committed, Ordering::Relaxed);
            }
        }
    }

    /// Waits up to [`COMMIT_PATIENCE`] for a commit under way, then stops. Closing the
    /// consumer commits what is acked anyway; a hung commit must not hold the shutdown.
    pub(super) async fn stop(self, route: &str) {
        let Committer { stop, mut task, .. } = self;
        stop.cancel();
        if tokio::time::timeout(COMMIT_PATIENCE, &mut task)
            .await
            .is_err()
        {
            tracing::warn!(
                route,
                "source commit still unconfirmed at shutdown; closing the source, which commits what is acked"
            );
            task.abort();
        }
    }
}

/// Commits whenever signalled until everything acked is covered; a failed commit is tried
/// again after [`RETRY_FAILED_COMMIT`].
async fn commit_loop(
    route: String,
    consumer: Arc<dyn Consumer>,
    signal: Arc<Notify>,
    acked: Arc<AtomicU64>,
    confirmed: watch::Sender<u64>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = signal.notified() => {}
        }
        loop {
            let covering = acked.load(Ordering::Acquire);
            if covering <= *confirmed.borrow() {
                break;
            }
            let commit = consumer.commit();
            tokio::pin!(commit);
            let outcome = match tokio::time::timeout(COMMIT_PATIENCE, &mut commit).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    tracing::warn!(route = %route, patience = ?COMMIT_PATIENCE, "source commit slow to confirm");
                    commit.await
                }
            };
            match outcome {
                Ok(()) => {
                    confirmed.send_replace(covering);
                }
                Err(e) => {
                    tracing::warn!(route = %route, error = %e, "source commit failed; a crash may replay more; trying again");
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(RETRY_FAILED_COMMIT) => {}
                    }
                }
            }
        }
    }
}
