//! Sending: one SDK `ProducerClient` (one AMQP connection) per tributary producer.
//!
//! A send that finds the client's connection dead ("Illegal session state", "Link name is not
//! unique": SDK 0.16's recoveries after a lost connection can leave its sender's session dead
//! for good), or gets no answer within the `timeout`, still fails, and replaces the client
//! with a fresh connection for the sends after it (at most one replacement every 5 s;
//! `clients::ProducerConnection`, `tests/producer_recovery.rs`).
//!
//! `send` sends one message to the hub; the service places it by its partition key (or round
//! robin without one). `send_batch` groups the events by partition key, keeping each key's
//! order, and sends each group as SDK batches (one AMQP transfer per batch): the service stores
//! a batch whole on one partition. Event Hubs reports no position for a send, so receipts are
//! empty.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use azure_messaging_eventhubs::{EventDataBatchOptions, ProducerClient};
use bytes::Bytes;
use futures::future::{BoxFuture, try_join_all};
use tributary::backend::CloseGate;
use tributary::{Error, Event, Producer, Receipt, Result};

use crate::clients::{Client, ProducerConnection};
use crate::error::{is_dead_session, map, summary, timed_out};
use crate::mapping::{self, Encoded};

/// Room for the AMQP framing of one more message in a batch.
const HEADROOM: usize = 4096;

pub(crate) struct EventHubsProducer {
    inner: Arc<Inner>,
}

/// What a send needs, shared with the tasks that carry sends out.
struct Inner {
    hub: String,
    connection: Arc<ProducerConnection>,
    max_event_bytes: usize,
    timeout: std::time::Duration,
    gate: CloseGate,
}

impl EventHubsProducer {
    pub(crate) fn new(
        hub: &str,
        connection: Arc<ProducerConnection>,
        max_event_bytes: usize,
        timeout: std::time::Duration,
    ) -> Self {
        EventHubsProducer {
            inner: Arc::new(Inner {
                hub: hub.to_string(),
                connection,
                max_event_bytes,
                timeout,
                gate: CloseGate::new(format!("producer for `{hub}`")),
            }),
        }
    }

    /// Runs a send in a task of its own. The SDK's sends are not cancel-safe: one dropped
    /// between its transfer and its outcome leaves the sender link half torn down, and every
    /// later send fails with "Link name is not unique". A caller that drops its future now
    /// only stops waiting; the send finishes on its own, holding the close gate until then.
    async fn detached<T: Send + 'static>(
        &self,
        send: impl FnOnce(Arc<Inner>) -> BoxFuture<'static, Result<T>>,
    ) -> Result<T> {
        tokio::spawn(send(self.inner.clone()))
            .await
            .map_err(|e| Error::other(format!("send to `{}` failed: {e}", self.inner.hub)))?
    }
}

impl Inner {
    fn client(&self) -> Result<Arc<Client<ProducerClient>>> {
        self.connection
            .current()
            .map_err(|_| Error::closed(format!("producer for `{}` is closed", self.hub)))
    }

