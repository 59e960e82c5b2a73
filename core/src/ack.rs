//! The ack tracker every log backend uses to turn out-of-order acks into a safe commit.
//!
//! Deliveries of one partition are tracked in delivery order; acks may arrive in any order; the
//! committable position is the last one of the longest fully-acked prefix. A nacked or pending
//! delivery holds the commit back until it is acked (after redelivery), so a crash can only
//! replay events, never skip one.

use std::collections::VecDeque;

/// Identifies one tracked delivery inside its [`AckTracker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

impl Ticket {
    /// The ticket as a number, for a backend that carries it in an
    /// [`AckToken`](crate::backend::AckToken).
    pub fn as_u64(self) -> u64 {
        self.0
    }
    /// The ticket [`Ticket::as_u64`] gave. A number that was never a ticket of the tracker it
    /// is used with is harmless: acking it does nothing.
    pub fn from_u64(n: u64) -> Self {
        Ticket(n)
    }
}

#[derive(Debug)]
struct Slot<P> {
    position: P,
    acked: bool,
}

/// Contiguous-commit tracker for one partition.
///
/// ```
/// use tributary::AckTracker;
/// let mut t = AckTracker::new();
/// let a = t.track(10u64);
/// let b = t.track(11u64);
/// let c = t.track(12u64);
/// assert_eq!(t.ack(c), None);          // 10 and 11 still pending: no commit
/// assert_eq!(t.ack(a), Some(&10));     // prefix [10] done
/// assert_eq!(t.ack(b), Some(&12));     // prefix [10, 11, 12] done
/// assert_eq!(t.committed(), Some(&12));
/// ```
#[derive(Debug)]
pub struct AckTracker<P> {
    /// Ticket number of `slots[0]`.
    front: u64,
    slots: VecDeque<Slot<P>>,
    unacked: usize,
    committed: Option<P>,
}

impl<P> Default for AckTracker<P> {
    fn default() -> Self {
        AckTracker {
            front: 0,
            slots: VecDeque::new(),
            unacked: 0,
            committed: None,
        }
    }
}

impl<P> AckTracker<P> {
    /// An empty tracker with nothing committed.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tracker whose commit starts at `committed` (the last processed position).
    pub fn starting_at(committed: Option<P>) -> Self {
        AckTracker {
            committed,
            ..Self::default()
        }
    }

    /// Registers a delivery; call in the partition's delivery order.
    pub fn track(&mut self, position: P) -> Ticket {
        let ticket = Ticket(self.front + self.slots.len() as u64);
        self.slots.push_back(Slot {
            position,
            acked: false,
        });
        self.unacked += 1;
        ticket
    }

    /// Marks a delivery processed. Returns the new committable position if the commit advanced.
    /// Acking a ticket twice, or one already committed, is harmless and returns `None`.
    pub fn ack(&mut self, ticket: Ticket) -> Option<&P> {
        let index = ticket.0.checked_sub(self.front)? as usize;
        let slot = self.slots.get_mut(index)?;
        if slot.acked {
            return None;
        }
        slot.acked = true;
        self.unacked -= 1;
        if index != 0 {
            return None;
        }
        while self.slots.front().is_some_and(|s| s.acked) {
            let slot = self.slots.pop_front().expect("front exists");
            self.front += 1;
            self.committed = Some(slot.position);
        }
        self.committed.as_ref()
    }

    /// The last position of the fully-acked prefix: what to checkpoint.
    pub fn committed(&self) -> Option<&P> {
        self.committed.as_ref()
    }

    /// Deliveries tracked but not acked.
    pub fn unacked(&self) -> usize {
        self.unacked
    }

    /// Deliveries tracked and not yet committed (acked ones behind an unacked one included): the
    /// memory this tracker holds. Backends stop fetching a partition when this grows too large.
    pub fn window(&self) -> usize {
        self.slots.len()
    }

    /// The position of a tracked, uncommitted delivery.
    pub fn position(&self, ticket: Ticket) -> Option<&P> {
        let index = ticket.0.checked_sub(self.front)? as usize;
        self.slots.get(index).map(|s| &s.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn double_ack_and_stale_tickets_are_harmless() {
        let mut t = AckTracker::new();
        let a = t.track(1u64);
        assert_eq!(t.ack(a), Some(&1));
        assert_eq!(t.ack(a), None);
        assert_eq!(t.ack(Ticket(99)), None);
        assert_eq!(t.committed(), Some(&1));
        assert_eq!(t.window(), 0);
    }

    #[test]
    fn the_case_from_the_conformance_spec() {
        // ack 1, 3, 4 out of 1..=4: the commit stops at 1, so 2..=4 are replayed after a crash.
        let mut t = AckTracker::new();
        let tickets: Vec<_> = (1u64..=4).map(|p| t.track(p)).collect();
        t.ack(tickets[0]);
        t.ack(tickets[2]);
        t.ack(tickets[3]);
        assert_eq!(t.committed(), Some(&1));
        assert_eq!(t.unacked(), 1);
        assert_eq!(t.window(), 3);
    }

    proptest! {
        /// Whatever the interleaving of deliveries and acks, the commit is exactly the end of the
        /// longest acked prefix, never moves backwards, and never covers an unacked delivery.
        #[test]
        fn commit_is_the_longest_acked_prefix(
            ops in proptest::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 1..400)
        ) {
            let mut t = AckTracker::new();
            let mut tickets = Vec::new();
            let mut acked: Vec<bool> = Vec::new();
            let mut last_commit: Option<u64> = None;
            for (deliver, pick) in ops {
                if deliver || tickets.is_empty() {
                    let pos = tickets.len() as u64 * 10; // positions need not be dense
                    tickets.push(t.track(pos));
                    acked.push(false);
                } else {
                    let i = pick.index(tickets.len());
                    t.ack(tickets[i]);
                    acked[i] = true;
                }
                let prefix = acked.iter().take_while(|a| **a).count();
                let expected = (prefix > 0).then(|| (prefix as u64 - 1) * 10).or(last_commit);
                prop_assert_eq!(t.committed().copied(), expected);
                if let (Some(prev), Some(now)) = (last_commit, t.committed().copied()) {
                    prop_assert!(now >= prev);
                }
                last_commit = t.committed().copied();
                prop_assert_eq!(t.unacked(), acked.iter().filter(|a| !**a).count());
                prop_assert_eq!(t.window(), acked.len() - prefix);
            }
        }
    }
}
