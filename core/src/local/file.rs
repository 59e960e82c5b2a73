//! The durable partition log: segment files with CRC framing, a sparse offset/time index, water
//! marks, an fsync policy, and crash recovery.
//!
//! Layout of one partition directory:
//! ```text
//! 00000000000000000000.log     frames (see codec.rs), base offset in the name
//! 00000000000000000000.index   24-byte entries: offset u64, byte position u64, max time before it i64
//! marks                        start and next offset (see codec.rs)
//! ```
//! The index is a hint: it is rebuilt from the log when missing or inconsistent, and never
//! fsynced. The marks file is the log's memory of what it handed out: `next` is written after
//! every append (after the fsync under `fsync=always`), so every position below it reached a
//! producer, and none is ever handed out again; `start` moves only with retention. Other
//! processes read only up to `next`, so they never see a write in progress.
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

use super::codec::{self, Frame, INDEX_ENTRY, IndexEntry, MARKS_LEN, Marks, StoredRecord};
use super::log::{LogConfig, PartitionLog};
use crate::{Error, Event, Result};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
/// What the tail of recent appends may hold per partition (encoded bytes, about).
const TAIL_BYTES: usize = 256 << 10;
/// A tail record's memory beyond its encoded event (record, event and `Bytes` headers).
const TAIL_OVERHEAD: usize = 96;

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
    size: u64,
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
    /// The newest records this process appended (the last ends at `next`), so readers that
    /// keep up are served from memory, without a system call or a blocking task.
    tail: VecDeque<StoredRecord>,
    tail_bytes: usize,
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
    pub fn open(
        dir: &Path,
        label: String,
        writable: bool,
        fsync: FsyncPolicy,
        config: LogConfig,
        skip_damaged: bool,
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
                tail: VecDeque::new(),
                tail_bytes: 0,
            }),
        };
        let loaded = log.load(writable)?;
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
        g.tail.clear();
        g.tail_bytes = 0;
    }

    fn list_bases(&self) -> Result<Vec<u64>> {
        let dir = &self.dir;
        let mut bases = Vec::new();
        let entries = fs::read_dir(dir).map_err(|e| io(format!("listing {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io(format!("listing {}", dir.display()), e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".log") {
                match stem.parse::<u64>() {
                    Ok(base) if stem.len() == 20 => bases.push(base),
                    _ => {
                        return Err(Error::corrupt(format!(
                            "{}: unexpected file `{name}` in a partition directory (segment files are named <20-digit offset>.log)",
                            dir.display()
                        ))
                        .with_backend("file"));
                    }
                }
            }
        }
        bases.sort_unstable();
        Ok(bases)
    }

    /// The marks file, if there is a readable one. A damaged one is as good as none: the
    /// segments are then the only record of what was written.
    fn read_marks(&self) -> Option<Marks> {
        let path = self.dir.join(MARKS_FILE);
        let bytes = fs::read(&path).ok()?;
        match codec::decode_marks(&bytes) {
            Ok(m) => Some(m),
            Err(reason) => {
                tracing::warn!(log = %self.label, file = %path.display(), %reason,
                    "ignoring a damaged marks file; positions are taken from the segments");
                None
            }
        }
    }

    /// Reads the directory: segments, marks, and the writer's repairs when `writable`.
    fn load(&self, writable: bool) -> Result<Loaded> {
        if writable {
            fs::create_dir_all(&self.dir)
                .map_err(|e| io(format!("creating {}", self.dir.display()), e))?;
        }
        let mut bases = self.list_bases()?;
        let marks = self.read_marks();
        if let Some(m) = marks {
            // Segments wholly below `start` are what an interrupted retention left behind.
            let keep_from = bases
                .iter()
                .enumerate()
                .take_while(|(i, _)| bases.get(i + 1).is_some_and(|next| *next <= m.start))
                .count();
            for base in bases.drain(..keep_from) {
                if writable {
                    let _ = fs::remove_file(self.dir.join(segment_name(base, "log")));
                    let _ = fs::remove_file(self.dir.join(segment_name(base, "index")));
                }
            }
        }
        if bases.is_empty() && marks.is_none() && !writable {
            return Err(Error::not_found(format!(
                "{}: no segments (the stream is being created by its writer?)",
                self.label
            ))
            .with_backend("file"));
        }
        // Readers see only what the writer has published.
        let upto = if writable {
            u64::MAX
        } else {
            marks.map_or(u64::MAX, |m| m.next)
        };
        let hwm = marks.map(|m| m.next);
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
        let count = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            if base >= upto && !writable {
                break;
            }
            segments.push(self.recover_segment(base, i + 1 == count, writable, hwm, upto)?);
        }
        let data_end = segments.last().map(|s| s.end);
        let start = match (marks, segments.first()) {
            (Some(m), _) => m.start,
            (None, Some(first)) => first.base,
            (None, None) => 0,
        };
        let next = match (marks, data_end) {
            (Some(m), Some(end)) if writable => m.next.max(end),
            (Some(m), _) => m.next,
            (None, Some(end)) => end,
            (None, None) => 0,
        };
        if let Some(m) = marks {
            if let Some(first) = segments.first()
                && first.base > m.start
            {
                tracing::error!(log = %self.label, missing_from = m.start, missing_to = first.base,
                    "records are missing at the start of the log (a segment was removed)");
            }
            if let Some(end) = data_end
                && end < m.next
            {
                tracing::error!(log = %self.label, missing_from = end, missing_to = m.next,
                    "records handed out earlier are missing at the end of the log (a segment was truncated or removed)");
            }
        }
        for pair in segments.windows(2) {
            if pair[0].damaged_at.is_none() && pair[0].end != pair[1].base {
                tracing::error!(log = %self.label, missing_from = pair[0].end, missing_to = pair[1].base,
                    "records are missing between two segments");
            }
        }
        let mut marks_file = None;
        if writable {
            // New records go to a fresh segment when the last one cannot take them: it is
            // damaged, or it ends before positions already handed out.
            let fresh = match segments.last() {
                None => true,
                Some(last) => last.damaged_at.is_some() || (last.end < next && last.size > 0),
            };
            let empty_before = segments
                .last()
                .is_some_and(|last| last.size == 0 && last.base != next);
            if fresh || empty_before {
                if let Some(last) = segments.last_mut() {
                    last.index_file = None;
                }
                segments.push(self.create_segment(next)?);
            }
            let path = self.dir.join(MARKS_FILE);
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io(format!("opening {}", path.display()), e))?;
            write_marks(&file, Marks { start, next })
                .and_then(|_| file.sync_data())
                .map_err(|e| io(format!("writing {}", path.display()), e))?;
            marks_file = Some(file);
        }
        Ok(Loaded {
            segments,
            start,
            next,
            marks: marks_file,
        })
    }

    fn create_segment(&self, base: u64) -> Result<Segment> {
        let log_path = self.dir.join(segment_name(base, "log"));
        let index_path = self.dir.join(segment_name(base, "index"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&log_path)
            .map_err(|e| io(format!("creating {}", log_path.display()), e))?;
        let index_file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&index_path)
            .map_err(|e| io(format!("creating {}", index_path.display()), e))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(Segment {
            base,
            log_path,
            index_path,
            file: Arc::new(file),
            index_file: Some(index_file),
            size: 0,
            end: base,
            index: Vec::new(),
            bytes_since_index: INDEX_INTERVAL,
            max_ms: i64::MIN,
            newest_append_ms: i64::MIN,
            damaged_at: None,
            damage: Vec::new(),
        })
    }

    /// Scans a segment from its last index entry, validating frames, up to offset `upto`. The
    /// last segment's bad tail is truncated by a writer when it lies at or beyond `hwm` (a
    /// write that never completed); below `hwm` it is damage and stays.
    fn recover_segment(
        &self,
        base: u64,
        is_last: bool,
        writable: bool,
        hwm: Option<u64>,
        upto: u64,
    ) -> Result<Segment> {
        let log_path = self.dir.join(segment_name(base, "log"));
        let index_path = self.dir.join(segment_name(base, "index"));
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&log_path)
            .map_err(|e| io(format!("opening {}", log_path.display()), e))?;
        let size = file
            .metadata()
            .map_err(|e| io(format!("reading {}", log_path.display()), e))?
            .len();
        let mut index = fs::read(&index_path)
            .map(|bytes| codec::decode_index(&bytes, base, size))
            .unwrap_or_default();
        index.retain(|e| e.offset <= upto);
        // Re-verify the last entry: an index written ahead of a torn log must not be trusted.
        let mut start = index.last().copied().unwrap_or(IndexEntry {
            offset: base,
            pos: 0,
            max_ms_before: i64::MIN,
        });
        if index.is_empty() {
            index.push(start);
        }
        let mut seg = Segment {
            base,
            log_path,
            index_path,
            file: Arc::new(file),
            index_file: None,
            size,
            end: start.offset,
            index,
            bytes_since_index: 0,
            max_ms: start.max_ms_before,
            newest_append_ms: i64::MIN,
            damaged_at: None,
            damage: Vec::new(),
        };
        let (pos, stop) = loop {
            match self.scan(&mut seg, start.pos, start.offset, size, upto) {
                Ok(stop) => break stop,
                Err(_) if seg.index.len() > 1 => {
                    // The index pointed at something that is not a frame: fall back to the start.
                    seg.index.truncate(1);
                    start = seg.index[0];
                    seg.max_ms = start.max_ms_before;
                    seg.end = start.offset;
                    seg.bytes_since_index = 0;
                }
                Err(e) => return Err(e),
            }
        };
        match stop {
            Some(reason) if is_last && hwm.is_none_or(|h| seg.end >= h) => {
                if writable {
                    tracing::warn!(
                        log = %self.label, file = %seg.log_path.display(), at = pos,
                        dropped_bytes = size - pos, %reason,
                        "truncating the torn tail of the active segment (a write that never completed)"
                    );
                    seg.file
                        .set_len(pos)
                        .and_then(|_| seg.file.sync_all())
                        .map_err(|e| io(format!("truncating {}", seg.log_path.display()), e))?;
                }
                // A reader must not truncate; the writer may still be completing this frame.
                seg.size = pos;
            }
            Some(reason) => {
                tracing::error!(log = %self.label, file = %seg.log_path.display(), at = pos,
                    offset = seg.end, %reason, "damaged record");
                seg.damaged_at = Some((pos, reason));
            }
            // A reader stops at what the writer published.
            None => seg.size = pos,
        }
        if writable {
            self.rewrite_index(&mut seg)?;
        }
        Ok(seg)
    }

    /// Walks frames from `pos` (expected offset `offset`) to byte `limit` or offset `upto`,
    /// extending the index. Returns where it stopped, and why when it stopped early at a frame
    /// it could not read; an error if the very first frame is not what the index promised (the
    /// caller then rescans from the segment start).
    fn scan(
        &self,
        seg: &mut Segment,
        pos: u64,
        mut offset: u64,
        limit: u64,
        upto: u64,
    ) -> Result<(u64, Option<String>)> {
        let mut buf = Bytes::new();
        let mut buf_pos = pos;
        let mut cur = pos;
        let mut since_index = seg.bytes_since_index;
        while cur < limit && offset < upto {
            match codec::decode(&buf.slice((cur - buf_pos) as usize..)) {
                Frame::Record(r, len) => {
                    if r.offset != offset {
                        let reason = format!("expected offset {offset}, found {}", r.offset);
                        if cur == pos && pos != 0 {
                            return Err(Error::corrupt(reason));
                        }
                        return Ok((cur, Some(reason)));
                    }
                    if since_index >= INDEX_INTERVAL {
                        seg.index.push(IndexEntry {
                            offset,
                            pos: cur,
                            max_ms_before: seg.max_ms,
                        });
                        since_index = 0;
                    }
                    seg.max_ms = seg.max_ms.max(r.effective_ms());
                    seg.newest_append_ms = seg.newest_append_ms.max(r.append_ms);
                    cur += len as u64;
                    since_index += len as u64;
                    offset += 1;
                    seg.end = offset;
                }
                Frame::Incomplete(need) => {
                    if cur + need as u64 > limit {
                        return Ok((cur, Some("incomplete frame at end of file".into())));
                    }
                    let want = need.max(((limit - cur) as usize).min(READ_CHUNK));
                    buf = read_at(&seg.file, cur, want, &seg.log_path)?;
                    buf_pos = cur;
                    if buf.len() < need {
                        return Ok((cur, Some("file shorter than its frames".into())));
                    }
                }
                Frame::Invalid(reason) => {
                    if cur == pos && pos != 0 {
                        return Err(Error::corrupt(reason));
                    }
                    return Ok((cur, Some(reason)));
                }
            }
        }
        seg.bytes_since_index = since_index;
        Ok((cur, None))
    }

    fn rewrite_index(&self, seg: &mut Segment) -> Result<()> {
        let mut bytes = Vec::with_capacity(seg.index.len() * INDEX_ENTRY);
        codec::encode_index(&seg.index, &mut bytes);
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&seg.index_path)
            .map_err(|e| io(format!("writing {}", seg.index_path.display()), e))?;
        f.write_all(&bytes)
            .map_err(|e| io(format!("writing {}", seg.index_path.display()), e))?;
        seg.index_file = Some(f);
        Ok(())
    }

    /// Makes appended data durable, then publishes the marks.
    fn sync_locked(&self, g: &mut Inner) -> Result<()> {
        if g.dirty {
            let seg = g.segments.last().expect("one segment");
            seg.file
                .sync_data()
                .map_err(|e| io(format!("fsync {}", seg.log_path.display()), e))?;
            g.dirty = false;
        }
        g.last_sync = Instant::now();
        self.publish(g);
        Ok(())
    }

    /// Writes the marks: readers in other processes see records up to `next` from now on, and
    /// a restart knows every position below `next` was handed out.
    fn publish(&self, g: &Inner) {
        if let Some(file) = &g.marks
            && let Err(e) = write_marks(
                file,
                Marks {
                    start: g.start,
                    next: g.next,
                },
            )
        {
            tracing::warn!(log = %self.label, error = %e, "cannot write the marks file");
        }
    }

    fn read_only_error(&self) -> Error {
        Error::unavailable(format!(
            "{}: this process opened the directory read-only (another process holds the writer lock)",
            self.label
        ))
        .with_retryable(false)
        .with_backend("file")
    }

    /// Where reading `offset` goes next; `None` when the log holds nothing at or after it.
    fn plan(&self, offset: &mut u64) -> Option<Plan> {
        let g = self.inner.lock();
        *offset = (*offset).max(g.start);
        if *offset >= g.next {
            return None;
        }
        let i = g.segments.partition_point(|s| s.base <= *offset);
        let after_of = |i: usize| g.segments.get(i).map_or(g.next, |s| s.base);
        if i == 0 {
            return Some(Plan::Missing {
                from: *offset,
                to: after_of(0),
                why: "no segment holds them (removed?)".to_owned(),
            });
        }
        let seg = &g.segments[i - 1];
        let after = after_of(i);
        if let Some(d) = seg
            .damage
            .iter()
            .find(|d| d.from <= *offset && *offset < d.resume)
        {
            return Some(Plan::Missing {
                from: d.from,
                to: d.resume,
                why: format!("{} is damaged", seg.log_path.display()),
            });
        }
        // The nearest known frame at or before `offset`: an index entry, or the first intact
        // frame after a damaged region.
        let entry = seg.index[seg
            .index
            .partition_point(|e| e.offset <= *offset)
            .saturating_sub(1)];
        let mut from = (entry.pos, entry.offset, entry.pos != 0);
        for d in &seg.damage {
            if d.resume <= *offset && d.resume_pos > from.0 {
                from = (d.resume_pos, d.resume, false);
            }
        }
        let scan = |pos: u64, at: u64, from_index: bool| Plan::Scan {
            file: seg.file.clone(),
            path: seg.log_path.clone(),
            pos,
            offset: at,
            from_index,
            limit: seg.size,
            after,
        };
        if *offset < seg.end {
            return Some(scan(from.0, from.1, from.2));
        }
        match &seg.damaged_at {
            // Past the damage recovery found: read on from it, stepping over it.
            Some((pos, _)) if from.1 <= seg.end => Some(scan(*pos, seg.end, false)),
            Some(_) => Some(scan(from.0, from.1, from.2)),
            None => Some(Plan::Missing {
                from: *offset,
                to: after,
                why: format!(
                    "{} ends at offset {} (truncated, or a segment was removed)",
                    seg.log_path.display(),
                    seg.end
                ),
            }),
        }
    }

    /// The error for records `from..to` that cannot be read, with the ways past them.
    fn missing_error(&self, from: u64, to: u64, why: &str) -> Error {
        let records = if to == from + 1 {
            format!("record {from} is")
        } else {
            format!("records {from} to {} are", to - 1)
        };
        Error::corrupt(format!(
            "{}: {records} lost: {why}; records before and after stay readable: start after \
             them (consume --from {to}), or open the stream with `skip_damaged=true` to step \
             over lost records with a warning",
            self.label
        ))
        .with_backend("file")
    }

    /// Finds the first intact frame after the damage at byte `at` of `file`, where record
    /// `expect` should have started: (its offset, its byte position), or `None` when no intact
    /// frame follows before `limit`.
    fn resync(
        &self,
        file: &File,
        path: &Path,
        at: u64,
        expect: u64,
        limit: u64,
    ) -> Result<Option<(u64, u64)>> {
        let mut chunk_pos = at + 1;
        while chunk_pos < limit {
            let want = ((limit - chunk_pos) as usize).min(RESYNC_CHUNK + codec::PROBE);
            let buf = read_at(file, chunk_pos, want, path)?;
            let positions = buf.len().min(RESYNC_CHUNK);
            for i in 0..positions {
                let p = chunk_pos + i as u64;
                if !codec::plausible_frame(&buf[i..], p - at, expect) {
                    continue;
                }
                let len = u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes")) as usize;
                let total = codec::FRAME_HEADER + len;
                if p + total as u64 > limit {
                    continue;
                }
                let frame = if i + total <= buf.len() {
                    buf.slice(i..i + total)
                } else {
                    read_at(file, p, total, path)?
                };
                if let Frame::Record(r, _) = codec::decode(&frame)
                    && r.offset > expect
                {
                    return Ok(Some((r.offset, p)));
                }
            }
            if buf.len() <= positions {
                break;
            }
            chunk_pos += positions as u64;
        }
        Ok(None)
    }
}

