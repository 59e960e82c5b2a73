//! Consumer groups of the local backend.
//!
//! A group's state lives once per process and outlives its members: per partition a fetch
//! cursor, a small prefetch buffer, the deliveries in flight, nacked deliveries waiting to go
//! out again, and the ack tracker whose commit is the group's progress. Members own partitions
//! (round-robin over members in join order) and take deliveries only from those, so one
//! partition is processed by one member at a time and per-key order holds.
//!
//! For `file://` streams, commits are written to the directory's checkpoint store every 200 ms
//! and on close, and a process-level lease keeps two processes from consuming one group at once.

use super::StreamState;
use super::codec::StoredRecord;
use crate::backend::checkpoint::{
    Checkpoint, CheckpointKey, CheckpointStore, FileCheckpointStore, Lease,
};
use crate::{
    AckHandle, AckTracker, Acknowledge, Consumer, ConsumerOptions, Delivery, Error, Outcome,
    PartitionId, Position, Result, StartPosition, Ticket,
};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

const FETCH_RECORDS: usize = 512;
const FETCH_BYTES: usize = 1 << 20;
const FLUSH_EVERY: Duration = Duration::from_millis(200);
const FOLLOWER_POLL: Duration = Duration::from_millis(50);

struct Inflight {
    record: StoredRecord,
    ticket: Ticket,
    attempt: u32,
    member: u64,
    delivery_id: u64,
}

struct Pending {
    record: StoredRecord,
    ticket: Ticket,
    attempt: u32,
}

#[derive(Default)]
struct Part {
    owner: Option<u64>,
    cursor: u64,
    buffer: VecDeque<StoredRecord>,
    fetching: bool,
    /// Bumped when the cursor is reset, so a fetch started before the reset is discarded.
    fetch_epoch: u64,
    redeliver: BTreeMap<u64, Pending>,
    inflight: HashMap<u64, Inflight>,
    tracker: AckTracker<u64>,
    saved: Option<u64>,
}

#[derive(Default)]
struct GroupState {
    initialized: bool,
    members: Vec<u64>,
    member_inflight: HashMap<u64, (usize, usize)>,
    parts: Vec<Part>,
    next_delivery: u64,
    /// One lease per partition while this process holds the group (file streams).
    leases: Vec<Lease>,
}

pub(crate) struct Group {
    stream: Arc<StreamState>,
    name: String,
    state: Mutex<GroupState>,
    changed: watch::Sender<u64>,
    store: Option<FileCheckpointStore>,
    init: tokio::sync::Mutex<()>,
    owner_id: String,
    lease_ttl: Duration,
    follower: bool,
    next_member: AtomicU64,
    flusher_started: AtomicBool,
}

impl Group {
    pub(crate) fn new(
        stream: Arc<StreamState>,
        name: String,
        store: Option<FileCheckpointStore>,
        owner_id: String,
        lease_ttl: Duration,
        follower: bool,
    ) -> Arc<Self> {
        Arc::new(Group {
            stream,
            name,
            state: Mutex::new(GroupState::default()),
            changed: watch::channel(0).0,
            store,
            init: tokio::sync::Mutex::new(()),
            owner_id,
            lease_ttl,
            follower,
            next_member: AtomicU64::new(1),
            flusher_started: AtomicBool::new(false),
        })
    }

