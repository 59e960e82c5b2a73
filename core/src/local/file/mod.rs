//! The durable partition log: segment files with CRC framing, a sparse offset/time index, water
//! marks, an fsync policy, and crash recovery.
//!
//! Layout of one partition directory:
//! ```text
//! 00000000000000000000.log     frames (see codec.rs), base offset in the name
//! 00000000000000000000.index   24-byte entries: offset u64, byte position u64, max time before it i64
//! marks                        start and next offset (see codec.rs)
//! prepared.<pid>.<n>           the next segment being written with zeros (preallocate)
//! ```
//! The index is a hint: it is rebuilt from the log when missing or inconsistent, and never
//! fsynced. The marks file is the log's memory of what it handed out: `next` is written after
//! every append (under `fsync=always`, once the round is durable), so every position below it
//! reached a producer, and none is ever handed out again; `start` moves only with retention.
//! Other processes read only up to `next`, so they never see a write in progress.
//!
//! What each fsync mode promises:
//! - `always`: a send returns once its records are durable. The stream's writer makes a round
//!   durable with one fdatasync of the stream's journal (`<stream>/journal`, see journal.rs),
//!   which holds the very frames the round wrote to its partitions; the segments themselves
//!   are synced at the journal's checkpoints (each time it fills, every `journal_bytes` of
//!   frames, 64 MiB by default), at rolls and on close. After a power loss the active segment
//!   may end before acknowledged records: a writer that opens the log restores them from the
//!   journal first ([`FileLog::open_replaying`], replay.rs). The cost: every byte written
//!   twice (segment and journal), and the journal's disk, up to `journal_bytes` per stream.
//! - `interval`: the segments are fsynced at most that long after a write; no journal.
//! - `never`: on close only; no journal.
//!
//! A process crash loses nothing in any mode (the page cache has every write). A directory
//! written with the journal and opened by a build from before it loses, after a power loss,
//! what the journal held that the segments did not (that build ignores the journal).
//!
//! Recovery scans each segment from its last trustworthy index entry. Where the data disagrees
//! with the marks, the marks win:
//! - a torn or damaged tail of the active segment *beyond* `next` is a write that never
//!   completed, and is truncated;
//! - damage *below* `next`, a log that ends before `next` (a truncated or deleted segment), a
//!   hole between segments, or a first segment after `start`, is lost or damaged data. It stays
//!   in place, new records go to a fresh segment at `next`, and a reader that reaches it gets a
//!   `Corrupt` error naming the records, unless the stream was opened with `skip_damaged=true`.
//!   Records on both sides of damage stay readable: a reader finds the next intact frame after
//!   the damage by its CRC and offset.
//!
//! Under `fsync=always` with `preallocate` the active segment is written with zeros to
//! `segment_bytes` before it becomes active and appends overwrite it in place (see prealloc.rs): its records end at the
//! first frame that does not decode, and a reader never reads past the marks. With the
//! journal the segments are synced only at checkpoints and rolls, so what it saves is the
//! size change those syncs commit.
//!
//! Restoring from the journal, recovery treats a bad tail of the active segment at or past
//! the journal's first record for the partition as a lost write: truncated, then the
//! journal's records from the segment's end on written back (records already there, or below
//! `start`, are skipped). A journal that begins past the segment's end leaves a gap: damage,
//! reported as above.

mod append;
mod prealloc;
mod read;
mod recovery;
mod replay;
mod tail;

use append::write_marks;
use read::read_at;
use replay::first_offset;
use tail::Tail;

use super::codec::{self, Frame, INDEX_ENTRY, IndexEntry, MARKS_LEN, Marks, StoredRecord};
use super::log::{LogConfig, PartitionLog, source_record};
use crate::backend::group::SourceRecord;
use crate::{Error, Event, Result};
use bytes::Bytes;
use parking_lot::Mutex;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When appended data is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every write batch, before the send returns: survives power loss; the slowest.
    /// Concurrent sends share one fsync (group commit).
    Always,
    /// At most this long after a write: a power loss can lose that window; a process crash
    /// loses nothing (the data is in the OS page cache).
    Interval(Duration),
    /// Never explicitly (on close only): the OS decides. A process crash loses nothing; a power
    /// loss can lose anything not yet written back.
    Never,
}

