//! Sending: one `pulsar::Producer` per partition, so that tributary chooses the partition (and
//! knows it for the receipt) and each partition keeps its send order.
//!
//! The crate's producer needs `&mut self` to enqueue; a short lock per partition covers the
//! enqueue only, and the receipt is awaited outside it, so concurrent sends pipeline. Every
//! wait has a deadline (`operation_timeout`): the crate re-creates a producer after a broker
//! restart and resends what was pending, but a send that outlives its deadline fails with a
//! retryable timeout instead of hanging.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pulsar::TokioExecutor;
use pulsar::producer::SendFuture;
use tokio::sync::Mutex;
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
    fn prepare(&self, event: &Event) -> Result<(usize, Encoded)> {
        let encoded = mapping::encode(event);
        let size = encoded.size();
        if size > self.max_event_bytes {
            return Err(Error::too_large(format!(
                "event of {size} bytes as a Pulsar message (payload, properties and keys) exceeds the limit of {} bytes for `{}` (the broker's maxMessageSize of {} bytes less {} for metadata, or option max_event_bytes)",
                self.max_event_bytes,
                self.stream,
                self.broker_limit,
                crate::METADATA_RESERVE
            )));
        }
        let partition = match (&encoded.partition_key, self.partitions.len()) {
            (_, 1) => 0,
            (Some(key), n) => partition_for_key(key, n),
            (None, n) => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        Ok((partition, encoded))
    }

    /// Enqueues `messages` on one partition, in order, under its lock.
    async fn enqueue(&self, partition: usize, messages: Vec<Encoded>) -> Result<Vec<SendFuture>> {
        let slot = &self.partitions[partition];
        let mut producer = slot.inner.lock().await;
        if slot.suspect.load(Ordering::Acquire) {
            *producer = self.recreate(slot).await?;
            slot.suspect.store(false, Ordering::Release);
        }
        let mut futures = Vec::with_capacity(messages.len());
        for encoded in messages {
            if let Some(batch_bytes) = self.batch_bytes
                && encoded.size() >= batch_bytes
            {
                // Send what is batched first, so this event goes alone and a batch never
                // grows past the broker's limit.
                producer
                    .send_batch()
                    .await
                    .map_err(|e| map(e, &format!("flush a batch to `{}`", self.stream)))?;
            }
            let future = producer
                .send_non_blocking(encoded.into_message())
                .await
                .map_err(|e| map(e, &format!("send to `{}`", self.stream)))?;
            futures.push(future);
        }
        Ok(futures)
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
        let prepared = events
            .iter()
            .map(|e| self.prepare(e))
            .collect::<Result<Vec<_>>>()?;
        let mut by_partition: Vec<Vec<(usize, Encoded)>> =
            (0..self.partitions.len()).map(|_| Vec::new()).collect();
        for (index, (partition, encoded)) in prepared.into_iter().enumerate() {
            by_partition[partition].push((index, encoded));
        }
        let mut pending: Vec<(usize, usize, SendFuture)> = Vec::with_capacity(events.len());
        for (partition, messages) in by_partition.into_iter().enumerate() {
            if messages.is_empty() {
                continue;
            }
            let (indexes, encoded): (Vec<usize>, Vec<Encoded>) = messages.into_iter().unzip();
            let futures = self.enqueue(partition, encoded).await?;
            pending.extend(
                indexes
                    .into_iter()
                    .zip(futures)
                    .map(|(index, future)| (index, partition, future)),
            );
        }
        // Everything is enqueued: awaiting the receipts one after another loses no overlap
        // (the crate completes them as the broker answers), and spares the task and future a
        // `join_all` made per event. Every receipt is awaited, so that each failing partition
        // is marked suspect; the first error in this order is the one returned, as before.
        let mut receipts = vec![Receipt::default(); events.len()];
        let mut failed = None;
        for (index, partition, future) in pending {
            match self.receipt(partition, future).await {
                Ok(receipt) => receipts[index] = receipt,
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
