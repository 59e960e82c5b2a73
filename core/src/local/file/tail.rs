//! The newest records this process appended to a partition, kept in memory so readers that keep
//! up are served without a system call or a blocking task. It has a lock of its own: a reader
//! never waits behind the writer's `write` or `fdatasync` (which hold the log's lock), and the
//! writer holds this one only to push the records of an append.

use super::codec::StoredRecord;
use crate::Position;
use parking_lot::RwLock;
use std::collections::VecDeque;

/// What the tail may hold per partition (encoded bytes, about).
const TAIL_BYTES: usize = 256 << 10;
/// A tail record's memory beyond its encoded event (record, event and `Bytes` headers).
const TAIL_OVERHEAD: usize = 96;

#[derive(Default)]
pub(super) struct Tail {
    inner: RwLock<Records>,
}

#[derive(Default)]
struct Records {
    /// Consecutive records, each with its encoded event size (the read budget's unit, counted
    /// once at append instead of per read).
    records: VecDeque<(StoredRecord, u32)>,
    bytes: usize,
    /// Records from here on are not published yet (not fsynced under `fsync=always`): readers
    /// are not given them.
    published: u64,
}

impl Tail {
    /// Adds the records of an append (consecutive, following the ones held), dropping the
    /// oldest beyond the size limit.
    pub(super) fn push(&self, appended: impl Iterator<Item = StoredRecord>) {
        let mut t = self.inner.write();
        for record in appended {
            let size = record.event.encoded_len();
            if t.records
                .back()
                .is_some_and(|(last, _)| last.offset + 1 != record.offset)
            {
                // Not consecutive (an append that bypassed the tail): start over.
                t.records.clear();
                t.bytes = 0;
            }
            t.bytes += size + TAIL_OVERHEAD;
            t.records
                .push_back((record, u32::try_from(size).unwrap_or(u32::MAX)));
        }
        while t.bytes > TAIL_BYTES
            && let Some((_, size)) = t.records.pop_front()
        {
            t.bytes -= size as usize + TAIL_OVERHEAD;
        }
    }

    /// Readers may see records below `next` from now on.
    pub(super) fn publish(&self, next: u64) {
        self.inner.write().published = next;
    }

    /// Forgets every record (the log was reloaded, or appended to without the tail).
    pub(super) fn clear(&self) {
        let mut t = self.inner.write();
        t.records.clear();
        t.bytes = 0;
    }

    /// Forgets records below `start` (retention removed them).
    pub(super) fn drop_below(&self, start: u64) {
        let mut t = self.inner.write();
        while t.records.front().is_some_and(|(r, _)| r.offset < start)
            && let Some((_, size)) = t.records.pop_front()
        {
            t.bytes -= size as usize + TAIL_OVERHEAD;
        }
    }

    /// Up to `max_records` published records from `from`, each made into a `T` with its
    /// position, stopping after about `max_bytes`; empty when `from` is at or past the published
    /// end; `None` when the tail does not hold `from` (read the files). The records are
    /// consecutive, so each position is made from the one before by incrementing its digits:
    /// formatting each offset, then converting the records in a pass of their own, cost the
    /// readers' threads about 170 instructions per event (keeping a position per record in the
    /// tail instead cost the writer about 90 in copies).
    pub(super) fn read<T>(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        each: impl Fn(&StoredRecord, &Position) -> T,
    ) -> Option<Vec<T>> {
        let t = self.inner.read();
        let first = t.records.front()?.0.offset;
        let end = first + t.records.len() as u64;
        if from < first || (from >= end && end < t.published) {
            return None;
        }
        let upto = end.min(t.published);
        if from >= upto {
            return Some(Vec::new());
        }
        let mut out = Vec::with_capacity(max_records.min((upto - from) as usize));
        let mut budget = max_bytes.max(1);
        let mut position = Position::from_offset(from);
        for (record, size) in t
            .records
            .range((from - first) as usize..(upto - first) as usize)
        {
            if out.len() >= max_records || budget == 0 {
                break;
            }
            budget = budget.saturating_sub(*size as usize);
            out.push(each(record, &position));
            position = position
                .next_offset()
                .unwrap_or_else(|| Position::from_offset(record.offset + 1));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    fn record(offset: u64) -> StoredRecord {
        StoredRecord {
            offset,
            append_ms: 0,
            event: Event::new(vec![offset as u8; 10]),
        }
    }

    /// The offsets and positions the tail hands out from `from`; `None` when it sends the
    /// reader to the files.
    fn read(tail: &Tail, from: u64) -> Option<Vec<(u64, String)>> {
        tail.read(from, 10, usize::MAX, |r, p| (r.offset, p.to_string()))
    }

    #[test]
    fn readers_get_only_published_records() {
        let tail = Tail::default();
        assert_eq!(read(&tail, 0), None);
        tail.push((5..10).map(record));
        tail.publish(7);
        let got = read(&tail, 5).expect("offsets 5 and 6 are in the tail");
        assert_eq!(got, [(5, "5".to_owned()), (6, "6".to_owned())]);
        // Appended but not published (not fsynced yet): nothing, and not the files either.
        assert_eq!(read(&tail, 7), Some(Vec::new()));
        assert_eq!(read(&tail, 4), None);
        tail.publish(10);
        assert_eq!(read(&tail, 7).map(|r| r.len()), Some(3));
        tail.drop_below(8);
        assert_eq!(read(&tail, 7), None);
        // Published beyond what the tail holds (an append that bypassed it): the files.
        tail.publish(12);
        assert_eq!(read(&tail, 10), None);
    }

    #[test]
    fn positions_follow_offsets_across_restarts_of_the_tail() {
        let tail = Tail::default();
        // Positions made from the one before must still be the offsets' own, across a digit
        // carry and after a gap that starts the tail over.
        tail.push((98..102).map(record));
        tail.publish(102);
        let got = read(&tail, 98).expect("in the tail");
        let positions: Vec<String> = got.into_iter().map(|(_, p)| p).collect();
        assert_eq!(positions, ["98", "99", "100", "101"]);
        tail.push((150..152).map(record));
        tail.publish(152);
        assert_eq!(read(&tail, 98), None, "the gap started the tail over");
        let got = read(&tail, 150).expect("in the tail");
        assert_eq!(got, [(150, "150".to_owned()), (151, "151".to_owned())]);
        tail.clear();
        tail.push((9..12).map(record));
        let got = read(&tail, 9).expect("in the tail");
        let offsets: Vec<String> = got.iter().map(|(o, _)| o.to_string()).collect();
        let positions: Vec<String> = got.into_iter().map(|(_, p)| p).collect();
        assert_eq!(positions, offsets);
    }
}
