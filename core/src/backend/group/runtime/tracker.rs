//! A partition's deliveries from its commit on: each one's position, whether it is acked, and
//! its unsettled delivery if one is out.
//!
//! [`AckTracker`](crate::AckTracker)'s rule — the checkpoint is the last position of the
//! longest acked prefix — with the in-flight entries kept in the same slots, one per ticket:
//! tickets are numbered in delivery order, so a delivery is a push at the back and an ack an
//! index, where the engine kept a hash map of in-flight entries beside the tracker (a hash and
//! a probe per delivery and per ack). Slots the commit has passed are not moved out one by one
//! (each pop copied a slot, which cost more than the map did): they are dropped in bulk once
//! they are half the vector, so each slot is moved at most once more.

use super::Inflight;
use crate::{Position, Ticket};

struct Slot {
    position: Position,
    acked: bool,
    /// The delivery out now; `None` once settled, or while it waits for redelivery.
    inflight: Option<Inflight>,
}

pub(in crate::backend::group) struct PartTracker {
    /// Ticket of `slots[head]`, the oldest uncommitted delivery.
    front: u64,
    /// Slots before it are committed (all acked, none in flight), dropped in bulk now and then.
    head: usize,
    slots: Vec<Slot>,
    unacked: usize,
    inflight: usize,
    committed: Option<Position>,
}

impl PartTracker {
    /// A tracker whose commit starts at `committed` (the last processed position).
    pub(in crate::backend::group) fn starting_at(committed: Option<Position>) -> Self {
        PartTracker {
            front: 0,
            head: 0,
            slots: Vec::new(),
            unacked: 0,
            inflight: 0,
            committed,
        }
    }

    /// Where `ticket`'s slot is, if it is not committed.
    #[inline]
    fn index(&self, ticket: Ticket) -> Option<usize> {
        let ahead = ticket.as_u64().checked_sub(self.front)?;
        self.head.checked_add(usize::try_from(ahead).ok()?)
    }

    /// The ticket [`PartTracker::track_delivered`] gives next.
    #[inline]
    pub(in crate::backend::group) fn next_ticket(&self) -> Ticket {
        Ticket::from_u64(self.front + (self.slots.len() - self.head) as u64)
    }

    /// Registers the first delivery of the partition's next event, at `position`: call in the
    /// partition's delivery order.
    #[inline]
    pub(in crate::backend::group) fn track_delivered(
        &mut self,
        position: Position,
        inflight: Inflight,
    ) {
        self.slots.push(Slot {
            position,
            acked: false,
            inflight: Some(inflight),
        });
        self.unacked += 1;
        self.inflight += 1;
    }

    /// The position of a tracked, uncommitted delivery.
    #[inline]
    pub(in crate::backend::group) fn position(&self, ticket: Ticket) -> Option<&Position> {
        Some(&self.slots.get(self.index(ticket)?)?.position)
    }