const INDEX_INTERVAL: u64 = 4096;
const READ_CHUNK: usize = 256 << 10;
const RESYNC_CHUNK: usize = 1 << 20;
const MARKS_FILE: &str = "marks";

/// A damaged region of a segment found by a reader: records `from..resume` cannot be read;
/// the frame of `resume` starts at byte `resume_pos`.
#[derive(Debug, Clone, Copy)]
struct Damage {
    from: u64,
    resume: u64,
    resume_pos: u64,
}

struct Segment {
    base: u64,
    log_path: PathBuf,
    index_path: PathBuf,
    file: Arc<File>,
    index_file: Option<File>,
    /// Where its records end.
    size: u64,
    /// The file's length: from `size` to here it holds zeros (a segment written in place under
    /// `fsync=always`); equal to `size` for a segment that grows with its appends.
    capacity: u64,
    /// Offset after the last record read in order from the start (equals the next segment's
    /// base when sealed and intact).
    end: u64,
    index: Vec<IndexEntry>,
    bytes_since_index: u64,
    max_ms: i64,
    newest_append_ms: i64,
    /// Where recovery found damage (byte position, reason): record `end` cannot be read.
    damaged_at: Option<(u64, String)>,
    /// Damaged regions found and stepped over by reads.
    damage: Vec<Damage>,
}

struct Inner {
    segments: Vec<Segment>,
    /// First offset readers are owed (below it, retention removed the records).
    start: u64,
    /// Next offset to hand out; every offset below it was handed out.
    next: u64,
    dirty: bool,
    last_sync: Instant,
    scratch: Vec<u8>,
    /// The writer's open marks file.
    marks: Option<File>,
    /// The next segment, being written with zeros (under `fsync=always`).
    preparing: Option<prealloc::Preparing>,
    /// Numbers this process's prepared segment files.
    prepared_seq: u64,
}

/// A partition log in a directory.
pub(crate) struct FileLog {
    dir: PathBuf,
    label: String,
    writable: AtomicBool,
    fsync: FsyncPolicy,
    config: LogConfig,
    skip_damaged: bool,
    inner: Mutex<Inner>,
    /// `inner`'s `start` and `next`, for [`bounds`](PartitionLog::bounds) without `inner`: a
    /// reader asks for them after every read (its lag), and `inner` is held through the
    /// writer's fsyncs, a roll's seal and retention's removals. Stored under `inner` wherever
    /// those change ([`FileLog::publish_bounds`]).
    published_start: AtomicU64,
    published_next: AtomicU64,
    /// The newest records this process appended (the last ends at `next`), with its own lock.
    tail: Tail,
    /// Tests hold the preparation of the next segment with this, to roll while it runs.
    #[cfg(test)]
    hold_preparation: Arc<AtomicBool>,
    /// Tests hold an fsync of the active segment with this, as a slow disk would.
    #[cfg(test)]
    hold_sync: Arc<AtomicBool>,
}

/// What [`FileLog::load`] found on disk.
struct Loaded {
    segments: Vec<Segment>,
    start: u64,
    next: u64,
    marks: Option<File>,
}

/// Where a read goes next.
enum Plan {
    /// Scan frames of a segment from `pos`, where the frame of `offset` starts.
    Scan {
        file: Arc<File>,
        path: PathBuf,
        pos: u64,
        offset: u64,
        from_index: bool,
        limit: u64,
        /// The offset that follows this segment's records (next segment's base, or the log's next).
        after: u64,
    },
    /// Records `from..to` are missing (no segment holds them) or damaged.
    Missing { from: u64, to: u64, why: String },
}

