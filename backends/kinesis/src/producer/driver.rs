//! The producer's driver task: plans PutRecords calls that keep each partition key's records
//! in order, sends them, and retries what the service refused, with backoff.

use super::direct::Shared;
use super::*;

pub(super) struct SubmitState {
    /// Filled in place as records settle; a record that failed keeps the default (the reply
    /// has then already carried its error).
    pub(super) receipts: Vec<Receipt>,
    pub(super) missing: usize,
    pub(super) reply: Option<oneshot::Sender<Result<Vec<Receipt>>>>,
}

/// What one `PutRecords` entry carries: one record, or several of one partition key
/// aggregated. The records stay in the queue (as sent); the unit names them.
pub(super) struct Unit {
    pub(super) partition_key: PartitionKey,
    pub(super) data: Bytes,
    /// The queue numbers of its records, in sub-sequence order: the first, and those
    /// aggregated with it (none for a plain record, so no allocation).
    pub(super) first: u64,
    pub(super) more: Vec<u64>,
    pub(super) aggregated: bool,
}

impl Unit {
    pub(super) fn seqs(&self) -> impl Iterator<Item = u64> + use<'_> {
        std::iter::once(self.first).chain(self.more.iter().copied())
    }
}

/// A unit being planned: the queue numbers of its records, and their aggregate.
pub(super) struct Plan {
    pub(super) first: u64,
    pub(super) more: Vec<u64>,
    pub(super) aggregator: Option<Aggregator>,
    /// Bytes it counts against the call's limit (data and partition key).
    pub(super) size: usize,
    /// Closed to further records (full).
    pub(super) closed: bool,
}

/// The hasher of the driver's key sets (and of its shard names). SipHash, the standard one,
/// resists collision flooding by whoever chooses the keys, and partition keys may well come
/// from untrusted input. foldhash is several times cheaper on keys this short and is also
/// seeded at random per process, so colliding keys cannot be computed in advance; and the
/// damage a flood could do here is bounded: the sets hold the keys of at most
/// `MAX_QUEUED_RECORDS` queued records (in flight) and of one call (500), so the worst case
/// is a slower producer, not an unbounded one.
pub(super) type KeyHasher = foldhash::fast::RandomState;

pub(super) type CallResult =
    std::result::Result<aws_sdk_kinesis::operation::put_records::PutRecordsOutput, Error>;

pub(super) struct Driver {
    pub(super) client: Client,
    pub(super) stream: String,
    pub(super) settings: ProducerSettings,
    pub(super) receiver: mpsc::Receiver<Command>,
    /// Queued records by arrival order (a retried record keeps its place).
    pub(super) queue: Queue,
    pub(super) submits: BTreeMap<u64, SubmitState>,
    /// The keys in flight (from either path) and the calls out, shared with direct sends.
    pub(super) shared: Arc<Shared>,
    /// The `PutRecords` calls out, each its own task (so that encoding, signing and reading
    /// the answers of several calls use every worker thread, not only the driver's), and the
    /// units each carries. Dropping the driver aborts them.
    pub(super) calls: JoinSet<CallResult>,
    pub(super) in_flight: HashMap<tokio::task::Id, Vec<Unit>>,
    /// Shard ids as partition ids, made once each.
    pub(super) partitions: HashMap<String, PartitionId, KeyHasher>,
    /// Flushes waiting for every submit before the given one to settle.
    pub(super) flushes: Vec<(u64, oneshot::Sender<()>)>,
    /// The earliest end of a retry's backoff, when some record is backing off.
    pub(super) next_retry: Option<Instant>,
    pub(super) next_submit: u64,
    /// Records accepted and not yet settled.
    pub(super) queued: usize,
    /// Records settled in this pass, to take off `driver_records` under one lock.
    pub(super) settled: usize,
}

impl Driver {
    pub(super) fn new(
        client: Client,
        stream: &str,
        settings: ProducerSettings,
        receiver: mpsc::Receiver<Command>,
        shared: Arc<Shared>,
    ) -> Self {
        Driver {
            client,
            stream: stream.to_owned(),
            settings,
            receiver,
            queue: Queue::new(),
            submits: BTreeMap::new(),
            shared,
            calls: JoinSet::new(),
            in_flight: HashMap::new(),
            partitions: HashMap::default(),
            flushes: Vec::new(),
            next_retry: None,
            next_submit: 0,
            queued: 0,
            settled: 0,
        }
    }

