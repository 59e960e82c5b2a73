//! One partition's log: the storage contract both local flavours implement, and the in-memory one.

use super::arena;
use super::codec::StoredRecord;
use crate::backend::group::SourceRecord;
use crate::{Event, Position, Result};
use parking_lot::{RwLock, RwLockWriteGuard};
use std::collections::VecDeque;
use std::time::Duration;

/// Size and age limits of a partition log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogConfig {
    /// A new segment starts once the active one holds this many bytes.
    pub segment_bytes: u64,
    /// Oldest segments are dropped while the partition holds more than this.
    pub retention_bytes: Option<u64>,
    /// Segments whose newest record is older than this are dropped.
    pub retention_age: Option<Duration>,
    /// File logs under `fsync=always` write each segment with zeros before it takes records,
    /// so that an fdatasync has no size change to commit (`preallocate`).
    pub preallocate: bool,
}

/// Storage of one partition. Methods may block (file I/O); async callers use `spawn_blocking`
/// for the file flavour.
pub(crate) trait PartitionLog: Send + Sync + 'static {
    /// Appends events in order; returns the first one's offset.
    fn append(&self, events: &[Event], append_ms: i64) -> Result<u64>;
    /// [`append`](Self::append) of events the caller gives away: a log that keeps events in
    /// memory keeps these instead of copies (no reference-count traffic, no promotion of
    /// vector-backed payloads to shared ones).
    fn append_owned(&self, events: Vec<Event>, append_ms: i64) -> Result<u64> {
        self.append(&events, append_ms)
    }
    /// [`append_owned`](Self::append_owned) for a stream with a journal: the frames written
    /// to the log are also appended to `journal`, for the stream's writer to make durable. The
    /// marks are not published: the writer does it once the journal is synced
    /// ([`publish_appended`](Self::publish_appended)). Logs that frame nothing append nothing.
    fn append_journaled(
        &self,
        events: Vec<Event>,
        append_ms: i64,
        journal: &mut Vec<u8>,
    ) -> Result<u64> {
        let _ = journal;
        self.append_owned(events, append_ms)
    }
    /// Lets readers in other processes see every record appended so far (under
    /// `fsync=always`, once they are durable).
    fn publish_appended(&self) {}
    /// [`read`](Self::read) as the group engine's records, positions included, when it can be
    /// served from memory without blocking (the memory log always; the file log from its tail
    /// of recent appends); `None` when only `read` can. An empty vector says nothing from
    /// `from` on is readable yet: the reader waits for the next append's wake-up instead of
    /// asking the files.
    fn read_positioned(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Option<Vec<SourceRecord>>;
    /// Up to `max_records` records from offset `from` (clamped to the retained range), stopping
    /// early after about `max_bytes`.
    fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<StoredRecord>>;
    /// (oldest retained offset, next offset to be written).
    fn bounds(&self) -> (u64, u64);
    /// First offset whose effective time is at or after `ms`, or the next offset if none.
    fn offset_for_time(&self, ms: i64) -> Result<u64>;
    /// Makes appended data durable now.
    fn sync(&self) -> Result<()>;
    /// Applies the durability policy's periodic work (interval fsync).
    fn tick(&self) -> Result<()>;
    /// Picks up data appended by another process (read-only followers).
    fn refresh(&self) -> Result<()>;
    /// Drops segments beyond the retention limits.
    fn enforce_retention(&self, now_ms: i64) -> Result<()>;
    /// Turns a read-only follower into the writer, once this process holds the writer lock:
    /// recovers the log as a writer does and accepts appends from then on.
    /// `replay`: the log's frames from the stream's journal (see
    /// [`FileLog::open_replaying`](super::file::FileLog::open_replaying)).
    fn promote(&self, replay: bytes::Bytes) -> Result<()>;
    /// The log as the in-memory one, which a producer appends to directly (see
    /// [`MemoryLog::lock_append`]); `None` for the file log.
    fn as_memory(&self) -> Option<&MemoryLog> {
        None
    }
}

/// A kept record as the group engine's, with the position the log made or kept for it.
pub(crate) fn source_record(record: &StoredRecord, position: &Position) -> SourceRecord {
    SourceRecord {
        event: record.event.clone(),
        position: position.clone(),
    }
}

/// A memory segment holds at most this many records (fewer when `segment_bytes` fills first):
/// segments that fill up are allocated whole, and retention drops at most this many records
/// more than it must.
const SEGMENT_RECORDS: usize = 1024;

struct MemSegment {
    base: u64,
    records: Vec<StoredRecord>,
    /// Each record's [`Event::encoded_len`], kept beside it: a read's byte budget then needs no
    /// visit to the event's headers (a cache miss per record in the profile).
    sizes: Vec<u32>,
    /// Each record's position, made once at append: the producer's receipt and every delivery
    /// share it (an allocation per event saved; 16 bytes and a small allocation kept per
    /// retained event).
    positions: Vec<Position>,
    bytes: u64,
    newest_append_ms: i64,
}

