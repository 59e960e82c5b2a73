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
//! One driver task per producer owns the queue; `send` and `send_batch` hand their records to
//! it through a bounded channel and wait for their receipts, so a slow stream pushes back on
//! senders instead of growing memory.

mod queue;

use std::collections::{BTreeMap, HashMap, HashSet};
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

/// One record as the driver queues it.
struct Prepared {
    partition_key: PartitionKey,
    data: Bytes,
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
    stream: String,
    settings: ProducerSettings,
    commands: mpsc::Sender<Command>,
    gate: CloseGate,
    spread: AtomicU64,
}

impl KinesisProducer {
    pub(crate) fn start(client: Client, stream: &str, settings: ProducerSettings) -> Self {
        let (commands, receiver) = mpsc::channel(256);
        tokio::spawn(Driver::new(client, stream, settings.clone(), receiver).run());
        KinesisProducer {
            stream: stream.to_owned(),
            settings,
            commands,
            gate: CloseGate::new(format!("Kinesis producer for `{stream}`")),
            // Spread keys of two producers must not follow the same sequence, or keyless
            // events of both would crowd the same shards.
            spread: AtomicU64::new(random_seed()),
        }
    }

    fn prepare(&self, event: &Event) -> Result<Prepared> {
        let encoded = envelope::encode(event, || self.spread.fetch_add(1, Ordering::Relaxed));
        let size = encoded.size();
        if size > self.settings.max_record_bytes {
            return Err(Error::too_large(format!(
                "event of {} bytes is a record of {size} bytes (data and partition key) on `{}`, over the stream's limit of {} bytes (option `max_record_bytes`)",
                event.encoded_len(),
                self.stream,
                self.settings.max_record_bytes
            ))
            .with_backend("kinesis"));
        }
        Ok(Prepared {
            partition_key: encoded.partition_key,
            data: encoded.data,
        })
    }

    async fn submit(&self, records: Vec<Prepared>) -> Result<Vec<Receipt>> {
        let (reply, receipts) = oneshot::channel();
        self.commands
            .send(Command::Submit(Submit { records, reply }))
            .await
            .map_err(|_| self.driver_gone())?;
        receipts.await.map_err(|_| self.driver_gone())?
    }

    fn driver_gone(&self) -> Error {
        Error::closed(format!("Kinesis producer for `{}` stopped", self.stream))
            .with_backend("kinesis")
    }

    async fn flush_queue(&self) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.commands
            .send(Command::Flush(done))
            .await
            .map_err(|_| self.driver_gone())?;
        wait.await.map_err(|_| self.driver_gone())
    }
}

#[async_trait]
impl Producer for KinesisProducer {
    async fn send(&self, event: Event) -> Result<Receipt> {
        let _pass = self
            .gate
            .enter()
            .await
            .map_err(|e| e.with_backend("kinesis"))?;
        let prepared = self.prepare(&event)?;
        let mut receipts = self.submit(vec![prepared]).await?;
        Ok(receipts.pop().unwrap_or_default())
    }

    async fn send_batch(&self, events: Vec<Event>) -> Result<Vec<Receipt>> {
        let _pass = self
            .gate
            .enter()
            .await
            .map_err(|e| e.with_backend("kinesis"))?;
        let prepared = events
            .iter()
            .map(|e| self.prepare(e))
            .collect::<Result<Vec<_>>>()?;
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        self.submit(prepared).await
    }

    async fn flush(&self) -> Result<()> {
        let _pass = self
            .gate
            .enter()
            .await
            .map_err(|e| e.with_backend("kinesis"))?;
        self.flush_queue().await
    }

