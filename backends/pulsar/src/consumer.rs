//! Receiving: one subscription member per partition, a driver task that owns them, and a
//! ready queue per partition that `receive()` takes from.
//!
//! ```text
//!  pulsar::Consumer per partition ──▶ driver task ──▶ per-partition ready queues ──▶ receive()
//!        ▲ ▲                            │   ▲                     ▲ nack: back to the front,  │
//!        │ └─ acks (whole entries) ◀────┘   └─ acks of batched ◀──┼── after a backoff ◀───────┤
//!        │                                     messages           │                           │
//!        └───────────────── other acks, straight to the member's engine ◀─────────────────────┘
//! ```
//!
//! - **Order.** A partition's events leave its queue in order. A nacked (or dropped) delivery
//!   goes back into its partition's queue in message-id order (ahead of the partition's later
//!   events, behind earlier ones nacked too) and holds the later events until its backoff
//!   (`nack_delay`, doubled per attempt, at most `nack_max_delay`) has passed: nacked events
//!   come back in the order they were first delivered, before the partition's later events,
//!   and other partitions keep flowing meanwhile. The crate's own
//!   nack would ask the broker for an immediate redelivery, which on a Failover subscription
//!   rewinds the whole partition and burns retries; tributary redelivers in process instead.
//! - **Attempts** are counted here: the crate does not expose the broker's redelivery count,
//!   and Failover subscriptions keep none (apache/pulsar#15836). After a member change the
//!   count starts again at 1.
//! - **Acks** are individual. An event from a batched message (another client's batching, or
//!   `batch_size`) is acknowledged to the broker once every event of its batch is: the crate
//!   would otherwise acknowledge the whole batch on its first ack, and a crash would lose the
//!   rest. So after a crash a partially acked batch comes back whole. Those acks go to the
//!   driver, which counts them; every other ack goes from the handle straight to the member's
//!   engine (`PartitionQueue::acker`), as the crate's own `ack` would send it.
//! - **Deadlines.** Every partition member that yielded nothing during the last second is
//!   checked (its statistics, which also give the backlog for [`Consumer::lag`]; a member whose
//!   messages flow is alive, and its backlog figure stays as last read until it pauses); one
//!   whose stream ended, or that has not answered for `operation_timeout`, is replaced by a new
//!   member, retried with backoff until the broker takes it. Events it had queued are dropped
//!   (the broker redelivers them).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pulsar::message::proto::MessageIdData;
use tokio::sync::{Notify, mpsc, oneshot};
use tributary::backend::{AckToken, SharedAcknowledge};
use tributary::{AckHandle, Consumer, Delivery, Error, Event, Outcome, PartitionId, Result};

use crate::position::MessagePosition;

pub(crate) type Acker = pulsar::consumer::Acker<pulsar::TokioExecutor>;

pub(crate) mod driver;
pub(crate) mod handover;
mod takeover;

pub(crate) use driver::Driver;
use driver::Member;

/// One event waiting in a partition's queue.
pub(crate) struct Pending {
    /// The partition's index among the consumer's members.
    pub slot: usize,
    pub event: Event,
    pub id: MessageIdData,
    pub position: MessagePosition,
    /// Events in the batched message it came in, if it came in one.
    pub batch_size: Option<i32>,
    pub generation: u64,
    pub attempt: u32,
    /// A nacked event waits until then.
    pub not_before: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct PartitionQueue {
    pub queue: VecDeque<Pending>,
    /// Bumped when the partition's member is replaced or loses the partition: deliveries of an
    /// earlier generation are redelivered by the broker, so their nacks are not requeued here.
    pub generation: u64,
    /// The member just took the partition over from another that is still connected: its
    /// events wait until what that member acknowledged meanwhile is known (`handover.rs`).
    pub held: bool,
    /// Hands acks straight to the partition member's engine, as the crate's own `ack` does:
    /// through the driver task, each ack cost a channel send and a wake-up of that task on its
    /// way to the same engine. `None` while the member is being replaced (acks then go to the
    /// driver, which holds them for the new member) and once the consumer is closed (the
    /// engine ends when the last of its senders is dropped).
    pub acker: Option<Acker>,
}

impl PartitionQueue {
    /// Puts a nacked event back before the partition's later events but after the ones
    /// nacked before it that came earlier in the partition: message-id order, which is the
    /// order they were first delivered in (nacking e0 then e1, or e1 then e0, brings back e0
    /// before e1).
    pub(crate) fn requeue(&mut self, pending: Pending) {
        let at = self
            .queue
            .iter()
            .position(|queued| queued.position > pending.position)
            .unwrap_or(self.queue.len());
        self.queue.insert(at, pending);
    }
}

pub(crate) struct State {
    pub partitions: Vec<PartitionQueue>,
    /// Round-robin start for the next `take`.
    pub cursor: usize,
    pub queued: usize,
    pub ready_cap: usize,
    pub in_flight: usize,
    pub max_in_flight: usize,
    /// Deliveries handed out and not settled yet, at the index their handle's token names:
    /// kept here, for a nack to put back, instead of in a box per handle.
    pub flight: Flight,
    /// An error for the next `receive()`.
    pub failure: Option<Error>,
    pub stopped: bool,
    pub lag: Option<u64>,
    /// `receive()` calls waiting for an event: a new event wakes them only when there are
    /// some (waking nobody still took the `Notify`'s lock, once per event).
    pub sleepers: usize,
}

/// A slab of deliveries in flight.
#[derive(Default)]
pub(crate) struct Flight {
    slots: Vec<Option<Pending>>,
    free: Vec<usize>,
}

impl Flight {
    fn insert(&mut self, pending: Pending) -> usize {
        match self.free.pop() {
            Some(index) => {
                self.slots[index] = Some(pending);
                index
            }
            None => {
                self.slots.push(Some(pending));
                self.slots.len() - 1
            }
        }
    }

