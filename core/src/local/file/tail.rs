//! The newest records this process appended to a partition, kept in memory so readers that keep
//! up are served without a system call or a blocking task. It has a lock of its own: a reader
//! never waits behind the writer's `write` or `fdatasync` (which hold the log's lock), and the
//! writer holds this one only to push the records of an append.

use super::codec::StoredRecord;
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

/// What [`Tail::read`] found.
pub(super) enum TailRead {
    /// Records from the requested offset (none when it is at or past the published end).
    Records(Vec<StoredRecord>),
    /// The tail does not hold the requested offset: read the files.
    NotHere,
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

    /// Up to `max_records` published records from `from`, stopping after about `max_bytes`.
    pub(super) fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> TailRead {
        let t = self.inner.read();
        let Some((first, _)) = t.records.front() else {
            return TailRead::NotHere;
        };
        let first = first.offset;
        let end = first + t.records.len() as u64;
        if from < first || (from >= end && end < t.published) {
            return TailRead::NotHere;
        }
        let upto = end.min(t.published);
        if from >= upto {
            return TailRead::Records(Vec::new());
        }
        let mut out = Vec::with_capacity(max_records.min((upto - from) as usize));
        let mut budget = max_bytes.max(1);
        for (record, size) in t
            .records
            .range((from - first) as usize..(upto - first) as usize)
        {
            if out.len() >= max_records || budget == 0 {
                break;
            }
            budget = budget.saturating_sub(*size as usize);
            out.push(record.clone());
        }
        TailRead::Records(out)
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

    #[test]
    fn readers_get_only_published_records() {
        let tail = Tail::default();
        assert!(matches!(tail.read(0, 10, usize::MAX), TailRead::NotHere));
        tail.push((5..10).map(record));
        tail.publish(7);
        let TailRead::Records(got) = tail.read(5, 10, usize::MAX) else {
            panic!("offsets 5 and 6 are in the tail")
        };
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [5, 6]);
        // Appended but not published (not fsynced yet): nothing, and not the files either.
        assert!(matches!(tail.read(7, 10, usize::MAX), TailRead::Records(r) if r.is_empty()));
        assert!(matches!(tail.read(4, 10, usize::MAX), TailRead::NotHere));
        tail.publish(10);
        assert!(matches!(tail.read(7, 10, usize::MAX), TailRead::Records(r) if r.len() == 3));
        tail.drop_below(8);
        assert!(matches!(tail.read(7, 10, usize::MAX), TailRead::NotHere));
        // Published beyond what the tail holds (an append that bypassed it): the files.
        tail.publish(12);
        assert!(matches!(tail.read(10, 10, usize::MAX), TailRead::NotHere));
    }
}