    async fn close(&self) -> Result<()> {
        if self.gate.close().await {
            self.flush_queue().await?;
        }
        Ok(())
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

struct SubmitState {
    receipts: Vec<Option<Receipt>>,
    missing: usize,
    reply: Option<oneshot::Sender<Result<Vec<Receipt>>>>,
}

/// What one `PutRecords` entry carries: one record, or several of one partition key
/// aggregated. The records stay in the queue (as sent); the unit names them.
struct Unit {
    partition_key: PartitionKey,
    data: Bytes,
    /// The queue numbers of its records, in sub-sequence order: the first, and those
    /// aggregated with it (none for a plain record, so no allocation).
    first: u64,
    more: Vec<u64>,
    aggregated: bool,
}

impl Unit {
    fn seqs(&self) -> impl Iterator<Item = u64> + use<'_> {
        std::iter::once(self.first).chain(self.more.iter().copied())
    }
}

/// A unit being planned: the queue numbers of its records, and their aggregate.
struct Plan {
    first: u64,
    more: Vec<u64>,
    aggregator: Option<Aggregator>,
    /// Bytes it counts against the call's limit (data and partition key).
    size: usize,
    /// Closed to further records (full).
    closed: bool,
}

type CallResult =
    std::result::Result<aws_sdk_kinesis::operation::put_records::PutRecordsOutput, Error>;

struct Driver {
    client: Client,
    stream: String,
    settings: ProducerSettings,
    receiver: mpsc::Receiver<Command>,
    /// Queued records by arrival order (a retried record keeps its place).
    queue: Queue,
    submits: BTreeMap<u64, SubmitState>,
    /// Partition keys with a record in flight.
    busy: HashSet<PartitionKey>,
    /// The `PutRecords` calls out, each its own task (so that encoding, signing and reading
    /// the answers of several calls use every worker thread, not only the driver's), and the
    /// units each carries. Dropping the driver aborts them.
    calls: JoinSet<CallResult>,
    in_flight: HashMap<tokio::task::Id, Vec<Unit>>,
    /// Shard ids as partition ids, made once each.
    partitions: HashMap<String, PartitionId>,
    /// Flushes waiting for every submit before the given one to settle.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    /// The earliest end of a retry's backoff, when some record is backing off.
    next_retry: Option<Instant>,
    next_submit: u64,
    /// Records accepted and not yet settled.
    queued: usize,
}

impl Driver {
    fn new(
        client: Client,
        stream: &str,
        settings: ProducerSettings,
        receiver: mpsc::Receiver<Command>,
    ) -> Self {
        Driver {
            client,
            stream: stream.to_owned(),
            settings,
            receiver,
            queue: Queue::new(),
            submits: BTreeMap::new(),
            busy: HashSet::new(),
            calls: JoinSet::new(),
            in_flight: HashMap::new(),
            partitions: HashMap::new(),
            flushes: Vec::new(),
            next_retry: None,
            next_submit: 0,
            queued: 0,
        }
    }

    async fn run(mut self) {
        let mut open = true;
        loop {
            let now = Instant::now();
            let flushing = !self.flushes.is_empty() || !open;
            // Linger only while calls are out: an idle producer sends at once, a busy one
            // lets records gather into fuller calls.
            let oldest = self.queue.oldest_waiting().map(|e| e.arrived);
            let linger_over = self.calls.is_empty()
                || flushing
                || self.queue.waiting() >= PUT_RECORDS_MAX_COUNT
                || oldest.is_some_and(|t| now.duration_since(t) >= self.settings.linger);
            if linger_over && self.next_retry.is_none_or(|t| t <= now) {
                self.next_retry = None;
            }
            while self.calls.len() < self.settings.max_requests_in_flight && linger_over {
                let Some(units) = self.next_call(now) else {
                    break;
                };
                self.call(units);
            }
            if !open && self.queue.waiting() == 0 && self.calls.is_empty() {
                self.settle_flushes();
                return;
            }
            let linger_end = (!linger_over)
                .then(|| oldest.map(|t| t + self.settings.linger))
                .flatten();
            let wake = match (self.next_retry, linger_end) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let accepting =
                open && self.queued < MAX_QUEUED_RECORDS && self.queue.len() < MAX_QUEUE_SLOTS;
            tokio::select! {
                command = self.receiver.recv(), if accepting => match command {
                    Some(Command::Submit(submit)) => self.accept(submit),
                    Some(Command::Flush(done)) => {
                        self.flushes.push((self.next_submit, done));
                        self.settle_flushes();
                    }
                    None => open = false,
                },
                Some(joined) = self.calls.join_next_with_id(), if !self.calls.is_empty() => {
                    self.joined(joined)
                }
                _ = sleep_until(wake), if wake.is_some() => {}
            }
        }
    }

