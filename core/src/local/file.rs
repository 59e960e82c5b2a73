//! The durable partition log: segment files with CRC framing, a sparse offset/time index, an
//! fsync policy, and crash recovery.
//!
//! Layout of one partition directory:
//! ```text
//! 00000000000000000000.log     frames (see codec.rs), base offset in the name
//! 00000000000000000000.index   24-byte entries: offset u64, byte position u64, max time before it i64
//! ```
//! The index is a hint: it is rebuilt from the log when missing or inconsistent, and never
//! fsynced. Recovery scans each segment from its last trustworthy index entry; in the active
//! segment a torn or damaged tail is truncated (a write that never completed); in an older
//! segment damage is left in place and reported as a `Corrupt` error to whoever reads it.

use super::codec::{self, Frame, StoredRecord};
use super::log::{LogConfig, PartitionLog};
use crate::{Error, Event, Result};
use bytes::Bytes;
use parking_lot::Mutex;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

const INDEX_ENTRY: usize = 24;
const INDEX_INTERVAL: u64 = 4096;
const READ_CHUNK: usize = 256 << 10;

#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    offset: u64,
    pos: u64,
    /// Max effective time of the records before `pos` in this segment.
    max_ms_before: i64,
}

struct Segment {
    base: u64,
    log_path: PathBuf,
    index_path: PathBuf,
    file: Arc<File>,
    index_file: Option<File>,
    size: u64,
    /// Offset after the last complete record (equals the next segment's base when sealed and intact).
    end: u64,
    index: Vec<IndexEntry>,
    bytes_since_index: u64,
    max_ms: i64,
    newest_append_ms: i64,
    /// Byte position of damage found by recovery in a sealed segment.
    damaged_at: Option<(u64, String)>,
}

struct Inner {
    segments: Vec<Segment>,
    next: u64,
    dirty: bool,
    last_sync: Instant,
    scratch: Vec<u8>,
}

