//! The direct path: a `send_batch` whose keys are all free makes its `PutRecords` call itself,
//! in the caller's task, and builds its receipts from the answer.
//!
//! Through the driver, each call's answer crossed three task hand-offs before the next call
//! could start (call task → driver → the application → driver), about 1.4 ms a call against a
//! raw client's 0.5 ms, which kept fewer calls out. Here nothing leaves the caller's task on
//! the common path. What the driver is good at stays with it: records of a key already in
//! flight, retries with backoff, aggregation and lingering.
//!
//! Per-key order holds because the direct path and the driver share one set of busy keys:
//! a batch goes direct only if none of its keys is in flight or queued anywhere (no record is
//! with the driver at all), and it marks them busy before its call starts. Records the service
//! refused with a retryable error go to the driver, with their backoff, before the batch
//! answers, so no later send of theirs can overtake them.

use std::collections::BTreeSet;
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::driver::{CallResult, KeyHasher, backoff};
use super::*;

/// What the driver and the direct sends share, under a short lock never held across an await.
pub(super) struct Shared {
    pub(super) state: Mutex<SharedState>,
    /// Wakes the driver when a direct send frees keys or a call slot while it holds records.
    pub(super) wake: Notify,
    /// Wakes flushes when a direct send ends.
    pub(super) direct_done: Notify,
}

pub(super) struct SharedState {
    /// Partition keys with a record in flight (or planned into a call being built).
    pub(super) busy: BusyKeys,
    /// `PutRecords` calls out, from either path.
    pub(super) calls_out: usize,
    /// Records handed to the driver (from the moment they are handed) and not yet settled.
    pub(super) driver_records: usize,
    /// Direct sends in progress, by number, for flushes to wait on.
    pub(super) direct: BTreeSet<u64>,
    pub(super) next_direct: u64,
}

impl Shared {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Shared {
            state: Mutex::new(SharedState {
                busy: BusyKeys::default(),
                calls_out: 0,
                driver_records: 0,
                direct: BTreeSet::new(),
                next_direct: 0,
            }),
            wake: Notify::new(),
            direct_done: Notify::new(),
        })
    }

    /// Waits until every direct send numbered below `mark` has ended.
    pub(super) async fn direct_before(&self, mark: u64) {
        loop {
            let notified = self.direct_done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self
                .state
                .lock()
                .direct
                .first()
                .is_none_or(|&id| id >= mark)
            {
                return;
            }
            notified.await;
        }
    }
}

/// A set of partition keys, kept as their seeded 64-bit hashes rather than the keys.
///
/// Keeping a key meant cloning its `Bytes` (an atomic count up and down, or, for a key whose
/// `Bytes` still owns a `Vec` or `String` exactly, a move to shared storage: an allocation),
/// and hashing and comparing its bytes on every insert and remove: about 210 instructions per
/// produced record (callgrind, 10,000 events), where a hash set of hashes costs one hash.
/// Two keys whose hashes collide (the seed is random per process, so they cannot be chosen)
/// count as one: the later waits for the earlier to be stored, which costs time, never order.
#[derive(Default)]
pub(super) struct BusyKeys {
    hashes: HashSet<u64, BuildHasherDefault<Prehashed>>,
    seed: KeyHasher,
}

impl BusyKeys {
    fn hash(&self, key: &[u8]) -> u64 {
        self.seed.hash_one(key)
    }

    /// Marks `key` busy; false if it (or a key of the same hash) already is.
    pub(super) fn insert(&mut self, key: &[u8]) -> bool {
        let hash = self.hash(key);
        self.hashes.insert(hash)
    }

    pub(super) fn contains(&self, key: &[u8]) -> bool {
        self.hashes.contains(&self.hash(key))
    }

    /// Frees `key`. Only its holder calls this: a colliding key is never inserted while the
    /// hash is busy, so the hash is this key's.
    pub(super) fn remove(&mut self, key: &[u8]) {
        let hash = self.hash(key);
        self.hashes.remove(&hash);
    }
}

/// The hasher of a set of hashes already seeded: it passes them through.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Call = Pin<Box<dyn Future<Output = CallResult> + Send>>;

/// A direct send's hold on its keys, its call slot and its place among the direct sends.
/// Dropped with its call out (the send cancelled), it lets the call finish in a task of its
/// own before the keys are free: the request may already be with the service, and a later
/// record of one of its keys must not overtake it.
struct Hold {
    shared: Arc<Shared>,
    records: Vec<Prepared>,
    id: u64,
    call: Option<Call>,
    slot: bool,
}

impl Hold {
    fn release(shared: &Shared, records: &[Prepared], id: u64, slot: bool) {
        let wake = {
            let mut state = shared.state.lock();
            for record in records {
                state.busy.remove(record.partition_key.as_bytes());
            }
            if slot {
                state.calls_out -= 1;
            }
            state.direct.remove(&id);
            state.driver_records > 0
        };
        if wake {
            shared.wake.notify_one();
        }
        shared.direct_done.notify_waiters();
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let records = std::mem::take(&mut self.records);
        match (self.call.take(), tokio::runtime::Handle::try_current()) {
            (Some(call), Ok(runtime)) => {
                let shared = self.shared.clone();
                let (id, slot) = (self.id, self.slot);
                runtime.spawn(async move {
                    let _ = call.await;
                    Hold::release(&shared, &records, id, slot);
                });
            }
            _ => Hold::release(&self.shared, &records, self.id, self.slot),
        }
    }
}