    fn accept(&mut self, submit: Submit) {
        let id = self.next_submit;
        self.next_submit += 1;
        let now = Instant::now();
        let deadline = now + self.settings.send_timeout;
        let count = submit.records.len();
        for (index, record) in submit.records.into_iter().enumerate() {
            self.queue.push(Entry {
                submit: id,
                index,
                partition_key: record.partition_key,
                data: record.data,
                arrived: now,
                attempts: 0,
                not_before: None,
                deadline,
            });
        }
        self.queued += count;
        self.submits.insert(
            id,
            SubmitState {
                receipts: vec![None; count],
                missing: count,
                reply: Some(submit.reply),
            },
        );
    }

    /// Takes the next call's records from the queue, oldest first. A partition key that is in
    /// flight or backing off holds back every later record of that key, and a call carries at
    /// most one unit per key.
    fn next_call(&mut self, now: Instant) -> Option<Vec<Unit>> {
        let mut blocked: HashSet<&[u8]> = HashSet::new();
        let mut plans: Vec<Plan> = Vec::new();
        let mut open_plan: HashMap<&[u8], usize> = HashMap::new();
        let mut bytes = 0;
        for (seq, entry) in self.queue.iter_waiting() {
            let key = entry.partition_key.as_bytes();
            if blocked.contains(key) || self.busy.contains(key) {
                blocked.insert(key);
                continue;
            }
            if let Some(until) = entry.not_before.filter(|t| *t > now) {
                self.next_retry = Some(self.next_retry.map_or(until, |t| t.min(until)));
                blocked.insert(key);
                continue;
            }
            let user = || UserRecord {
                partition_key: entry.partition_key.to_string(),
                explicit_hash_key: None,
                data: entry.data.clone(),
            };
            if let Some(&i) = open_plan.get(key) {
                // Aggregating: the record joins its key's aggregate while it fits.
                let plan = &mut plans[i];
                let aggregator = plan.aggregator.get_or_insert_with(|| {
                    let mut first = Aggregator::new();
                    let head = self.queue.get(plan.first).expect("planned from the queue");
                    first.add(&UserRecord {
                        partition_key: head.partition_key.to_string(),
                        explicit_hash_key: None,
                        data: head.data.clone(),
                    });
                    first
                });
                let user = user();
                let size = aggregator.size_with(&user) + key.len();
                if plan.closed
                    || size > self.settings.aggregate_max_bytes
                    || bytes - plan.size + size > PUT_RECORDS_MAX_BYTES
                {
                    plan.closed = true;
                    blocked.insert(key);
                    continue;
                }
                aggregator.add(&user);
                bytes = bytes - plan.size + size;
                plan.size = size;
                plan.more.push(seq);
                continue;
            }
            let size = key.len() + entry.data.len();
            if plans.len() >= PUT_RECORDS_MAX_COUNT || bytes + size > PUT_RECORDS_MAX_BYTES {
                break;
            }
            bytes += size;
            if plans.is_empty() {
                plans.reserve(self.queue.waiting().min(PUT_RECORDS_MAX_COUNT));
            }
            plans.push(Plan {
                first: seq,
                more: Vec::new(),
                aggregator: None,
                size,
                closed: false,
            });
            if self.settings.aggregate
                && Aggregator::new().size_with(&user()) + key.len()
                    <= self.settings.aggregate_max_bytes
            {
                open_plan.insert(key, plans.len() - 1);
            } else {
                blocked.insert(key);
            }
        }
        if plans.is_empty() {
            return None;
        }
        let units = plans
            .into_iter()
            .map(|plan| {
                let head = self.queue.get(plan.first).expect("planned from the queue");
                let partition_key = head.partition_key.clone();
                // A lone record goes plain, readable by any client.
                let (data, aggregated) = match plan.aggregator {
                    Some(mut aggregator) if !plan.more.is_empty() => (aggregator.finish(), true),
                    _ => (head.data.clone(), false),
                };
                let unit = Unit {
                    partition_key,
                    data,
                    first: plan.first,
                    more: plan.more,
                    aggregated,
                };
                for seq in unit.seqs() {
                    self.queue.mark_sent(seq);
                }
                self.busy.insert(unit.partition_key.clone());
                unit
            })
            .collect();
        Some(units)
    }

