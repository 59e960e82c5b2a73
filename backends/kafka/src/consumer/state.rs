//! What the consumer, the driver thread and every delivery's ack handle share: the assigned
//! partitions with their ack trackers, the ready queue, the redelivery queue, the in-flight
//! count. Critical sections are short; the lock is never held across `poll` or an await.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Notify, oneshot};
use tributary::backend::{AckToken, AckTracker, SharedAcknowledge, Ticket};
use tributary::{
    AckHandle, Delivery, Error, Outcome, PartitionId, Position, Result, StartPosition,
};

use crate::fetched::{Fetched, Names};

/// Shared by the consumer, the driver thread (and the rebalance callback, which runs inside
/// `poll` on that thread), the committer thread and the ack handles.
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Wakes `receive()` callers: events arrived, a redelivery was queued, in-flight room
    /// freed up, or the consumer stopped.
    pub(super) wake: Notify,
    /// Signalled when the ready queue drains to `low_water`, waking a driver that stopped
    /// fetching because it was full.
    pub(super) room: Condvar,
    /// Signalled when a delivery is settled while partitions are being revoked: the revoke
    /// callback waits on it for their deliveries still out (see [`State::begin_revoke`]).
    pub(super) settled: Condvar,
    /// How long a revoke waits for them (`revoke_grace`).
    pub(super) revoke_grace: Duration,
}

/// An event waiting to be handed to the application.
pub(super) struct Pending {
    pub(super) partition: i32,
    pub(super) offset: i64,
    /// Its content. The event is built from it when handed out (on the application's side,
    /// leaving the driver thread, the pipeline's busier stage, only the copy out of
    /// librdkafka), and again should it be nacked.
    pub(super) fetched: Fetched,
    /// `Some` for a redelivery: the generation and ticket it already has.
    pub(super) redelivery: Option<(u64, Ticket)>,
    pub(super) attempt: u32,
}

impl Pending {
    /// A message fetched for the first time.
    pub(super) fn new(partition: i32, offset: i64, fetched: Fetched) -> Pending {
        Pending {
            partition,
            offset,
            fetched,
            redelivery: None,
            attempt: 1,
        }
    }
}

/// Hashes partition numbers (small integers) with one multiplication: SipHash showed in the
/// profile at two lookups per event.
#[derive(Default)]
pub(super) struct PartitionHasher(u64);

