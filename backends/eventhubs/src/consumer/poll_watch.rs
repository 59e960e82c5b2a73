//! Polls of a receiver's stream that the SDK runs without a deadline, bounded.

use std::task::Poll;
use std::time::Duration;

use azure_messaging_eventhubs::ReceiveStop;
use tokio::sync::watch;
use tokio::time::Instant;
use tributary::PartitionId;

use super::WAKE;

/// How long a receiver's poll on a client that was replaced meanwhile may attach or recover
/// before it is given up with that client: another partition found the client dead.
const REPLACED_GRACE: Duration = Duration::from_secs(2);

/// Awaits a receiver's stream: its first poll attaches the link after authorizing it through
/// CBS, and any poll may be the SDK's recovery of a lost link or connection (again CBS, then
/// an attach), between waits for events that last as long as the partition is quiet. A wait
/// for events is left alone ([`ReceiveStop::is_waiting`], looked at every [`WAKE`] at most);
/// the rest is bounded: `None`, with a warning naming the hub and partition, when the stream
/// has not been seen waiting for `patience` (the consumer's `timeout`, plus a look's delay),
/// or for [`REPLACED_GRACE`] once its client was replaced (another partition found it dead).
/// The SDK sets no deadline on an attach or a recovery, and after a lost connection both were
/// seen to wait for good on a client whose management calls timed out as well: the caller
/// then gives the poll up with the client (see [`Ended::Wedged`](super::Ended::Wedged)), as
/// cutting the poll short can leave that client's state for the partition broken (see
/// [`ReceiveTask::pump`](super::ReceiveTask::pump)). Without a stop to look at, every poll is
/// bounded by `patience`.
pub(super) async fn watch_poll<F: std::future::Future>(
    watch: Watch<'_>,
    poll: F,
) -> Option<F::Output> {
    tokio::pin!(poll);
    // Most polls while events flow find one ready: no timer for them.
    if let Poll::Ready(polled) = futures::poll!(&mut poll) {
        return Some(polled);
    }
    let look = (watch.patience / 4).min(WAKE);
    let mut seen_waiting = Instant::now();
    let sleep = tokio::time::sleep(look);
    tokio::pin!(sleep);
    let why = loop {
        tokio::select! {
            biased;
            polled = &mut poll => return Some(polled),
            () = &mut sleep => {}
        }
        let now = Instant::now();
        sleep.as_mut().reset(now + look);
        if watch.stop.is_some_and(ReceiveStop::is_waiting) {
            *watch.waited = true;
            seen_waiting = now;
            continue;
        }
        let busy = now - seen_waiting;
        if busy >= watch.patience {
            break "took longer than the consumer's timeout";
        }
        // A closed channel means the connection is gone, and its readers with it.
        let replaced = watch
            .generations
            .as_ref()
            .is_some_and(|g| g.has_changed().is_err() || *g.borrow() > watch.client);
        if replaced && busy >= REPLACED_GRACE {
            break "outlasted the replacement of its client";
        }
    };
    let what = if watch.attach {
        "attaching a receiver (CBS authorization, then the link)"
    } else {
        "a receiver's recovery of its link or connection inside the SDK"
    };
    tracing::warn!(hub = %watch.hub, partition = %watch.partition, patience = ?watch.patience,
        "{what} {why}; giving it up with its client");
    None
}

/// What [`watch_poll`] watches a poll with.
pub(super) struct Watch<'a> {
    pub(super) hub: &'a str,
    pub(super) partition: &'a PartitionId,
    /// The longest a poll may attach or recover.
    pub(super) patience: Duration,
    /// The poll attaches the receiver (for the log).
    pub(super) attach: bool,
    /// The generation of the client the receiver is open on.
    pub(super) client: u64,
    /// The connection's current generation: a poll on a client replaced meanwhile is given up
    /// [`REPLACED_GRACE`] after it was last seen waiting for events.
    pub(super) generations: Option<&'a watch::Receiver<u64>>,
    /// The receiver's stop, which tells whether the SDK waits for events.
    pub(super) stop: Option<&'a ReceiveStop>,
    /// Set when the SDK was seen waiting for events: its link is attached.
    pub(super) waited: &'a mut bool,
}
