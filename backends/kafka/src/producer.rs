//! Sending: an rdkafka `ThreadedProducer` per tributary producer; librdkafka batches, and the
//! delivery reports of a batch come back through one table entry ([`crate::delivery`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use tributary::backend::CloseGate;
use tributary::{Error, Event, PartitionId, Position, Producer, Receipt, Result};

use crate::delivery::{Outcome, Reports};
use crate::error::map;
use crate::record;

/// How long a record waits before trying again for room in librdkafka's full local queue (as
/// rdkafka's `FutureProducer` does).
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(100);

pub(crate) struct KafkaProducer {
    pub(crate) topic: String,
    pub(crate) inner: Arc<ThreadedProducer<Reports>>,
    /// Largest record batch the topic accepts (`max.message.bytes`).
    pub(crate) limit: usize,
    pub(crate) send_timeout: Duration,
    /// Refuses sends after close; close waits for the sends in progress.
    pub(crate) gate: CloseGate,
}

/// Settles the records of a batch that were never queued when the send is abandoned (its
/// future dropped), so the batch's table entry does not wait for reports that cannot come.
struct Unqueued<'a> {
    reports: &'a Reports,
    base: usize,
    /// Records `base + next ..` are not queued.
    next: usize,
    len: usize,
}

impl Unqueued<'_> {
    /// Marks every record from `self.next` on as failed with `error`, never queued.
    fn fail_rest(&mut self, error: &KafkaError) {
        for i in self.next..self.len {
            self.reports
                .settle(self.base.wrapping_add(i), Err(error.clone()));
        }
        self.next = self.len;
    }
}

impl Drop for Unqueued<'_> {
    fn drop(&mut self) {
        if self.next < self.len {
            self.fail_rest(&KafkaError::Canceled);
        }
    }
}

impl KafkaProducer {
    /// Flushes librdkafka's queue, off the async runtime (it blocks).
    async fn flush_queue(&self, what: &str) -> Result<()> {
        let producer = self.inner.clone();
        let timeout = self.send_timeout;
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout)))
            .await
            .map_err(|e| Error::other(format!("{what} of `{}` panicked: {e}", self.topic)))?
            .map_err(|e| map(e, &format!("{what} `{}`", self.topic)))
    }

    fn check_size(&self, event: &Event) -> Result<()> {
        let size = record::batch_size(event);
        if size > self.limit {
            return Err(Error::too_large(format!(
                "event of {size} bytes as a Kafka record batch exceeds `{}`'s limit of {} bytes (max.message.bytes; the largest payload without key or headers is {} bytes)",
                self.topic,
                self.limit,
                record::max_payload(self.limit)
            )));
        }
        Ok(())
    }

    /// Queues `events` in order and waits for every delivery report: a receipt per event, or
    /// the first event's error in order.
    ///
    /// Records are queued one after another, each only once the one before is in librdkafka's
    /// queue (idempotence then keeps their order within each partition, across retries too).
    /// A full local queue is waited out for up to `send_timeout` per record, as rdkafka's
    /// `FutureProducer::send` does; delivery itself is bounded by `message.timeout.ms` (the
    /// URL's `send_timeout`). Once one record cannot be queued, the rest are not tried: their
    /// outcome is that record's error, and the batch fails with it.
    async fn send_all(&self, events: &[Event]) -> Result<Vec<Receipt>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let reports = self.inner.context();
        let (base, outcomes) = reports.register(events.len());
        let mut unqueued = Unqueued {
            reports,
            base,
            next: 0,
            len: events.len(),
        };
        'queue: for (i, event) in events.iter().enumerate() {
            let seq = base.wrapping_add(i);
            let mut record = self.record(event, seq);
            // Read only when librdkafka's queue is full: the common path takes no clock.
            let mut waiting_since: Option<Instant> = None;
            loop {
                match self.inner.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if waiting_since.get_or_insert_with(Instant::now).elapsed()
                            < self.send_timeout =>
                    {
                        record = back;
                        tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                    }
                    Err((error, _)) => {
                        unqueued.fail_rest(&error);
                        break 'queue;
                    }
                }
            }
            unqueued.next = i + 1;
        }
        let outcomes = outcomes.await.map_err(|_| {
            Error::other(format!(
                "the producer for `{}` dropped its delivery reports",
                self.topic
            ))
        })?;
        outcomes
            .into_iter()
            .map(|outcome| self.receipt(outcome))
            .collect()
    }

    fn record<'a>(&'a self, event: &'a Event, seq: usize) -> BaseRecord<'a, [u8], [u8], usize> {
        let mut headers = OwnedHeaders::new_with_capacity(event.headers.len());
        for (name, value) in event.headers.iter() {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_ref()),
            });
        }
        let mut record = BaseRecord::with_opaque_to(&self.topic, seq)
            .payload(event.payload.as_ref())
            .headers(headers);
        if let Some(key) = &event.key {
            record = record.key(key.as_ref());
        }
        if let Some(timestamp) = event.timestamp {
            record = record.timestamp(timestamp.as_millis());
        }
        record
    }

    fn receipt(&self, outcome: Option<Outcome>) -> Result<Receipt> {
        match outcome {
            Some(Ok((partition, offset))) => Ok(Receipt {
                partition: Some(PartitionId::from(partition as u32)),
                position: Some(Position::from_offset(offset as u64)),
            }),
            Some(Err(error)) => Err(map(error, &format!("send to `{}`", self.topic))),
            None => Err(Error::other(format!(
                "a send to `{}` ended without a delivery report",
                self.topic
            ))),
        }
    }
}

#[async_trait]
impl Producer for KafkaProducer {
    async fn send(&self, event: Event) -> Result<Receipt> {
        self.gate.check()?;
        self.check_size(&event)?;
        let _pass = self.gate.enter().await?;
        let mut receipts = self.send_all(std::slice::from_ref(&event)).await?;
        receipts
            .pop()
            .ok_or_else(|| Error::other(format!("a send to `{}` gave no receipt", self.topic)))
    }

    async fn send_batch(&self, events: Vec<Event>) -> Result<Vec<Receipt>> {
        self.gate.check()?;
        for event in &events {
            self.check_size(event)?;
        }
        let _pass = self.gate.enter().await?;
        // All records are queued before any report is awaited: librdkafka batches them.
        self.send_all(&events).await
    }

    async fn flush(&self) -> Result<()> {
        self.gate.check()?;
        self.flush_queue("flush").await
    }

    async fn close(&self) -> Result<()> {
        // Sends already started finish (each awaits its delivery report); new ones see `closed`.
        if !self.gate.close().await {
            return Ok(());
        }
        self.flush_queue("close").await
    }
}