    /// Records the delivery of a tracked, unacked `ticket` (its first or a redelivery).
    #[inline]
    pub(in crate::backend::group) fn insert(&mut self, ticket: Ticket, inflight: Inflight) {
        let slot = self.index(ticket).and_then(|i| self.slots.get_mut(i));
        let Some(slot) = slot.filter(|s| !s.acked) else {
            debug_assert!(false, "a delivery of a ticket not tracked or already acked");
            return;
        };
        if slot.inflight.replace(inflight).is_none() {
            self.inflight += 1;
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
        let slot = &mut self.slots.get_mut(index)?.inflight;
        if slot.as_ref()?.delivery_id != delivery_id {
            return None;
        }
        self.inflight -= 1;
        slot.take()
    }

    /// Marks a delivery processed. Returns whether the commit advanced. Acking a ticket twice,
    /// or one already committed, is harmless and returns `false`.
    #[inline]
    pub(in crate::backend::group) fn ack(&mut self, ticket: Ticket) -> bool {
        let Some(index) = self.index(ticket) else {
            return false;
        };
        let Some(slot) = self.slots.get_mut(index) else {
            return false;
        };
        if slot.acked {
            return false;
        }
        debug_assert!(slot.inflight.is_none(), "acked while in flight");
        slot.acked = true;
        self.unacked -= 1;
        if index != self.head {
            return false;
        }
        let mut end = index + 1;
        while self.slots.get(end).is_some_and(|s| s.acked) {
            end += 1;
        }
        self.committed = Some(self.slots[end - 1].position.clone());
        self.front += (end - self.head) as u64;
        self.head = end;
        if self.head == self.slots.len() {
            self.slots.clear();
            self.head = 0;
        } else if self.head >= 1024 && self.head * 2 >= self.slots.len() {
            self.slots.drain(..self.head);
            self.head = 0;
        }
        true
    }

    /// The last position of the fully-acked prefix: what to checkpoint.
    pub(in crate::backend::group) fn committed(&self) -> Option<&Position> {
        self.committed.as_ref()
    }

    /// Deliveries tracked but not acked.
    pub(in crate::backend::group) fn unacked(&self) -> usize {
        self.unacked
    }

    /// Deliveries tracked and not yet committed (acked ones behind an unacked one included).
    #[inline]
    pub(in crate::backend::group) fn window(&self) -> usize {
        self.slots.len() - self.head
    }

    /// Whether no delivery is out.
    pub(in crate::backend::group) fn nothing_in_flight(&self) -> bool {
        self.inflight == 0
    }

    /// Every unsettled delivery.
    pub(in crate::backend::group) fn in_flight(&self) -> impl Iterator<Item = &Inflight> {
        self.slots[self.head..]
            .iter()
            .filter_map(|s| s.inflight.as_ref())
    }

    /// Takes out the unsettled deliveries `pick` accepts, in ticket order.
    pub(in crate::backend::group) fn take_in_flight_if(
        &mut self,
        mut pick: impl FnMut(&Inflight) -> bool,
    ) -> Vec<(Ticket, Inflight)> {
        let mut taken = Vec::new();
        for (i, slot) in self.slots[self.head..].iter_mut().enumerate() {
            if slot.inflight.as_ref().is_some_and(&mut pick) {
                let inflight = slot.inflight.take().expect("checked");
                taken.push((Ticket::from_u64(self.front + i as u64), inflight));
            }
        }
        self.inflight -= taken.len();
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AckTracker, Event};
    use proptest::prelude::*;

    fn entry(delivery_id: u64, member: u64) -> Inflight {
        Inflight {
            event: Event::new(delivery_id.to_be_bytes().to_vec()),
            attempt: 1,
            member,
            delivery_id,
        }
    }

    /// Delivers the next event, as `take` does.
    fn deliver(t: &mut PartTracker, offset: u64, id: u64) -> Ticket {
        let ticket = t.next_ticket();
        t.track_delivered(Position::from_offset(offset), entry(id, 1));
        ticket
    }

    proptest! {
        /// Beside the `AckTracker` every other backend uses, under any interleaving of
        /// deliveries, acks, nacks and redeliveries: the same commit, unacked count and window,
        /// and every unsettled delivery found under its ticket with its own id only.
        #[test]
        fn commits_as_the_ack_tracker_does(
            ops in proptest::collection::vec((0u8..4, any::<prop::sample::Index>()), 1..600)
        ) {
            let mut t = PartTracker::starting_at(None);
            let mut reference = AckTracker::new();
            // Out now (ticket, delivery id) and nacked, waiting (ticket).
            let mut out: Vec<(Ticket, u64)> = Vec::new();
            let mut waiting: Vec<Ticket> = Vec::new();
            let (mut offset, mut next_id) = (0u64, 0u64);
            for (op, pick) in ops {
                next_id += 1;
                match op {
                    0 => {
                        let ticket = deliver(&mut t, offset, next_id);
                        prop_assert_eq!(ticket, reference.track(Position::from_offset(offset)));
                        offset += 3;
                        out.push((ticket, next_id));
                    }
                    1 | 2 if !out.is_empty() => {
                        let (ticket, id) = out.swap_remove(pick.index(out.len()));
                        prop_assert!(t.remove(ticket, id + 1).is_none(), "another id settles nothing");
                        let entry = t.remove(ticket, id).expect("out");
                        prop_assert_eq!(entry.delivery_id, id);
                        prop_assert!(t.remove(ticket, id).is_none(), "settled once");
                        if op == 1 {
                            prop_assert_eq!(t.ack(ticket), reference.ack(ticket).is_some());
                            prop_assert!(!t.ack(ticket), "a second ack does nothing");
                        } else {
                            waiting.push(ticket);
                        }
                    }
                    3 if !waiting.is_empty() => {
                        let ticket = waiting.swap_remove(pick.index(waiting.len()));
                        prop_assert_eq!(t.position(ticket), reference.position(ticket));
                        t.insert(ticket, entry(next_id, 1));
                        out.push((ticket, next_id));
                    }
                    _ => {}
                }
                prop_assert_eq!(t.committed(), reference.committed());
                prop_assert_eq!(t.unacked(), reference.unacked());
                prop_assert_eq!(t.window(), reference.window());
                prop_assert_eq!(t.in_flight().count(), out.len());
                prop_assert_eq!(t.nothing_in_flight(), out.is_empty());
            }
        }
    }

    /// One delivery held while thousands after it are acked: the slots behind the commit are
    /// dropped in bulk once it moves, and the ones after it keep their tickets.
    #[test]
    fn a_long_held_delivery_then_a_bulk_drop() {
        let mut t = PartTracker::starting_at(Some(Position::from_offset(99)));
        let first = deliver(&mut t, 100, 1);
        for i in 1..5000u64 {
            let ticket = deliver(&mut t, 100 + i, i + 1);
            t.remove(ticket, i + 1).expect("out");
            assert!(!t.ack(ticket), "held back by the first");
        }
        assert_eq!(t.committed(), Some(&Position::from_offset(99)));
        let tail = deliver(&mut t, 5100, 9999);
        t.remove(first, 1).expect("out");
        assert!(t.ack(first));
        assert_eq!(t.committed(), Some(&Position::from_offset(5099)));
        assert_eq!(t.window(), 1);
        assert!(t.slots.len() < 1024, "{} slots kept", t.slots.len());
        assert_eq!(t.position(tail), Some(&Position::from_offset(5100)));
        assert_eq!(t.remove(tail, 9999).map(|i| i.delivery_id), Some(9999));
        assert!(t.ack(tail));
        assert!(t.nothing_in_flight() && t.unacked() == 0 && t.window() == 0);
    }

    #[test]
    fn tickets_never_handed_out_settle_nothing() {
        let mut t = PartTracker::starting_at(None);
        let ticket = deliver(&mut t, 0, 1);
        for stray in [1, 1 << 40, u64::MAX].map(Ticket::from_u64) {
            assert!(t.remove(stray, 1).is_none());
            assert!(!t.ack(stray));
            assert!(t.position(stray).is_none());
        }
        assert_eq!(t.remove(ticket, 1).map(|i| i.delivery_id), Some(1));
        assert!(t.ack(ticket));
    }

    #[test]
    fn a_member_s_deliveries_are_taken_in_ticket_order() {
        let mut t = PartTracker::starting_at(None);
        for id in 1..=6u64 {
            t.track_delivered(Position::from_offset(id), entry(id, id % 2));
        }
        let taken: Vec<u64> = t
            .take_in_flight_if(|i| i.member == 1)
            .iter()
            .map(|(ticket, _)| ticket.as_u64())
            .collect();
        assert_eq!(taken, [0, 2, 4]);
        let left: Vec<u64> = t.in_flight().map(|i| i.delivery_id).collect();
        assert_eq!(left, [2, 4, 6]);
        assert_eq!(t.unacked(), 6);
    }
}
