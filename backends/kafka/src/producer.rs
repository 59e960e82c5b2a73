//! Sending: rdkafka's `FutureProducer`, one per tributary producer; librdkafka batches.

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use tributary::backend::CloseGate;
use tributary::{Error, Event, PartitionId, Position, Producer, Receipt, Result};

use crate::error::map;
use crate::record;

pub(crate) struct KafkaProducer {
    pub(crate) topic: String,
    pub(crate) inner: FutureProducer,
    /// Largest record batch the topic accepts (`max.message.bytes`).
    pub(crate) limit: usize,
    pub(crate) send_timeout: Duration,
    /// Refuses sends after close; close waits for the sends in progress.
    pub(crate) gate: CloseGate,
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

    async fn send_one(&self, event: &Event) -> Result<Receipt> {
        let mut headers = OwnedHeaders::new_with_capacity(event.headers.len());
        for (name, value) in event.headers.iter() {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_ref()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
            .payload(event.payload.as_ref())
            .headers(headers);
        if let Some(key) = &event.key {
            record = record.key(key.as_ref());
        }
        if let Some(timestamp) = event.timestamp {
            record = record.timestamp(timestamp.as_millis());
        }
        // The queue timeout only covers waiting for room in librdkafka's local queue; delivery
        // itself is bounded by message.timeout.ms (the URL's send_timeout).
        match self
            .inner
            .send(record, Timeout::After(self.send_timeout))
            .await
        {
            Ok(delivery) => Ok(Receipt {
                partition: Some(PartitionId::from(delivery.partition as u32)),
                position: Some(Position::from_offset(delivery.offset as u64)),
            }),
            Err((error, _message)) => Err(map(error, &format!("send to `{}`", self.topic))),
        }
    }
}

#[async_trait]
impl Producer for KafkaProducer {
    async fn send(&self, event: Event) -> Result<Receipt> {
        self.gate.check()?;
        self.check_size(&event)?;
        let _pass = self.gate.enter().await?;
        self.send_one(&event).await
    }

    async fn send_batch(&self, events: Vec<Event>) -> Result<Vec<Receipt>> {
        self.gate.check()?;
        for event in &events {
            self.check_size(event)?;
        }
        let _pass = self.gate.enter().await?;
        // All records are queued before any is awaited, in order: librdkafka batches them, and
        // idempotence keeps their order within each partition even across retries.
        let results = futures::future::join_all(events.iter().map(|e| self.send_one(e))).await;
        results.into_iter().collect()
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