fn segment_name(base: u64, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

fn io(context: impl std::fmt::Display, e: std::io::Error) -> Error {
    Error::io(context, e).with_backend("file")
}

impl FileLog {
    /// Opens (and recovers) the log in `dir`; creates it when `writable` and missing.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn open(
        dir: &Path,
        label: String,
        writable: bool,
        fsync: FsyncPolicy,
        config: LogConfig,
        skip_damaged: bool,
    ) -> Result<Self> {
        Self::open_replaying(
            dir,
            label,
            writable,
            fsync,
            config,
            skip_damaged,
            Bytes::new(),
        )
    }

    /// [`open`](Self::open), a writer first restoring the records of `replay` (frames as the
    /// log wrote them, from the stream's journal) that its last segment lost.
    pub fn open_replaying(
        dir: &Path,
        label: String,
        writable: bool,
        fsync: FsyncPolicy,
        config: LogConfig,
        skip_damaged: bool,
        replay: Bytes,
    ) -> Result<Self> {
        let log = FileLog {
            dir: dir.to_owned(),
            label,
            writable: AtomicBool::new(writable),
            fsync,
            config,
            skip_damaged,
            inner: Mutex::new(Inner {
                segments: Vec::new(),
                start: 0,
                next: 0,
                dirty: false,
                last_sync: Instant::now(),
                scratch: Vec::new(),
                marks: None,
                preparing: None,
                prepared_seq: 0,
            }),
            published_start: AtomicU64::new(0),
            published_next: AtomicU64::new(0),
            tail: Tail::default(),
            #[cfg(test)]
            hold_preparation: Arc::default(),
            #[cfg(test)]
            hold_sync: Arc::default(),
        };
        let loaded = log.load(writable, &replay)?;
        log.install(&mut log.inner.lock(), loaded);
        Ok(log)
    }

    fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    fn install(&self, g: &mut Inner, loaded: Loaded) {
        g.segments = loaded.segments;
        g.start = loaded.start;
        g.next = loaded.next;
        g.marks = loaded.marks;
        g.dirty = false;
        self.publish_bounds(g);
        self.tail.clear();
        self.tail.publish(g.next);
    }

    /// Publishes `g`'s `start` and `next` for [`bounds`](PartitionLog::bounds). `next` is
    /// stored first and `bounds` loads `start` first: a reader that sees a new `start` sees a
    /// `next` at least as new, so it never gets a start above the next.
    fn publish_bounds(&self, g: &Inner) {
        self.published_next.store(g.next, Ordering::Release);
        self.published_start.store(g.start, Ordering::Release);
    }

    fn read_only_error(&self) -> Error {
        Error::unavailable(format!(
            "{}: this process opened the directory read-only (another process holds the writer lock)",
            self.label
        ))
        .with_retryable(false)
        .with_backend("file")
    }
}

impl PartitionLog for FileLog {
    fn append(&self, events: &[Event], append_ms: i64) -> Result<u64> {
        let mut g = self.inner.lock();
        // The tail would no longer end at `next`: readers go to the files until it refills.
        self.tail.clear();
        let base = self.write_in(&mut g, events, append_ms, None)?;
        self.after_append(&mut g)?;
        Ok(base)
    }

    fn append_owned(&self, events: Vec<Event>, append_ms: i64) -> Result<u64> {
        self.append_into(events, append_ms, None)
    }

    fn append_journaled(
        &self,
        events: Vec<Event>,
        append_ms: i64,
        journal: &mut Vec<u8>,
    ) -> Result<u64> {
        self.append_into(events, append_ms, Some(journal))
    }

    fn publish_appended(&self) {
        let g = self.inner.lock();
        self.publish(&g);
    }