impl KinesisProducer {
    /// Sends `records` directly if they may go now; else gives them back for the driver.
    pub(super) async fn try_direct(
        &self,
        records: Vec<Prepared>,
    ) -> std::result::Result<Result<Vec<Receipt>>, Vec<Prepared>> {
        if self.settings.aggregate
            || records.len() > PUT_RECORDS_MAX_COUNT
            || records
                .iter()
                .map(|r| r.partition_key.as_bytes().len() + r.data.len())
                .sum::<usize>()
                > PUT_RECORDS_MAX_BYTES
        {
            return Err(records);
        }
        let id = {
            let mut state = self.shared.state.lock();
            if state.driver_records > 0 || state.calls_out >= self.settings.max_requests_in_flight {
                return Err(records);
            }
            // Marking the keys busy also finds a key twice in the batch (it would need a second
            // call, after the first is stored): that batch goes to the driver.
            for (i, record) in records.iter().enumerate() {
                if !state.busy.insert(record.partition_key.as_bytes()) {
                    for earlier in &records[..i] {
                        state.busy.remove(earlier.partition_key.as_bytes());
                    }
                    return Err(records);
                }
            }
            state.calls_out += 1;
            let id = state.next_direct;
            state.next_direct += 1;
            state.direct.insert(id);
            id
        };
        let mut hold = Hold {
            shared: self.shared.clone(),
            records,
            id,
            call: None,
            slot: true,
        };
        Ok(self.direct(&mut hold).await)
    }

    async fn direct(&self, hold: &mut Hold) -> Result<Vec<Receipt>> {
        let request = put_records(
            &self.client,
            &self.stream,
            hold.records.iter().map(|r| (&r.partition_key, &r.data)),
        )
        .send();
        let timeout = self.settings.call_timeout;
        let stream = self.stream.clone();
        // The send's retries (with the driver) end where they would have had it queued there.
        let deadline = Instant::now() + self.settings.send_timeout;
        hold.call = Some(Box::pin(async move {
            let what = format!("put records on stream `{stream}`");
            timed(timeout, &what, request).await
        }));
        let result = hold.call.as_mut().expect("just set").await;
        hold.call = None;
        // The call slot is free; the keys stay busy until every record is settled here or
        // queued with the driver.
        let wake = {
            let mut state = self.shared.state.lock();
            state.calls_out -= 1;
            hold.slot = false;
            state.driver_records > 0
        };
        if wake {
            self.shared.wake.notify_one();
        }
        let now = Instant::now();
        let (retry, attempts_backoff) = match result {
            Ok(output) => {
                let results = output.records();
                let mut receipts = Vec::with_capacity(hold.records.len());
                let mut shards: Vec<(&str, PartitionId)> = Vec::new();
                let mut retry: Vec<usize> = Vec::new();
                for i in 0..hold.records.len() {
                    let Some(result) = results.get(i) else {
                        retry.push(i);
                        receipts.push(Receipt::default());
                        continue;
                    };
                    match (
                        result.error_code(),
                        result.sequence_number(),
                        result.shard_id(),
                    ) {
                        (None, Some(sequence), Some(shard)) => {
                            let partition = match shards.iter().find(|(s, _)| *s == shard) {
                                Some((_, p)) => p.clone(),
                                None => {
                                    let p = PartitionId::new(shard);
                                    shards.push((shard, p.clone()));
                                    p
                                }
                            };
                            receipts.push(Receipt {
                                partition: Some(partition),
                                position: Some(Position::new(sequence)),
                            });
                        }
                        (code, _, _) => {
                            let code = code.unwrap_or("MissingSequenceNumber");
                            if !record_error_retryable(code) {
                                return Err(Error::unavailable(format!(
                                    "put records on stream `{}`: record refused with {code}: {}",
                                    self.stream,
                                    result.error_message().unwrap_or("")
                                ))
                                .with_retryable(false));
                            }
                            retry.push(i);
                            receipts.push(Receipt::default());
                        }
                    }
                }
                if retry.is_empty() {
                    return Ok(receipts);
                }
                ((receipts, retry), MAX_RECORD_BACKOFF)
            }
            Err(error) if error.is_retryable() => {
                let all = (0..hold.records.len()).collect();
                (
                    (vec![Receipt::default(); hold.records.len()], all),
                    MAX_BACKOFF,
                )
            }
            Err(error) => return Err(error),
        };
        let (mut receipts, retry) = retry;
        // The refused records go to the driver, counted as its own before their keys are
        // free, so that no send can go direct until they are stored.
        let not_before = now + backoff(1, attempts_backoff);
        let records = std::mem::take(&mut hold.records);
        let again: Vec<Prepared> = retry
            .iter()
            .map(|&i| Prepared {
                partition_key: records[i].partition_key.clone(),
                data: records[i].data.clone(),
                retry: Some(Retry {
                    not_before,
                    deadline,
                }),
            })
            .collect();
        {
            let mut state = self.shared.state.lock();
            for record in &records {
                state.busy.remove(record.partition_key.as_bytes());
            }
            state.driver_records += again.len();
        }
        self.shared.wake.notify_one();
        // The keys are the driver's now; the hold keeps only this send's number, for flushes.
        let stored = self.submit_counted(again).await?;
        for (i, receipt) in retry.into_iter().zip(stored) {
            receipts[i] = receipt;
        }
        Ok(receipts)
    }
}
