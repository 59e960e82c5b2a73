//! Producing: `PutRecords` batches within the service's limits, partial failures retried with
//! backoff, and per-key order kept across retries.
//!
//! `PutRecords` is not atomic and does not promise order within a call: when one record of a
//! call is throttled and a later record of the same partition key is stored, retrying the
//! first would put it after the second. The producer therefore never has two records of one
//! partition key in flight at once: a call carries at most one record per partition key (or,
//! with `aggregate=true`, one aggregated record holding any number of them, in order), and the
//! next record of a key leaves only once the previous one is stored. A record that fails is
//! retried (with backoff when throttled) before any later record of its key is sent.
//!
//! The cost is one round trip per record for a single hot key without aggregation; events
//! spread over many keys, keyless events (each gets its own spread key), and aggregated records
//! batch fully (500 records or 5 MiB per call).
//!
//! A `send_batch` that fits one call, holds each of its keys once, none of them in flight, and
//! finds no record with the driver makes its call itself, in the caller's task, and builds its
//! receipts from the answer (`direct.rs`): no task hand-off between one call's answer and the
//! next call. The driver and these direct sends share one set of in-flight keys and one count
//! of calls out (`max_requests_in_flight` bounds both), under a short lock never held across
//! an await. What the service refuses there goes to the driver, with its backoff, before the
//! batch answers. A direct send dropped while its call is out lets the call finish in a task of
//! its own before its keys are free, so no later record of those keys can overtake it.
//!
//! Everything else (`send`, batches with a busy or repeated key, over one call, `aggregate=true`,
//! and any batch while the driver holds records) goes to one driver task per producer, which
//! owns the queue; those senders hand their records to it through a bounded channel and wait
//! for their receipts, so a slow stream pushes back on senders instead of growing memory.

mod direct;
mod driver;
mod queue;

use direct::Shared;
use driver::Driver;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tributary::backend::CloseGate;
use tributary::{Error, Event, PartitionId, Position, Producer, Receipt, Result};

use crate::config::{KinesisConfig, PUT_RECORDS_MAX_BYTES, PUT_RECORDS_MAX_COUNT};
use crate::envelope::{self, PartitionKey};
use crate::error::{record_error_retryable, timed};
use crate::kpl::{Aggregator, UserRecord};
use queue::{Entry, Queue};

/// Records queued in one producer (sent or not) before senders wait.
const MAX_QUEUED_RECORDS: usize = 20_000;
/// Queue slots (records, and the settled ones behind a record backing off) before senders
/// wait: a record that keeps failing holds the slots of the records sent after it.
const MAX_QUEUE_SLOTS: usize = 8 * MAX_QUEUED_RECORDS;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// A refused record waits at most this long: the service's write quota is per second.
const MAX_RECORD_BACKOFF: Duration = Duration::from_secs(1);
/// A failed call (the service unreachable, say) waits at most this long before it is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How the producer behaves, from the URL.
#[derive(Debug, Clone)]
pub(crate) struct ProducerSettings {
    pub max_record_bytes: usize,
    pub aggregate: bool,
    pub aggregate_max_bytes: usize,
    pub linger: Duration,
    pub max_requests_in_flight: usize,
    pub send_timeout: Duration,
    pub call_timeout: Duration,
}

impl ProducerSettings {
    pub(crate) fn from_config(config: &KinesisConfig) -> Self {
        ProducerSettings {
            max_record_bytes: config.max_record_bytes,
            aggregate: config.aggregate,
            aggregate_max_bytes: config.aggregate_max_bytes,
            linger: config.linger,
            max_requests_in_flight: config.max_requests_in_flight,
            send_timeout: config.send_timeout,
            call_timeout: config.timeout,
        }
    }

    /// The largest event (key + payload + headers) that fits a record whatever its key: the
    /// record limit less a spread key.
    pub(crate) fn max_event_bytes(&self) -> usize {
        self.max_record_bytes - envelope::SPREAD_KEY_LEN
    }
}

/// A `PutRecords` call for records given as partition key and data. The data is shared with
/// the record the producer keeps for a retry, not copied.
fn put_records<'a>(
    client: &Client,
    stream: &str,
    records: impl Iterator<Item = (&'a PartitionKey, &'a Bytes)>,
) -> aws_sdk_kinesis::operation::put_records::builders::PutRecordsFluentBuilder {
    let entries: Vec<PutRecordsRequestEntry> = records
        .map(|(partition_key, data)| {
            PutRecordsRequestEntry::builder()
                .partition_key(partition_key.as_str())
                .data(Blob::from_maybe_shared(data.clone()))
                .build()
                .expect("partition key and data are set")
        })
        .collect();
    client
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
}

/// One record as the driver queues it.
struct Prepared {
    partition_key: PartitionKey,
    data: Bytes,
    /// For a record the service refused on the direct path.
    retry: Option<Retry>,
}

/// When a record refused on the direct path may go again, and until when it is retried.
#[derive(Clone, Copy)]
struct Retry {
    not_before: Instant,
    deadline: Instant,
}

