//! Sending: the producers of a backend share an rdkafka `ThreadedProducer` ([`Clients`]);
//! librdkafka batches, and the delivery reports of a batch come back through one table entry
//! ([`crate::delivery`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tributary::backend::CloseGate;
use tributary::{Error, Event, PartitionId, Position, Producer, Receipt, Result};

use crate::config::KafkaConfig;
use crate::delivery::{InFlight, Outcome, Reports};
use crate::error::map;
use crate::record;

/// How long a record waits before trying again for room in librdkafka's full local queue (as
/// rdkafka's `FutureProducer` does).
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(100);

/// The librdkafka producer clients of one backend, each shared by the producers opened while
/// it lives.
///
/// Every librdkafka client runs its own threads (a main thread and one per broker), timers and
/// connections: a daemon with 16 Kafka→Kafka routes ran 252–263 threads with a client per
/// stream, 193–207 with this. Kafka's own clients are meant to be shared
/// the same way (one `KafkaProducer` per application). Partitions keep their order and
/// idempotence, which librdkafka keeps per partition.
///
/// A client is made per `message.max.bytes` the backend sets (from each topic's limit, the
/// broker's default for nearly every topic), and stays until the backend closes, even with no
/// producer open: a new client's first send waited 0.5 to 1 s for the idempotent producer's
/// id ([`connect_now`]), so an application or a bench that opens a producer, closes it and
/// opens another later would pay that each time. A client that hit a fatal error (librdkafka
/// refuses every later record) is not handed out again: producers opened after it get a new
/// one.
#[derive(Default)]
pub(crate) struct Clients {
    /// Each client with the `message.max.bytes` it was made with.
    open: Mutex<Vec<(Option<usize>, Arc<Client>)>>,
}

impl Clients {
    /// Lets go of every client: each goes when the producers still holding it do.
    pub(crate) fn clear(&self) {
        self.open.lock().clear();
    }
}

/// A librdkafka producer client whose delivery reports go to [`Reports`], shared by the backend
/// and its producers, and closed on a thread of its own when the last of them lets go.
///
/// rdkafka closes a client by waiting: it joins the client's polling thread (which polls every
/// 100 ms), then purges, flushes and destroys it, 45 to 100 ms on the mock cluster. The last to
/// let go is usually on an async worker: a backend's `close()`, or a producer dropped after it.
pub(crate) struct Client(Option<ThreadedProducer<Reports>>);

impl std::ops::Deref for Client {
    type Target = ThreadedProducer<Reports>;

    fn deref(&self) -> &ThreadedProducer<Reports> {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            crate::backend::drop_aside(client);
        }
    }
}

impl Clients {
    /// A client for `stream`, with `message.max.bytes` at `max_bytes` (`None`: as configured),
    /// and whether it was made for this call (a new client has no broker connection yet: see
    /// [`connect_now`]).
    pub(crate) fn get(
        &self,
        config: &KafkaConfig,
        max_bytes: Option<usize>,
        stream: &str,
    ) -> Result<(Arc<Client>, bool)> {
        let mut open = self.open.lock();
        // A fatal client's producers keep it; new ones get another.
        open.retain(|(_, client)| client.client().fatal_error().is_none());
        if let Some((_, client)) = open.iter().find(|(size, _)| *size == max_bytes) {
            return Ok((client.clone(), false));
        }
        let mut client_config = config.producer_config();
        if let Some(limit) = max_bytes {
            client_config.set("message.max.bytes", limit.to_string());
        }
        let client: ThreadedProducer<Reports> = client_config
            .create_with_context(Reports::default())
            .map_err(|e| map(e, &format!("create a producer for `{stream}`")))?;
        let client = Arc::new(Client(Some(client)));
        open.push((max_bytes, client.clone()));
        Ok((client, true))
    }
}