    /// One SDK call on `client`, within the `timeout`. A failure that says the client's
    /// connection is dead, or no answer at all, replaces the client before the error returns,
    /// so that the caller's next send goes out on a fresh connection.
    async fn call<T>(
        &self,
        client: &Client<ProducerClient>,
        call: impl Future<Output = azure_messaging_eventhubs::Result<T>>,
    ) -> Result<T> {
        let what = || format!("send to `{}`", self.hub);
        let (error, why) = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) if is_dead_session(&error) => {
                let why = summary(&error.to_string());
                (map(&error, &what()), why)
            }
            Ok(Err(error)) => return Err(map(&error, &what())),
            Err(_) => (
                timed_out(self.timeout, &what()),
                format!("a send had no answer within {:?}", self.timeout),
            ),
        };
        let _ = self.connection.replace(client.generation, &why).await;
        Err(error)
    }

    /// The declared limit is on the event as tributary counts it, as for every backend.
    fn check(&self, event: &Event) -> Result<()> {
        let size = event.encoded_len();
        if size > self.max_event_bytes {
            return Err(Error::too_large(format!(
                "event of {size} bytes (key, payload and headers) exceeds the limit of {} bytes for `{}` (option max_event_bytes)",
                self.max_event_bytes, self.hub
            )));
        }
        Ok(())
    }

    fn encode(&self, event: Event) -> Result<Encoded> {
        self.check(&event)?;
        Ok(mapping::encode(event))
    }

    /// Sends one key's events in order, as few SDK batches as fit. Each event is encoded as
    /// its batch takes it, so a group's messages (several hundred bytes each) are never held
    /// all at once in a vector grown by reallocation.
    async fn send_group(
        &self,
        client: &Client<ProducerClient>,
        partition_key: Option<String>,
        events: Vec<Event>,
    ) -> Result<()> {
        let what = || format!("send to `{}`", self.hub);
        let mut pending = events.into_iter().map(mapping::encode).peekable();
        while pending.peek().is_some() {
            let batch = self
                .call(
                    client,
                    client.create_batch(Some(EventDataBatchOptions {
                        partition_key: partition_key.clone(),
                        ..Default::default()
                    })),
                )
                .await?;

            while let Some(size) = pending.peek().map(|next| next.size) {
                // A message that surely fits is handed over without a copy; near the limit
                // it is copied, because the SDK consumes a message it refuses.
                if batch.size() as usize + size + HEADROOM <= self.max_event_bytes / 2 {
                    let message = pending.next().expect("peeked").message;
                    if !batch
                        .try_add_amqp_message(message, None)
                        .map_err(|e| map(&e, &what()))?
                    {
                        return Err(Error::other(format!(
                            "the SDK refused a message of {size} bytes for `{}` in a batch of {} bytes",
                            self.hub,
                            batch.size()
                        )));
                    }
                    continue;
                }
                let next = pending.peek().expect("peeked");
                let added = batch
                    .try_add_amqp_message(next.message.clone(), None)
                    .map_err(|e| map(&e, &what()))?;
                if !added {
                    if batch.is_empty() {
                        // Over half the link's limit: the SDK's batch cannot hold it (it counts
                        // a first message twice), so it goes alone, still in its key's order.
                        let message = pending.next().expect("peeked").message;
                        self.call(client, client.send_message(message, None))
                            .await?;
                        continue;
                    }
                    break;
                }
                pending.next();
            }

            if !batch.is_empty() {
                self.call(client, client.send_batch(batch, None)).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Producer for EventHubsProducer {
    async fn send(&self, event: Event) -> Result<Receipt> {
        let partition_key = event
            .key
            .as_deref()
            .map(|key| mapping::partition_key(key).0);
        let mut message = self.inner.encode(event)?.message;
        if let Some(partition_key) = partition_key {
            mapping::annotate_partition_key(&mut message, partition_key);
        }
        self.detached(|inner| {
            Box::pin(async move {
                let _pass = inner.gate.enter().await?;
                let client = inner.client()?;
                // Not through a batch: the SDK counts a batch's first message twice (once as
                // the envelope), so a batch holds no single event over half the link's limit.
                inner
                    .call(&client, client.send_message(message, None))
                    .await?;
                Ok(Receipt::default())
            })
        })
        .await
    }

    async fn send_batch(&self, events: Vec<Event>) -> Result<Vec<Receipt>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let count = events.len();
        // Grouped by the event key (a reference count, not a copy); each group's partition key
        // is built once, and the SDK's batch stamps it on every message. Every event is checked
        // against the limit before anything is sent; each group's vector is sized once, from a
        // first pass that numbers the groups.
        let mut keys: Vec<(Option<Bytes>, usize)> = Vec::new();
        let mut index: HashMap<Option<Bytes>, usize> = HashMap::new();
        let mut slots: Vec<usize> = Vec::with_capacity(count);
        for event in &events {
            self.inner.check(event)?;
            let slot = match index.get(&event.key) {
                Some(slot) => *slot,
                None => {
                    keys.push((event.key.clone(), 0));
                    index.insert(event.key.clone(), keys.len() - 1);
                    keys.len() - 1
                }
            };
            keys[slot].1 += 1;
            slots.push(slot);
        }
        let mut groups: Vec<(Option<Bytes>, Vec<Event>)> = keys
            .into_iter()
            .map(|(key, size)| (key, Vec::with_capacity(size)))
            .collect();
        for (event, slot) in events.into_iter().zip(slots) {
            groups[slot].1.push(event);
        }
        let groups: Vec<(Option<String>, Vec<Event>)> = groups
            .into_iter()
            .map(|(key, messages)| (key.map(|k| mapping::partition_key(&k).0), messages))
            .collect();
        self.detached(move |inner| {
            Box::pin(async move {
                let _pass = inner.gate.enter().await?;
                let client = inner.client()?;
                let client = &*client;
                // Keys are independent: their groups go out concurrently, each in order.
                try_join_all(
                    groups
                        .into_iter()
                        .map(|(key, messages)| inner.send_group(client, key, messages)),
                )
                .await?;
                Ok(vec![Receipt::default(); count])
            })
        })
        .await
    }

    async fn flush(&self) -> Result<()> {
        // Every send returns only once the service accepted it: nothing is buffered.
        self.inner.gate.check()
    }

    async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        // Waits for the sends in progress, which hold passes.
        if !inner.gate.close().await {
            return Ok(());
        }
        inner.connection.close().await;
        Ok(())
    }
}