impl Hasher for PartitionHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_i32(&mut self, n: i32) {
        self.0 = (n as u32 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The assigned partitions by number.
pub(super) type Partitions = HashMap<i32, PartitionState, BuildHasherDefault<PartitionHasher>>;

/// What a delivery's [`AckHandle`] carries to settle it (an [`AckToken`]): its partition and
/// attempt, the partition's generation when it was handed out, and its ticket. The handle
/// points at the consumer's [`Shared`], so a delivery costs no allocation for its ack.
struct Settle {
    partition: i32,
    attempt: u32,
    generation: u64,
    ticket: Ticket,
}

impl Settle {
    fn token(&self) -> AckToken {
        AckToken([
            u64::from(self.partition as u32) | u64::from(self.attempt) << 32,
            self.generation,
            self.ticket.as_u64(),
        ])
    }

    fn from_token(token: AckToken) -> Settle {
        let [first, generation, ticket] = token.0;
        Settle {
            partition: first as u32 as i32,
            attempt: (first >> 32) as u32,
            generation,
            ticket: Ticket::from_u64(ticket),
        }
    }
}

/// The outcome is applied to the shared state at once, on the caller's thread: a nacked event
/// is then queued for redelivery before the application can receive anything later from its
/// partition, and an ack costs one short lock instead of a message to the driver.
impl SharedAcknowledge for Shared {
    fn settle_delivery(&self, token: AckToken, outcome: Outcome) {
        let (receivable, revoking) = {
            let mut state = self.state.lock();
            (
                state.apply(Settle::from_token(token), outcome),
                state.revoking > 0,
            )
        };
        if revoking {
            self.settled.notify_all();
        }
        if receivable {
            self.wake.notify_waiters();
        }
    }
}

/// The contents of a tracker's window: the delivery of ticket `first + i` at index `i`.
#[derive(Default)]
pub(super) struct Contents {
    first: u64,
    fetched: VecDeque<Fetched>,
}

impl Contents {
    /// Adds the content of the delivery just tracked as `ticket`.
    fn push(&mut self, ticket: Ticket, fetched: Fetched) {
        if self.fetched.is_empty() {
            self.first = ticket.as_u64();
        }
        self.fetched.push_back(fetched);
    }

    fn get(&self, ticket: Ticket) -> Option<&Fetched> {
        let index = ticket.as_u64().checked_sub(self.first)?;
        self.fetched.get(usize::try_from(index).ok()?)
    }

    /// Drops the contents of deliveries committed since: the tracker's window is its newest
    /// `window` tickets.
    fn trim(&mut self, window: usize) {
        while self.fetched.len() > window {
            self.fetched.pop_front();
            self.first += 1;
        }
    }
}

pub(super) struct PartitionState {
    /// The partition as the application sees it (made once: it is handed out per delivery).
    pub(super) id: PartitionId,
    /// Changes with every assignment, so outcomes of deliveries from an earlier assignment are
    /// recognised and ignored.
    pub(super) generation: u64,
    pub(super) tracker: AckTracker<i64>,
    /// The content of each delivery the tracker holds (its window, oldest first), so that a
    /// nack can queue it again without a copy per delivery. Trimmed as the acked prefix is
    /// committed, so no content outlives its delivery's commit.
    pub(super) contents: Contents,
    /// The offset last committed (next to read), to skip commits that change nothing.
    pub(super) committed: Option<i64>,
    /// The first offset this member reads (the group's commit, or the resolved start):
    /// everything before it counts as processed. `None` until known (when the broker could
    /// not say where "latest" was, the first event fetched tells).
    pub(super) start: Option<i64>,
    /// Deliveries of this assignment handed out and not yet settled.
    pub(super) in_flight: usize,
    /// A rebalance is taking the partition: nothing more of it is handed out while the revoke
    /// waits for its deliveries still out.
    pub(super) revoking: bool,
    /// The partition's end offset as last seen (the broker's high watermark, or past the last
    /// event fetched); `None` until known.
    pub(super) end: Option<i64>,
}

impl PartitionState {
    /// Events from the first unacked one to the end.
    fn lag(&self) -> Option<u64> {
        let processed = match self.tracker.committed() {
            Some(&last) => last + 1,
            None => self.start?,
        };
        Some(self.end?.saturating_sub(processed).max(0) as u64)
    }
}

pub(super) struct State {
    pub(super) topic: String,
    pub(super) start: StartPosition,
    pub(super) timeout: Duration,
    pub(super) partitions: Partitions,
    pub(super) next_generation: u64,
    /// Fetched events waiting for `receive()`, and their size in bytes.
    pub(super) ready: VecDeque<Pending>,
    pub(super) ready_bytes: usize,
    /// Nacked events, by partition and offset: handed out before anything in `ready`, so a
    /// nacked event comes back before any later event of its partition, and nacked events of
    /// one partition come back in offset order (the order they were first delivered).
    pub(super) redeliveries: BTreeMap<(i32, i64), Pending>,
    /// A command (commit, close) is waiting in the driver's inbox: the driver must not sleep
    /// on `room` until it has read it. Without this a per-batch commit waited out the driver's
    /// 100 ms nap whenever the ready queue was full, which capped a bridge at ~5k events/s.
    pub(super) command_waiting: bool,
    pub(super) low_water: usize,
    /// Deliveries handed out and not yet settled.
    pub(super) in_flight: usize,
    pub(super) max_in_flight: usize,
    /// Partitions marked `revoking`: settles wake the revoke callback only while there are any.
    pub(super) revoking: usize,
    /// Set by a rebalance: the driver re-applies its pause decision to the new assignment.
    pub(super) assignment_changed: bool,
    /// How often the driver paused its partitions because the application stopped taking
    /// events (each pause discards librdkafka's prefetch).
    pub(super) pauses: u64,
    /// Header names met so far (see [`Names`]).
    pub(super) names: Names,
    /// An error for every later `receive()` (a deleted topic, a fatal client error).
    pub(super) failure: Option<Error>,
    /// The driver has stopped: `receive()` reports the consumer closed.
    pub(super) stopped: bool,
    pub(super) joined: Option<oneshot::Sender<Result<()>>>,
}

impl State {
    pub(super) fn new(
        topic: &str,
        start: StartPosition,
        timeout: Duration,
        max_in_flight: usize,
        max_ready: usize,
        joined: oneshot::Sender<Result<()>>,
    ) -> State {
        State {
            topic: topic.to_string(),
            start,
            timeout,
            partitions: Partitions::default(),
            next_generation: 0,
            ready: VecDeque::new(),
            ready_bytes: 0,
            redeliveries: BTreeMap::new(),
            command_waiting: false,
            low_water: max_ready / 2,
            in_flight: 0,
            max_in_flight,
            revoking: 0,
            assignment_changed: false,
            pauses: 0,
            names: Names::new(),
            failure: None,
            stopped: false,
            joined: Some(joined),
        }
    }

    /// Starts tracking a newly assigned partition from `start` (its next offset to read).
    pub(super) fn assign(&mut self, partition: i32, start: Option<i64>, end: Option<i64>) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let replaced = self.partitions.insert(
            partition,
            PartitionState {
                id: PartitionId::from(partition as u32),
                generation,
                tracker: AckTracker::new(),
                contents: Contents::default(),
                committed: start,
                start,
                end,
                in_flight: 0,
                revoking: false,
            },
        );
        if replaced.is_some_and(|p| p.revoking) {
            self.revoking -= 1;
        }
    }

    /// Starts revoking the partitions of `list` this consumer holds: hands out nothing more of
    /// them (their queued events are withdrawn, the next owner reads them; a nack during the
    /// wait queues nothing, see [`apply`](State::apply)) and counts them, so settles wake the
    /// revoke's wait ([`Shared::settled`]) for [`revoking_in_flight`].
    ///
    /// [`revoking_in_flight`]: State::revoking_in_flight
    pub(super) fn begin_revoke(&mut self, list: &TopicPartitionList) {
        for element in list.elements() {
            if let Some(partition) = self.partitions.get_mut(&element.partition())
                && !partition.revoking
            {
                partition.revoking = true;
                self.revoking += 1;
            }
        }
        self.withdraw_undeliverable();
    }

    /// Deliveries of revoking partitions still out.
    pub(super) fn revoking_in_flight(&self) -> usize {
        self.partitions
            .values()
            .filter(|p| p.revoking)
            .map(|p| p.in_flight)
            .sum()
    }

    /// Forgets the partitions of `list` (revoked); their late outcomes are ignored.
    pub(super) fn remove(&mut self, list: &TopicPartitionList) {
        for element in list.elements() {
            if let Some(partition) = self.partitions.remove(&element.partition())
                && partition.revoking
            {
                self.revoking -= 1;
            }
        }
        self.withdraw_undeliverable();
    }

    pub(super) fn commit_list(&self, only: Option<&TopicPartitionList>) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (&partition, state) in &self.partitions {
            if let Some(only) = only
                && only.find_partition(&self.topic, partition).is_none()
            {
                continue;
            }
            if let Some(&last) = state.tracker.committed() {
                let next = last + 1;
                if state.committed.is_none_or(|c| c < next) {
                    let _ = list.add_partition_offset(&self.topic, partition, Offset::Offset(next));
                }
            }
        }
        list
    }

