//! The engine's side of a partition: takes the receive task's batches from its channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use tributary::backend::group::{PartitionReader, ReadBatch, SourceRecord};
use tributary::{Error, Result};

use super::POLL;

/// What a partition's receive task hands its reader.
pub(super) enum Item {
    /// Events in partition order, at most the task's hand-off size.
    Records(Vec<SourceRecord>),
    Failed(Error),
}

/// The engine's reader of one partition, made by `EventHubsSource`'s
/// [`open`](tributary::backend::group::PartitionSource::open).
pub(super) struct EventHubsReader {
    pub(super) rx: mpsc::Receiver<Item>,
    pub(super) stop: watch::Sender<bool>,
    /// Ends the receive task's wait in the SDK.
    pub(super) receive_stop: azure_messaging_eventhubs::ReceiveStop,
    pub(super) last_enqueued: Arc<AtomicI64>,
    pub(super) last_read: Arc<AtomicI64>,
    pub(super) pending_error: Option<Error>,
    /// The rest of a batch a read could not take whole (its `max` was smaller), read first.
    pub(super) leftover: Vec<SourceRecord>,
    /// When a read that finds nothing gives up, so the engine can look at its leases. One
    /// timer for the reader's life, moved on when it fires, instead of one registered and
    /// cancelled per read (the channel is empty at most reads while the application keeps
    /// up). A read may then give up sooner than [`POLL`] after it began, which only means
    /// that the engine asks again.
    pub(super) poll: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Drop for EventHubsReader {
    fn drop(&mut self) {
        // The receive task closes its link and ends.
        let _ = self.stop.send(true);
        self.receive_stop.stop();
    }
}

#[async_trait]
impl PartitionReader for EventHubsReader {
    async fn read(&mut self, max: usize) -> Result<ReadBatch> {
        let max = max.max(1);
        let mut batch = ReadBatch::default();
        if !self.leftover.is_empty() {
            // Came before anything still in the channel, and before a pending error.
            let rest = self.leftover.split_off(max.min(self.leftover.len()));
            batch.records = std::mem::replace(&mut self.leftover, rest);
            return Ok(batch);
        }
        if let Some(error) = self.pending_error.take() {
            return Err(error);
        }
        let first = match self.rx.try_recv() {
            Ok(item) => Some(item),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                tokio::select! {
                    biased;
                    item = self.rx.recv() => item,
                    () = self.poll.as_mut() => {
                        self.poll.as_mut().reset(tokio::time::Instant::now() + POLL);
                        return Ok(batch);
                    }
                }
            }
        };
        let Some(first) = first else {
            return Err(Error::closed("the partition's receive task ended"));
        };
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                // The task's batch becomes the read's as it is, without a copy, when it fits.
                Item::Records(records) if batch.records.is_empty() && records.len() <= max => {
                    batch.records = records;
                }
                Item::Records(mut records) => {
                    let room = max - batch.records.len();
                    if records.len() > room {
                        self.leftover = records.split_off(room);
                    }
                    batch.records.append(&mut records);
                }
                Item::Failed(error) if batch.records.is_empty() => return Err(error),
                Item::Failed(error) => {
                    self.pending_error = Some(error);
                    break;
                }
            }
            if batch.records.len() >= max {
                break;
            }
            next = self.rx.try_recv().ok();
        }
        Ok(batch)
    }

    fn behind(&self) -> Option<u64> {
        let last = self.last_enqueued.load(Ordering::Relaxed);
        if last < 0 {
            return None;
        }
        let read = self.last_read.load(Ordering::Relaxed);
        Some(u64::try_from(last - read).unwrap_or(0))
    }
}