    /// Starts a `PutRecords` call carrying `units`.
    fn call(&mut self, units: Vec<Unit>) {
        let entries: Vec<PutRecordsRequestEntry> = units
            .iter()
            .map(|u| {
                PutRecordsRequestEntry::builder()
                    .partition_key(u.partition_key.as_str())
                    .data(Blob::new(u.data.to_vec()))
                    .build()
                    .expect("partition key and data are set")
            })
            .collect();
        let request = self
            .client
            .put_records()
            .stream_name(&self.stream)
            .set_records(Some(entries))
            .send();
        let timeout = self.settings.call_timeout;
        let stream = self.stream.clone();
        let task = self.calls.spawn(async move {
            let what = format!("put records on stream `{stream}`");
            timed(timeout, &what, request).await
        });
        self.in_flight.insert(task.id(), units);
    }

    /// A call's task ended: its answer, or (should the task panic) a retryable failure of all
    /// it carried, so that no record is lost and no sender left waiting.
    fn joined(
        &mut self,
        joined: std::result::Result<(tokio::task::Id, CallResult), tokio::task::JoinError>,
    ) {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(failed) => (
                failed.id(),
                Err(Error::unavailable(format!(
                    "put records on stream `{}`: the call's task failed: {failed}",
                    self.stream
                ))
                .with_backend("kinesis")),
            ),
        };
        let units = self.in_flight.remove(&id).unwrap_or_default();
        self.settle(units, result);
    }

    fn settle(&mut self, units: Vec<Unit>, result: CallResult) {
        let now = Instant::now();
        match result {
            Ok(output) => {
                let results = output.records();
                for (i, unit) in units.into_iter().enumerate() {
                    let Some(result) = results.get(i) else {
                        let error = Error::unavailable(format!(
                            "put records on stream `{}`: the answer has {} results for more records",
                            self.stream,
                            results.len(),
                        ))
                        .with_backend("kinesis");
                        self.retry_or_fail(unit, &error, true, MAX_BACKOFF, now);
                        continue;
                    };
                    match (
                        result.error_code(),
                        result.sequence_number(),
                        result.shard_id(),
                    ) {
                        (None, Some(sequence), Some(shard)) => self.stored(unit, shard, sequence),
                        (code, _, _) => {
                            let code = code.unwrap_or("MissingSequenceNumber");
                            let error = Error::unavailable(format!(
                                "put records on stream `{}`: record refused with {code}: {}",
                                self.stream,
                                result.error_message().unwrap_or("")
                            ))
                            .with_backend("kinesis");
                            let retryable = record_error_retryable(code);
                            self.retry_or_fail(unit, &error, retryable, MAX_RECORD_BACKOFF, now);
                        }
                    }
                }
            }
            Err(error) => {
                let retryable = error.is_retryable();
                for unit in units {
                    self.retry_or_fail(unit, &error, retryable, MAX_BACKOFF, now);
                }
            }
        }
        self.settle_flushes();
    }