    pub(super) fn mark_committed(&mut self, list: &TopicPartitionList) {
        for element in list.elements() {
            if let (Some(state), Offset::Offset(next)) = (
                self.partitions.get_mut(&element.partition()),
                element.offset(),
            ) {
                state.committed = Some(state.committed.map_or(next, |c| c.max(next)));
            }
        }
    }

    /// Applies an outcome; `true` when it may let a waiting `receive()` proceed (a redelivery
    /// was queued, or the in-flight limit no longer holds it back).
    fn apply(&mut self, settle: Settle, outcome: Outcome) -> bool {
        let was_full = self.in_flight >= self.max_in_flight;
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(partition) = self.partitions.get_mut(&settle.partition) else {
            return was_full; // revoked since: the new owner redelivers it
        };
        if partition.generation != settle.generation {
            return was_full;
        }
        partition.in_flight = partition.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Ack => {
                partition.tracker.ack(settle.ticket);
                partition.contents.trim(partition.tracker.window());
                was_full
            }
            // Being revoked: not queued again here; the commit stays below it, so the next
            // owner reads it.
            Outcome::Nack if partition.revoking => was_full,
            Outcome::Nack => {
                let (Some(&offset), Some(fetched)) = (
                    partition.tracker.position(settle.ticket),
                    partition.contents.get(settle.ticket),
                ) else {
                    return was_full; // settled before (a handle settles once)
                };
                let fetched = fetched.clone();
                self.redeliveries.insert(
                    (settle.partition, offset),
                    Pending {
                        partition: settle.partition,
                        offset,
                        fetched,
                        redelivery: Some((settle.generation, settle.ticket)),
                        attempt: settle.attempt + 1,
                    },
                );
                true
            }
        }
    }

    /// The group's backlog on this member's partitions: `None` while an end is unknown.
    pub(super) fn lag(&self) -> Option<u64> {
        self.partitions.values().map(PartitionState::lag).sum()
    }

    /// Forgets queued events of partitions no longer assigned or being revoked.
    pub(super) fn withdraw_undeliverable(&mut self) {
        let partitions = &self.partitions;
        let deliverable = |partition: &i32| partitions.get(partition).is_some_and(|p| !p.revoking);
        self.ready.retain(|p| deliverable(&p.partition));
        self.redeliveries
            .retain(|(partition, _), _| deliverable(partition));
        self.ready_bytes = self.ready.iter().map(|p| p.fetched.size()).sum();
    }

    /// Queues fetched events for the application.
    pub(super) fn enqueue(&mut self, batch: &mut Vec<Pending>) {
        for pending in batch.drain(..) {
            let Some(partition) = self.partitions.get_mut(&pending.partition) else {
                continue; // fetched just before a revoke
            };
            partition.start.get_or_insert(pending.offset);
            let next = pending.offset + 1;
            partition.end = Some(partition.end.map_or(next, |end| end.max(next)));
            self.ready_bytes += pending.fetched.size();
            self.ready.push_back(pending);
        }
    }

    /// Takes up to `max` events for the application (redeliveries first), registering each
    /// with its partition's tracker.
    pub(super) fn take(
        &mut self,
        max: usize,
        shared: &Arc<Shared>,
        into: &mut Vec<Delivery>,
    ) -> usize {
        let before = into.len();
        // Exactly the room needed: a batch sized for `max` up front cost a large allocation
        // per call even when a handful of events was ready.
        let ready = self.redeliveries.len() + self.ready.len();
        let room = self.max_in_flight.saturating_sub(self.in_flight);
        into.reserve(max.min(ready).min(room));
        while into.len() - before < max {
            let Some(delivery) = self.next(shared) else {
                break;
            };
            into.push(delivery);
        }
        into.len() - before
    }

    /// The next event for the application (redeliveries first), registered with its
    /// partition's tracker; `None` when none is ready or the in-flight limit holds it back.
    pub(super) fn next(&mut self, shared: &Arc<Shared>) -> Option<Delivery> {
        while self.in_flight < self.max_in_flight {
            let pending = match self.redeliveries.pop_first() {
                Some((_, pending)) => pending,
                None => {
                    let pending = self.ready.pop_front()?;
                    self.ready_bytes = self.ready_bytes.saturating_sub(pending.fetched.size());
                    if self.ready.len() == self.low_water {
                        // The driver may be waiting for room (see `Driver::fetch`).
                        shared.room.notify_one();
                    }
                    pending
                }
            };
            let Some(partition) = self.partitions.get_mut(&pending.partition) else {
                continue;
            };
            let event = pending.fetched.event(&mut self.names);
            let (generation, ticket) = match pending.redelivery {
                Some((generation, ticket)) if generation == partition.generation => {
                    (generation, ticket)
                }
                Some(_) => continue,
                None => {
                    let ticket = partition.tracker.track(pending.offset);
                    partition.contents.push(ticket, pending.fetched);
                    (partition.generation, ticket)
                }
            };
            self.in_flight += 1;
            partition.in_flight += 1;
            let settle = Settle {
                partition: pending.partition,
                attempt: pending.attempt,
                generation,
                ticket,
            };
            return Some(Delivery {
                event,
                partition: Some(partition.id.clone()),
                position: Some(Position::from_offset(pending.offset.max(0) as u64)),
                attempt: Some(pending.attempt),
                handle: AckHandle::shared(shared.clone(), settle.token()),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_what_a_settle_needs() {
        for (partition, attempt, generation, ticket) in [
            (0, 1, 0, 0),
            (7, 2, 5, 99),
            (i32::MAX, u32::MAX, u64::MAX, u64::MAX),
        ] {
            let settle = Settle {
                partition,
                attempt,
                generation,
                ticket: Ticket::from_u64(ticket),
            };
            let back = Settle::from_token(settle.token());
            assert_eq!(
                (back.partition, back.attempt, back.generation, back.ticket),
                (partition, attempt, generation, settle.ticket)
            );
        }
    }

    /// The contents follow the tracker's window: a nack finds its delivery's content, and
    /// what is committed is dropped.
    #[test]
    fn contents_follow_the_tracker_window() {
        use bytes::Bytes;
        let mut tracker = AckTracker::new();
        let mut contents = Contents::default();
        let tickets: Vec<Ticket> = (10..13)
            .map(|offset| {
                let ticket = tracker.track(offset);
                contents.push(ticket, Fetched::for_test(Bytes::from(offset.to_string())));
                ticket
            })
            .collect();
        let payload = |contents: &Contents, t| {
            contents
                .get(t)
                .map(|f: &Fetched| f.event(&mut crate::fetched::Names::new()).payload)
        };
        tracker.ack(tickets[1]);
        contents.trim(tracker.window());
        assert_eq!(payload(&contents, tickets[0]).as_deref(), Some(&b"10"[..]));
        tracker.ack(tickets[0]);
        contents.trim(tracker.window());
        assert_eq!(payload(&contents, tickets[0]), None, "committed: dropped");
        assert_eq!(payload(&contents, tickets[2]).as_deref(), Some(&b"12"[..]));
        tracker.ack(tickets[2]);
        contents.trim(tracker.window());
        let next = tracker.track(13);
        contents.push(next, Fetched::for_test(Bytes::from_static(b"13")));
        assert_eq!(payload(&contents, next).as_deref(), Some(&b"13"[..]));
    }
}