    pub(crate) fn wake(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn partition_key(&self, partition: usize) -> CheckpointKey {
        CheckpointKey::new(
            &self.name,
            &self.stream.name,
            PartitionId::from(partition as u32),
        )
    }

    /// Loads checkpoints and places cursors; runs once per group per process.
    async fn initialize(self: &Arc<Self>, start: &StartPosition) -> Result<()> {
        let _once = self.init.lock().await;
        if self.state.lock().initialized {
            return self.ensure_lease().await;
        }
        self.ensure_lease().await?;
        let saved: HashMap<PartitionId, Position> = match &self.store {
            Some(store) => store
                .checkpoints(&self.name, &self.stream.name)
                .await?
                .into_iter()
                .filter_map(|(p, c)| match c {
                    Checkpoint::Processed(position) => Some((p, position)),
                    _ => None,
                })
                .collect(),
            None => HashMap::new(),
        };
        let logs = self.stream.partitions.clone();
        let start = start.clone();
        let stream_name = self.stream.name.clone();
        let placements = self
            .stream
            .io(move || {
                let mut out = Vec::with_capacity(logs.len());
                for (i, log) in logs.iter().enumerate() {
                    let _ = log.refresh();
                    let (first, next) = log.bounds();
                    let committed = saved
                        .get(&PartitionId::from(i as u32))
                        .map(|p| {
                            p.as_offset().ok_or_else(|| {
                                Error::corrupt(format!(
                                    "checkpoint of stream `{stream_name}` partition {i} is `{p}`, not an offset"
                                ))
                            })
                        })
                        .transpose()?;
                    let cursor = match (&committed, &start) {
                        (Some(c), _) => c + 1,
                        (None, StartPosition::Earliest) => first,
                        (None, StartPosition::Latest) => next,
                        (None, StartPosition::Timestamp(t)) => log.offset_for_time(t.as_millis())?,
                        (None, StartPosition::Position(p)) => {
                            let offset = p.as_offset().ok_or_else(|| {
                                Error::config(format!(
                                    "start position `{p}` is not an offset of stream `{stream_name}`"
                                ))
                            })?;
                            offset.clamp(first, next)
                        }
                    };
                    out.push((cursor, committed));
                }
                Ok(out)
            })
            .await?;
        let mut state = self.state.lock();
        state.parts = placements
            .into_iter()
            .map(|(cursor, committed)| Part {
                cursor,
                tracker: AckTracker::starting_at(committed),
                saved: committed,
                ..Part::default()
            })
            .collect();
        state.initialized = true;
        Ok(())
    }

    /// File streams: this process must hold the lease of every partition before consuming.
    async fn ensure_lease(self: &Arc<Self>) -> Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        if !self.state.lock().leases.is_empty() {
            return Ok(());
        }
        let now = crate::Timestamp::now();
        let current = store.leases(&self.name, &self.stream.name).await?;
        let mut held = Vec::new();
        for i in 0..self.stream.partitions.len() {
            let key = self.partition_key(i);
            let seen = current.iter().find(|l| l.key.partition == key.partition);
            let taken_by = seen.filter(|l| !l.is_free(now) && l.owner != self.owner_id);
            let claimed = match taken_by {
                Some(_) => None,
                None => {
                    store
                        .claim(&key, &self.owner_id, self.lease_ttl, seen)
                        .await?
                }
            };
            match claimed {
                Some(lease) => held.push(lease),
                None => {
                    for lease in &held {
                        let _ = store.release(lease).await;
                    }
                    return Err(Error::unavailable(format!(
                        "group `{}` of stream `{}` is being consumed by another process ({}); \
                         it can take over once that process stops or its lease of {:?} lapses",
                        self.name,
                        self.stream.name,
                        taken_by.map_or("unknown", |l| l.owner.as_str()),
                        self.lease_ttl
                    )));
                }
            }
        }
        self.state.lock().leases = held;
        Ok(())
    }

    fn rebalance(state: &mut GroupState) {
        let members = state.members.clone();
        for (i, part) in state.parts.iter_mut().enumerate() {
            part.owner = (!members.is_empty()).then(|| members[i % members.len()]);
        }
    }

    fn join(self: &Arc<Self>, max_in_flight: usize) -> u64 {
        let id = self.next_member.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock();
        state.members.push(id);
        state.member_inflight.insert(id, (0, max_in_flight));
        Self::rebalance(&mut state);
        drop(state);
        self.wake();
        id
    }

