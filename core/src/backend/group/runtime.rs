//! One group's runtime in one engine: the partitions it owns, its members, deliveries, acks.
//!
//! Everything here runs under one short lock (`state`); store calls never do (they belong to
//! the coordinator task, `coordinator.rs`), and reads run in one task per owned partition.

use super::coordinator::{self, Request};
use super::{GroupConfig, GroupEvent, PartitionReader, PartitionSource, SourceRecord};
use crate::backend::checkpoint::{CheckpointStore, Lease};
use crate::{
    AckHandle, AckTracker, Acknowledge, Delivery, Error, ErrorKind, Outcome, PartitionId, Position,
    Result, StartPosition, Ticket,
};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// Where a runtime is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    /// The first balance round is running.
    Starting,
    Running,
    /// The first balance round failed; the runtime is stopping with this error.
    Failed(ErrorKind, String),
    /// No members left (or the engine closed): committing and releasing.
    Stopping,
    Stopped,
}

pub(super) struct Inflight {
    pub(super) record: SourceRecord,
    pub(super) attempt: u32,
    pub(super) member: u64,
    pub(super) delivery_id: u64,
}

pub(super) struct Pending {
    pub(super) record: SourceRecord,
    pub(super) attempt: u32,
}

/// Hashes a number this process made up (a ticket, a member id) with one multiplication: the
/// in-flight and member maps are touched on every delivery and every settle, where SipHash
/// showed in the profile. Keys are not chosen by anyone outside, so no flooding to guard
/// against; the multiplier spreads sequential numbers over the high bits hashbrown probes with.
#[derive(Default, Clone, Copy)]
pub(super) struct SeqHash;

impl std::hash::BuildHasher for SeqHash {
    type Hasher = SeqHasher;
    fn build_hasher(&self) -> SeqHasher {
        SeqHasher(0)
    }
}

pub(super) struct SeqHasher(u64);

impl std::hash::Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// An owned partition.
pub(super) struct Part {
    pub(super) lease: Lease,
    /// Distinguishes this ownership from an earlier one of the same partition, so handles of
    /// deliveries made under an earlier lease settle into nothing.
    pub(super) generation: u64,
    pub(super) member: Option<u64>,
    pub(super) buffer: VecDeque<SourceRecord>,
    /// Nacked deliveries, by first-delivery order: they go out again before anything later.
    pub(super) redeliver: BTreeMap<Ticket, Pending>,
    pub(super) inflight: HashMap<Ticket, Inflight, SeqHash>,
    pub(super) tracker: AckTracker<Position>,
    /// The last `Processed` checkpoint written.
    pub(super) saved: Option<Position>,
    pub(super) reader_ended: bool,
    /// Being handed over: delivers nothing more; released once its in-flight deliveries are
    /// settled or the shed grace has passed.
    pub(super) draining_since: Option<Instant>,
    pub(super) space: Arc<Notify>,
    pub(super) reader: Option<AbortHandle>,
    /// Events after the reader's last read (`u64::MAX`: unknown).
    pub(super) behind: Arc<AtomicU64>,
    /// A read error not yet reported to a member.
    pub(super) error: Option<(ErrorKind, String)>,
}

impl Part {
    /// Read to its end and every event in it settled and acked.
    pub(super) fn finished(&self) -> bool {
        self.reader_ended
            && self.buffer.is_empty()
            && self.redeliver.is_empty()
            && self.inflight.is_empty()
            && self.tracker.unacked() == 0
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) members: Vec<u64>,
    /// Per member: deliveries unsettled and the member's limit.
    pub(super) slots: HashMap<u64, (usize, usize), SeqHash>,
    pub(super) parts: BTreeMap<PartitionId, Part>,
    next_member: u64,
    next_delivery: u64,
    next_generation: u64,
    /// An error every member gets from now on (the stream was deleted, the backend closed).
    pub(super) fatal: Option<(ErrorKind, String)>,
    pub(super) closed: bool,
}