    fn stored(&mut self, unit: Unit, shard: &str, sequence: &str) {
        let partition = match self.partitions.get(shard) {
            Some(p) => p.clone(),
            None => {
                let p = PartitionId::new(shard);
                self.partitions.insert(shard.to_owned(), p.clone());
                p
            }
        };
        self.busy.remove(&unit.partition_key);
        for (sub, seq) in unit.seqs().enumerate() {
            let Some(entry) = self.queue.settle(seq) else {
                continue;
            };
            let position = if unit.aggregated {
                Position::new(format!("{sequence}:{sub}"))
            } else {
                Position::new(sequence)
            };
            self.resolve(
                entry.submit,
                entry.index,
                Ok(Receipt {
                    partition: Some(partition.clone()),
                    position: Some(position),
                }),
            );
        }
    }

    fn retry_or_fail(
        &mut self,
        unit: Unit,
        error: &Error,
        retryable: bool,
        longest: Duration,
        now: Instant,
    ) {
        self.busy.remove(&unit.partition_key);
        for seq in unit.seqs() {
            let Some(entry) = self.queue.sent_mut(seq) else {
                continue;
            };
            entry.attempts += 1;
            let wait = backoff(entry.attempts, longest);
            if retryable && now + wait < entry.deadline {
                let until = now + wait;
                entry.not_before = Some(until);
                self.next_retry = Some(self.next_retry.map_or(until, |t| t.min(until)));
                self.queue.requeue(seq);
                continue;
            }
            let attempts = entry.attempts;
            let entry = self.queue.settle(seq).expect("present");
            let failure = if retryable {
                Error::timeout(format!(
                    "put records on stream `{}`: not stored after {attempts} attempts within {:?} (option `send_timeout`); last error: {}",
                    self.stream,
                    self.settings.send_timeout,
                    error.message()
                ))
            } else {
                Error::new(error.kind(), error.message()).with_retryable(false)
            };
            self.resolve(
                entry.submit,
                entry.index,
                Err(failure.with_backend("kinesis")),
            );
        }
    }

    fn resolve(&mut self, submit: u64, index: usize, result: Result<Receipt>) {
        self.queued = self.queued.saturating_sub(1);
        let Some(state) = self.submits.get_mut(&submit) else {
            return;
        };
        state.missing -= 1;
        match result {
            Ok(receipt) => state.receipts[index] = Some(receipt),
            Err(error) => {
                // The batch fails with its first error; its other records still settle (and
                // may be stored), as `send_batch` allows.
                if let Some(reply) = state.reply.take() {
                    let _ = reply.send(Err(error));
                }
            }
        }
        if state.missing == 0 {
            let state = self.submits.remove(&submit).expect("present");
            if let Some(reply) = state.reply {
                let receipts = state
                    .receipts
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect();
                let _ = reply.send(Ok(receipts));
            }
        }
    }

    /// Answers the flushes whose submits have all settled.
    fn settle_flushes(&mut self) {
        let oldest_open = self.submits.keys().next().copied().unwrap_or(u64::MAX);
        let (done, waiting): (Vec<_>, Vec<_>) = self
            .flushes
            .drain(..)
            .partition(|(upto, _)| *upto <= oldest_open);
        self.flushes = waiting;
        for (_, reply) in done {
            let _ = reply.send(());
        }
    }
}

