//! Sending: one `pulsar::Producer` per partition, so that tributary chooses the partition (and
//! knows it for the receipt) and each partition keeps its send order.
//!
//! The crate's producer needs `&mut self` to enqueue; a send locks the partitions it uses for
//! the enqueue only (in index order) and awaits the receipts outside, so concurrent sends
//! pipeline. Every wait has a deadline (`operation_timeout`): the crate re-creates a producer
//! after a broker restart and resends what was pending, but a send that outlives its deadline
//! fails with a retryable timeout instead of hanging.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pulsar::TokioExecutor;
use pulsar::producer::SendFuture;
use tokio::sync::{Mutex, MutexGuard};
use tributary::backend::CloseGate;
use tributary::{Error, ErrorKind, Event, PartitionId, Producer, Receipt, Result};

use crate::error::{map, timed_out};
use crate::mapping::{self, Encoded};
use crate::position::MessagePosition;

pub(crate) struct PartitionProducer {
    pub(crate) inner: Mutex<pulsar::Producer<TokioExecutor>>,
    /// -1 for a non-partitioned topic, as in Pulsar's message ids.
    pub(crate) index: i32,
    /// Full topic name of the partition, to create its producer again.
    pub(crate) topic: String,
    /// A send failed for want of the broker: the next one replaces the crate's producer
    /// first, which may not recover by itself after a broker restart.
    pub(crate) suspect: AtomicBool,
}

pub(crate) struct PulsarProducer {
    pub(crate) stream: String,
    pub(crate) client: pulsar::Pulsar<TokioExecutor>,
    pub(crate) options: pulsar::producer::ProducerOptions,
    pub(crate) partitions: Vec<PartitionProducer>,
    pub(crate) max_event_bytes: usize,
    pub(crate) broker_limit: usize,
    pub(crate) operation_timeout: Duration,
    /// `Some(batch_bytes)` when the crate batches.
    pub(crate) batch_bytes: Option<usize>,
    pub(crate) next: AtomicUsize,
    /// Sends in progress hold a pass; `close` waits for them.
    pub(crate) gate: CloseGate,
}

/// Java's `Murmur3_32Hash` routing: `murmur3_32(key) & i32::MAX % partitions`, so a Java or
/// Python producer with that hashing scheme puts a key in the same partition.
pub(crate) fn partition_for_key(key: &str, partitions: usize) -> usize {
    let hash = murmur3::murmur3_32(&mut key.as_bytes(), 0).unwrap_or(0) & (i32::MAX as u32);
    (hash % partitions as u32) as usize
}

impl PulsarProducer {
    /// Refuses an event whose message would exceed the limit. Only an event that a cheap
    /// bound puts near it is encoded here; the rest are encoded as they are sent.
    fn check_size(&self, event: &Event) -> Result<()> {
        if mapping::size_bound(event) <= self.max_event_bytes {
            return Ok(());
        }
        let size = mapping::encode(event).size();
        if size > self.max_event_bytes {
            return Err(Error::too_large(format!(
                "event of {size} bytes as a Pulsar message (payload, properties and keys) exceeds the limit of {} bytes for `{}` (the broker's maxMessageSize of {} bytes less {} for metadata, or option max_event_bytes)",
                self.max_event_bytes,
                self.stream,
                self.broker_limit,
                crate::METADATA_RESERVE
            )));
        }
        Ok(())
    }

    fn partition(&self, event: &Event) -> usize {
        match self.partitions.len() {
            1 => 0,
            n => match mapping::partition_key(event) {
                Some(key) => partition_for_key(&key, n),
                None => self.next.fetch_add(1, Ordering::Relaxed) % n,
            },
        }
    }