    fn read_positioned(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Option<Vec<SourceRecord>> {
        // `None` below the tail, or where retention has moved the start: the file path, which
        // knows what was removed and says so.
        self.tail.read(from, max_records, max_bytes, source_record)
    }

    fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        let mut offset = from;
        let mut budget = max_bytes.max(1);
        while out.len() < max_records && budget > 0 {
            let before = (offset, out.len());
            let Some(plan) = self.plan(&mut offset) else {
                return Ok(out);
            };
            let (file, path, mut pos, mut expect, from_index, limit, after) = match plan {
                Plan::Missing { from, to, why } => {
                    if !self.skip_damaged {
                        if !out.is_empty() {
                            return Ok(out); // the records before it first; the error next time
                        }
                        return Err(self.missing_error(from, to, &why));
                    }
                    tracing::warn!(log = %self.label, from, to, %why,
                        "skipping lost records (skip_damaged=true)");
                    offset = to;
                    continue;
                }
                Plan::Scan {
                    file,
                    path,
                    pos,
                    offset,
                    from_index,
                    limit,
                    after,
                } => (file, path, pos, offset, from_index, limit, after),
            };
            let start_pos = pos;
            let mut index_forgotten = false;
            let chunk = READ_CHUNK.min(budget.max(64 << 10));
            let mut buf = Bytes::new();
            let mut buf_pos = pos;
            while pos < limit && out.len() < max_records && budget > 0 {
                let damage = match codec::decode(&buf.slice((pos - buf_pos) as usize..)) {
                    Frame::Record(r, len) if r.offset == expect => {
                        pos += len as u64;
                        expect += 1;
                        if r.offset >= offset {
                            budget = budget.saturating_sub(len);
                            out.push(r);
                            offset += 1;
                        }
                        continue;
                    }
                    Frame::Record(r, _) => {
                        format!("holds offset {} where {expect} was expected", r.offset)
                    }
                    // `limit` is the end of records a scan verified, so a frame that crosses
                    // it is damage (a broken length), not an append in progress.
                    Frame::Incomplete(need) if pos + need as u64 > limit => {
                        "a frame crosses the end of the segment's records".to_owned()
                    }
                    Frame::Incomplete(need) => {
                        let want = need.max(((limit - pos) as usize).min(chunk));
                        buf = read_at(&file, pos, want, &path)?;
                        buf_pos = pos;
                        if buf.len() < need {
                            "the file is shorter than its records (truncated)".to_owned()
                        } else {
                            continue;
                        }
                    }
                    Frame::Invalid(reason) => reason,
                };
                if pos == start_pos && from_index {
                    // The index pointed at something that is not the frame it promised: it
                    // is a hint, so read the segment from its start instead.
                    self.forget_index(&path);
                    index_forgotten = true;
                    break;
                }
                let (resume, resume_pos) = self
                    .resync(&file, &path, pos, expect, limit)?
                    .unwrap_or((after, limit));
                tracing::error!(log = %self.label, file = %path.display(), at = pos,
                    from = expect, to = resume, %damage, "damaged records");
                self.remember_damage(&path, expect, resume, resume_pos);
                if offset < resume {
                    break; // the next plan reports the damaged records, or steps over them
                }
                pos = resume_pos;
                expect = resume;
            }
            if (offset, out.len()) == before && !index_forgotten {
                // Nothing more is readable here yet (a reader waiting for the writer).
                let g = self.inner.lock();
                let known = g.segments.iter().any(|s| {
                    s.damage
                        .iter()
                        .any(|d| d.from <= offset && offset < d.resume)
                });
                if !known {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    fn bounds(&self) -> (u64, u64) {
        let start = self.published_start.load(Ordering::Acquire);
        (start, self.published_next.load(Ordering::Acquire))
    }

    fn offset_for_time(&self, ms: i64) -> Result<u64> {
        let (candidates, next) = {
            let g = self.inner.lock();
            let c: Vec<(u64, i64, u64)> = g
                .segments
                .iter()
                .filter(|s| s.max_ms >= ms)
                .map(|s| {
                    let i = s
                        .index
                        .partition_point(|e| e.max_ms_before < ms)
                        .saturating_sub(1);
                    (s.index[i].offset, s.max_ms, s.end)
                })
                .collect();
            (c, g.next)
        };
        for (from, _, end) in candidates {
            let mut offset = from;
            while offset < end {
                let batch = self.read(offset, 1000, 4 << 20)?;
                let Some(last) = batch.last() else { break };
                if let Some(r) = batch.iter().find(|r| r.effective_ms() >= ms) {
                    return Ok(r.offset);
                }
                offset = last.offset + 1;
            }
        }
        Ok(next)
    }

    fn sync(&self) -> Result<()> {
        if !self.is_writable() {
            return Ok(());
        }
        let mut g = self.inner.lock();
        self.sync_locked(&mut g)
    }

    fn tick(&self) -> Result<()> {
        if let FsyncPolicy::Interval(d) = self.fsync
            && self.is_writable()
        {
            let mut g = self.inner.lock();
            if g.dirty && g.last_sync.elapsed() >= d {
                self.sync_locked(&mut g)?;
            }
        }
        Ok(())
    }

    fn refresh(&self) -> Result<()> {
        if self.is_writable() {
            return Ok(());
        }
        let mut g = self.inner.lock();
        // The marks first: every record below their `next` is on disk by the time they say so.
        let marks = self.read_marks();
        let upto = marks.map_or(u64::MAX, |m| m.next);
        let mut bases = self.list_bases()?;
        bases.retain(|b| *b < upto);
        g.segments.retain(|s| s.log_path.exists());
        let last = g.segments.last().map(|s| s.base);
        let count = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            if last.is_none_or(|l| base > l) {
                let hwm = marks.map(|m| m.next);
                let seg = self.recover_segment(base, i + 1 == count, false, hwm, upto, None)?;
                g.segments.push(seg);
            }
        }
        // Growth of the segments already known (the last one, usually).
        for seg in g.segments.iter_mut() {
            if seg.damaged_at.is_some() {
                continue;
            }
            let size = seg.file.metadata().map(|m| m.len()).unwrap_or(seg.size);
            if size > seg.size && seg.end < upto {
                let (pos, offset) = (seg.size, seg.end);
                let (stop, why) = match self.scan(seg, pos, offset, size, upto) {
                    Ok(found) => found,
                    Err(e) => (pos, Some(e.to_string())),
                };
                seg.size = stop;
                // Without marks a partial frame at the end is an append in progress; below
                // the published marks it is damage.
                if let Some(why) = why
                    && marks.is_some()
                    && seg.end < upto
                {
                    seg.damaged_at = Some((stop, why));
                }
            }
        }
        match marks {
            Some(m) => {
                g.start = m.start;
                g.next = m.next;
            }
            None => {
                g.start = g.segments.first().map_or(g.start, |s| s.base);
                if let Some(last) = g.segments.last() {
                    g.next = last.end;
                }
            }
        }
        self.publish_bounds(&g);
        Ok(())
    }

    fn enforce_retention(&self, now_ms: i64) -> Result<()> {
        if !self.is_writable() {
            return Ok(());
        }
        let mut g = self.inner.lock();
        while g.segments.len() > 1 {
            let total: u64 = g.segments.iter().map(|s| s.size).sum();
            let oldest = &g.segments[0];
            let too_big = self.config.retention_bytes.is_some_and(|max| total > max);
            let too_old = self.config.retention_age.is_some_and(|age| {
                oldest.newest_append_ms < now_ms.saturating_sub(age.as_millis() as i64)
            });
            if !(too_big || too_old) {
                break;
            }
            // The marks move first: a crash before the files go leaves only leftovers, which
            // the next open removes, never a hole that looks like lost data.
            g.start = g.start.max(g.segments[1].base);
            self.publish_bounds(&g);
            self.tail.drop_below(g.start);
            if let Some(file) = &g.marks {
                write_marks(
                    file,
                    Marks {
                        start: g.start,
                        next: g.next,
                    },
                )
                .and_then(|_| file.sync_data())
                .map_err(|e| io(format!("writing the marks of {}", self.label), e))?;
            }
            let seg = g.segments.remove(0);
            tracing::debug!(log = %self.label, base = seg.base, "retention removes segment");
            fs::remove_file(&seg.log_path)
                .map_err(|e| io(format!("removing {}", seg.log_path.display()), e))?;
            let _ = fs::remove_file(&seg.index_path);
        }
        Ok(())
    }

    fn promote(&self, replay: Bytes) -> Result<()> {
        if self.is_writable() {
            return Ok(());
        }
        let mut g = self.inner.lock();
        let loaded = self.load(true, &replay)?;
        self.install(&mut g, loaded);
        self.writable.store(true, Ordering::Release);
        Ok(())
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        let mut g = self.inner.lock();
        if let Some(preparing) = g.preparing.take() {
            preparing.cancel();
        }
        if self.is_writable()
            && let Err(e) = self.sync_locked(&mut g)
        {
            tracing::warn!(log = %self.label, error = %e, "fsync on close failed");
        }
    }
}

#[cfg(test)]
mod prealloc_tests;
#[cfg(test)]
mod tests;