    /// Removes a member; its unsettled deliveries go back to the group.
    fn leave(&self, member: u64) {
        let mut state = self.state.lock();
        if !state.members.contains(&member) {
            return;
        }
        state.members.retain(|m| *m != member);
        state.member_inflight.remove(&member);
        for part in &mut state.parts {
            let mine: Vec<u64> = part
                .inflight
                .iter()
                .filter(|(_, i)| i.member == member)
                .map(|(o, _)| *o)
                .collect();
            for offset in mine {
                let i = part.inflight.remove(&offset).expect("listed");
                part.redeliver.insert(
                    offset,
                    Pending {
                        record: i.record,
                        ticket: i.ticket,
                        attempt: i.attempt,
                    },
                );
            }
        }
        Self::rebalance(&mut state);
        drop(state);
        self.wake();
    }

    fn settle(&self, partition: usize, offset: u64, delivery_id: u64, outcome: Outcome) {
        let mut state = self.state.lock();
        let state = &mut *state;
        let Some(part) = state.parts.get_mut(partition) else {
            return;
        };
        // A stale handle (its delivery was already handed to someone else) settles nothing.
        if part
            .inflight
            .get(&offset)
            .is_none_or(|i| i.delivery_id != delivery_id)
        {
            return;
        }
        let inflight = part.inflight.remove(&offset).expect("checked");
        let mut wake = false;
        if let Some((count, max)) = state.member_inflight.get_mut(&inflight.member) {
            wake = *count >= *max;
            *count -= 1;
        }
        match outcome {
            Outcome::Ack => {
                part.tracker.ack(inflight.ticket);
            }
            Outcome::Nack => {
                part.redeliver.insert(
                    offset,
                    Pending {
                        record: inflight.record,
                        ticket: inflight.ticket,
                        attempt: inflight.attempt,
                    },
                );
                wake = true;
            }
        }
        if wake {
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// Writes changed commits (and renews the lease) for file streams.
    pub(crate) async fn flush_commits(&self) -> Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let (dirty, leases) = {
            let state = self.state.lock();
            let dirty: Vec<(usize, u64)> = state
                .parts
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    let c = p.tracker.committed().copied()?;
                    (p.saved != Some(c)).then_some((i, c))
                })
                .collect();
            (dirty, state.leases.clone())
        };
        if leases.is_empty() {
            return Ok(());
        }
        let mut lost = false;
        for (i, committed) in &dirty {
            let Some(lease) = leases.get(*i) else {
                continue;
            };
            let checkpoint = Checkpoint::Processed(Position::from_offset(*committed));
            if store.checkpoint(lease, &checkpoint).await?.is_none() {
                lost = true;
            }
        }
        {
            let mut state = self.state.lock();
            for (i, committed) in dirty {
                if let Some(p) = state.parts.get_mut(i) {
                    p.saved = p.saved.max(Some(committed));
                }
            }
        }
        let remaining = leases[0].expires_at.as_millis() - crate::Timestamp::now().as_millis();
        if !lost && remaining < (self.lease_ttl.as_millis() as i64) * 2 / 3 {
            let mut renewed = Vec::with_capacity(leases.len());
            for lease in &leases {
                match store.renew(lease, self.lease_ttl).await? {
                    Some(l) => renewed.push(l),
                    None => {
                        lost = true;
                        break;
                    }
                }
            }
            if !lost {
                self.state.lock().leases = renewed;
            }
        }
        if lost {
            tracing::warn!(group = %self.name, stream = %self.stream.name,
                "lost the group lease to another process");
            self.state.lock().leases.clear();
        }
        Ok(())
    }

    async fn release_if_idle(&self) -> Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let leases = {
            let mut state = self.state.lock();
            if !state.members.is_empty() {
                return Ok(());
            }
            std::mem::take(&mut state.leases)
        };
        for lease in &leases {
            store.release(lease).await?;
        }
        Ok(())
    }

    fn start_flusher(self: &Arc<Self>) {
        if self.store.is_none() || self.flusher_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(group) = weak.upgrade() else { return };
                if let Err(e) = group.flush_commits().await {
                    tracing::warn!(group = %group.name, stream = %group.stream.name, error = %e,
                        "saving consumer group progress failed; will retry");
                }
                let idle = {
                    let state = group.state.lock();
                    state.members.is_empty() && state.leases.is_empty()
                };
                if idle {
                    group.flusher_started.store(false, Ordering::Release);
                    return;
                }
            }
        });
    }
}