pub(super) struct Runtime {
    pub(super) stream: String,
    pub(super) group: String,
    pub(super) owner: String,
    pub(super) start: StartPosition,
    pub(super) config: GroupConfig,
    pub(super) source: Arc<dyn PartitionSource>,
    pub(super) store: Arc<dyn CheckpointStore>,
    pub(super) state: Mutex<State>,
    /// Bumped whenever a member may find something new to receive.
    pub(super) changed: watch::Sender<u64>,
    /// Wakes the coordinator (membership changed, a partition finished, stop).
    pub(super) wake: Notify,
    requests: mpsc::Sender<Request>,
    requests_rx: Mutex<Option<mpsc::Receiver<Request>>>,
    coordinator: Mutex<Option<AbortHandle>>,
    pub(super) phase: watch::Sender<Phase>,
    /// Set once members changed since the last balance round.
    pub(super) membership_changed: std::sync::atomic::AtomicBool,
}

impl Runtime {
    pub(super) fn new(
        stream: &str,
        group: &str,
        start: StartPosition,
        config: GroupConfig,
        source: Arc<dyn PartitionSource>,
        store: Arc<dyn CheckpointStore>,
    ) -> Arc<Self> {
        let (requests, rx) = mpsc::channel(64);
        Arc::new(Runtime {
            stream: stream.to_owned(),
            group: group.to_owned(),
            owner: super::owner::new_owner_id(),
            start,
            config,
            source,
            store,
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            wake: Notify::new(),
            requests,
            requests_rx: Mutex::new(Some(rx)),
            coordinator: Mutex::new(None),
            phase: watch::channel(Phase::Starting).0,
            membership_changed: std::sync::atomic::AtomicBool::new(true),
        })
    }

    pub(super) fn emit(&self, event: GroupEvent) {
        tracing::debug!(stream = %self.stream, group = %self.group, ?event, "group event");
        if let Some(observer) = &self.config.observer {
            observer(&event);
        }
    }

