//! Polls of a receiver's stream that the SDK runs without a deadline, bounded.

use std::time::Duration;

use tokio::sync::watch;
use tributary::PartitionId;

/// How much longer a receiver's poll on a client that was replaced meanwhile may take before
/// it is given up with that client: a live stream answers within [`WAKE`](super::WAKE) (its
/// receive timeout), so one still waiting is in the SDK's recovery on the connection found
/// dead.
const REPLACED_GRACE: Duration = Duration::from_secs(2);

/// Awaits a receiver's stream: its first poll attaches the link after authorizing it through
/// CBS, and any poll may be the SDK's recovery of a lost link or connection (again CBS, then
/// an attach). `None`, with a warning naming the hub and partition, when it outlasts
/// `patience` (the consumer's `timeout`, plus the [`WAKE`](super::WAKE) after which a live
/// stream answers anyway), or [`REPLACED_GRACE`] after its client was replaced (another
/// partition found it dead). The SDK sets no deadline on either, and after a lost connection
/// both were seen to wait for good on a client whose management calls timed out as well: the
/// caller then gives the poll up with the client (see
/// [`Ended::Wedged`](super::Ended::Wedged)), as cutting the poll short can leave that
/// client's state for the partition broken (see
/// [`ReceiveTask::pump`](super::ReceiveTask::pump)).
pub(super) async fn watch_poll<F: std::future::Future>(
    watch: Watch<'_>,
    poll: F,
) -> Option<F::Output> {
    tokio::pin!(poll);
    let waited = async {
        let Some(generations) = watch.generations else {
            return std::future::pending().await;
        };
        // An error means the connection is gone, and its readers with it.
        let _ = generations.wait_for(|g| *g > watch.client).await;
        tokio::time::sleep(REPLACED_GRACE).await;
    };
    let why = tokio::select! {
        biased;
        polled = &mut poll => return Some(polled),
        () = tokio::time::sleep(watch.patience) => "took longer than the consumer's timeout",
        () = waited => "outlasted the replacement of its client",
    };
    let what = if watch.attach {
        "attaching a receiver (CBS authorization, then the link)"
    } else {
        "a receiver's wait for events (the SDK recovering its link or connection inside it)"
    };
    tracing::warn!(hub = %watch.hub, partition = %watch.partition, patience = ?watch.patience,
        "{what} {why}; giving it up with its client");
    None
}

/// What [`watch_poll`] watches a poll with.
pub(super) struct Watch<'a> {
    pub(super) hub: &'a str,
    pub(super) partition: &'a PartitionId,
    /// The longest a poll may take.
    pub(super) patience: Duration,
    /// The poll attaches the receiver (for the log).
    pub(super) attach: bool,
    /// The generation of the client the receiver is open on.
    pub(super) client: u64,
    /// The connection's current generation: a poll on a client replaced meanwhile is given up
    /// [`REPLACED_GRACE`] after the replacement.
    pub(super) generations: Option<&'a mut watch::Receiver<u64>>,
}
