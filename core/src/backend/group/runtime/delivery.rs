//! Handing events to members and taking their acks back.
//!
//! The hot path of a group: every `receive` takes deliveries here and every ack or nack settles
//! here, under the runtime's one lock. Kept apart from membership and partition ownership
//! because its rules are its own: redeliveries go out before anything newer of their
//! partition, a member's in-flight limit and a partition's commit window bound what is taken,
//! and a handle from an earlier ownership or an earlier member settles into nothing.

use super::{Inflight, Part, Parts, Pending, Runtime, State};
#[cfg(test)]
use crate::backend::group::GroupEvent;
use crate::backend::{AckToken, SharedAcknowledge};
use crate::{AckHandle, Delivery, Error, Event, Outcome, PartitionId, Position, Result, Ticket};
use std::sync::Arc;

/// Where [`Runtime::take`] puts deliveries: a vector for `receive_batch`, a single slot for
/// `receive`, which so allocates no vector per call for its one delivery.
pub(in crate::backend::group) trait Deliveries {
    /// How many it holds.
    fn len(&self) -> usize;
    /// Adds one; `take` never adds more than it was asked for.
    fn push(&mut self, delivery: Delivery);
}

impl Deliveries for Vec<Delivery> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn push(&mut self, delivery: Delivery) {
        Vec::push(self, delivery);
    }
}

impl Deliveries for Option<Delivery> {
    fn len(&self) -> usize {
        usize::from(self.is_some())
    }
    fn push(&mut self, delivery: Delivery) {
        debug_assert!(self.is_none(), "one slot, asked for at most one delivery");
        *self = Some(delivery);
    }
}

impl Runtime {
    /// Takes up to `max` deliveries for `member` into `out`: redeliveries first, then buffered
    /// events, from the member's partitions starting at `rotate`. An error (the group's fatal
    /// one, or a read error not yet reported) is returned only when nothing was taken.
    pub(in crate::backend::group) fn take(
        self: &Arc<Self>,
        member: u64,
        max: usize,
        rotate: usize,
        out: &mut impl Deliveries,
    ) -> Result<()> {
        let mut guard = self.state.lock();
        let State {
            slots,
            parts,
            next_delivery,
            fatal,
            closed,
            ..
        } = &mut *guard;
        if *closed {
            return Err(Error::closed(format!(
                "the backend of group `{}` was closed",
                self.group
            )));
        }
        if let Some((kind, message)) = fatal {
            return Err(Error::new(*kind, message.clone()));
        }
        // One member lookup per call: the slot is read and updated through this one reference.
        let Some(slot) = slots.get_mut(&member) else {
            return Err(Error::closed("consumer was closed"));
        };
        let mut budget = max.min(slot.1.saturating_sub(slot.0));
        if budget == 0 {
            return Ok(());
        }
        let owned = |p: &Part| p.member == Some(member) && p.draining_since.is_none();
        let count = parts.values().filter(|p| owned(p)).count();
        if count == 0 {
            return Ok(());
        }
        // Start at a different partition on each call, so one busy partition cannot starve the
        // member's others. The member's partitions are walked in place, from the `skip`th and
        // round to the start: no list of them is built, no partition looked up by id.
        let skip = rotate % count;
        let taken_before = out.len();
        // Redeliveries first: they hold the commit back, and order asks that they go out
        // before anything later of their partition.
        if parts.values().any(|p| !p.redeliver.is_empty()) {
            each_owned_from(parts, &owned, skip, |id, part| {
                while budget > 0 {
                    let Some((ticket, pending)) = part.redeliver.pop_first() else {
                        break;
                    };
                    self.hand_out(
                        out,
                        next_delivery,
                        id,
                        part,
                        Handing::Again(ticket),
                        pending.event,
                        pending.attempt + 1,
                        member,
                    );
                    budget -= 1;
                }
                budget > 0
            });
        }
        if budget > 0 {
            each_owned_from(parts, &owned, skip, |id, part| {
                // A partition with redeliveries pending (a nack arrived meanwhile) delivers
                // nothing newer until they are out.
                if !part.redeliver.is_empty() {
                    return true;
                }
                let before = part.buffer.len();
                while budget > 0 && part.tracker.window() < self.config.max_window {
                    let Some(record) = part.buffer.pop_front() else {
                        break;
                    };
                    self.hand_out(
                        out,
                        next_delivery,
                        id,
                        part,
                        Handing::First(record.position),
                        record.event,
                        1,
                        member,
                    );
                    budget -= 1;
                }
                let low_water = self.config.prefetch / 2;
                if before > low_water && part.buffer.len() <= low_water {
                    part.space.notify_one();
                }
                budget > 0
            });
        }
        let taken = out.len() - taken_before;
        slot.0 += taken;
        let mut result = Ok(());
        if taken == 0 {
            each_owned_from(parts, &owned, skip, |_, part| match part.error.take() {
                Some((kind, message)) => {
                    result = Err(Error::new(kind, message));
                    false
                }
                None => true,
            });
        }
        result
    }