fn write_marks(file: &File, marks: Marks) -> std::io::Result<()> {
    let bytes: [u8; MARKS_LEN] = codec::encode_marks(marks);
    file.write_all_at(&bytes, 0)
}

fn read_at(file: &File, pos: u64, len: usize, path: &Path) -> Result<Bytes> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], pos + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(format!("reading {}", path.display()), e)),
        }
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

/// A segment's state before an append touched it, to undo a failed append.
struct Undo {
    segment: usize,
    size: u64,
    end: u64,
    index_len: usize,
    bytes_since_index: u64,
    max_ms: i64,
    newest_append_ms: i64,
}

impl FileLog {
    /// Rolls back a failed append: segments back to their sizes before it, segments it
    /// created removed, so no partial batch is left for a restart or a reader to find.
    fn undo(&self, g: &mut Inner, undo: &[Undo], created_from: usize) {
        for seg in g.segments.drain(created_from..) {
            let _ = fs::remove_file(&seg.log_path);
            let _ = fs::remove_file(&seg.index_path);
        }
        for u in undo.iter().filter(|u| u.segment < created_from) {
            let seg = &mut g.segments[u.segment];
            let _ = seg.file.set_len(u.size);
            seg.size = u.size;
            seg.end = u.end;
            seg.index.truncate(u.index_len);
            seg.bytes_since_index = u.bytes_since_index;
            seg.max_ms = u.max_ms;
            seg.newest_append_ms = u.newest_append_ms;
            // The index file may hold entries of the undone records: rebuilt at next open.
            seg.index_file = None;
        }
    }
}