    /// Each handle settles once, so an index is taken once before it is handed out again.
    fn take(&mut self, index: usize) -> Option<Pending> {
        let pending = self.slots.get_mut(index)?.take()?;
        self.free.push(index);
        Some(pending)
    }
}

impl State {
    /// Hands `pending` out: the delivery, its event shared with the copy kept for a nack.
    fn deliver(&mut self, pending: Pending, acks: &Arc<PulsarAcks>, partitioned: bool) -> Delivery {
        let partition = if partitioned { pending.slot as u32 } else { 0 };
        let event = pending.event.clone();
        let position = pending.position.to_position();
        let attempt = pending.attempt;
        let index = self.flight.insert(pending);
        self.in_flight += 1;
        Delivery {
            event,
            partition: Some(PartitionId::from(partition)),
            position: Some(position),
            attempt: Some(attempt),
            handle: AckHandle::shared(acks.clone(), AckToken([index as u64, 0, 0])),
        }
    }

    /// The next due event, round robin over partitions; or when the earliest nacked one is due.
    /// `now` is read only when a nacked event is at a queue's front.
    fn take(&mut self, now: &mut Option<Instant>) -> Result<Pending, Option<Instant>> {
        let n = self.partitions.len();
        let mut earliest: Option<Instant> = None;
        for step in 0..n {
            let index = (self.cursor + step) % n;
            let partition = &mut self.partitions[index];
            if partition.held {
                continue;
            }
            let queue = &mut partition.queue;
            match queue.front().map(|p| p.not_before) {
                None => continue,
                Some(Some(at)) if at > *now.get_or_insert_with(Instant::now) => {
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                }
                Some(_) => {
                    let pending = queue.pop_front().expect("front exists");
                    self.cursor = (index + 1) % n;
                    self.queued -= 1;
                    return Ok(pending);
                }
            }
        }
        Err(earliest)
    }
}

pub(crate) struct Shared {
    pub state: parking_lot::Mutex<State>,
    /// Wakes `receive()` callers: an event arrived, a nack came back, the consumer stopped.
    pub wake: Notify,
    /// Wakes the driver when the ready queues have room again.
    pub room: Notify,
    pub nack_delay: Duration,
    pub nack_max_delay: Duration,
}

impl Shared {
    fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(20);
        self.nack_delay
            .saturating_mul(1 << doublings)
            .min(self.nack_max_delay)
    }
}

/// What the rest of the process tells the driver.
pub(crate) enum Command {
    Ack {
        slot: usize,
        id: MessageIdData,
        batch_size: Option<i32>,
    },
    /// Make sure every ack so far reached the broker, then answer.
    Commit(oneshot::Sender<Result<()>>),
    /// Close the partition members, then answer (if anyone waits).
    Close(Option<oneshot::Sender<Result<()>>>),
    /// A replacement member for `slot` subscribed.
    Replaced(usize, Box<Member>),
    /// A held partition may flow again, less what the subscription acknowledged meanwhile.
    Settled {
        slot: usize,
        generation: u64,
        acknowledged: Option<handover::Acknowledged>,
        /// When to stop waiting for the broker's resend from the first unacknowledged entry.
        deadline: Instant,
    },
}

