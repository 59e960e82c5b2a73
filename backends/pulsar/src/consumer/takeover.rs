//! Taking a partition over on a Failover subscription: the member holds it until the broker's
//! resend from the first unacknowledged entry has arrived (and, in a handover from a member
//! still connected, until that member's last acks are known), so that per-key order and acks
//! hold across the change (`handover.rs` reads the cursor; the crate docs tell the story),
//! and from then on drops what the broker sends it again (`Repeats`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pulsar::message::proto::MessageIdData;
use tokio::sync::mpsc;

use super::Command;
use super::driver::{Driver, Subscribe};
use super::handover::{self, Acknowledged};
use crate::position::MessagePosition;

impl Driver {
    /// The member was told it is the partition's active one: the partition is held until the
    /// broker's resend from the first unacknowledged entry has begun, and, when another
    /// member of the group is connected to the partition (a handover), until that member's
    /// last acks have landed and are known (`handover.rs`).
    ///
    /// The broker picks a new active member before it tells anyone: after it picks, the
    /// previous owner's last dispatch can be followed by a read for the new one, which is sent
    /// the partition's newest entries up to `activeConsumerFailoverDelayTimeMillis` (1 s)
    /// before the announcement and the rewind, while the previous owner still holds earlier
    /// entries undelivered (those are dropped in `handle`). A read the broker started for the
    /// member before the announcement can also survive the rewind: under way, it delivers
    /// newer entries ahead of the resend; waiting at the end of the partition, it sends
    /// nothing until something new is written. So the member compares what it has queued with
    /// the subscription's cursor and, until the resend shows up, asks the broker to rewind
    /// (`settled`).
    pub(super) fn hold_for_handover(&mut self, slot: usize) {
        self.acknowledged[slot] = None;
        self.repeats[slot] = None;
        self.rewind_at[slot] = None;
        self.awaiting_resend[slot] = None;
        let generation = {
            let mut state = self.shared.state.lock();
            let partition = &mut state.partitions[slot];
            partition.held = true;
            partition.generation
        };
        let subscribe = self.subscribe.clone();
        let to_self = self.to_self.clone();
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            let topic = &subscribe.topics[slot];
            let sub = &subscribe.subscription;
            let grace = subscribe.handover_grace;
            if !grace.is_zero() {
                match subscribe.admin.subscription_consumers(topic, sub).await {
                    Ok(consumers)
                        if !handover::grace_needed(&consumers, &subscribe.consumer_name, grace) =>
                    {
                        tracing::debug!(%topic, member = %subscribe.consumer_name, ?consumers, "pulsar: no handover wait");
                    }
                    Ok(_) => tokio::time::sleep(grace).await,
                    Err(error) => {
                        tracing::warn!(%error, "pulsar: taking over a partition without asking whether another member held it; events it acknowledged last may be delivered again");
                    }
                }
            }
            if stopping.load(Ordering::Acquire) {
                return;
            }
            let deadline = Instant::now() + RESEND_DEADLINE;
            read_cursor_and_settle(&subscribe, &to_self, slot, generation, deadline).await;
        });
    }

    /// A held partition flows again once the broker's resend from the first unacknowledged
    /// entry is queued: without what was acknowledged while it was held, and without what
    /// the broker sent before the resend.
    pub(super) async fn settled(
        &mut self,
        slot: usize,
        generation: u64,
        acknowledged: Option<Acknowledged>,
        deadline: Instant,
    ) {
        let topic = &self.subscribe.topics[slot];
        let member = &self.subscribe.consumer_name;
        let Trimmed { start, repeats, .. } = {
            let mut state = self.shared.state.lock();
            if state.partitions[slot].generation != generation || !state.partitions[slot].held {
                return;
            }
            let trimmed = trim_to_resend(&mut state, slot, acknowledged.as_ref());
            tracing::debug!(%topic, %member, ?acknowledged, start = ?trimmed.start, dropped = trimmed.dropped, queued = state.partitions[slot].queue.len(), first = ?state.partitions[slot].queue.front().map(|p| p.position), "pulsar: taking over, queue compared with the cursor");
            trimmed
        };
        if start.is_none() && Instant::now() < deadline {
            self.awaiting_resend[slot] = Some((generation, acknowledged));
            self.await_resend(slot, generation, deadline).await;
            return;
        }
        if start.is_none() {
            tracing::warn!(%topic, %member, "pulsar: the broker did not resend the partition from its first unacknowledged event in time; delivering what it sent");
        }
        self.shared.state.lock().partitions[slot].held = false;
        tracing::debug!(%topic, %member, "pulsar: handover settled");
        self.release(slot, acknowledged, repeats);
    }

    /// A held partition that was let go flows again: the cursor's acks are what later acks
    /// are compared with, what was queued is what later arrivals are compared with (when
    /// the resend was found), and waiting readers and the driver's intake are woken.
    fn release(
        &mut self,
        slot: usize,
        acknowledged: Option<Acknowledged>,
        repeats: Option<Repeats>,
    ) {
        self.awaiting_resend[slot] = None;
        self.rewind_at[slot] = None;
        self.acknowledged[slot] = acknowledged;
        self.repeats[slot] = repeats;
        self.shared.wake.notify_waiters();
        self.shared.room.notify_one();
    }

    /// Ends a takeover's wait for the broker's resend as soon as the resend's first event is
    /// queued, against the cursor already read. Waiting for the timed re-read instead
    /// (`RECHECK_EVERY` plus two admin calls) held every new member's events for about 250 ms
    /// after they had all arrived: a batched benchmark round read 30,000 events in 0.35 s, of
    /// which 0.24 s with every thread of the process asleep.
    pub(super) fn settle_on_arrival(&mut self, slot: usize) {
        let Some((generation, acknowledged)) = self.awaiting_resend[slot].take() else {
            return;
        };
        let repeats = {
            let mut state = self.shared.state.lock();
            if state.partitions[slot].generation != generation || !state.partitions[slot].held {
                return;
            }
            let trimmed = trim_to_resend(&mut state, slot, acknowledged.as_ref());
            if trimmed.start.is_none() {
                drop(state);
                self.awaiting_resend[slot] = Some((generation, acknowledged));
                return;
            }
            state.partitions[slot].held = false;
            trimmed.repeats
        };
        tracing::debug!(topic = %self.subscribe.topics[slot], member = %self.subscribe.consumer_name, "pulsar: handover settled on the resend's arrival");
        self.release(slot, acknowledged, repeats);
    }

    /// The resend from the first unacknowledged entry has not shown up in the queue: asks the
    /// broker to rewind (not at once, the resend may be on its way; then at most every
    /// `REWIND_EVERY`) and looks again shortly. An idle partition (nothing unacknowledged)
    /// flows at once: what comes next is written after the rewind.
    ///
    /// Nothing of the partition has been delivered since the announcement, so a rewind
    /// repeats nothing delivered; what is queued is dropped with the request, and what
    /// arrives after it and before the resend is dropped when the resend arrives. The resend
    /// may already have been on its way (a loaded broker or client): the broker then sends
    /// the unacknowledged entries once for it and once per request (a resend held back 3 s
    /// by a proxy: three requests, the batch sent four times; `tests/takeover.rs`). The
    /// first copy ends the wait and `Repeats` drops the others.
    async fn await_resend(&mut self, slot: usize, generation: u64, deadline: Instant) {
        let now = Instant::now();
        let empty = self.shared.state.lock().partitions[slot].queue.is_empty();
        let rewind_at = *self.rewind_at[slot].get_or_insert(now + FIRST_REWIND_AFTER);
        let rewind = now >= rewind_at;
        if rewind {
            self.rewind_at[slot] = Some(now + REWIND_EVERY);
            self.drop_held(slot);
            self.rewind(slot).await;
        }
        let subscribe = self.subscribe.clone();
        let to_self = self.to_self.clone();
        tokio::spawn(async move {
            if empty {
                let topic = &subscribe.topics[slot];
                match subscribe
                    .admin
                    .subscription_backlog(topic, &subscribe.subscription)
                    .await
                {
                    Ok(0) => {
                        if let Some(to_driver) = to_self.upgrade() {
                            let _ = to_driver.send(Command::Settled {
                                slot,
                                generation,
                                acknowledged: None,
                                deadline,
                            });
                        }
                        return;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(%error, "pulsar: taking over, the backlog is unknown");
                    }
                }
            }
            tokio::time::sleep(RECHECK_EVERY).await;
            read_cursor_and_settle(&subscribe, &to_self, slot, generation, deadline).await;
        });
    }

    /// Asks the broker to send the partition again from its first unacknowledged entry: a
    /// redelivery request from the active member cancels the broker's pending read, rewinds
    /// the cursor and reads again. On Failover any message id asks for all of them.
    async fn rewind(&mut self, slot: usize) {
        tracing::debug!(topic = %self.subscribe.topics[slot], member = %self.subscribe.consumer_name, "pulsar: taking over, asking the broker to rewind the partition");
        let id = MessageIdData {
            ledger_id: 0,
            entry_id: 0,
            partition: Some(self.subscribe.indexes[slot]),
            ..Default::default()
        };
        if let Some(member) = &mut self.members[slot]
            && let Err(error) = member.consumer.nack_with_id("", id).await
        {
            tracing::debug!(%error, "pulsar: a redelivery request could not be handed to the client");
        }
    }

    /// Empties a held partition's queue (its events come again), keeping it held.
    fn drop_held(&mut self, slot: usize) {
        {
            let mut state = self.shared.state.lock();
            let dropped = state.partitions[slot].queue.len();
            state.partitions[slot].queue.clear();
            state.queued -= dropped;
        }
        self.shared.room.notify_one();
    }
}

