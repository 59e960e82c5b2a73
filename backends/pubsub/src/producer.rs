//! Publishing: one `Publisher` (which batches in a background task) per tributary producer.

use async_trait::async_trait;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;
use tributary::backend::CloseGate;
use tributary::{Error, Event, Producer, Receipt, Result};

use crate::envelope;
use crate::error::map_publish;

pub(crate) struct PubSubProducer {
    stream: String,
    publisher: Publisher,
    max_event_bytes: usize,
    /// Sends in progress hold it; `close` waits for them, then flushes.
    gate: CloseGate,
}

impl PubSubProducer {
    pub(crate) fn new(stream: &str, publisher: Publisher, max_event_bytes: usize) -> Self {
        PubSubProducer {
            stream: stream.to_owned(),
            publisher,
            max_event_bytes,
            gate: CloseGate::new(format!("producer for `{stream}`")),
        }
    }

    fn prepare(&self, event: &Event) -> Result<(Message, String)> {
        let encoded = envelope::encode(event);
        let size = encoded.size();
        if size > self.max_event_bytes {
            return Err(Error::too_large(format!(
                "event of {size} bytes as a Pub/Sub message (data, attributes and ordering key) exceeds the limit of {} bytes for `{}` (option max_event_bytes)",
                self.max_event_bytes, self.stream
            )));
        }
        let key = encoded.ordering_key.clone();
        let message = Message::new()
            .set_data(encoded.data)
            .set_attributes(encoded.attributes)
            .set_ordering_key(encoded.ordering_key);
        Ok((message, key))
    }

    async fn publish(&self, message: Message, key: String) -> Result<Receipt> {
        match self.publisher.publish(message).await {
            // Pub/Sub has no partitions or positions; the message id is not a position.
            Ok(_message_id) => Ok(Receipt::default()),
            Err(error) => {
                if !key.is_empty() {
                    // A failed publish pauses its ordering key; later sends for the key would
                    // all fail. The caller gets this error and may retry: resume now.
                    self.publisher.resume_publish(key);
                }
                Err(map_publish(
                    &error,
                    &format!("publish to `{}`", self.stream),
                ))
            }
        }
    }
}

#[async_trait]
impl Producer for PubSubProducer {
    async fn send(&self, event: Event) -> Result<Receipt> {
        self.gate.check()?;
        let (message, key) = self.prepare(&event)?;
        let _pass = self.gate.enter().await?;
        self.publish(message, key).await
    }

    async fn send_batch(&self, events: Vec<Event>) -> Result<Vec<Receipt>> {
        self.gate.check()?;
        let prepared = events
            .iter()
            .map(|e| self.prepare(e))
            .collect::<Result<Vec<_>>>()?;
        let _pass = self.gate.enter().await?;
        // All are queued before any is awaited; the publisher batches them and keeps their
        // order per ordering key.
        let sends = prepared
            .into_iter()
            .map(|(message, key)| self.publish(message, key));
        futures::future::join_all(sends).await.into_iter().collect()
    }

    async fn flush(&self) -> Result<()> {
        self.gate.check()?;
        self.publisher.flush().await;
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        if self.gate.close().await {
            self.publisher.flush().await;
        }
        Ok(())
    }
}