/// Settles every delivery of one consumer (one allocation per consumer, not per delivery).
pub(crate) struct PulsarAcks {
    pub shared: Arc<Shared>,
    pub to_driver: mpsc::UnboundedSender<Command>,
}

impl SharedAcknowledge for PulsarAcks {
    fn settle_delivery(&self, token: AckToken, outcome: Outcome) {
        let mut state = self.shared.state.lock();
        let Some(mut pending) = state.flight.take(token.0[0] as usize) else {
            return;
        };
        let slot = pending.slot;
        // Only an ack that frees a place under `max_in_flight` can end a `receive()`'s wait.
        let was_full = state.in_flight >= state.max_in_flight;
        state.in_flight = state.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Ack => {
                // An event of a batched message is acked once its whole batch is: the driver
                // counts those. Others go straight to the member's engine, under the lock so
                // that a replacement of the member (which clears `acker`) cannot come between.
                let mut id = pending.id;
                if pending.batch_size.is_none_or(|n| n <= 1)
                    && let Some(acker) = state.partitions.get(slot).and_then(|p| p.acker.as_ref())
                {
                    match acker.ack_with_id(id) {
                        Ok(()) => {
                            drop(state);
                            if was_full {
                                self.shared.wake.notify_waiters();
                            }
                            return;
                        }
                        Err(back) => id = back,
                    }
                }
                drop(state);
                // The driver may be gone (consumer closed): the group redelivers the event then.
                let _ = self.to_driver.send(Command::Ack {
                    slot,
                    id,
                    batch_size: pending.batch_size,
                });
                if !was_full {
                    return;
                }
            }
            Outcome::Nack => {
                let current = state.partitions.get(slot).map(|p| p.generation);
                if current == Some(pending.generation) && !state.stopped {
                    pending.not_before =
                        Some(Instant::now() + self.shared.backoff(pending.attempt));
                    pending.attempt += 1;
                    state.partitions[slot].requeue(pending);
                    state.queued += 1;
                }
                drop(state);
            }
        }
        self.shared.wake.notify_waiters();
    }
}

pub(crate) struct PulsarConsumer {
    pub(crate) stream: String,
    pub(crate) shared: Arc<Shared>,
    pub(crate) to_driver: mpsc::UnboundedSender<Command>,
    pub(crate) acks: Arc<PulsarAcks>,
    pub(crate) closed: AtomicBool,
    /// `true` when the stream is partitioned (partition ids are then the indexes).
    pub(crate) partitioned: bool,
}

impl PulsarConsumer {
    fn closed_error(&self) -> Error {
        Error::closed(format!("consumer of `{}` is closed", self.stream))
    }

    /// The next due delivery, or else until when to wait (`None`: until woken); `sleep`
    /// counts the caller among the `sleepers` when there is none.
    fn ready(&self, sleep: bool) -> Result<Result<Delivery, Option<Instant>>> {
        let mut state = self.shared.state.lock();
        if self.closed.load(Ordering::Acquire) || state.stopped {
            return Err(self.closed_error());
        }
        if let Some(error) = state.failure.take() {
            return Err(error);
        }
        let taken = if state.in_flight >= state.max_in_flight {
            Err(None)
        } else {
            state.take(&mut None)
        };
        match taken {
            Ok(pending) => {
                if state.queued + 1 == state.ready_cap {
                    self.shared.room.notify_one();
                }
                Ok(Ok(state.deliver(pending, &self.acks, self.partitioned)))
            }
            Err(earliest) => {
                state.sleepers += usize::from(sleep);
                Ok(Err(earliest))
            }
        }
    }
}

/// One `receive()` among the `sleepers` while it waits.
struct Sleeping<'a>(&'a Shared);

impl Drop for Sleeping<'_> {
    fn drop(&mut self) {
        self.0.state.lock().sleepers -= 1;
    }
}

