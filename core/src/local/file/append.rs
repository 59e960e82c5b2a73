//! Appending: writing a batch across segments, undoing a failed one, and publishing the marks.

use super::*;

impl FileLog {
    /// Appends events given away (kept in the tail of recent records), their frames also
    /// copied to `journal` when given.
    pub(super) fn append_into(
        &self,
        mut events: Vec<Event>,
        append_ms: i64,
        journal: Option<&mut Vec<u8>>,
    ) -> Result<u64> {
        crate::local::arena::share(&mut events);
        let mut g = self.inner.lock();
        let base = self.write_in(&mut g, &events, append_ms, journal)?;
        // Into the tail before the marks publish them, so a reader never finds a published
        // record missing from it.
        self.tail
            .push((base..).zip(events).map(|(offset, event)| StoredRecord {
                offset,
                append_ms,
                event,
            }));
        self.after_append(&mut g)?;
        Ok(base)
    }

    /// Makes appended data durable, then publishes the marks.
    pub(super) fn sync_locked(&self, g: &mut Inner) -> Result<()> {
        if g.dirty {
            let seg = g.segments.last().expect("one segment");
            #[cfg(test)]
            {
                let deadline = Instant::now() + Duration::from_secs(30);
                while self.hold_sync.load(Ordering::Acquire) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            seg.file
                .sync_data()
                .map_err(|e| io(format!("fsync {}", seg.log_path.display()), e))?;
            g.dirty = false;
        }
        g.last_sync = Instant::now();
        self.publish(g);
        Ok(())
    }

    /// Makes the active segment durable before a roll, cut to its records first when it was
    /// written in place: only the active segment has a zero tail.
    fn seal(&self, g: &mut Inner) -> Result<()> {
        let active = g.segments.last_mut().expect("one segment");
        if active.capacity > active.size {
            active
                .file
                .set_len(active.size)
                .map_err(|e| io(format!("truncating {}", active.log_path.display()), e))?;
            active.capacity = active.size;
            // The fsync below must commit the new length too.
            g.dirty = true;
        }
        self.sync_locked(g)
    }

    /// Writes the marks: readers in other processes see records up to `next` from now on, and
    /// a restart knows every position below `next` was handed out.
    pub(super) fn publish(&self, g: &Inner) {
        self.tail.publish(g.next);
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

    /// Rolls back a failed append: segments back to their sizes before it, segments it
    /// created removed, so no partial batch is left for a restart or a reader to find.
    pub(super) fn undo(&self, g: &mut Inner, undo: &[Undo], created_from: usize) {
        for seg in g.segments.drain(created_from..) {
            let _ = fs::remove_file(&seg.log_path);
            let _ = fs::remove_file(&seg.index_path);
        }
        for u in undo.iter().filter(|u| u.segment < created_from) {
            let seg = &mut g.segments[u.segment];
            // A segment written in place grows from here on: zeros are not written back over
            // a write that failed.
            let _ = seg.file.set_len(u.size);
            seg.size = u.size;
            seg.capacity = u.size;
            seg.end = u.end;
            seg.index.truncate(u.index_len);
            seg.bytes_since_index = u.bytes_since_index;
            seg.max_ms = u.max_ms;
            seg.newest_append_ms = u.newest_append_ms;
            // The index file may hold entries of the undone records: rebuilt at next open.
            seg.index_file = None;
        }
    }

    /// Frames `events` into one buffer and writes it with one call per segment it lands in;
    /// [`after_append`](Self::after_append) then applies the fsync policy and publishes.
    ///
    /// With `journal`, the framed bytes go to the end of it instead of the log's own buffer
    /// (the stream's writer journals them; see journal.rs): written from there, they are
    /// framed once, and left there only when the append succeeds.
    pub(super) fn write_in(
        &self,
        g: &mut Inner,
        events: &[Event],
        append_ms: i64,
        journal: Option<&mut Vec<u8>>,
    ) -> Result<u64> {
        if !self.is_writable() {
            return Err(self.read_only_error());
        }
        let base = g.next;
        let created_from = g.segments.len();
        let mut undo: Vec<Undo> = Vec::new();
        let mut own = std::mem::take(&mut g.scratch);
        let journaled = journal.is_some();
        let scratch: &mut Vec<u8> = match journal {
            Some(j) => j,
            None => &mut own,
        };
        let entry_len = scratch.len();
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
                let sealed = self.seal(g).and_then(|_| {
                    let path = self.dir.join(segment_name(offset, "log"));
                    let prepared = self.take_prepared(g, &path);
                    self.create_segment(offset, prepared)
                });
                match sealed {
                    Ok(seg) => g.segments.push(seg),
                    Err(e) => {
                        self.undo(g, &undo, created_from);
                        scratch.truncate(entry_len);
                        g.scratch = own;
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
            if !journaled {
                scratch.clear();
            }
            let chunk = scratch.len();
            let mut new_index = Vec::new();
            let mut since = active.bytes_since_index;
            let mut max_ms = active.max_ms;
            let room = self.config.segment_bytes.saturating_sub(active.size) as usize;
            let first = i;
            while i < events.len() {
                let before = scratch.len();
                let offset = base + i as u64;
                let pos = active.size + (before - chunk) as u64;
                codec::encode(scratch, offset, append_ms, &events[i]);
                let holds_records = active.size > 0 || i > first;
                if scratch.len() - chunk > room && holds_records {
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
            if let Err(e) = active.file.write_all_at(&scratch[chunk..], active.size) {
                let e = io(format!("appending to {}", active.log_path.display()), e);
                self.undo(g, &undo, created_from);
                scratch.truncate(entry_len);
                g.scratch = own;
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
            active.size += (scratch.len() - chunk) as u64;
            active.capacity = active.capacity.max(active.size);
            active.end = base + i as u64;
            g.dirty = true;
        }
        g.next = base + events.len() as u64;
        self.publish_bounds(g);
        g.scratch = own;
        self.maybe_prepare(g);
        Ok(base)
    }

    /// The fsync policy's work after an append, and the marks that publish it.
    pub(super) fn after_append(&self, g: &mut Inner) -> Result<()> {
        match self.fsync {
            // Fsynced by the stream's writer once per group of concurrent batches (group
            // commit), which then publishes the marks: readers never see an unsynced record.
            FsyncPolicy::Always => {}
            FsyncPolicy::Interval(d) if g.last_sync.elapsed() >= d => self.sync_locked(g)?,
            // The producer gets its receipts now: the marks must cover them now.
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => self.publish(g),
        }
        Ok(())
    }
}

pub(super) fn write_marks(file: &File, marks: Marks) -> std::io::Result<()> {
    let bytes: [u8; MARKS_LEN] = codec::encode_marks(marks);
    file.write_all_at(&bytes, 0)
}

/// A segment's state before an append touched it, to undo a failed append.
pub(super) struct Undo {
    segment: usize,
    size: u64,
    end: u64,
    index_len: usize,
    bytes_since_index: u64,
    max_ms: i64,
    newest_append_ms: i64,
}