/// How long a member that became active waits for the broker's resend from the first
/// unacknowledged entry before it delivers what it has.
const RESEND_DEADLINE: Duration = Duration::from_secs(10);
/// How long after the first look finds no resend the member asks for one.
const FIRST_REWIND_AFTER: Duration = Duration::from_millis(300);
/// How often the member asks again while the resend does not show up.
const REWIND_EVERY: Duration = Duration::from_millis(900);
/// How often the member looks at its queue and the cursor while it waits for the resend.
const RECHECK_EVERY: Duration = Duration::from_millis(250);

/// Reads what the subscription has acknowledged on the slot's partition and tells the driver.
async fn read_cursor_and_settle(
    subscribe: &Subscribe,
    to_self: &mpsc::WeakUnboundedSender<Command>,
    slot: usize,
    generation: u64,
    deadline: Instant,
) {
    let topic = &subscribe.topics[slot];
    let acknowledged = match subscribe
        .admin
        .acknowledged(topic, &subscribe.subscription)
        .await
    {
        Ok(acknowledged) => Some(acknowledged),
        Err(error) => {
            tracing::warn!(%error, "pulsar: taking over a partition without knowing what its previous member acknowledged last; those events may be delivered again, and out of order");
            None
        }
    };
    if let Some(to_driver) = to_self.upgrade() {
        let _ = to_driver.send(Command::Settled {
            slot,
            generation,
            acknowledged,
            deadline,
        });
    }
}