struct MemInner {
    segments: VecDeque<MemSegment>,
    next: u64,
    /// `next` as a position: each append's position is made from the one before by
    /// incrementing its digits (formatting each offset anew cost about 70 instructions).
    next_position: Position,
    total_bytes: u64,
}

/// The in-memory partition log: segments of records whose small keys and payloads live in shared
/// arenas, so reads are reference-count bumps. A memory stream's producer fills the arenas (the
/// stream keeps one from send to send) and appends through [`MemoryLog::lock_append`]; appends
/// through [`PartitionLog`] share each call's events into arenas of their own.
pub(crate) struct MemoryLog {
    config: LogConfig,
    inner: RwLock<MemInner>,
}

/// A memory log's write lock, held by a producer while it appends one send's events: a send
/// over several partitions holds the lock of each it writes to (taken in ascending partition
/// order, so two such sends cannot deadlock) and appends in send order, with no grouping of
/// its events per partition.
pub(crate) struct MemAppend<'a> {
    log: &'a MemoryLog,
    g: RwLockWriteGuard<'a, MemInner>,
}

impl MemAppend<'_> {
    /// Appends one event whose small key and payload are already in a shared arena; returns
    /// the position the log made for it, which its receipt and every read share.
    pub(crate) fn push(&mut self, event: Event, append_ms: i64) -> &Position {
        self.log.push(&mut self.g, event, append_ms)
    }
}

impl MemoryLog {
    pub fn new(config: LogConfig) -> Self {
        MemoryLog {
            config,
            inner: RwLock::new(MemInner {
                segments: VecDeque::from([MemSegment {
                    base: 0,
                    records: Vec::new(),
                    sizes: Vec::new(),
                    positions: Vec::new(),
                    bytes: 0,
                    newest_append_ms: i64::MIN,
                }]),
                next: 0,
                next_position: Position::from_offset(0),
                total_bytes: 0,
            }),
        }
    }
}

impl MemoryLog {
    /// Takes the log's write lock for [`MemAppend::push`].
    pub(crate) fn lock_append(&self) -> MemAppend<'_> {
        MemAppend {
            log: self,
            g: self.inner.write(),
        }
    }

    fn push<'g>(&self, g: &'g mut MemInner, event: Event, append_ms: i64) -> &'g Position {
        let encoded = event.encoded_len();
        let size = encoded as u64 + 32;
        // Each field borrowed apart: the active segment is looked up once more only when a new
        // one starts, and the position returned borrows from it directly.
        let MemInner {
            segments,
            next,
            next_position,
            total_bytes,
        } = g;
        let active = segments.back().expect("always one segment");
        let full = active.records.len() >= SEGMENT_RECORDS;
        if full || (active.bytes >= self.config.segment_bytes && !active.records.is_empty()) {
            // After a full one, the next is allocated whole: appends never move a segment's
            // records (growing one by doubling copied about 250 instructions' worth per event
            // in callgrind).
            let capacity = if full { SEGMENT_RECORDS } else { 0 };
            segments.push_back(MemSegment {
                base: *next,
                records: Vec::with_capacity(capacity),
                sizes: Vec::with_capacity(capacity),
                positions: Vec::with_capacity(capacity),
                bytes: 0,
                newest_append_ms: i64::MIN,
            });
        }
        let after = next_position
            .next_offset()
            .unwrap_or_else(|| Position::from_offset(*next + 1));
        let position = std::mem::replace(next_position, after);
        let active = segments.back_mut().expect("always one segment");
        active.records.push(StoredRecord {
            offset: *next,
            append_ms,
            event,
        });
        active
            .sizes
            .push(u32::try_from(encoded).unwrap_or(u32::MAX));
        active.bytes += size;
        active.newest_append_ms = active.newest_append_ms.max(append_ms);
        *total_bytes += size;
        *next += 1;
        active.positions.push(position);
        active.positions.last().expect("just pushed")
    }

    /// Up to `max_records` records from `from` (clamped to the retained range), each made into
    /// a `T` with its position, stopping after about `max_bytes`. One look under the lock: the
    /// vector is sized from the same state it is filled from, and each segment is walked as
    /// slices (no segment lookup or bounds check per record).
    fn collect<T>(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        each: impl Fn(&StoredRecord, &Position) -> T,
    ) -> Vec<T> {
        let g = self.inner.read();
        let start = g.segments.front().map_or(g.next, |s| s.base);
        let from = from.max(start);
        let mut out = Vec::with_capacity(max_records.min(g.next.saturating_sub(from) as usize));
        let mut bytes = 0;
        let first = g
            .segments
            .partition_point(|s| s.base <= from)
            .saturating_sub(1);
        for segment in g.segments.range(first..) {
            // Segments are dense: every one after the first is read from its start.
            let skip = from.saturating_sub(segment.base) as usize;
            let Some(records) = segment.records.get(skip..) else {
                continue;
            };
            let rows = records
                .iter()
                .zip(&segment.sizes[skip..])
                .zip(&segment.positions[skip..]);
            for ((record, size), position) in rows {
                if out.len() >= max_records || bytes >= max_bytes {
                    return out;
                }
                bytes += *size as usize;
                out.push(each(record, position));
            }
        }
        out
    }
}