    pub(super) async fn run(mut self) {
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
            while linger_over
                && self.shared.state.lock().calls_out < self.settings.max_requests_in_flight
            {
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
                // A direct send freed keys or a call slot.
                _ = self.shared.wake.notified(), if self.queue.waiting() > 0 => {}
            }
        }
    }

    pub(super) fn accept(&mut self, submit: Submit) {
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
                attempts: u32::from(record.retry.is_some()),
                not_before: record.retry.map(|r| r.not_before),
                deadline: record.retry.map_or(deadline, |r| r.deadline),
            });
        }
        self.queued += count;
        self.submits.insert(
            id,
            SubmitState {
                receipts: vec![Receipt::default(); count],
                missing: count,
                reply: Some(submit.reply),
            },
        );
    }

    /// Takes the next call's records from the queue, oldest first. A partition key that is in
    /// flight or backing off holds back every later record of that key, and a call carries at
    /// most one unit per key.
    ///
    /// A key is marked busy as soon as it is planned, so that the one set that lives across
    /// calls also keeps a call to one unit per key: the per-call set of blocked keys then only
    /// holds keys held back by a backoff or a full aggregate, and stays empty (unallocated) in
    /// the common case. Building a 500-key set per call cost five growths of 1 KiB or more, and
    /// each such request makes glibc consolidate its fast bins, which the profile showed.
    pub(super) fn next_call(&mut self, now: Instant) -> Option<Vec<Unit>> {
        let mut blocked: HashSet<&[u8], KeyHasher> = HashSet::default();
        let mut plans: Vec<Plan> = Vec::new();
        let mut open_plan: HashMap<&[u8], usize, KeyHasher> = HashMap::default();
        let mut bytes = 0;
        let mut shared = self.shared.state.lock();
        for (seq, entry) in self.queue.iter_waiting() {
            let key = entry.partition_key.as_bytes();
            if blocked.contains(key) {
                continue;
            }
            let planned = open_plan.get(key).copied();
            // In flight, or already planned into this call as a plain record.
            if planned.is_none() && shared.busy.contains(key) {
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
            if let Some(i) = planned {
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
            shared.busy.insert(key);
            if self.settings.aggregate
                && Aggregator::new().size_with(&user()) + key.len()
                    <= self.settings.aggregate_max_bytes
            {
                open_plan.insert(key, plans.len() - 1);
            }
        }
        drop(shared);
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
                unit
            })
            .collect();
        Some(units)
    }

    /// Starts a `PutRecords` call carrying `units`.
    pub(super) fn call(&mut self, units: Vec<Unit>) {
        let request = put_records(
            &self.client,
            &self.stream,
            units.iter().map(|u| (&u.partition_key, &u.data)),
        )
        .send();
        let timeout = self.settings.call_timeout;
        let stream = self.stream.clone();
        self.shared.state.lock().calls_out += 1;
        let task = self.calls.spawn(async move {
            let what = format!("put records on stream `{stream}`");
            timed(timeout, &what, request).await
        });
        self.in_flight.insert(task.id(), units);
    }

    /// A call's task ended: its answer, or (should the task panic) a retryable failure of all
    /// it carried, so that no record is lost and no sender left waiting.
    pub(super) fn joined(
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
                ))),
            ),
        };
        self.shared.state.lock().calls_out -= 1;
        let units = self.in_flight.remove(&id).unwrap_or_default();
        self.settle(units, result);
    }

    pub(super) fn settle(&mut self, units: Vec<Unit>, result: CallResult) {
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
                        ));
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
                            ));
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
        if self.settled > 0 {
            self.shared.state.lock().driver_records -= std::mem::take(&mut self.settled);
        }
        self.settle_flushes();
    }

    pub(super) fn stored(&mut self, unit: Unit, shard: &str, sequence: &str) {
        let partition = match self.partitions.get(shard) {
            Some(p) => p.clone(),
            None => {
                let p = PartitionId::new(shard);
                self.partitions.insert(shard.to_owned(), p.clone());
                p
            }
        };
        self.shared
            .state
            .lock()
            .busy
            .remove(unit.partition_key.as_bytes());
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

    pub(super) fn retry_or_fail(
        &mut self,
        unit: Unit,
        error: &Error,
        retryable: bool,
        longest: Duration,
        now: Instant,
    ) {
        self.shared
            .state
            .lock()
            .busy
            .remove(unit.partition_key.as_bytes());
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
            self.resolve(entry.submit, entry.index, Err(failure));
        }
    }

    pub(super) fn resolve(&mut self, submit: u64, index: usize, result: Result<Receipt>) {
        self.queued = self.queued.saturating_sub(1);
        self.settled += 1;
        let Some(state) = self.submits.get_mut(&submit) else {
            return;
        };
        state.missing -= 1;
        match result {
            Ok(receipt) => state.receipts[index] = receipt,
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
                let _ = reply.send(Ok(state.receipts));
            }
        }
    }

    /// Answers the flushes whose submits have all settled.
    pub(super) fn settle_flushes(&mut self) {
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
pub(super) fn backoff(attempts: u32, longest: Duration) -> Duration {
    let base = FIRST_BACKOFF.saturating_mul(1 << attempts.saturating_sub(1).min(10));
    let capped = base.min(longest);
    let jitter = (random_seed() % 1000) as f64 / 1000.0;
    capped.mul_f64(0.5 + jitter / 2.0)
}

pub(super) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
