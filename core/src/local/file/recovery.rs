//! Opening a log: finding its segments and marks, and recovering each segment from its last
//! trustworthy index entry (see the module's docs for what the marks decide).

use super::*;

impl FileLog {
    pub(super) fn list_bases(&self) -> Result<Vec<u64>> {
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
    pub(super) fn read_marks(&self) -> Option<Marks> {
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

    /// Reads the directory: segments, marks, and the writer's repairs when `writable`, the
    /// records of `replay` (from the stream's journal) its last segment lacks restored first.
    pub(super) fn load(&self, writable: bool, replay: &Bytes) -> Result<Loaded> {
        if writable {
            fs::create_dir_all(&self.dir)
                .map_err(|e| io(format!("creating {}", self.dir.display()), e))?;
            self.remove_prepared_leftovers();
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
        let restorable_from = if writable { first_offset(replay) } else { None };
        for (i, base) in bases.into_iter().enumerate() {
            if base >= upto && !writable {
                break;
            }
            let last = i + 1 == count;
            let restorable = restorable_from.filter(|_| last);
            segments.push(self.recover_segment(base, last, writable, hwm, upto, restorable)?);
        }
        if writable {
            self.replay(&mut segments, replay)?;
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
                    // Only the active segment keeps a zero tail.
                    if last.capacity > last.size && last.damaged_at.is_none() {
                        last.file
                            .set_len(last.size)
                            .and_then(|_| last.file.sync_all())
                            .map_err(|e| {
                                io(format!("truncating {}", last.log_path.display()), e)
                            })?;
                        last.capacity = last.size;
                    }
                }
                segments.push(self.create_segment(next, None)?);
            }
            if self.preallocates()
                && let Some(active) = segments.last_mut()
            {
                self.fill_active(active)?;
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

    /// A new segment at `base`: the prepared file when one is given (already renamed to the
    /// segment's name, its zeros durable), else an empty file.
    pub(super) fn create_segment(&self, base: u64, prepared: Option<File>) -> Result<Segment> {
        let log_path = self.dir.join(segment_name(base, "log"));
        let index_path = self.dir.join(segment_name(base, "index"));
        let file = match prepared {
            Some(file) => file,
            None => OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&log_path)
                .map_err(|e| io(format!("creating {}", log_path.display()), e))?,
        };
        let capacity = file
            .metadata()
            .map_err(|e| io(format!("reading {}", log_path.display()), e))?
            .len();
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
            capacity,
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
    /// write that never completed) or at or beyond `restorable` (the first record the journal
    /// holds, which puts the records back); below both it is damage and stays.
    pub(super) fn recover_segment(
        &self,
        base: u64,
        is_last: bool,
        writable: bool,
        hwm: Option<u64>,
        upto: u64,
        restorable: Option<u64>,
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
        // Entries of records the marks never published are not trusted to start a scan from:
        // in a segment written in place a torn write can leave its later frames intact after
        // zeros, and a scan must meet those zeros to stop there.
        index.retain(|e| e.offset <= upto && hwm.is_none_or(|h| e.offset < h));
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
            capacity: size,
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
        // Zeros from the first frame that does not decode to the end of the file: a segment
        // written in place, whose appends stopped there. Anything else there is a torn write.
        let zero_tail = match stop {
            Some(_) => prealloc::zeros_from(&seg.file, pos, size, &seg.log_path)?,
            None => false,
        };
        match stop {
            Some(_) if zero_tail => seg.size = pos,
            Some(reason)
                if is_last
                    && (hwm.is_none_or(|h| seg.end >= h)
                        || restorable.is_some_and(|r| r <= seg.end)) =>
            {
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
                    seg.capacity = pos;
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
    pub(super) fn scan(
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

    pub(super) fn rewrite_index(&self, seg: &mut Segment) -> Result<()> {
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
}