    /// A partition's crate producer, locked, replaced first if a send found it suspect.
    async fn lock<'a>(
        &self,
        slot: &'a PartitionProducer,
    ) -> Result<MutexGuard<'a, pulsar::Producer<TokioExecutor>>> {
        let mut producer = slot.inner.lock().await;
        if slot.suspect.load(Ordering::Acquire) {
            *producer = self.recreate(slot).await?;
            slot.suspect.store(false, Ordering::Release);
        }
        Ok(producer)
    }

    /// Hands one message to a partition's crate producer.
    async fn enqueue(
        &self,
        producer: &mut pulsar::Producer<TokioExecutor>,
        encoded: Encoded,
    ) -> Result<SendFuture> {
        if let Some(batch_bytes) = self.batch_bytes
            && encoded.size() >= batch_bytes
        {
            // Send what is batched first, so this event goes alone and a batch never grows
            // past the broker's limit.
            producer
                .send_batch()
                .await
                .map_err(|e| map(e, &format!("flush a batch to `{}`", self.stream)))?;
        }
        producer
            .send_non_blocking(encoded.into_message())
            .await
            .map_err(|e| map(e, &format!("send to `{}`", self.stream)))
    }

    /// A new crate producer for a partition; the old one, dropped, closes itself.
    async fn recreate(&self, slot: &PartitionProducer) -> Result<pulsar::Producer<TokioExecutor>> {
        let what = format!("re-create the producer for `{}`", slot.topic);
        tracing::info!(topic = %slot.topic, "pulsar: replacing a producer after failed sends");
        let build = self
            .client
            .producer()
            .with_topic(&slot.topic)
            .with_options(self.options.clone())
            .build();
        match tokio::time::timeout(self.operation_timeout, build).await {
            Ok(Ok(producer)) => Ok(producer),
            Ok(Err(e)) => Err(map(e, &what)),
            Err(_) => Err(timed_out(
                &what,
                self.operation_timeout,
                "operation_timeout",
            )),
        }
    }

    fn suspect_if_unavailable(&self, partition: usize, error: &Error) {
        if matches!(error.kind(), ErrorKind::Timeout | ErrorKind::Unavailable) {
            self.partitions[partition]
                .suspect
                .store(true, Ordering::Release);
        }
    }

    async fn receipt(&self, partition: usize, future: SendFuture) -> Result<Receipt> {
        let receipt = future
            .await
            .map_err(|e| map(e, &format!("send to `{}`", self.stream)))
            .inspect_err(|e| self.suspect_if_unavailable(partition, e))?;
        let index = self.partitions[partition].index;
        let position = receipt.message_id.map(|id| {
            MessagePosition {
                ledger: id.ledger_id,
                entry: id.entry_id,
                partition: index,
                batch: id.batch_index.filter(|&b| b >= 0),
            }
            .to_position()
        });
        Ok(Receipt {
            partition: Some(PartitionId::from(index.max(0) as u32)),
            position,
        })
    }

    async fn send_all(&self, events: &[Event]) -> Result<Vec<Receipt>> {
        // Every event is checked before the first is sent: a batch with one over the limit
        // sends nothing.
        let mut routes = Vec::with_capacity(events.len());
        for event in events {
            self.check_size(event)?;
            routes.push(self.partition(event));
        }
        // The partitions the batch uses are locked together, in index order (the same for
        // every send, so that two sends cannot deadlock), and the events are
        // handed over in the batch's order, each encoded just before. A batching crate
        // producer sends a partition's batch a delay after its first message: this way every
        // partition's batch starts with the first events and is full by the time its delay
        // ends. Partition by partition, as before, the last one's delay started only after
        // the others had been handed theirs, and encoding the whole batch first delayed all.
        let mut used = vec![false; self.partitions.len()];
        for &partition in &routes {
            used[partition] = true;
        }
        let mut producers = Vec::with_capacity(self.partitions.len());
        for (slot, used) in self.partitions.iter().zip(used) {
            producers.push(match used {
                true => Some(self.lock(slot).await?),
                false => None,
            });
        }
        let mut pending = Vec::with_capacity(events.len());
        for (event, &partition) in events.iter().zip(&routes) {
            let producer = producers[partition].as_mut().expect("locked above");
            pending.push(self.enqueue(producer, mapping::encode(event)).await?);
        }
        drop(producers);
        // Everything is enqueued: awaiting the receipts one after another loses no overlap
        // (the crate completes them as the broker answers), and spares the task and future a
        // `join_all` made per event. Every receipt is awaited, so that each failing partition
        // is marked suspect; the first error in this order is the one returned.
        let mut receipts = Vec::with_capacity(events.len());
        let mut failed = None;
        for (future, partition) in pending.into_iter().zip(routes) {
            match self.receipt(partition, future).await {
                Ok(receipt) => receipts.push(receipt),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(receipts),
        }
    }

    async fn deadline<T>(&self, what: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
        // The crate fails a message after operation_timeout; the margin lets its own, more
        // precise error through first.
        let limit = self.operation_timeout + Duration::from_secs(1);
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => {
                // Which partition hung is not known here: replace them all on the next send.
                for slot in &self.partitions {
                    slot.suspect.store(true, Ordering::Release);
                }
                Err(timed_out(
                    &format!("{what} `{}`", self.stream),
                    self.operation_timeout,
                    "operation_timeout",
                ))
            }
        }
    }
}

#[async_trait]
impl Producer for PulsarProducer {
    async fn send(&self, event: Event) -> Result<Receipt> {
        let _pass = self.gate.enter().await?;
        let mut receipts = self
            .deadline("send to", self.send_all(std::slice::from_ref(&event)))
            .await?;
        Ok(receipts.pop().unwrap_or_default())
    }

    async fn send_batch(&self, events: Vec<Event>) -> Result<Vec<Receipt>> {
        let _pass = self.gate.enter().await?;
        self.deadline("send a batch to", self.send_all(&events))
            .await
    }

    async fn flush(&self) -> Result<()> {
        // Every send returns only once stored, so a flush waits for nothing but the crate's
        // open batches.
        let _pass = self.gate.enter().await?;
        self.deadline("flush", async {
            if self.batch_bytes.is_some() {
                for slot in &self.partitions {
                    slot.inner
                        .lock()
                        .await
                        .send_batch()
                        .await
                        .map_err(|e| map(e, &format!("flush `{}`", self.stream)))?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        // Sends in progress finish (each within its deadline); new ones fail as closed.
        if !self.gate.close().await {
            return Ok(());
        }
        for slot in &self.partitions {
            let mut producer = slot.inner.lock().await;
            let closing = tokio::time::timeout(self.operation_timeout, producer.close()).await;
            if let Ok(Err(e)) = closing {
                tracing::debug!(stream = %self.stream, error = %e, "pulsar: closing a producer");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from the Java client's `Murmur3_32Hash` (Guava's murmur3_32, `& Integer.MAX_VALUE`).
    #[test]
    fn keys_route_like_the_java_client() {
        assert_eq!(
            murmur3::murmur3_32(&mut "hello".as_bytes(), 0).unwrap(),
            0x248b_fa47
        );
        assert_eq!(partition_for_key("hello", 4), 0x248b_fa47 % 4);
        // A hash with the top bit set is masked, not wrapped: Java's result, not the crate's.
        let hash = murmur3::murmur3_32(&mut "key-3".as_bytes(), 0).unwrap();
        assert_eq!(
            partition_for_key("key-3", 7) as u32,
            (hash & 0x7fff_ffff) % 7
        );
    }
}