struct LocalAck {
    group: Arc<Group>,
    partition: usize,
    offset: u64,
    delivery_id: u64,
}

impl Acknowledge for LocalAck {
    fn settle(self: Box<Self>, outcome: Outcome) {
        self.group
            .settle(self.partition, self.offset, self.delivery_id, outcome);
    }
}

enum Step {
    Deliver(Delivery),
    Fetch {
        partition: usize,
        from: u64,
        epoch: u64,
    },
    Wait,
}

/// Resets a partition's `fetching` flag if the fetch future is dropped midway.
struct FetchGuard<'a> {
    group: &'a Group,
    partition: usize,
    armed: bool,
}

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Some(p) = self.group.state.lock().parts.get_mut(self.partition)
        {
            p.fetching = false;
        }
    }
}

pub(crate) struct LocalConsumer {
    group: Arc<Group>,
    member: u64,
    closed: AtomicBool,
    closed_tx: watch::Sender<bool>,
    rotate: AtomicU64,
    max_window: usize,
}

impl LocalConsumer {
    pub(crate) async fn join(group: Arc<Group>, options: ConsumerOptions) -> Result<Self> {
        group.initialize(&options.start).await?;
        let member = group.join(options.max_in_flight);
        group.start_flusher();
        Ok(LocalConsumer {
            group,
            member,
            closed: AtomicBool::new(false),
            closed_tx: watch::channel(false).0,
            rotate: AtomicU64::new(0),
            max_window: (options.max_in_flight * 4).max(4096),
        })
    }

    fn next_step(&self) -> Result<Step> {
        self.group.stream.check_live()?;
        let mut guard = self.group.state.lock();
        let state = &mut *guard;
        let Some(&(in_flight, max)) = state.member_inflight.get(&self.member) else {
            return Err(Error::closed("consumer was closed"));
        };
        if in_flight >= max {
            return Ok(Step::Wait);
        }
        let n = state.parts.len();
        let rotate = self.rotate.fetch_add(1, Ordering::Relaxed) as usize;
        let order: Vec<usize> = (0..n)
            .map(|i| (i + rotate) % n)
            .filter(|&i| state.parts[i].owner == Some(self.member))
            .collect();
        // Redeliveries first: they hold the commit back.
        let mut pick: Option<(usize, StoredRecord, Ticket, u32)> = None;
        for &i in &order {
            if let Some((_, pending)) = state.parts[i].redeliver.pop_first() {
                pick = Some((i, pending.record, pending.ticket, pending.attempt + 1));
                break;
            }
        }
        if pick.is_none() {
            for &i in &order {
                let part = &mut state.parts[i];
                if part.tracker.window() >= self.max_window {
                    continue;
                }
                if let Some(record) = part.buffer.pop_front() {
                    let ticket = part.tracker.track(record.offset);
                    pick = Some((i, record, ticket, 1));
                    break;
                }
            }
        }
        if let Some((i, record, ticket, attempt)) = pick {
            let delivery_id = state.next_delivery;
            state.next_delivery += 1;
            let offset = record.offset;
            let event = record.event.clone();
            state.parts[i].inflight.insert(
                offset,
                Inflight {
                    record,
                    ticket,
                    attempt,
                    member: self.member,
                    delivery_id,
                },
            );
            if let Some((count, _)) = state.member_inflight.get_mut(&self.member) {
                *count += 1;
            }
            return Ok(Step::Deliver(Delivery {
                event,
                partition: Some(PartitionId::from(i as u32)),
                position: Some(Position::from_offset(offset)),
                attempt: Some(attempt),
                handle: AckHandle::new(Box::new(LocalAck {
                    group: self.group.clone(),
                    partition: i,
                    offset,
                    delivery_id,
                })),
            }));
        }
        for &i in &order {
            let part = &mut state.parts[i];
            let (_, next) = self.group.stream.partitions[i].bounds();
            if !part.fetching
                && part.buffer.is_empty()
                && part.cursor < next
                && part.tracker.window() < self.max_window
            {
                part.fetching = true;
                return Ok(Step::Fetch {
                    partition: i,
                    from: part.cursor,
                    epoch: part.fetch_epoch,
                });
            }
        }
        Ok(Step::Wait)
    }