/// Connects a new producer client to the cluster before its first send, by asking for
/// `stream`'s metadata (within `timeout`; a failure is left for the send to report).
///
/// librdkafka connects a client to a broker only when a request needs one, and an idempotent
/// producer (the backend's default) asks for its producer id only when a broker is up, else
/// retries on a 500 ms timer: the first record of a new client waited for that timer, 0.5 to
/// 1 s on one local broker (raw librdkafka with `enable.idempotence=true` does the same;
/// without it, 10 to 50 ms). With this request first, a new client's first send took 14 to
/// 20 ms, after about 65 ms here, except the first client of a process, whose first send still
/// waited one or two periods of the timer (why the first differs was not found; upstream's
/// open draft confluentinc/librdkafka#5032 is about a first-produce delay).
/// Blocking: run it off the runtime.
pub(crate) fn connect_now(client: &Client, stream: &str, timeout: Duration) {
    if let Err(e) = client.client().fetch_metadata(Some(stream), timeout) {
        tracing::debug!(topic = stream, error = %e, "a new producer client did not connect ahead of its first send");
    }
}

pub(crate) struct KafkaProducer {
    pub(crate) topic: String,
    /// Shared with the backend's other producers ([`Clients`]).
    pub(crate) inner: Arc<Client>,
    /// This producer's batches not yet reported on: what its flush and close wait for.
    pub(crate) in_flight: Arc<InFlight>,
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
    /// Waits for the delivery reports of this producer's records: librdkafka's flush would
    /// wait for every producer sharing the client. Each record's delivery is bounded by
    /// `message.timeout.ms` (the URL's `send_timeout`), so this wait is too.
    async fn settle(&self, what: &str) -> Result<()> {
        // The reports of a record that timed out come a moment after its timeout.
        let grace = self.send_timeout + Duration::from_secs(5);
        self.in_flight.settled(grace).await.map_err(|batches| {
            Error::timeout(format!(
                "{what} `{}`: {batches} batches of events still without a delivery report after {grace:?} (send_timeout plus 5 s)",
                self.topic
            ))
        })
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
        let (base, outcomes) = reports.register(events.len(), &self.in_flight);
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
        self.settle("flush").await
    }

    async fn close(&self) -> Result<()> {
        // Sends already started finish (each awaits its delivery report); new ones see `closed`.
        if !self.gate.close().await {
            return Ok(());
        }
        self.settle("close").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::bindings::{rd_kafka_resp_err_t, rd_kafka_test_fatal_error};

    #[test]
    fn clients_are_shared_per_message_size_kept_and_a_fatal_one_is_replaced() {
        let config = KafkaConfig::new("127.0.0.1:9");
        let clients = Clients::default();
        let first = clients
            .get(&config, Some(1_048_588), "a")
            .expect("client")
            .0;
        let same = clients
            .get(&config, Some(1_048_588), "b")
            .expect("client")
            .0;
        assert!(Arc::ptr_eq(&first, &same), "one client for both topics");
        let larger = clients
            .get(&config, Some(8_000_000), "c")
            .expect("client")
            .0;
        assert!(!Arc::ptr_eq(&first, &larger), "another message.max.bytes");

        // librdkafka's hook for tests: the idempotent producer's fatal state, as a broker
        // could cause it (an out-of-order sequence it cannot recover from).
        let code = rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER;
        // SAFETY: the client is alive (held by `first`) and the reason is a C string.
        let set = unsafe {
            rd_kafka_test_fatal_error(first.client().native_ptr(), code, c"test".as_ptr())
        };
        assert_eq!(set, rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
        assert!(first.client().fatal_error().is_some());
        let fresh = clients
            .get(&config, Some(1_048_588), "d")
            .expect("client")
            .0;
        assert!(
            !Arc::ptr_eq(&first, &fresh),
            "a fatal client is not handed out"
        );
        assert!(fresh.client().fatal_error().is_none());

        drop((first, same, larger, fresh));
        let again = clients.get(&config, Some(1_048_588), "e").expect("client");
        assert!(!again.1, "a client outlives its producers");
        assert_eq!(
            clients.open.lock().len(),
            2,
            "the fatal client is forgotten, the other two are kept"
        );
        clients.clear();
        assert_eq!(
            Arc::strong_count(&again.0),
            1,
            "only the last producer holds it"
        );
    }
}