    /// Hands one delivery out into `out`, pushed there directly: returned, the delivery was
    /// copied once more on its way into the vector (34 instructions per event at batch 100).
    #[allow(clippy::too_many_arguments)]
    fn hand_out(
        self: &Arc<Self>,
        out: &mut impl Deliveries,
        next_delivery: &mut u64,
        id: &PartitionId,
        part: &mut Part,
        handing: Handing,
        event: Event,
        attempt: u32,
        member: u64,
    ) {
        *next_delivery += 1;
        let delivery_id = *next_delivery;
        let (ticket, first) = match handing {
            Handing::First(position) => (part.tracker.next_ticket(), Some(position)),
            Handing::Again(ticket) => (ticket, None),
        };
        // A redelivery's position is in the tracker: tracked and not acked.
        let position = match &first {
            Some(position) => Some(position.clone()),
            None => part.tracker.position(ticket).cloned(),
        };
        #[cfg(test)]
        self.emit(GroupEvent::Delivered {
            partition: id.clone(),
            owner: self.owner.clone(),
            position: position.clone().expect("a delivery's position is tracked"),
        });
        out.push(Delivery {
            event: event.clone(),
            partition: Some(id.clone()),
            position,
            attempt: Some(attempt),
            // One shared acknowledger (the runtime) and the delivery's numbers inline: no
            // allocation per delivery.
            handle: AckHandle::shared(
                self.clone(),
                AckToken([part.generation, ticket.as_u64(), delivery_id]),
            ),
        });
        let inflight = Inflight {
            event,
            attempt,
            member,
            delivery_id,
        };
        // The position moves into the tracker with the entry, one slot written once; the
        // tracker keeps it until the ack.
        match first {
            Some(position) => part.tracker.track_delivered(position, inflight),
            None => part.tracker.insert(ticket, inflight),
        }
    }

    /// Settles one delivery under the held lock. Returns whether members should hear of it.
    #[inline]
    fn settle_locked(&self, state: &mut State, token: AckToken, outcome: Outcome) -> bool {
        let AckToken([generation, ticket, delivery_id]) = token;
        let ticket = Ticket::from_u64(ticket);
        // By generation, a number, rather than by partition id: one hash probe instead of
        // string comparisons down the partition map on every ack.
        let Some(part) = state.parts.by_generation_mut(generation) else {
            return false;
        };
        // A stale handle (the delivery went back to the group when its member left) settles
        // nothing.
        let Some(inflight) = part.tracker.remove(ticket, delivery_id) else {
            return false;
        };
        let mut wake_members = false;
        if let Some((count, limit)) = state.slots.get_mut(&inflight.member) {
            wake_members = *count >= *limit;
            *count = count.saturating_sub(1);
        }
        match outcome {
            Outcome::Ack => {
                let full = part.tracker.window() >= self.config.max_window;
                // A reader paused on a full window goes on once the window has room.
                if part.tracker.ack(ticket)
                    && full
                    && part.tracker.window() < self.config.max_window
                {
                    part.space.notify_one();
                    wake_members = true;
                }
                if (part.reader_ended || part.draining_since.is_some())
                    && part.tracker.nothing_in_flight()
                {
                    self.wake.notify_one();
                }
                if part.settled.len() < self.config.prefetch && !part.reader_ended {
                    part.settled.push(inflight.event);
                }
                wake_members
            }
            Outcome::Nack => {
                part.redeliver.insert(
                    ticket,
                    Pending {
                        event: inflight.event,
                        attempt: inflight.attempt,
                    },
                );
                true
            }
        }
    }
}

/// What [`Runtime::hand_out`] hands out: a partition's next event, at its position, or a
/// tracked delivery again.
enum Handing {
    First(Position),
    Again(Ticket),
}

/// Calls `f` on each partition `owned` accepts, from the `skip`th of them round to the one
/// before it, while `f` returns `true`.
fn each_owned_from(
    parts: &mut Parts,
    owned: &impl Fn(&Part) -> bool,
    skip: usize,
    mut f: impl FnMut(&PartitionId, &mut Part) -> bool,
) {
    let mut walk = |from: usize, to: usize| {
        parts
            .iter_mut()
            .filter(|(_, p)| owned(p))
            .take(to)
            .skip(from)
            .all(|(id, part)| f(id, part))
    };
    if walk(skip, usize::MAX) {
        walk(0, skip);
    }
}

/// Every delivery's handle points back at its runtime, with the partition's generation, the
/// ticket and the delivery id in its token.
impl SharedAcknowledge for Runtime {
    fn settle_delivery(&self, token: AckToken, outcome: Outcome) {
        let mut state = self.state.lock();
        let wake = self.settle_locked(&mut state, token, outcome);
        // Checked under the lock (see `anyone_receiving`).
        let wake = wake && self.anyone_receiving();
        drop(state);
        if wake {
            self.notify_members();
        }
    }
}
