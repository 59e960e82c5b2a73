//! A partition's unsettled deliveries, by ticket.
//!
//! Tickets are the partition's ack tracker's: numbered in delivery order from 0, and every one
//! from the tracker's front (its oldest uncommitted delivery) on is in its window. So the
//! entries sit in a ring beside that window, one slot per ticket: a delivery's entry is a push
//! at the back, an ack's lookup an index, and the slots of committed tickets (all acked, so
//! empty) go from the front when the commit moves. A hash map of tickets cost a hash and a
//! probe on every delivery and every ack (about 100 instructions per event at batch 100 on
//! memory://).

use super::Inflight;
use crate::Ticket;

#[derive(Default)]
pub(in crate::backend::group) struct InflightSlots {
    /// Ticket of `slots[head]`: the tracker's front once [`InflightSlots::trim`] has followed it.
    front: u64,
    /// Slots before it are of committed tickets, dropped in bulk now and then: a committed
    /// ticket's slot is empty, and moving each out as the commit passes it cost more than the
    /// hash map did.
    head: usize,
    /// One per ticket from `front` on; `None` once settled (or queued for redelivery).
    slots: Vec<Option<Inflight>>,
    len: usize,
}

impl InflightSlots {
    /// Where `ticket`'s slot is (or would be).
    #[inline]
    fn index(&self, ticket: Ticket) -> Option<usize> {
        let ahead = ticket.as_u64().checked_sub(self.front)?;
        Some(self.head + ahead as usize)
    }

    /// Records `ticket`'s delivery; a ticket already committed (never the case for one the
    /// tracker still holds) is ignored.
    #[inline]
    pub(in crate::backend::group) fn insert(&mut self, ticket: Ticket, inflight: Inflight) {
        let Some(index) = self.index(ticket) else {
            debug_assert!(false, "a delivery of a committed ticket");
            return;
        };
        self.len += 1;
        if index == self.slots.len() {
            // A first delivery: the tracker's newest ticket.
            self.slots.push(Some(inflight));
        } else if let Some(slot) = self.slots.get_mut(index) {
            // A redelivery, into the slot its nack emptied.
            if slot.replace(inflight).is_some() {
                self.len -= 1;
            }
        } else {
            self.slots.resize_with(index, || None);
            self.slots.push(Some(inflight));
        }
    }

    /// Takes `ticket`'s unsettled delivery out if it is delivery `delivery_id` (a handle of an
    /// earlier delivery of the same ticket settles nothing).
    #[inline]
    pub(in crate::backend::group) fn remove(
        &mut self,
        ticket: Ticket,
        delivery_id: u64,
    ) -> Option<Inflight> {
        let index = self.index(ticket)?;
        let slot = self.slots.get_mut(index)?;
        if slot.as_ref()?.delivery_id != delivery_id {
            return None;
        }
        self.len -= 1;
        slot.take()
    }

    /// Passes the slots of tickets the tracker committed: after an ack moved the commit, the
    /// tracker's window is the tickets still held, the last `window` of these slots.
    #[inline]
    pub(in crate::backend::group) fn trim(&mut self, window: usize) {
        let committed = (self.slots.len() - self.head).saturating_sub(window);
        self.head += committed;
        self.front += committed as u64;
        // Dropped once they are half the vector: each slot is dropped and moved at most once.
        if self.head >= 64 && self.head * 2 >= self.slots.len() {
            debug_assert!(self.slots[..self.head].iter().all(Option::is_none));
            self.slots.drain(..self.head);
            self.head = 0;
        }
    }

    pub(in crate::backend::group) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every unsettled delivery.
    pub(in crate::backend::group) fn values(&self) -> impl Iterator<Item = &Inflight> {
        self.slots[self.head..].iter().flatten()
    }

    /// Takes out the unsettled deliveries `pick` accepts, in ticket order.
    pub(in crate::backend::group) fn take_if(
        &mut self,
        mut pick: impl FnMut(&Inflight) -> bool,
    ) -> Vec<(Ticket, Inflight)> {
        let mut taken = Vec::new();
        for (i, slot) in self.slots[self.head..].iter_mut().enumerate() {
            if slot.as_ref().is_some_and(&mut pick) {
                let inflight = slot.take().expect("checked");
                taken.push((Ticket::from_u64(self.front + i as u64), inflight));
            }
        }
        self.len -= taken.len();
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AckTracker, Event};

    fn entry(delivery_id: u64) -> Inflight {
        Inflight {
            event: Event::new(delivery_id.to_be_bytes().to_vec()),
            attempt: 1,
            member: 1,
            delivery_id,
        }
    }

    /// Beside a tracker, as the runtime keeps it: acks in any order, a nack's redelivery into
    /// its old slot, stale handles, and enough commits to drop the passed slots several times.
    #[test]
    fn slots_follow_the_tracker_window() {
        let mut tracker = AckTracker::new();
        let mut slots = InflightSlots::default();
        let mut next_id = 0;
        let mut deliver = |tracker: &mut AckTracker<u64>, slots: &mut InflightSlots| {
            next_id += 1;
            let ticket = tracker.track(next_id);
            slots.insert(ticket, entry(next_id));
            (ticket, next_id)
        };
        for round in 0..50u64 {
            let batch: Vec<_> = (0..7).map(|_| deliver(&mut tracker, &mut slots)).collect();
            // The third is nacked and delivered again under the same ticket, a new id.
            let (nacked, old_id) = batch[2];
            let pending = slots.remove(nacked, old_id).expect("in flight");
            assert!(slots.remove(nacked, old_id).is_none(), "settled once");
            slots.insert(
                nacked,
                Inflight {
                    delivery_id: old_id + 1_000_000,
                    ..pending
                },
            );
            // Acked newest first: nothing commits until the oldest is acked.
            for (i, (ticket, id)) in batch.iter().enumerate().rev() {
                let id = if i == 2 { id + 1_000_000 } else { *id };
                assert!(slots.remove(*ticket, id - 1).is_none(), "stale id");
                let entry = slots.remove(*ticket, id).expect("in flight");
                assert_eq!(
                    entry.event.payload.as_ref(),
                    &(id % 1_000_000).to_be_bytes()
                );
                if tracker.ack(*ticket).is_some() {
                    slots.trim(tracker.window());
                }
            }
            assert!(slots.is_empty(), "round {round}");
            assert_eq!(slots.values().count(), 0);
            assert_eq!(tracker.window(), 0);
        }
        // The passed slots went in bulk, not kept for ever.
        assert!(
            slots.slots.len() < 2 * 64 + 7,
            "{} slots",
            slots.slots.len()
        );
    }

    #[test]
    fn a_member_s_deliveries_are_taken_in_ticket_order() {
        let mut tracker = AckTracker::new();
        let mut slots = InflightSlots::default();
        for id in 1..=6u64 {
            let ticket = tracker.track(id);
            slots.insert(
                ticket,
                Inflight {
                    member: id % 2,
                    ..entry(id)
                },
            );
        }
        let taken: Vec<u64> = slots
            .take_if(|i| i.member == 1)
            .iter()
            .map(|(t, _)| t.as_u64())
            .collect();
        assert_eq!(taken, [0, 2, 4]);
        assert_eq!(
            slots.values().map(|i| i.delivery_id).collect::<Vec<_>>(),
            [2, 4, 6]
        );
        assert!(!slots.is_empty());
    }
}
