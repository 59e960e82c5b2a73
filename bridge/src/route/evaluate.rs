//! Filters and transforms run on a thread of the route's own, off the async workers: an
//! expensive expression slows its own route (each event within its [`Budget`]), never the
//! daemon's operations endpoint, its other routes or the source's group heartbeats. The thread
//! has the large stack deep expressions need ([`STACK_BYTES`]).
//!
//! [`Budget`]: crate::transform::Budget
//! [`STACK_BYTES`]: crate::transform::STACK_BYTES

use std::sync::Arc;

use tokio::sync::oneshot;
use tributary::{Error, Event, Result};

use crate::transform::{Origin, Outcome, STACK_BYTES, Transform};

/// One event to evaluate, with where it was read.
pub(super) struct Item {
    pub event: Event,
    pub partition: Option<String>,
    pub position: Option<String>,
}

struct Job {
    items: Vec<Item>,
    reply: oneshot::Sender<Vec<Result<Outcome>>>,
}

/// The route's evaluation thread; it ends when this is dropped (after the batch in hand).
pub(super) struct Evaluator {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

impl Evaluator {
    /// Starts the thread for route `route`, reading `stream` on a `backend` source.
    pub(super) fn start(
        route: &str,
        transform: Arc<Transform>,
        backend: &'static str,
        stream: String,
    ) -> Result<Evaluator> {
        let (jobs, inbox) = std::sync::mpsc::sync_channel::<Job>(1);
        std::thread::Builder::new()
            .name(format!("route-{route}-cel"))
            .stack_size(STACK_BYTES)
            .spawn(move || {
                while let Ok(Job { items, reply }) = inbox.recv() {
                    let mut results = Vec::with_capacity(items.len());
                    for item in items {
                        // The route gave up on this batch (shutdown): stop early.
                        if reply.is_closed() {
                            break;
                        }
                        let origin = Origin {
                            backend,
                            stream: &stream,
                            partition: item.partition.as_deref(),
                            position: item.position.as_deref(),
                        };
                        results.push(transform.apply(&origin, item.event));
                    }
                    let _ = reply.send(results);
                }
            })
            .map_err(|e| {
                Error::other(format!(
                    "route `{route}`: cannot start its expression thread: {e}"
                ))
            })?;
        Ok(Evaluator { jobs })
    }

    /// The outcome of each item, in order.
    pub(super) async fn apply(&self, items: Vec<Item>) -> Result<Vec<Result<Outcome>>> {
        let (reply, outcome) = oneshot::channel();
        let gone = || Error::other("the route's expression thread stopped");
        // The route waits for each batch's outcome before sending the next, so the one-job
        // channel is always empty here.
        self.jobs
            .try_send(Job { items, reply })
            .map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())
    }
}
