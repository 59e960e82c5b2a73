//! One group's runtime in one engine: the partitions it owns, its members, deliveries, acks.
//!
//! Everything here runs under one short lock (`state`); store calls never do (they belong to
//! the coordinator task, `coordinator.rs`), and reads run in one task per owned partition.
//!
//! This file holds the runtime's state and its life (start, members joining and leaving,
//! stopping); the two paths that touch that state most have modules of their own:
//! - `delivery.rs`: taking deliveries for a member and settling their acks and nacks;
//! - `partition.rs`: an owned partition taken on and dropped, and its reader task.

mod delivery;
pub(super) use delivery::Deliveries;
mod partition;
mod parts;
mod tracker;
pub(super) use parts::Parts;
pub(super) use tracker::PartTracker;

use super::coordinator::{self, Request};
use super::{GroupConfig, GroupEvent, PartitionSource, SourceRecord};
use crate::backend::checkpoint::{CheckpointStore, Lease};
use crate::{Error, ErrorKind, Event, PartitionId, Position, Result, StartPosition, Ticket};
use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// A delivery not yet settled. Its position is not kept here: the partition's ack tracker holds
/// it until the delivery is acked, so the entry (copied in and out of the in-flight map on every
/// delivery and ack) is an event and three numbers.
pub(super) struct Inflight {
    pub(super) event: Event,
    pub(super) attempt: u32,
    pub(super) member: u64,
    pub(super) delivery_id: u64,
}

/// A delivery to make again; its position is in the partition's ack tracker, as for
/// [`Inflight`].
pub(super) struct Pending {
    pub(super) event: Event,
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
    /// Its deliveries from the commit on, the unsettled ones' entries with them.
    pub(super) tracker: PartTracker,
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
    /// The engine's copies of acked events, dropped by the reader task on its next read
    /// rather than by the acking thread: a backend's reader side allocated them (Event Hubs
    /// decodes on its receive tasks), and glibc pays for every block freed on another thread
    /// than the one that allocated it (its per-thread cache cannot take it back; the heap's
    /// lock is contended). The application's own copy then drops only reference counts. At
    /// most `prefetch` of them, so memory stays within what the buffer may hold; beyond that
    /// the acking thread drops them as before.
    pub(super) settled: Vec<Event>,
}

impl Part {
    /// Read to its end and every event in it settled and acked.
    pub(super) fn finished(&self) -> bool {
        self.reader_ended
            && self.buffer.is_empty()
            && self.redeliver.is_empty()
            && self.tracker.nothing_in_flight()
            && self.tracker.unacked() == 0
    }
}

/// Per member: deliveries unsettled and the member's limit, by member id. A vector in id order
/// (ids only grow, so a join appends): an ack looks its member up with a search of a few
/// entries, where a hash map's probe was a call of about 35 instructions per ack.
#[derive(Default)]
pub(super) struct MemberSlots(Vec<(u64, (usize, usize))>);

impl MemberSlots {
    #[inline]
    pub(super) fn get_mut(&mut self, member: &u64) -> Option<&mut (usize, usize)> {
        let i = self.0.binary_search_by_key(member, |(m, _)| *m).ok()?;
        Some(&mut self.0[i].1)
    }

    pub(super) fn insert(&mut self, member: u64, slot: (usize, usize)) {
        match self.0.binary_search_by_key(&member, |(m, _)| *m) {
            Ok(i) => self.0[i].1 = slot,
            Err(i) => self.0.insert(i, (member, slot)),
        }
    }

    pub(super) fn remove(&mut self, member: u64) {
        if let Ok(i) = self.0.binary_search_by_key(&member, |(m, _)| *m) {
            self.0.remove(i);
        }
    }

    pub(super) fn clear(&mut self) {
        self.0.clear();
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) members: Vec<u64>,
    /// Per member: deliveries unsettled and the member's limit.
    pub(super) slots: MemberSlots,
    pub(super) parts: Parts,
    next_member: u64,
    next_delivery: u64,
    next_generation: u64,
    /// An error every member gets from now on (the stream was deleted, the backend closed).
    pub(super) fatal: Option<(ErrorKind, String)>,
    pub(super) closed: bool,
}

impl State {
    /// `id` if it is still owned under `generation`: work begun under one ownership of a
    /// partition (a read, a store call, a delivery) must not touch a later one.
    pub(super) fn part(&self, id: &PartitionId, generation: u64) -> Option<&Part> {
        self.parts.get(id).filter(|p| p.generation == generation)
    }

    /// [`State::part`], to change.
    pub(super) fn part_mut(&mut self, id: &PartitionId, generation: u64) -> Option<&mut Part> {
        self.parts
            .get_mut(id)
            .filter(|p| p.generation == generation)
    }
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
    /// Members inside a receive (see [`Runtime::receiving`]).
    receiving: AtomicUsize,
}

/// Counts a member as receiving while it lives.
pub(super) struct Receiving<'a>(&'a AtomicUsize);

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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
            receiving: AtomicUsize::new(0),
        })
    }

    pub(super) fn emit(&self, event: GroupEvent) {
        tracing::debug!(backend = self.config.backend, stream = %self.stream, group = %self.group, ?event, "group event");
        if let Some(observer) = &self.config.observer {
            observer(&event);
        }
    }

    pub(super) fn notify_members(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Marks a member as receiving, before its first look at the state: the hot paths (a read
    /// landing, an ack) wake members only when one is receiving, which saves the `watch` send
    /// (a lock and the waiters' lists) per batch while the consumer is busy elsewhere.
    pub(super) fn receiving(&self) -> Receiving<'_> {
        self.receiving.fetch_add(1, Ordering::Relaxed);
        Receiving(&self.receiving)
    }

    /// Whether a member may be waiting for news. Read under the state lock: a member counts
    /// itself before it takes that lock, so either this sees it, or the member's look at the
    /// state comes after this change and sees the change (no lost wake-up).
    pub(super) fn anyone_receiving(&self) -> bool {
        self.receiving.load(Ordering::Relaxed) > 0
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

    /// Moves a starting or running runtime to `Stopping` (the coordinator then commits and
    /// releases); a runtime already stopping, stopped or failed stays as it is.
    pub(super) fn begin_stopping(&self) {
        self.phase.send_if_modified(|p| {
            let running = matches!(p, Phase::Starting | Phase::Running);
            if running {
                *p = Phase::Stopping;
            }
            running
        });
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
        state.slots.remove(member);
        for part in state.parts.values_mut() {
            for (ticket, i) in part.tracker.take_in_flight_if(|i| i.member == member) {
                part.redeliver.insert(
                    ticket,
                    Pending {
                        event: i.event,
                        attempt: i.attempt,
                    },
                );
            }
        }
        Self::assign(&mut state);
        let last = state.members.is_empty();
        drop(state);
        if last {
            self.begin_stopping();
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
        self.begin_stopping();
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