    async fn fetch(&self, partition: usize, from: u64, epoch: u64) -> Result<bool> {
        let mut guard = FetchGuard {
            group: &self.group,
            partition,
            armed: true,
        };
        let log = self.group.stream.partitions[partition].clone();
        let records = self
            .group
            .stream
            .io(move || log.read(from, FETCH_RECORDS, FETCH_BYTES))
            .await;
        guard.armed = false;
        let mut state = self.group.state.lock();
        let part = &mut state.parts[partition];
        part.fetching = false;
        let records = records?;
        if part.fetch_epoch != epoch || part.cursor != from {
            return Ok(false);
        }
        let Some(last) = records.last() else {
            return Ok(false);
        };
        if records[0].offset > from {
            tracing::warn!(stream = %self.group.stream.name, partition, from, resumed = records[0].offset,
                "events before the resume point were removed by retention");
        }
        part.cursor = last.offset + 1;
        part.buffer.extend(records);
        Ok(true)
    }
}

#[async_trait]
impl Consumer for LocalConsumer {
    async fn receive(&self) -> Result<Delivery> {
        let mut changed = self.group.changed.subscribe();
        let mut appended = self.group.stream.appended.subscribe();
        let mut closed = self.closed_tx.subscribe();
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::closed("consumer was closed"));
            }
            changed.borrow_and_update();
            appended.borrow_and_update();
            match self.next_step()? {
                Step::Deliver(d) => return Ok(d),
                Step::Fetch {
                    partition,
                    from,
                    epoch,
                } => {
                    if self.fetch(partition, from, epoch).await? {
                        continue;
                    }
                }
                Step::Wait => {}
            }
            if self.group.follower {
                // Another process writes: look for its appends now and then.
                tokio::select! {
                    _ = changed.changed() => {}
                    _ = closed.changed() => {}
                    _ = tokio::time::sleep(FOLLOWER_POLL) => {
                        let logs = self.group.stream.partitions.clone();
                        self.group.stream.io(move || logs.iter().try_for_each(|l| l.refresh())).await?;
                    }
                }
            } else {
                tokio::select! {
                    _ = changed.changed() => {}
                    _ = appended.changed() => {}
                    _ = closed.changed() => {}
                }
            }
        }
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.closed_tx.send_replace(true);
        self.group.leave(self.member);
        self.group.flush_commits().await?;
        self.group.release_if_idle().await
    }

    async fn commit(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed("consumer is closed"));
        }
        self.group.flush_commits().await
    }

    fn lag(&self) -> Option<u64> {
        let state = self.group.state.lock();
        let mut lag = 0;
        for (i, part) in state.parts.iter().enumerate() {
            if part.owner != Some(self.member) {
                continue;
            }
            let (_, next) = self.group.stream.partitions[i].bounds();
            // Before the first ack the group's position is where its reading started: the
            // cursor minus what was fetched and not yet acked.
            let position = match part.tracker.committed() {
                Some(&last) => last + 1,
                None => part
                    .cursor
                    .saturating_sub((part.buffer.len() + part.tracker.window()) as u64),
            };
            lag += next.saturating_sub(position);
        }
        Some(lag)
    }
}

impl Drop for LocalConsumer {
    fn drop(&mut self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.group.leave(self.member);
        // Best effort: persist what was acked. A crash instead of a drop replays from the last
        // save, which at-least-once allows.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let group = self.group.clone();
            handle.spawn(async move {
                let _ = group.flush_commits().await;
                let _ = group.release_if_idle().await;
            });
        }
    }
}
