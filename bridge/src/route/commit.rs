//! Source commits, off the route's path: the route signals after every batch it acked, and a
//! task commits, one commit at a time, each covering every ack made before it started. A
//! route never waits for a commit between batches (a round trip per batch bounded small
//! batches: issue 22's in-flight cliff). A commit the source is slow to confirm is reported; a
//! crash meanwhile replays what it did not cover.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tributary::Consumer;

use super::CancellationToken;

/// How long a commit may take before it is reported, and how long shutdown waits for one.
/// Healthy commits take milliseconds.
pub(super) const COMMIT_PATIENCE: Duration = Duration::from_secs(5);

/// The route's committer task.
pub(super) struct Committer {
    acked: Arc<Notify>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Committer {
    pub(super) fn start(route: String, consumer: Arc<dyn Consumer>) -> Committer {
        let acked = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let (signal, stopped) = (acked.clone(), stop.clone());
        let task = tokio::spawn(async move {
            loop {
                // Signals while a commit runs leave one permit: the next commit covers them all.
                tokio::select! {
                    biased;
                    _ = stopped.cancelled() => return,
                    _ = signal.notified() => {}
                }
                let commit = consumer.commit();
                tokio::pin!(commit);
                let outcome = match tokio::time::timeout(COMMIT_PATIENCE, &mut commit).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        tracing::warn!(route = %route, patience = ?COMMIT_PATIENCE, "source commit not confirmed yet; replicating on, so a crash now would replay more than the in-flight window");
                        commit.await
                    }
                };
                if let Err(e) = outcome {
                    tracing::warn!(route = %route, error = %e, "source commit failed; a crash may replay more");
                }
            }
        });
        Committer { acked, stop, task }
    }

    /// A batch was acked: commit it (after the commit under way, if any).
    pub(super) fn acked(&self) {
        self.acked.notify_one();
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