impl FileLog {
    fn append_in(&self, g: &mut Inner, events: &[Event], append_ms: i64) -> Result<u64> {
        if !self.is_writable() {
            return Err(self.read_only_error());
        }
        let base = g.next;
        let created_from = g.segments.len();
        let mut undo: Vec<Undo> = Vec::new();
        let mut scratch = std::mem::take(&mut g.scratch);
        let mut i = 0;
        let mut full = false;
        // A batch fills the active segment up to `segment_bytes`, then goes on in a new one;
        // a segment outgrows the limit only to hold a single record larger than it.
        while i < events.len() {
            let offset = base + i as u64;
            let needs_roll = {
                let active = g.segments.last().expect("one segment");
                (full || active.size >= self.config.segment_bytes) && active.end > active.base
            };
            full = false;
            if needs_roll {
                // Seal: make the old segment durable before records start landing in the next one.
                let sealed = self
                    .sync_locked(g)
                    .and_then(|_| self.create_segment(offset));
                match sealed {
                    Ok(seg) => g.segments.push(seg),
                    Err(e) => {
                        self.undo(g, &undo, created_from);
                        g.scratch = scratch;
                        return Err(e);
                    }
                }
            }
            let segment = g.segments.len() - 1;
            let active = g.segments.last_mut().expect("one segment");
            let before_append = Undo {
                segment,
                size: active.size,
                end: active.end,
                index_len: active.index.len(),
                bytes_since_index: active.bytes_since_index,
                max_ms: active.max_ms,
                newest_append_ms: active.newest_append_ms,
            };
            scratch.clear();
            let mut new_index = Vec::new();
            let mut since = active.bytes_since_index;
            let mut max_ms = active.max_ms;
            let room = self.config.segment_bytes.saturating_sub(active.size) as usize;
            let first = i;
            while i < events.len() {
                let before = scratch.len();
                let offset = base + i as u64;
                let pos = active.size + before as u64;
                codec::encode(&mut scratch, offset, append_ms, &events[i]);
                let holds_records = active.size > 0 || i > first;
                if scratch.len() > room && holds_records {
                    scratch.truncate(before);
                    break;
                }
                if since >= INDEX_INTERVAL {
                    new_index.push(IndexEntry {
                        offset,
                        pos,
                        max_ms_before: max_ms,
                    });
                    since = 0;
                }
                since += (scratch.len() - before) as u64;
                max_ms = max_ms.max(events[i].timestamp.map_or(append_ms, |t| t.as_millis()));
                i += 1;
            }
            if i == first {
                full = true; // not even one more record fits: roll
                continue;
            }
            undo.push(before_append);
            if let Err(e) = active.file.write_all_at(&scratch, active.size) {
                let e = io(format!("appending to {}", active.log_path.display()), e);
                self.undo(g, &undo, created_from);
                g.scratch = scratch;
                return Err(e);
            }
            if let Some(f) = active.index_file.as_mut() {
                let mut bytes = Vec::with_capacity(new_index.len() * INDEX_ENTRY);
                codec::encode_index(&new_index, &mut bytes);
                // The index is a rebuildable hint: a failed write only costs a rescan at next open.
                if f.write_all(&bytes).is_err() {
                    active.index_file = None;
                }
            }
            active.index.extend(new_index);
            active.bytes_since_index = since;
            active.max_ms = max_ms;
            active.newest_append_ms = active.newest_append_ms.max(append_ms);
            active.size += scratch.len() as u64;
            active.end = base + i as u64;
            g.dirty = true;
        }
        g.next = base + events.len() as u64;
        g.scratch = scratch;
        match self.fsync {
            // Fsynced by the stream's writer once per group of concurrent batches (group
            // commit), which then publishes the marks: readers never see an unsynced record.
            FsyncPolicy::Always => {}
            FsyncPolicy::Interval(d) if g.last_sync.elapsed() >= d => self.sync_locked(g)?,
            // The producer gets its receipts now: the marks must cover them now.
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => self.publish(g),
        }
        Ok(base)
    }
}