/// Exponential backoff with jitter: 50 ms, 100 ms, … up to `longest`.
fn backoff(attempts: u32, longest: Duration) -> Duration {
    let base = FIRST_BACKOFF.saturating_mul(1 << attempts.saturating_sub(1).min(10));
    let capped = base.min(longest);
    let jitter = (random_seed() % 1000) as f64 / 1000.0;
    capped.mul_f64(0.5 + jitter / 2.0)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(aggregate: bool) -> ProducerSettings {
        ProducerSettings {
            max_record_bytes: 1 << 20,
            aggregate,
            aggregate_max_bytes: 1_000,
            linger: Duration::from_millis(5),
            max_requests_in_flight: 8,
            send_timeout: Duration::from_secs(60),
            call_timeout: Duration::from_secs(5),
        }
    }

    fn driver(aggregate: bool) -> Driver {
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
            .build();
        let (_, receiver) = mpsc::channel(1);
        Driver::new(
            Client::from_conf(config),
            "s",
            settings(aggregate),
            receiver,
        )
    }

    fn submit(driver: &mut Driver, records: &[(&str, usize)]) {
        let (reply, _) = oneshot::channel();
        driver.accept(Submit {
            records: records
                .iter()
                .map(|(key, size)| Prepared {
                    partition_key: PartitionKey::from(*key),
                    data: Bytes::from(vec![b'x'; *size]),
                })
                .collect(),
            reply,
        });
    }

    fn keys(units: &[Unit]) -> Vec<(String, usize)> {
        units
            .iter()
            .map(|u| (u.partition_key.to_string(), u.seqs().count()))
            .collect()
    }

    #[test]
    fn a_call_carries_one_record_per_key_and_the_next_waits_for_it() {
        let mut d = driver(false);
        submit(&mut d, &[("a", 1), ("a", 1), ("b", 1), ("a", 1), ("c", 1)]);
        let now = Instant::now();
        let first = d.next_call(now).unwrap();
        assert_eq!(
            keys(&first),
            [("a".into(), 1), ("b".into(), 1), ("c".into(), 1)]
        );
        // a, b and c are in flight: the second a waits.
        assert!(d.next_call(now).is_none());
        let error = Error::unavailable("throttled");
        // The first a is refused: it goes back in its place and backs off; the later a's wait.
        let mut units = first.into_iter();
        let a = units.next().unwrap();
        d.retry_or_fail(a, &error, true, MAX_RECORD_BACKOFF, now);
        for unit in units {
            d.stored(unit, "shardId-000000000000", "1");
        }
        assert!(
            d.next_call(now).is_none(),
            "nothing of a may pass the backing-off a"
        );
        let later = now + MAX_BACKOFF;
        let retry = d.next_call(later).unwrap();
        assert_eq!(keys(&retry), [("a".into(), 1)]);
        assert_eq!(
            d.queue.get(retry[0].first).unwrap().index,
            0,
            "the refused record goes first"
        );
    }

    #[test]
    fn calls_stay_within_500_records_and_5_mib() {
        let mut d = driver(false);
        let many: Vec<(String, usize)> = (0..600).map(|i| (format!("k{i}"), 10)).collect();
        let refs: Vec<(&str, usize)> = many.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        submit(&mut d, &refs);
        assert_eq!(d.next_call(Instant::now()).unwrap().len(), 500);
        let mut d = driver(false);
        let big: Vec<(String, usize)> = (0..8).map(|i| (format!("k{i}"), 1 << 20)).collect();
        let refs: Vec<(&str, usize)> = big.iter().map(|(k, n)| (k.as_str(), *n - 2)).collect();
        submit(&mut d, &refs);
        assert_eq!(d.next_call(Instant::now()).unwrap().len(), 5);
    }

    #[test]
    fn aggregation_packs_one_keys_records_in_order_up_to_the_limit() {
        let mut d = driver(true);
        let records: Vec<(&str, usize)> = (0..30)
            .map(|i| (if i % 3 == 2 { "cold" } else { "hot" }, 50))
            .collect();
        submit(&mut d, &records);
        let units = d.next_call(Instant::now()).unwrap();
        // 1,000-byte aggregates: the hot key's first aggregate is full, its other records
        // wait for the next call, as does anything of a key already in this call.
        let hot = &units[0];
        assert_eq!(&*hot.partition_key, "hot");
        assert!(
            hot.aggregated && hot.data.len() <= 1_000,
            "{}",
            hot.data.len()
        );
        let indexes: Vec<usize> = hot.seqs().map(|s| d.queue.get(s).unwrap().index).collect();
        assert!(indexes.windows(2).all(|w| w[0] < w[1]), "{indexes:?}");
        assert_eq!(
            units.iter().filter(|u| &*u.partition_key == "hot").count(),
            1
        );
        let users = crate::kpl::deaggregate(&hot.data).unwrap();
        assert_eq!(users.len(), hot.seqs().count());
    }
}