/// A partition log in a directory.
pub(crate) struct FileLog {
    dir: PathBuf,
    label: String,
    writable: bool,
    fsync: FsyncPolicy,
    config: LogConfig,
    inner: Mutex<Inner>,
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
    ) -> Result<Self> {
        if writable {
            fs::create_dir_all(dir).map_err(|e| io(format!("creating {}", dir.display()), e))?;
        }
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
        let log = FileLog {
            dir: dir.to_owned(),
            label,
            writable,
            fsync,
            config,
            inner: Mutex::new(Inner {
                segments: Vec::new(),
                next: 0,
                dirty: false,
                last_sync: Instant::now(),
                scratch: Vec::new(),
            }),
        };
        {
            let mut g = log.inner.lock();
            if bases.is_empty() {
                if !writable {
                    return Err(Error::not_found(format!(
                        "{}: no segments (the stream is being created by its writer?)",
                        log.label
                    ))
                    .with_backend("file"));
                }
                let seg = log.create_segment(0)?;
                g.segments.push(seg);
            }
            let count = bases.len();
            for (i, base) in bases.into_iter().enumerate() {
                let is_last = i + 1 == count;
                let seg = log.recover_segment(base, is_last)?;
                if let Some(prev) = g.segments.last()
                    && prev.damaged_at.is_none()
                    && prev.end != seg.base
                {
                    tracing::warn!(
                        log = %log.label, prev_end = prev.end, next_base = seg.base,
                        "segment offsets are not contiguous (records missing between segments)"
                    );
                }
                g.segments.push(seg);
            }
            g.next = g.segments.last().expect("at least one segment").end;
        }
        Ok(log)
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
        })
    }

    fn load_index(path: &Path, base: u64, size: u64) -> Vec<IndexEntry> {
        let Ok(bytes) = fs::read(path) else {
            return Vec::new();
        };
        let mut out: Vec<IndexEntry> = Vec::new();
        for chunk in bytes.chunks_exact(INDEX_ENTRY) {
            let e = IndexEntry {
                offset: u64::from_le_bytes(chunk[0..8].try_into().expect("8")),
                pos: u64::from_le_bytes(chunk[8..16].try_into().expect("8")),
                max_ms_before: i64::from_le_bytes(chunk[16..24].try_into().expect("8")),
            };
            let consistent = match out.last() {
                None => e.offset == base && e.pos == 0,
                Some(prev) => {
                    e.offset > prev.offset
                        && e.pos > prev.pos
                        && e.max_ms_before >= prev.max_ms_before
                }
            };
            if !consistent || e.pos >= size {
                break;
            }
            out.push(e);
        }
        out
    }

    /// Scans a segment from its last index entry, validating frames; truncates a damaged tail
    /// of the active segment when writable.
    fn recover_segment(&self, base: u64, is_last: bool) -> Result<Segment> {
        let log_path = self.dir.join(segment_name(base, "log"));
        let index_path = self.dir.join(segment_name(base, "index"));
        let file = OpenOptions::new()
            .read(true)
            .write(self.writable)
            .open(&log_path)
            .map_err(|e| io(format!("opening {}", log_path.display()), e))?;
        let size = file
            .metadata()
            .map_err(|e| io(format!("reading {}", log_path.display()), e))?
            .len();
        let mut index = Self::load_index(&index_path, base, size);
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
        };
        let stop = loop {
            match self.scan(&mut seg, start.pos, start.offset, size) {
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
        if let Some((pos, reason)) = stop {
            if is_last && self.writable {
                tracing::warn!(
                    log = %self.label, file = %seg.log_path.display(), at = pos,
                    dropped_bytes = size - pos, %reason,
                    "truncating the torn tail of the active segment"
                );
                seg.file
                    .set_len(pos)
                    .and_then(|_| seg.file.sync_all())
                    .map_err(|e| io(format!("truncating {}", seg.log_path.display()), e))?;
                seg.size = pos;
            } else if is_last {
                // A reader must not truncate; the writer may still be completing this frame.
                seg.size = pos;
            } else {
                seg.damaged_at = Some((pos, reason));
            }
        }
        if self.writable {
            self.rewrite_index(&mut seg)?;
        }
        Ok(seg)
    }

    /// Walks frames from `pos` (expected offset `offset`) to `limit`, extending the index.
    /// Returns where and why it stopped early, if it did; an error if the very first frame is
    /// not what the index promised (the caller then rescans from the segment start).
    fn scan(
        &self,
        seg: &mut Segment,
        pos: u64,
        mut offset: u64,
        limit: u64,
    ) -> Result<Option<(u64, String)>> {
        let mut buf = Bytes::new();
        let mut buf_pos = pos;
        let mut cur = pos;
        let mut since_index = seg.bytes_since_index;
        while cur < limit {
            match codec::decode(&buf.slice((cur - buf_pos) as usize..)) {
                Frame::Record(r, len) => {
                    if r.offset != offset {
                        let reason = format!("expected offset {offset}, found {}", r.offset);
                        if cur == pos && pos != 0 {
                            return Err(Error::corrupt(reason));
                        }
                        return Ok(Some((cur, reason)));
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
                        return Ok(Some((cur, "incomplete frame at end of file".into())));
                    }
                    let want = need.max(((limit - cur) as usize).min(READ_CHUNK));
                    buf = read_at(&seg.file, cur, want, &seg.log_path)?;
                    buf_pos = cur;
                    if buf.len() < need {
                        return Ok(Some((cur, "file shorter than its frames".into())));
                    }
                }
                Frame::Invalid(reason) => {
                    if cur == pos && pos != 0 {
                        return Err(Error::corrupt(reason));
                    }
                    return Ok(Some((cur, reason)));
                }
            }
        }
        seg.bytes_since_index = since_index;
        Ok(None)
    }

    fn rewrite_index(&self, seg: &mut Segment) -> Result<()> {
        let bytes = encode_index(&seg.index);
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

    fn sync_locked(&self, g: &mut Inner) -> Result<()> {
        if g.dirty {
            let seg = g.segments.last().expect("one segment");
            seg.file
                .sync_data()
                .map_err(|e| io(format!("fsync {}", seg.log_path.display()), e))?;
            g.dirty = false;
        }
        g.last_sync = Instant::now();
        Ok(())
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

fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(entries.len() * INDEX_ENTRY);
    for e in entries {
        bytes.extend_from_slice(&e.offset.to_le_bytes());
        bytes.extend_from_slice(&e.pos.to_le_bytes());
        bytes.extend_from_slice(&e.max_ms_before.to_le_bytes());
    }
    bytes
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

impl PartitionLog for FileLog {
    fn append(&self, events: &[Event], append_ms: i64) -> Result<u64> {
        if !self.writable {
            return Err(self.read_only_error());
        }
        let mut guard = self.inner.lock();
        let g = &mut *guard;
        let needs_roll = {
            let active = g.segments.last().expect("one segment");
            active.size >= self.config.segment_bytes && active.end > active.base
        };
        if needs_roll {
            // Seal: make the old segment durable before records start landing in the next one.
            self.sync_locked(g)?;
            let next = g.next;
            let seg = self.create_segment(next)?;
            g.segments.push(seg);
        }
        let base = g.next;
        let mut scratch = std::mem::take(&mut g.scratch);
        scratch.clear();
        let active = g.segments.last_mut().expect("one segment");
        let mut new_index = Vec::new();
        let mut since = active.bytes_since_index;
        let mut max_ms = active.max_ms;
        for (i, event) in events.iter().enumerate() {
            let offset = base + i as u64;
            let pos = active.size + scratch.len() as u64;
            if since >= INDEX_INTERVAL {
                new_index.push(IndexEntry {
                    offset,
                    pos,
                    max_ms_before: max_ms,
                });
                since = 0;
            }
            let before = scratch.len();
            codec::encode(&mut scratch, offset, append_ms, event);
            since += (scratch.len() - before) as u64;
            max_ms = max_ms.max(event.timestamp.map_or(append_ms, |t| t.as_millis()));
        }
        if let Err(e) = active.file.write_all_at(&scratch, active.size) {
            // Leave no partial frame behind for readers to trip over.
            let _ = active.file.set_len(active.size);
            g.scratch = scratch;
            return Err(io(format!("appending to {}", active.log_path.display()), e));
        }
        if let Some(f) = active.index_file.as_mut() {
            let bytes = encode_index(&new_index);
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
        active.end = base + events.len() as u64;
        g.next = active.end;
        g.dirty = true;
        g.scratch = scratch;
        // `Always` is fsynced by the stream's writer once per group of concurrent batches
        // (group commit), not here once per batch.
        if let FsyncPolicy::Interval(d) = self.fsync
            && g.last_sync.elapsed() >= d
        {
            self.sync_locked(g)?;
        }
        Ok(base)
    }

    fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        let mut offset = from;
        let mut budget = max_bytes.max(1);
        loop {
            let (file, path, pos, limit, seg_end, damaged) = {
                let g = self.inner.lock();
                let start = g.segments.first().map_or(g.next, |s| s.base);
                offset = offset.max(start);
                if offset >= g.next {
                    return Ok(out);
                }
                let i = g
                    .segments
                    .partition_point(|s| s.base <= offset)
                    .saturating_sub(1);
                let seg = &g.segments[i];
                if offset >= seg.end && seg.damaged_at.is_none() {
                    // Records missing between two segments: continue at the next one.
                    match g.segments.get(i + 1) {
                        Some(next) => {
                            offset = next.base;
                            continue;
                        }
                        None => return Ok(out),
                    }
                }
                let entry = seg.index[seg
                    .index
                    .partition_point(|e| e.offset <= offset)
                    .saturating_sub(1)];
                (
                    seg.file.clone(),
                    seg.log_path.clone(),
                    entry.pos,
                    seg.size,
                    seg.end,
                    seg.damaged_at.clone(),
                )
            };
            if offset >= seg_end {
                let (at, reason) = damaged.expect("checked above");
                return Err(Error::corrupt(format!(
                    "{}: {} is damaged at byte {at} ({reason}); offset {offset} cannot be read; \
                     move the segment away to skip the damaged records",
                    self.label,
                    path.display()
                ))
                .with_backend("file"));
            }
            let chunk = READ_CHUNK.min(budget.max(64 << 10));
            let mut buf = Bytes::new();
            let mut buf_pos = pos;
            let mut cur = pos;
            while cur < limit && out.len() < max_records && budget > 0 {
                match codec::decode(&buf.slice((cur - buf_pos) as usize..)) {
                    Frame::Record(r, len) => {
                        cur += len as u64;
                        if r.offset < offset {
                            continue;
                        }
                        if r.offset != offset {
                            return Err(Error::corrupt(format!(
                                "{}: {} holds offset {} where {offset} was expected (byte {})",
                                self.label,
                                path.display(),
                                r.offset,
                                cur - len as u64
                            ))
                            .with_backend("file"));
                        }
                        budget = budget.saturating_sub(len);
                        out.push(r);
                        offset += 1;
                    }
                    Frame::Incomplete(need) => {
                        if cur + need as u64 > limit {
                            break; // an append this reader cannot see yet
                        }
                        let want = need.max(((limit - cur) as usize).min(chunk));
                        buf = read_at(&file, cur, want, &path)?;
                        buf_pos = cur;
                        if buf.len() < need {
                            break;
                        }
                    }
                    Frame::Invalid(reason) => {
                        return Err(Error::corrupt(format!(
                            "{}: {} has a damaged record at byte {cur} ({reason}); offset {offset} cannot be read",
                            self.label,
                            path.display()
                        ))
                        .with_backend("file"));
                    }
                }
            }
            if out.len() >= max_records || budget == 0 || offset < seg_end {
                return Ok(out);
            }
        }
    }

    fn bounds(&self) -> (u64, u64) {
        let g = self.inner.lock();
        (g.segments.first().map_or(g.next, |s| s.base), g.next)
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
        if !self.writable {
            return Ok(());
        }
        let mut g = self.inner.lock();
        self.sync_locked(&mut g)
    }

    fn tick(&self) -> Result<()> {
        if let FsyncPolicy::Interval(d) = self.fsync {
            let mut g = self.inner.lock();
            if g.dirty && g.last_sync.elapsed() >= d {
                self.sync_locked(&mut g)?;
            }
        }
        Ok(())
    }

    fn refresh(&self) -> Result<()> {
        if self.writable {
            return Ok(());
        }
        let mut g = self.inner.lock();
        // New segments written by the other process.
        let mut bases = Vec::new();
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if let Some(stem) = name.to_string_lossy().strip_suffix(".log")
                    && let Ok(base) = stem.parse::<u64>()
                {
                    bases.push(base);
                }
            }
        }
        bases.sort_unstable();
        g.segments
            .retain(|s| bases.binary_search(&s.base).is_ok() || s.log_path.exists());
        let last = g.segments.last().map(|s| s.base);
        for base in bases {
            if last.is_none_or(|l| base > l) {
                let seg = self.recover_segment(base, true)?;
                g.segments.push(seg);
            }
        }
        // Growth of the segments already known (the last one, usually).
        for seg in g.segments.iter_mut() {
            let size = seg.file.metadata().map(|m| m.len()).unwrap_or(seg.size);
            if size > seg.size {
                let (pos, offset) = (seg.size, seg.end);
                // A partial frame at the end is an append in progress: stop before it.
                seg.size = match self.scan(seg, pos, offset, size)? {
                    Some((at, _)) => at,
                    None => size,
                };
            }
        }
        if let Some(last) = g.segments.last() {
            g.next = last.end;
        }
        Ok(())
    }

    fn enforce_retention(&self, now_ms: i64) -> Result<()> {
        if !self.writable {
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
            let seg = g.segments.remove(0);
            tracing::debug!(log = %self.label, base = seg.base, "retention removes segment");
            fs::remove_file(&seg.log_path)
                .map_err(|e| io(format!("removing {}", seg.log_path.display()), e))?;
            let _ = fs::remove_file(&seg.index_path);
        }
        Ok(())
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        if self.writable {
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
            {
                let log = open(dir.path(), segment_bytes);
                let mut i = 0;
                for n in &batches {
                    log.append(&events[i..i + n], 1000 + i as i64).unwrap();
                    i += n;
                }
            }
            let active = active_segment(dir.path());
            let size = fs::metadata(&active).unwrap().len();
            let keep = cut.index(size as usize + 1) as u64;
            fs::OpenOptions::new().write(true).open(&active).unwrap().set_len(keep).unwrap();

            let log = open(dir.path(), segment_bytes);
            let (_, next) = log.bounds();
            let records = log.read(0, usize::MAX, usize::MAX).unwrap();
            prop_assert_eq!(records.len() as u64, next);
            for (i, r) in records.iter().enumerate() {
                prop_assert_eq!(r.offset, i as u64);
                prop_assert_eq!(&r.event, &events[i]);
            }
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