/// What comparing a held partition's queue with the cursor found.
struct Trimmed {
    /// Where the resend starts in what is left (`None`: not queued yet; nothing acknowledged
    /// known means everything queued is taken as the resend).
    start: Option<usize>,
    /// How many queued events were dropped.
    dropped: usize,
    /// Once the resend was found against a known cursor: what the queue now holds, for
    /// dropping what the broker sends again.
    repeats: Option<Repeats>,
}

/// Compares a held partition's queue with the subscription's cursor: drops what the cursor
/// shows acknowledged and, once the broker's resend from the first unacknowledged entry is
/// queued, what the broker sent before it and any copy of the resend queued behind it.
fn trim_to_resend(
    state: &mut super::State,
    slot: usize,
    acknowledged: Option<&Acknowledged>,
) -> Trimmed {
    let partition = &mut state.partitions[slot];
    let before = partition.queue.len();
    let start = match acknowledged {
        Some(acked) => {
            partition.queue.retain(|pending| !acked.covers(&pending.id));
            acked.resend_start(
                partition
                    .queue
                    .iter()
                    .map(|pending| (pending.id.ledger_id as i64, pending.id.entry_id as i64)),
            )
        }
        None => Some(0),
    };
    let mut repeats = None;
    if let Some(start) = start {
        partition.queue.drain(..start);
        if acknowledged.is_some() {
            let mut seen = Repeats::default();
            partition
                .queue
                .retain(|pending| seen.admit(pending.position));
            repeats = Some(seen);
        }
    }
    let dropped = before - partition.queue.len();
    state.queued -= dropped;
    Trimmed {
        start,
        dropped,
        repeats,
    }
}

/// What a partition's active member has queued since its takeover settled, so that what
/// the broker sends it again is dropped.
///
/// On a Failover subscription the broker sends the active member the partition's entries in
/// order, and sends anything again only by rewinding to the first unacknowledged entry: at
/// the member's request (one that crossed the resend it was waiting for), when it announces
/// the member again, or when the crate re-subscribes after a reconnect. Everything between
/// that entry and the furthest one queued here was queued here already (or acknowledged),
/// and is queued or in flight still, or acknowledged: a copy would be a second delivery. So
/// an arrival at or before the furthest position queued is dropped. It holds only from a
/// resend found against a known cursor (`trim_to_resend`): before it, the broker may send
/// newer entries first and older ones after (`hold_for_handover`).
#[derive(Debug, Default)]
pub(crate) struct Repeats {
    furthest: Option<MessagePosition>,
}

impl Repeats {
    /// Whether an arriving event is new (and so, from now on, how far the member has queued).
    pub(crate) fn admit(&mut self, position: MessagePosition) -> bool {
        if self.furthest.is_some_and(|furthest| position <= furthest) {
            return false;
        }
        self.furthest = Some(position);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(entry: u64, batch: Option<i32>) -> MessagePosition {
        MessagePosition {
            ledger: 7,
            entry,
            partition: -1,
            batch,
        }
    }

    #[test]
    fn what_comes_again_after_a_rewind_is_dropped_and_what_follows_is_not() {
        let mut repeats = Repeats::default();
        let arrivals = [
            at(4, Some(0)),
            at(4, Some(1)),
            at(5, None),
            // The broker rewound to the first unacknowledged entry, 4.
            at(4, Some(0)),
            at(4, Some(1)),
            at(5, None),
            at(6, None),
        ];
        let admitted: Vec<bool> = arrivals.iter().map(|&p| repeats.admit(p)).collect();
        assert_eq!(admitted, [true, true, true, false, false, false, true]);
    }
}