    pub(super) fn notify_members(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(super) fn is_stopping(&self) -> bool {
        matches!(
            *self.phase.borrow(),
            Phase::Stopping | Phase::Stopped | Phase::Failed(..)
        )
    }

    pub(super) fn is_stopped(&self) -> bool {
        matches!(*self.phase.borrow(), Phase::Stopped)
    }

    /// Spawns the coordinator, which runs the first balance round.
    pub(super) fn start(self: &Arc<Self>) {
        let Some(rx) = self.requests_rx.lock().take() else {
            return;
        };
        let task = tokio::spawn(coordinator::run(self.clone(), rx));
        *self.coordinator.lock() = Some(task.abort_handle());
    }

    /// What a crash leaves: no commit, no release, readers and coordinator gone.
    #[cfg(test)]
    pub(super) fn crash(&self) {
        if let Some(task) = self.coordinator.lock().take() {
            task.abort();
        }
        let mut state = self.state.lock();
        state.closed = true;
        state.members.clear();
        state.slots.clear();
        for part in std::mem::take(&mut state.parts).into_values() {
            if let Some(reader) = part.reader {
                reader.abort();
            }
        }
        drop(state);
        self.phase.send_replace(Phase::Stopped);
        self.notify_members();
    }

    /// Waits for the first balance round: `Ok` once running.
    pub(super) async fn started(&self) -> Result<()> {
        let mut phase = self.phase.subscribe();
        let phase = phase
            .wait_for(|p| *p != Phase::Starting)
            .await
            .map_err(|_| Error::closed("the consumer group stopped"))?
            .clone();
        match phase {
            Phase::Running => Ok(()),
            Phase::Failed(kind, message) => Err(Error::new(kind, message)),
            _ => Err(Error::closed(format!(
                "group `{}` of stream `{}` stopped while this consumer joined",
                self.group, self.stream
            ))),
        }
    }

    /// Waits until the runtime has committed and released everything.
    pub(super) async fn stopped(&self) {
        let mut phase = self.phase.subscribe();
        let _ = phase.wait_for(|p| *p == Phase::Stopped).await;
    }

    /// Adds a member; `None` when the runtime is already stopping.
    pub(super) fn join(&self, max_in_flight: usize) -> Option<u64> {
        if self.is_stopping() {
            return None;
        }
        let mut state = self.state.lock();
        state.next_member += 1;
        let id = state.next_member;
        state.members.push(id);
        state.slots.insert(id, (0, max_in_flight.max(1)));
        Self::assign(&mut state);
        drop(state);
        self.membership_changed.store(true, Ordering::Release);
        self.notify_members();
        self.wake.notify_one();
        Some(id)
    }

    /// Removes a member; its unsettled deliveries go back to the group. The last member to
    /// leave stops the runtime.
    pub(super) fn leave(&self, member: u64) {
        let mut state = self.state.lock();
        if !state.members.contains(&member) {
            return;
        }
        state.members.retain(|m| *m != member);
        state.slots.remove(&member);
        for part in state.parts.values_mut() {
            let mine: Vec<Ticket> = part
                .inflight
                .iter()
                .filter(|(_, i)| i.member == member)
                .map(|(t, _)| *t)
                .collect();
            for ticket in mine {
                let i = part.inflight.remove(&ticket).expect("listed");
                part.redeliver.insert(
                    ticket,
                    Pending {
                        record: i.record,
                        attempt: i.attempt,
                    },
                );
            }
        }
        Self::assign(&mut state);
        let last = state.members.is_empty();
        drop(state);
        if last {
            self.phase.send_if_modified(|p| {
                let running = matches!(p, Phase::Starting | Phase::Running);
                if running {
                    *p = Phase::Stopping;
                }
                running
            });
        }
        self.membership_changed.store(true, Ordering::Release);
        self.notify_members();
        self.wake.notify_one();
    }

    /// Stops every member (they get `Closed`), then commits and releases.
    pub(super) async fn shutdown(&self) -> Result<()> {
        {
            let mut state = self.state.lock();
            state.closed = true;
            state.members.clear();
            state.slots.clear();
        }
        self.phase.send_if_modified(|p| {
            let running = matches!(p, Phase::Starting | Phase::Running);
            if running {
                *p = Phase::Stopping;
            }
            running
        });
        self.notify_members();
        self.wake.notify_one();
        self.stopped().await;
        Ok(())
    }

    /// Spreads the owned partitions that are not being handed over across the members,
    /// round-robin in join order.
    pub(super) fn assign(state: &mut State) {
        let members = state.members.clone();
        let mut i = 0;
        for part in state.parts.values_mut() {
            if members.is_empty() || part.draining_since.is_some() {
                part.member = None;
                continue;
            }
            part.member = Some(members[i % members.len()]);
            i += 1;
        }
    }

    /// Takes up to `max` deliveries for `member` into `out`: redeliveries first, then buffered
    /// events, from the member's partitions starting at `rotate`. An error (the group's fatal
    /// one, or a read error not yet reported) is returned only when nothing was taken.
    pub(super) fn take(
        self: &Arc<Self>,
        member: u64,
        max: usize,
        rotate: usize,
        out: &mut Vec<Delivery>,
    ) -> Result<()> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if state.closed {
            return Err(Error::closed(format!(
                "the backend of group `{}` was closed",
                self.group
            )));
        }
        if let Some((kind, message)) = &state.fatal {
            return Err(Error::new(*kind, message.clone()));
        }
        let Some(&(in_flight, limit)) = state.slots.get(&member) else {
            return Err(Error::closed("consumer was closed"));
        };
        let mut budget = max.min(limit.saturating_sub(in_flight));
        if budget == 0 {
            return Ok(());
        }
        let taken_before = out.len();
        let owned = |p: &Part| p.member == Some(member) && p.draining_since.is_none();
        let count = state.parts.values().filter(|p| owned(p)).count();
        if count == 0 {
            return Ok(());
        }
        // Start at a different partition on each call, so one busy partition cannot starve the
        // member's others.
        let skip = rotate % count;
        let mut order: Vec<PartitionId> = state
            .parts
            .iter()
            .filter(|(_, p)| owned(p))
            .map(|(id, _)| id.clone())
            .collect();
        order.rotate_left(skip);
        // Redeliveries first: they hold the commit back, and order asks that they go out
        // before anything later of their partition.
        if state.parts.values().any(|p| !p.redeliver.is_empty()) {
            for id in &order {
                let part = state.parts.get_mut(id).expect("listed");
                while budget > 0 {
                    let Some((ticket, pending)) = part.redeliver.pop_first() else {
                        break;
                    };
                    out.push(self.hand_out(
                        &mut state.next_delivery,
                        id,
                        part,
                        ticket,
                        pending.record,
                        pending.attempt + 1,
                        member,
                    ));
                    budget -= 1;
                }
            }
        }
        for id in &order {
            if budget == 0 {
                break;
            }
            let part = state.parts.get_mut(id).expect("listed");
            // A partition with redeliveries pending (a nack arrived meanwhile) delivers nothing
            // newer until they are out.
            if !part.redeliver.is_empty() {
                continue;
            }
            let before = part.buffer.len();
            while budget > 0 && part.tracker.window() < self.config.max_window {
                let Some(record) = part.buffer.pop_front() else {
                    break;
                };
                let ticket = part.tracker.track(record.position.clone());
                out.push(self.hand_out(
                    &mut state.next_delivery,
                    id,
                    part,
                    ticket,
                    record,
                    1,
                    member,
                ));
                budget -= 1;
            }
            let low_water = self.config.prefetch / 2;
            if before > low_water && part.buffer.len() <= low_water {
                part.space.notify_one();
            }
        }
        let taken = out.len() - taken_before;
        if let Some(slot) = state.slots.get_mut(&member) {
            slot.0 += taken;
        }
        if taken == 0 {
            for id in &order {
                if let Some((kind, message)) = state.parts.get_mut(id).and_then(|p| p.error.take())
                {
                    return Err(Error::new(kind, message));
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn hand_out(
        self: &Arc<Self>,
        next_delivery: &mut u64,
        id: &PartitionId,
        part: &mut Part,
        ticket: Ticket,
        record: SourceRecord,
        attempt: u32,
        member: u64,
    ) -> Delivery {
        *next_delivery += 1;
        let delivery_id = *next_delivery;
        #[cfg(test)]
        self.emit(GroupEvent::Delivered {
            partition: id.clone(),
            owner: self.owner.clone(),
            position: record.position.clone(),
        });
        let delivery = Delivery {
            event: record.event.clone(),
            partition: Some(id.clone()),
            position: Some(record.position.clone()),
            attempt: Some(attempt),
            handle: AckHandle::new(Box::new(EngineAck {
                runtime: self.clone(),
                partition: id.clone(),
                generation: part.generation,
                ticket,
                delivery_id,
            })),
        };
        part.inflight.insert(
            ticket,
            Inflight {
                record,
                attempt,
                member,
                delivery_id,
            },
        );
        delivery
    }

    fn settle(
        &self,
        partition: &PartitionId,
        generation: u64,
        ticket: Ticket,
        delivery_id: u64,
        outcome: Outcome,
    ) {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let Some(part) = state
            .parts
            .get_mut(partition)
            .filter(|p| p.generation == generation)
        else {
            return;
        };
        // A stale handle (the delivery went back to the group when its member left) settles
        // nothing.
        if part
            .inflight
            .get(&ticket)
            .is_none_or(|i| i.delivery_id != delivery_id)
        {
            return;
        }
        let inflight = part.inflight.remove(&ticket).expect("checked");
        let mut wake_members = false;
        if let Some((count, limit)) = state.slots.get_mut(&inflight.member) {
            wake_members = *count >= *limit;
            *count = count.saturating_sub(1);
        }
        match outcome {
            Outcome::Ack => {
                let full = part.tracker.window() >= self.config.max_window;
                // A reader paused on a full window goes on once the window has room.
                if part.tracker.ack(ticket).is_some()
                    && full
                    && part.tracker.window() < self.config.max_window
                {
                    part.space.notify_one();
                    wake_members = true;
                }
                if (part.reader_ended || part.draining_since.is_some()) && part.inflight.is_empty()
                {
                    self.wake.notify_one();
                }
            }
            Outcome::Nack => {
                part.redeliver.insert(
                    ticket,
                    Pending {
                        record: inflight.record,
                        attempt: inflight.attempt,
                    },
                );
                wake_members = true;
            }
        }
        drop(guard);
        if wake_members {
            self.notify_members();
        }
    }

    /// Starts delivering `partition` from a reader: called by the coordinator once it holds the
    /// lease.
    pub(super) fn add_part(
        self: &Arc<Self>,
        partition: PartitionId,
        lease: Lease,
        from: crate::backend::checkpoint::Checkpoint,
        reader: Box<dyn PartitionReader>,
    ) {
        let committed = match &from {
            crate::backend::checkpoint::Checkpoint::Processed(p) => Some(p.clone()),
            _ => None,
        };
        let space = Arc::new(Notify::new());
        let behind = Arc::new(AtomicU64::new(u64::MAX));
        let mut state = self.state.lock();
        state.next_generation += 1;
        let generation = state.next_generation;
        let handle = tokio::spawn(read_loop(
            Arc::downgrade(self),
            partition.clone(),
            generation,
            reader,
            space.clone(),
            behind.clone(),
        ))
        .abort_handle();
        state.parts.insert(
            partition.clone(),
            Part {
                lease,
                generation,
                member: None,
                buffer: VecDeque::new(),
                redeliver: BTreeMap::new(),
                inflight: HashMap::default(),
                tracker: AckTracker::starting_at(committed.clone()),
                saved: committed,
                reader_ended: false,
                draining_since: None,
                space,
                reader: Some(handle),
                behind,
                error: None,
            },
        );
        Self::assign(&mut state);
        // Under the lock, so no delivery of the partition is observed before its acquisition.
        self.emit(GroupEvent::Acquired {
            partition,
            owner: self.owner.clone(),
            from,
        });
        drop(state);
        self.notify_members();
    }

    /// Stops delivering `partition` and forgets it: its reader stops, its buffered events are
    /// dropped, and its unsettled deliveries no longer count against their members.
    /// `event` (Lost, Released, Ended) is emitted under the lock, so no delivery of the
    /// partition is observed after it.
    pub(super) fn remove_part(
        &self,
        partition: &PartitionId,
        event: Option<GroupEvent>,
    ) -> Option<Part> {
        let mut state = self.state.lock();
        let mut part = state.parts.remove(partition)?;
        if let Some(event) = event {
            self.emit(event);
        }
        if let Some(reader) = part.reader.take() {
            reader.abort();
        }
        for inflight in part.inflight.values() {
            if let Some((count, _)) = state.slots.get_mut(&inflight.member) {
                *count = count.saturating_sub(1);
            }
        }
        Self::assign(&mut state);
        drop(state);
        self.notify_members();
        Some(part)
    }

    /// Asks the coordinator to write every acked position now.
    pub(super) async fn commit(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(Request::Commit(reply)).await.is_err() {
            return Ok(());
        }
        answer.await.unwrap_or(Ok(()))
    }

    /// Events on `member`'s partitions not yet acked by the group.
    pub(super) fn lag(&self, member: u64) -> Option<u64> {
        let state = self.state.lock();
        let mut total = 0u64;
        let mut known = false;
        for part in state.parts.values().filter(|p| p.member == Some(member)) {
            let behind = part.behind.load(Ordering::Relaxed);
            if behind != u64::MAX {
                known = true;
                total += behind;
            }
            total += (part.buffer.len() + part.tracker.window()) as u64;
        }
        let owns_nothing = !state.parts.values().any(|p| p.member == Some(member));
        (known || owns_nothing).then_some(total)
    }
}

/// A delivery's handle back into the runtime.
struct EngineAck {
    runtime: Arc<Runtime>,
    partition: PartitionId,
    generation: u64,
    ticket: Ticket,
    delivery_id: u64,
}

impl Acknowledge for EngineAck {
    fn settle(self: Box<Self>, outcome: Outcome) {
        self.runtime.settle(
            &self.partition,
            self.generation,
            self.ticket,
            self.delivery_id,
            outcome,
        );
    }
}

/// Errors after which reading the partition again cannot help: the group stops with them.
fn is_fatal(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::NotFound | ErrorKind::Closed)
}

/// Fills one partition's buffer from its reader while the runtime owns it.
async fn read_loop(
    runtime: Weak<Runtime>,
    partition: PartitionId,
    generation: u64,
    mut reader: Box<dyn PartitionReader>,
    space: Arc<Notify>,
    behind: Arc<AtomicU64>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let room = loop {
            let notified = space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let Some(rt) = runtime.upgrade() else { return };
                let state = rt.state.lock();
                let Some(part) = state
                    .parts
                    .get(&partition)
                    .filter(|p| p.generation == generation)
                else {
                    return;
                };
                // Refill from half empty, in one read, rather than topping up a few events at a
                // time.
                if part.buffer.len() <= rt.config.prefetch / 2
                    && part.tracker.window() < rt.config.max_window
                {
                    break rt.config.prefetch - part.buffer.len();
                }
            }
            notified.await;
        };
        let read = reader.read(room).await;
        behind.store(reader.behind().unwrap_or(u64::MAX), Ordering::Relaxed);
        let Some(rt) = runtime.upgrade() else { return };
        match read {
            Ok(batch) => {
                backoff = Duration::from_millis(100);
                let wake = {
                    let mut state = rt.state.lock();
                    let Some(part) = state
                        .parts
                        .get_mut(&partition)
                        .filter(|p| p.generation == generation)
                    else {
                        return;
                    };
                    // Members only wait on an empty buffer; a refill of a non-empty one needs
                    // no wake-up.
                    let was_empty = part.buffer.is_empty();
                    part.buffer.extend(batch.records);
                    part.reader_ended |= batch.ended;
                    was_empty && !part.buffer.is_empty()
                };
                if wake {
                    rt.notify_members();
                }
                if batch.ended {
                    rt.wake.notify_one();
                    return;
                }
            }
            Err(e) if is_fatal(e.kind()) => {
                rt.state.lock().fatal = Some((e.kind(), e.message().to_owned()));
                // Members get the error from now on; the leases go back, and a consumer that
                // joins later (say, of a stream created again) starts a fresh runtime.
                rt.phase.send_if_modified(|p| {
                    let running = matches!(p, Phase::Starting | Phase::Running);
                    if running {
                        *p = Phase::Stopping;
                    }
                    running
                });
                rt.notify_members();
                rt.wake.notify_one();
                return;
            }
            Err(e) => {
                tracing::warn!(stream = %rt.stream, group = %rt.group, partition = %partition,
                    error = %e, retry_in = ?backoff, "reading a partition failed; will retry");
                if !e.is_retryable() {
                    let mut state = rt.state.lock();
                    if let Some(part) = state
                        .parts
                        .get_mut(&partition)
                        .filter(|p| p.generation == generation)
                    {
                        part.error = Some((e.kind(), e.message().to_owned()));
                    }
                    drop(state);
                    rt.notify_members();
                }
                drop(rt);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}