impl PartitionLog for MemoryLog {
    fn append(&self, events: &[Event], append_ms: i64) -> Result<u64> {
        self.append_owned(events.to_vec(), append_ms)
    }

    fn append_owned(&self, mut events: Vec<Event>, append_ms: i64) -> Result<u64> {
        arena::share(&mut events);
        let mut g = self.inner.write();
        let base = g.next;
        for event in events {
            self.push(&mut g, event, append_ms);
        }
        Ok(base)
    }

    fn read_positioned(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Option<Vec<SourceRecord>> {
        Some(self.collect(from, max_records, max_bytes, source_record))
    }

    fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        Ok(self.collect(from, max_records, max_bytes, |record, _| record.clone()))
    }

    fn bounds(&self) -> (u64, u64) {
        let g = self.inner.read();
        (g.segments.front().map_or(g.next, |s| s.base), g.next)
    }

    fn offset_for_time(&self, ms: i64) -> Result<u64> {
        let g = self.inner.read();
        Ok(g.segments
            .iter()
            .flat_map(|s| s.records.iter())
            .find(|r| r.effective_ms() >= ms)
            .map_or(g.next, |r| r.offset))
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn tick(&self) -> Result<()> {
        Ok(())
    }

    fn refresh(&self) -> Result<()> {
        Ok(())
    }

    fn promote(&self, _replay: bytes::Bytes) -> Result<()> {
        Ok(())
    }

    fn as_memory(&self) -> Option<&MemoryLog> {
        Some(self)
    }

    fn enforce_retention(&self, now_ms: i64) -> Result<()> {
        let mut g = self.inner.write();
        while g.segments.len() > 1 {
            let oldest = g.segments.front().expect("len > 1");
            let too_big = self
                .config
                .retention_bytes
                .is_some_and(|max| g.total_bytes > max);
            let too_old = self.config.retention_age.is_some_and(|age| {
                oldest.newest_append_ms < now_ms.saturating_sub(age.as_millis() as i64)
            });
            if !(too_big || too_old) {
                break;
            }
            let dropped = g.segments.pop_front().expect("len > 1");
            g.total_bytes -= dropped.bytes;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_roll_and_retention_drops_oldest() {
        let log = MemoryLog::new(LogConfig {
            preallocate: false,
            segment_bytes: 100,
            retention_bytes: Some(400),
            retention_age: None,
        });
        for i in 0..50u32 {
            log.append(
                &[Event::new(vec![0u8; 40]).with_key(i.to_be_bytes().to_vec())],
                0,
            )
            .unwrap();
        }
        log.enforce_retention(0).unwrap();
        let (start, next) = log.bounds();
        assert_eq!(next, 50);
        assert!(start > 0 && start < 50, "start {start}");
        let records = log.read(0, 1000, usize::MAX).unwrap();
        assert_eq!(records.first().unwrap().offset, start);
        assert_eq!(records.len() as u64, next - start);
        assert!(
            records.windows(2).all(|w| w[1].offset == w[0].offset + 1),
            "dense offsets"
        );
    }

    #[test]
    fn segments_also_roll_at_a_record_count() {
        let log = MemoryLog::new(LogConfig {
            preallocate: false,
            segment_bytes: u64::MAX,
            retention_bytes: Some(1),
            retention_age: None,
        });
        let n = (SEGMENT_RECORDS * 2 + 500) / 100 * 100;
        for chunk in 0..n / 100 {
            let events = (0..100)
                .map(|i| Event::new(vec![0u8; 20]).with_key(format!("{}", chunk * 100 + i)))
                .collect();
            log.append_owned(events, 0).unwrap();
        }
        assert_eq!(log.bounds(), (0, n as u64));
        let records = log.read(0, usize::MAX, usize::MAX).unwrap();
        assert_eq!(records.len(), n);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as u64);
            assert_eq!(r.event.key.as_deref(), Some(i.to_string().as_bytes()));
        }
        // Across a segment boundary.
        let around = log.read(SEGMENT_RECORDS as u64 - 1, 2, usize::MAX).unwrap();
        assert_eq!(
            around.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [SEGMENT_RECORDS as u64 - 1, SEGMENT_RECORDS as u64]
        );
        // Retention drops whole segments, keeping the active one.
        log.enforce_retention(0).unwrap();
        assert_eq!(log.bounds(), (2 * SEGMENT_RECORDS as u64, n as u64));
    }
}
