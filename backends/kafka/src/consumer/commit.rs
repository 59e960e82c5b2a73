//! Commits, made synchronously on a thread of their own: librdkafka reports the outcome of an
//! asynchronous commit only to a C callback that rdkafka does not install, and a broker slow to
//! answer must not stop the driver from fetching and serving rebalances.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use tributary::{Error, Result};

use super::Reply;
use super::rebalance::Context;
use super::state::Shared;
use crate::error::map;

/// The driver's handle on the committer thread.
pub(super) struct Committer {
    /// `commit()` callers to answer; an empty job is a periodic commit.
    pub(super) jobs: std::sync::mpsc::Sender<Vec<Reply>>,
    pub(super) thread: std::thread::JoinHandle<()>,
    /// A periodic commit is queued and not yet taken up by the thread: the next tick adds
    /// none, so ticks do not pile up behind a commit the broker is slow to answer.
    pub(super) periodic_queued: Arc<AtomicBool>,
}

/// The committer thread: commits what is acked whenever asked, synchronously, and answers the
/// callers. Requests that queued up while a commit was under way share the next one. Stops
/// when the driver drops its end of the queue.
pub(super) fn commit_loop(
    consumer: &BaseConsumer<Context>,
    shared: &Shared,
    queued: &std::sync::mpsc::Receiver<Vec<Reply>>,
    periodic_queued: &AtomicBool,
) {
    while let Ok(mut replies) = queued.recv() {
        while let Ok(more) = queued.try_recv() {
            replies.extend(more);
        }
        periodic_queued.store(false, Ordering::Release);
        let result = commit_acked(consumer, shared);
        if let Err(e) = &result {
            // Typically a rebalance in progress: the next commit carries these offsets.
            tracing::debug!(error = %e, "kafka: commit failed");
        }
        for reply in replies {
            let _ = reply.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(same_error(e)),
            });
        }
    }
}

/// Commits the acked prefixes synchronously. The list is taken when the commit is made, so it
/// holds every ack applied so far.
pub(super) fn commit_acked(consumer: &BaseConsumer<Context>, shared: &Shared) -> Result<()> {
    let (list, topic) = {
        let state = shared.state.lock();
        (state.commit_list(None), state.topic.clone())
    };
    if list.count() == 0 {
        return Ok(());
    }
    consumer
        .commit(&list, CommitMode::Sync)
        .map_err(|e| map(e, &format!("commit on `{topic}`")))?;
    shared.state.lock().mark_committed(&list);
    Ok(())
}

/// One failure told to several callers (errors are not `Clone`: they may carry a source).
pub(super) fn same_error(e: &Error) -> Error {
    Error::new(e.kind(), e.message().to_string())
}
