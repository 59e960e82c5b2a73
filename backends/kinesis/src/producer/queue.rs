//! The producer's queue: records by arrival order, each keeping its place until it is settled,
//! so that a record sent back for a retry is again ahead of every later record of its key.
//!
//! A deque of slots numbered from the front, not a map from number to record: a map of these
//! records allocates a node of over 1 KiB per few records inserted, and every request of that
//! size makes glibc consolidate its fast bins (`malloc_consolidate`), which a profile of the
//! producer found to be a tenth of its CPU. A slot is freed once the record is settled and
//! every record before it is too, so a record that stays long (backing off) holds the slots
//! of the records that arrived after it; the driver bounds them ([`Queue::len`]).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use crate::envelope::PartitionKey;

/// A record waiting to be stored.
pub(super) struct Entry {
    pub submit: u64,
    pub index: usize,
    pub partition_key: PartitionKey,
    pub data: Bytes,
    pub arrived: Instant,
    pub attempts: u32,
    pub not_before: Option<Instant>,
    pub deadline: Instant,
}

enum Slot {
    Waiting(Entry),
    Sent(Entry),
    Settled,
}

pub(super) struct Queue {
    /// The number of `slots[0]`.
    base: u64,
    slots: VecDeque<Slot>,
    waiting: usize,
    /// No slot before this number is waiting.
    first_waiting: u64,
}

impl Queue {
    pub(super) fn new() -> Self {
        Queue {
            base: 0,
            slots: VecDeque::new(),
            waiting: 0,
            first_waiting: 0,
        }
    }

    /// Slots held: unsettled records and the settled ones behind the oldest unsettled one.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Records waiting to be sent.
    pub(super) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Queues a record at the back; its number.
    pub(super) fn push(&mut self, entry: Entry) -> u64 {
        let seq = self.base + self.slots.len() as u64;
        self.slots.push_back(Slot::Waiting(entry));
        self.waiting += 1;
        seq
    }

    fn slot(&self, seq: u64) -> Option<&Slot> {
        self.slots
            .get(usize::try_from(seq.checked_sub(self.base)?).ok()?)
    }

    fn slot_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let at = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.slots.get_mut(at)
    }

    /// The waiting records, oldest first, with their numbers.
    pub(super) fn iter_waiting(&self) -> impl Iterator<Item = (u64, &Entry)> {
        let skip = (self.first_waiting.max(self.base) - self.base) as usize;
        self.slots
            .range(skip.min(self.slots.len())..)
            .enumerate()
            .filter_map(move |(i, slot)| match slot {
                Slot::Waiting(entry) => Some((self.base + (skip + i) as u64, entry)),
                _ => None,
            })
    }

    /// The oldest waiting record.
    pub(super) fn oldest_waiting(&mut self) -> Option<&Entry> {
        if self.waiting == 0 {
            return None;
        }
        // Moves the bound past what is no longer waiting, so later scans start there.
        loop {
            match self.slot(self.first_waiting.max(self.base)) {
                Some(Slot::Waiting(_)) => break,
                Some(_) => self.first_waiting = self.first_waiting.max(self.base) + 1,
                None => return None,
            }
        }
        match self.slot(self.first_waiting) {
            Some(Slot::Waiting(entry)) => Some(entry),
            _ => None,
        }
    }

    /// A record waiting or sent.
    pub(super) fn get(&self, seq: u64) -> Option<&Entry> {
        match self.slot(seq)? {
            Slot::Waiting(entry) | Slot::Sent(entry) => Some(entry),
            Slot::Settled => None,
        }
    }

    /// A sent record, to count an attempt on.
    pub(super) fn sent_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        match self.slot_mut(seq)? {
            Slot::Sent(entry) => Some(entry),
            _ => None,
        }
    }

    /// Marks a waiting record sent.
    pub(super) fn mark_sent(&mut self, seq: u64) {
        if let Some(slot) = self.slot_mut(seq)
            && let Slot::Waiting(_) = slot
            && let Slot::Waiting(entry) = std::mem::replace(slot, Slot::Settled)
        {
            *slot = Slot::Sent(entry);
            self.waiting -= 1;
        }
    }

    /// Puts a sent record back in its place, to be sent again.
    pub(super) fn requeue(&mut self, seq: u64) {
        if let Some(slot) = self.slot_mut(seq)
            && let Slot::Sent(_) = slot
            && let Slot::Sent(entry) = std::mem::replace(slot, Slot::Settled)
        {
            *slot = Slot::Waiting(entry);
            self.waiting += 1;
            self.first_waiting = self.first_waiting.min(seq);
        }
    }

    /// Takes a record out for good (stored, or failed), freeing the slots at the front that
    /// are settled.
    pub(super) fn settle(&mut self, seq: u64) -> Option<Entry> {
        let slot = self.slot_mut(seq)?;
        let entry = match std::mem::replace(slot, Slot::Settled) {
            Slot::Waiting(entry) => {
                self.waiting -= 1;
                entry
            }
            Slot::Sent(entry) => entry,
            Slot::Settled => return None,
        };
        while let Some(Slot::Settled) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> Entry {
        let now = Instant::now();
        Entry {
            submit: 0,
            index: 0,
            partition_key: PartitionKey::from(key),
            data: Bytes::new(),
            arrived: now,
            attempts: 0,
            not_before: None,
            deadline: now,
        }
    }

    fn waiting_keys(queue: &Queue) -> Vec<(u64, String)> {
        queue
            .iter_waiting()
            .map(|(seq, e)| (seq, e.partition_key.to_string()))
            .collect()
    }

    #[test]
    fn a_requeued_record_is_back_in_its_place_and_slots_free_from_the_front() {
        let mut q = Queue::new();
        for key in ["a", "b", "c", "d"] {
            q.push(entry(key));
        }
        q.mark_sent(0);
        q.mark_sent(1);
        assert_eq!(q.oldest_waiting().unwrap().partition_key, "c");
        assert_eq!(waiting_keys(&q), [(2, "c".into()), (3, "d".into())]);
        // b is stored, a comes back: a is the oldest waiting again, ahead of c.
        assert!(q.settle(1).is_some());
        assert_eq!(q.len(), 4, "a still holds the front");
        q.requeue(0);
        assert_eq!(q.oldest_waiting().unwrap().partition_key, "a");
        assert_eq!(
            waiting_keys(&q),
            [(0, "a".into()), (2, "c".into()), (3, "d".into())]
        );
        assert_eq!(q.waiting(), 3);
        // a settles: a and b's slots go, numbers stay.
        q.mark_sent(0);
        assert!(q.settle(0).is_some());
        assert_eq!(q.len(), 2);
        assert_eq!(waiting_keys(&q), [(2, "c".into()), (3, "d".into())]);
        assert_eq!(q.get(3).unwrap().partition_key, "d");
        assert!(q.get(1).is_none() && q.settle(1).is_none());
        assert_eq!(q.push(entry("e")), 4);
    }
}