impl PartitionLog for FileLog {
    fn append(&self, events: &[Event], append_ms: i64) -> Result<u64> {
        self.append_in(&mut self.inner.lock(), events, append_ms)
    }

    fn append_owned(&self, events: Vec<Event>, append_ms: i64) -> Result<u64> {
        let mut g = self.inner.lock();
        let base = self.append_in(&mut g, &events, append_ms)?;
        for (offset, event) in (base..).zip(events) {
            g.tail_bytes += event.encoded_len() + TAIL_OVERHEAD;
            g.tail.push_back(StoredRecord {
                offset,
                append_ms,
                event,
            });
        }
        while g.tail_bytes > TAIL_BYTES
            && let Some(old) = g.tail.pop_front()
        {
            g.tail_bytes -= old.event.encoded_len() + TAIL_OVERHEAD;
        }
        Ok(base)
    }

    fn read_cached(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Option<Vec<StoredRecord>> {
        let g = self.inner.lock();
        let first = g.tail.front()?.offset;
        // Below the tail, or where retention has moved the start: the file path, which knows
        // what was removed and says so.
        if from < first || from < g.start || from >= g.next {
            return None;
        }
        let mut out = Vec::with_capacity(max_records.min((g.next - from) as usize));
        let mut budget = max_bytes.max(1);
        for record in g.tail.range((from - first) as usize..) {
            if out.len() >= max_records || budget == 0 {
                break;
            }
            budget = budget.saturating_sub(record.event.encoded_len());
            out.push(record.clone());
        }
        Some(out)
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
        let g = self.inner.lock();
        (g.start, g.next)
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
                let seg = self.recover_segment(base, i + 1 == count, false, hwm, upto)?;
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

    fn promote(&self) -> Result<()> {
        if self.is_writable() {
            return Ok(());
        }
        let mut g = self.inner.lock();
        let loaded = self.load(true)?;
        self.install(&mut g, loaded);
        self.writable.store(true, Ordering::Release);
        Ok(())
    }
}

impl FileLog {
    fn remember_damage(&self, path: &Path, from: u64, resume: u64, resume_pos: u64) {
        let mut g = self.inner.lock();
        if let Some(seg) = g.segments.iter_mut().find(|s| s.log_path == path)
            && !seg.damage.iter().any(|d| d.from == from)
        {
            seg.damage.push(Damage {
                from,
                resume,
                resume_pos,
            });
        }
    }

    fn forget_index(&self, path: &Path) {
        let mut g = self.inner.lock();
        if let Some(seg) = g.segments.iter_mut().find(|s| s.log_path == path) {
            tracing::warn!(log = %self.label, file = %seg.index_path.display(),
                "the index does not match the segment; reading it from the start");
            seg.index.truncate(1);
        }
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        if self.is_writable() {
            let mut g = self.inner.lock();
            if let Err(e) = self.sync_locked(&mut g) {
                tracing::warn!(log = %self.label, error = %e, "fsync on close failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(segment_bytes: u64) -> LogConfig {
        LogConfig {
            segment_bytes,
            retention_bytes: None,
            retention_age: None,
        }
    }

    fn open(dir: &Path, segment_bytes: u64) -> FileLog {
        FileLog::open(
            dir,
            "test".into(),
            true,
            FsyncPolicy::Never,
            config(segment_bytes),
            false,
        )
        .unwrap()
    }

    fn event(i: usize) -> Event {
        let mut e = Event::new(vec![i as u8; i % 300]).with_key(format!("k{i}"));
        if i.is_multiple_of(3) {
            e = e.with_header("h", vec![0xffu8, i as u8]);
        }
        e
    }

    fn active_segment(dir: &Path) -> PathBuf {
        let mut logs: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        logs.pop().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// A write torn at any byte leaves exactly the records wholly before the tear; the log
        /// then accepts new writes at the next offset.
        #[test]
        fn recovery_after_a_torn_write_keeps_exactly_the_complete_prefix(
            batches in proptest::collection::vec(1usize..40, 1..8),
            segment_bytes in prop_oneof![Just(1024u64), Just(64 << 20)],
            cut in any::<prop::sample::Index>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let total: usize = batches.iter().sum();
            let events: Vec<Event> = (0..total).collect::<Vec<_>>().into_iter().map(event).collect();
            let last = *batches.last().unwrap();
            let marks_before_last;
            let size_before_last;
            let active_before_last;
            {
                let log = open(dir.path(), segment_bytes);
                let mut i = 0;
                for n in &batches[..batches.len() - 1] {
                    log.append(&events[i..i + n], 1000 + i as i64).unwrap();
                    i += n;
                }
                marks_before_last = fs::read(dir.path().join(MARKS_FILE)).unwrap();
                active_before_last = active_segment(dir.path());
                size_before_last = fs::metadata(&active_before_last).unwrap().len();
                log.append(&events[i..], 1000 + i as i64).unwrap();
            }
            // The process died inside the last write: its marks were never written, and the
            // file holds any prefix of its bytes.
            fs::write(dir.path().join(MARKS_FILE), &marks_before_last).unwrap();
            let active = active_segment(dir.path());
            let size = fs::metadata(&active).unwrap().len();
            let floor = if active == active_before_last { size_before_last } else { 0 };
            let keep = floor + cut.index((size - floor) as usize + 1) as u64;
            fs::OpenOptions::new().write(true).open(&active).unwrap().set_len(keep).unwrap();

            let log = open(dir.path(), segment_bytes);
            let (_, next) = log.bounds();
            let records = log.read(0, usize::MAX, usize::MAX).unwrap();
            prop_assert_eq!(records.len() as u64, next);
            for (i, r) in records.iter().enumerate() {
                prop_assert_eq!(r.offset, i as u64);
                prop_assert_eq!(&r.event, &events[i]);
            }
            prop_assert!(next as usize >= total - last, "records before the torn batch were lost");
            if keep == size {
                prop_assert_eq!(next as usize, total);
            }
            let base = log.append(&[Event::new("after")], 0).unwrap();
            prop_assert_eq!(base, next);
            drop(log);
            let again = open(dir.path(), segment_bytes);
            let after = again.read(base, 1, usize::MAX).unwrap();
            prop_assert_eq!(after[0].event.payload.as_ref(), b"after");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Issue 17 (7): one flipped bit anywhere in a sealed segment costs exactly the record
        /// whose frame it hit: every other record is served, the error names that record, and
        /// `skip_damaged` steps over it.
        #[test]
        fn a_flipped_bit_costs_exactly_its_record(
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let dir = tempfile::tempdir().unwrap();
            drop(fill(dir.path(), 200));
            let mut logs: Vec<_> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            logs.sort();
            let victim = &logs[1];
            let mut bytes = fs::read(victim).unwrap();
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            fs::write(victim, bytes).unwrap();

            let strict = open(dir.path(), 1024);
            let mut served = Vec::new();
            let err = loop {
                match strict.read(served.len() as u64, 7, usize::MAX) {
                    Ok(records) => {
                        prop_assert!(!records.is_empty(), "stopped without an error");
                        served.extend(records.into_iter().map(|r| r.offset));
                    }
                    Err(e) => break e,
                }
            };
            let lost = served.len() as u64;
            prop_assert!(served.iter().enumerate().all(|(i, o)| *o == i as u64));
            prop_assert!(err.to_string().contains(&format!("record {lost} is lost")), "{}", err);
            let after = strict.read(lost + 1, usize::MAX, usize::MAX).unwrap();
            prop_assert_eq!(after.len() as u64, 200 - lost - 1);
            drop(strict);

            let skipping = FileLog::open(dir.path(), "t".into(), true, FsyncPolicy::Never, config(1024), true).unwrap();
            let all = skipping.read(0, usize::MAX, usize::MAX).unwrap();
            prop_assert_eq!(all.len(), 199);
            for r in &all {
                prop_assert_ne!(r.offset, lost);
                prop_assert_eq!(&r.event, &event(r.offset as usize));
            }
        }
    }

    fn fill(dir: &Path, n: usize) -> FileLog {
        let log = open(dir, 1024);
        for i in 0..n {
            log.append(&[event(i)], 0).unwrap();
        }
        log
    }

    /// Issue 17 (8): positions once handed out are never handed out again, whatever happened
    /// to the data: a truncated active segment, a removed one.
    #[test]
    fn positions_are_never_handed_out_twice() {
        for damage in ["truncate active", "remove active", "remove all"] {
            let dir = tempfile::tempdir().unwrap();
            drop(fill(dir.path(), 120));
            let mut logs: Vec<_> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            logs.sort();
            match damage {
                "truncate active" => fs::OpenOptions::new()
                    .write(true)
                    .open(logs.last().unwrap())
                    .unwrap()
                    .set_len(0)
                    .unwrap(),
                "remove active" => fs::remove_file(logs.last().unwrap()).unwrap(),
                _ => logs.iter().for_each(|l| fs::remove_file(l).unwrap()),
            }
            let log = open(dir.path(), 1024);
            assert_eq!(log.bounds().1, 120, "{damage}");
            assert_eq!(log.append(&[event(120)], 0).unwrap(), 120, "{damage}");
            let err = log.read(119, 1, usize::MAX).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{damage}");
            assert_eq!(log.read(120, 1, usize::MAX).unwrap()[0].event, event(120));
        }
    }

    #[test]
    fn damage_in_a_sealed_segment_is_reported_not_served() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = open(dir.path(), 1024);
            for i in 0..200 {
                log.append(&[event(i)], 0).unwrap();
            }
        }
        let mut logs: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        assert!(logs.len() > 3);
        let victim = &logs[1];
        let mut bytes = fs::read(victim).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        fs::write(victim, bytes).unwrap();

        let log = open(dir.path(), 1024);
        let mut offset = 0;
        let err = loop {
            match log.read(offset, 7, usize::MAX) {
                Ok(records) if records.is_empty() => {
                    panic!("read past the damage without an error")
                }
                Ok(records) => {
                    for r in &records {
                        assert_eq!(r.event, event(r.offset as usize), "served a wrong record");
                    }
                    offset = records.last().unwrap().offset + 1;
                }
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
        let text = err.to_string();
        assert!(
            text.contains(&victim.file_name().unwrap().to_string_lossy().to_string()),
            "{text}"
        );
        // Later segments stay readable.
        let (_, next) = log.bounds();
        assert_eq!(
            log.read(next - 1, 1, usize::MAX).unwrap()[0].event,
            event(199)
        );
    }

    #[test]
    fn a_garbage_index_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = open(dir.path(), 64 << 20);
            for i in 0..500 {
                log.append(&[event(i)], 0).unwrap();
            }
        }
        let index = active_segment(dir.path()).with_extension("index");
        fs::write(&index, vec![0xabu8; 24 * 7]).unwrap();
        let log = open(dir.path(), 64 << 20);
        let records = log.read(0, usize::MAX, usize::MAX).unwrap();
        assert_eq!(records.len(), 500);
        assert_eq!(log.read(437, 1, usize::MAX).unwrap()[0].event, event(437));
    }

    #[test]
    fn an_unexpected_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), 1024));
        fs::write(dir.path().join("notes.log"), b"hello").unwrap();
        let err = FileLog::open(
            dir.path(),
            "t".into(),
            true,
            FsyncPolicy::Never,
            config(1024),
            false,
        )
        .err()
        .expect("must fail");
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
        assert!(err.to_string().contains("notes.log"), "{err}");
    }

    #[test]
    fn seek_by_time_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let log = FileLog::open(
            dir.path(),
            "t".into(),
            true,
            FsyncPolicy::Always,
            LogConfig {
                segment_bytes: 2048,
                retention_bytes: Some(8192),
                retention_age: None,
            },
            false,
        )
        .unwrap();
        for i in 0..400 {
            log.append(&[event(i)], i as i64 * 10).unwrap();
        }
        assert_eq!(log.offset_for_time(1234).unwrap(), 124);
        assert_eq!(log.offset_for_time(-5).unwrap(), 0);
        assert_eq!(log.offset_for_time(1_000_000).unwrap(), 400);
        log.enforce_retention(0).unwrap();
        let (start, next) = log.bounds();
        assert!(start > 0 && next == 400, "{start}..{next}");
        let total: u64 = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert!(total <= 8192 + 2048 + 400, "{total}");
        assert_eq!(log.read(0, 1, usize::MAX).unwrap()[0].offset, start);
    }
}