#[async_trait]
impl Consumer for PulsarConsumer {
    async fn receive(&self) -> Result<Delivery> {
        // Under load an event is ready: look first without registering for a wake-up (the
        // `Notify`'s own lock, twice), and register only to wait, then look again.
        if let Ok(delivery) = self.ready(false)? {
            return Ok(delivery);
        }
        loop {
            let notified = self.shared.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait_until = match self.ready(true)? {
                Ok(delivery) => return Ok(delivery),
                Err(wait_until) => wait_until,
            };
            // Counted in `ready` under the lock the driver enqueues under, so an event queued
            // from here on sees it; uncounted however this wait ends (or is dropped).
            let _sleeping = Sleeping(&self.shared);
            match wait_until {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at.into(), notified).await;
                }
                None => notified.await,
            }
        }
    }

    /// Everything due in the ready queues, up to `max`, taken under one lock; waits (up to
    /// `linger` after the first) only when fewer are ready.
    async fn receive_batch(&self, max: usize, linger: Duration) -> Result<Vec<Delivery>> {
        let max = max.max(1);
        let mut batch = vec![self.receive().await?];
        let deadline = tokio::time::Instant::now() + linger;
        loop {
            {
                let mut state = self.shared.state.lock();
                let mut now = None;
                while batch.len() < max && state.in_flight < state.max_in_flight {
                    let Ok(pending) = state.take(&mut now) else {
                        break;
                    };
                    batch.push(state.deliver(pending, &self.acks, self.partitioned));
                }
                if state.queued < state.ready_cap {
                    self.shared.room.notify_one();
                }
            }
            if batch.len() >= max {
                return Ok(batch);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(batch);
            }
            match tokio::time::timeout(left, self.receive()).await {
                Ok(Ok(delivery)) => batch.push(delivery),
                Ok(Err(e)) if batch.is_empty() => return Err(e),
                Ok(Err(_)) | Err(_) => return Ok(batch),
            }
        }
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        if self.to_driver.send(Command::Close(Some(reply))).is_ok() {
            let _ = answer.await;
        }
        self.shared.wake.notify_waiters();
        Ok(())
    }

    async fn commit(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        let (reply, answer) = oneshot::channel();
        self.to_driver
            .send(Command::Commit(reply))
            .map_err(|_| self.closed_error())?;
        answer.await.map_err(|_| self.closed_error())?
    }

    fn lag(&self) -> Option<u64> {
        self.shared.state.lock().lag
    }
}

impl Drop for PulsarConsumer {
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            // Dropped without close: the driver closes the members, so the group redelivers
            // what this consumer held.
            let _ = self.to_driver.send(Command::Close(None));
        }
    }
}

/// Per partition, batched messages with some events acked: the batch is acknowledged to the
/// broker when all are.
#[derive(Default)]
pub(crate) struct BatchAcks {
    entries: HashMap<(u64, u64), (i32, Vec<bool>)>,
}

impl BatchAcks {
    /// Records the ack of one event; returns `true` when its whole batch is acked.
    pub(crate) fn ack(&mut self, id: &MessageIdData, batch_size: i32) -> bool {
        let index = id.batch_index.unwrap_or(0).max(0) as usize;
        let size = batch_size.max(1) as usize;
        let key = (id.ledger_id, id.entry_id);
        let (count, acked) = self
            .entries
            .entry(key)
            .or_insert_with(|| (0, vec![false; size]));
        if index < acked.len() && !acked[index] {
            acked[index] = true;
            *count += 1;
        }
        if *count as usize >= acked.len() {
            self.entries.remove(&key);
            return true;
        }
        false
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(entry: u64) -> Pending {
        Pending {
            slot: 0,
            event: Event::new(format!("e{entry}")),
            id: MessageIdData {
                ledger_id: 7,
                entry_id: entry,
                ..Default::default()
            },
            position: MessagePosition {
                ledger: 7,
                entry,
                partition: 0,
                batch: None,
            },
            batch_size: None,
            generation: 0,
            attempt: 1,
            not_before: None,
        }
    }

    #[test]
    fn nacked_events_return_in_first_delivery_order_before_later_ones() {
        let mut partition = PartitionQueue::default();
        for entry in 3..6 {
            partition.queue.push_back(pending(entry));
        }
        // Delivered e0, e1, e2; nacked e1 first, then e0, then e2.
        partition.requeue(pending(1));
        partition.requeue(pending(0));
        partition.requeue(pending(2));
        let order: Vec<u64> = partition.queue.iter().map(|p| p.position.entry).collect();
        assert_eq!(order, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_batch_is_acked_when_all_its_events_are() {
        let mut acks = BatchAcks::default();
        let id = |i: i32| MessageIdData {
            ledger_id: 1,
            entry_id: 2,
            batch_index: Some(i),
            ..Default::default()
        };
        assert!(!acks.ack(&id(2), 3));
        assert!(!acks.ack(&id(2), 3), "a repeated ack counts once");
        assert!(!acks.ack(&id(0), 3));
        assert!(acks.ack(&id(1), 3));
        assert!(acks.entries.is_empty());
    }
}