struct Submit {
    records: Vec<Prepared>,
    reply: oneshot::Sender<Result<Vec<Receipt>>>,
}

enum Command {
    Submit(Submit),
    Flush(oneshot::Sender<()>),
}

/// A tributary producer for one stream.
pub(crate) struct KinesisProducer {
    client: Client,
    shared: Arc<Shared>,
    stream: String,
    settings: ProducerSettings,
    commands: mpsc::Sender<Command>,
    gate: CloseGate,
    spread: AtomicU64,
}

impl KinesisProducer {
    pub(crate) fn start(client: Client, stream: &str, settings: ProducerSettings) -> Self {
        let (commands, receiver) = mpsc::channel(256);
        let shared = Shared::new();
        tokio::spawn(
            Driver::new(
                client.clone(),
                stream,
                settings.clone(),
                receiver,
                shared.clone(),
            )
            .run(),
        );
        KinesisProducer {
            client,
            shared,
            stream: stream.to_owned(),
            settings,
            commands,
            gate: CloseGate::new(format!("Kinesis producer for `{stream}`")),
            // Spread keys of two producers must not follow the same sequence, or keyless
            // events of both would crowd the same shards.
            spread: AtomicU64::new(random_seed()),
        }
    }

    /// Takes the event: its key and payload are the record's, not copies (see
    /// [`envelope::encode_owned`]).
    fn prepare(&self, event: Event) -> Result<Prepared> {
        let event_bytes = event.encoded_len();
        let encoded = envelope::encode_owned(event, || self.spread.fetch_add(1, Ordering::Relaxed));
        let size = encoded.size();
        if size > self.settings.max_record_bytes {
            return Err(Error::too_large(format!(
                "event of {event_bytes} bytes is a record of {size} bytes (data and partition key) on `{}`, over the stream's limit of {} bytes (option `max_record_bytes`)",
                self.stream, self.settings.max_record_bytes
            )));
        }
        Ok(Prepared {
            partition_key: encoded.partition_key,
            data: encoded.data,
            retry: None,
        })
    }

    async fn submit(&self, records: Vec<Prepared>) -> Result<Vec<Receipt>> {
        self.shared.state.lock().driver_records += records.len();
        self.submit_counted(records).await
    }

    /// Hands records already counted in `driver_records` to the driver.
    async fn submit_counted(&self, records: Vec<Prepared>) -> Result<Vec<Receipt>> {
        let (reply, receipts) = oneshot::channel();
        // Uncounted again if this is dropped before the driver has them.
        let mut handing = Handing {
            shared: &self.shared,
            count: records.len(),
        };
        self.commands
            .send(Command::Submit(Submit { records, reply }))
            .await
            .map_err(|_| self.driver_gone())?;
        handing.count = 0;
        receipts.await.map_err(|_| self.driver_gone())?
    }

    fn driver_gone(&self) -> Error {
        Error::closed(format!("Kinesis producer for `{}` stopped", self.stream))
    }

    async fn flush_queue(&self) -> Result<()> {
        let mark = self.shared.state.lock().next_direct;
        let (done, wait) = oneshot::channel();
        self.commands
            .send(Command::Flush(done))
            .await
            .map_err(|_| self.driver_gone())?;
        wait.await.map_err(|_| self.driver_gone())?;
        // Direct sends begun before the flush, with any records they handed to the driver
        // since.
        self.shared.direct_before(mark).await;
        Ok(())
    }
}

#[async_trait]
impl Producer for KinesisProducer {
    async fn send(&self, event: Event) -> Result<Receipt> {
        let _pass = self.gate.enter().await?;
        let prepared = self.prepare(event)?;
        let mut receipts = self.submit(vec![prepared]).await?;
        Ok(receipts.pop().unwrap_or_default())
    }

    async fn send_batch(&self, events: Vec<Event>) -> Result<Vec<Receipt>> {
        let _pass = self.gate.enter().await?;
        // Sized up front: collecting `Result`s loses the size hint, and growing a vector of 500
        // records by doubling cost 7 reallocations (copies of up to 28 KiB) per call, about
        // 100 instructions per event.
        let mut prepared = Vec::with_capacity(events.len());
        for event in events {
            prepared.push(self.prepare(event)?);
        }
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        match self.try_direct(prepared).await {
            Ok(done) => done,
            Err(prepared) => self.submit(prepared).await,
        }
    }

    async fn flush(&self) -> Result<()> {
        let _pass = self.gate.enter().await?;
        self.flush_queue().await
    }

    async fn close(&self) -> Result<()> {
        if self.gate.close().await {
            self.flush_queue().await?;
        }
        Ok(())
    }
}

/// Records counted as the driver's while they are on their way to it.
struct Handing<'a> {
    shared: &'a Shared,
    count: usize,
}

impl Drop for Handing<'_> {
    fn drop(&mut self) {
        if self.count > 0 {
            self.shared.state.lock().driver_records -= self.count;
        }
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests;
