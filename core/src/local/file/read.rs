//! The read path's plumbing: where an offset is, what is missing or damaged, and finding the
//! next intact frame after damage.

use super::*;

impl FileLog {
    /// Where reading `offset` goes next; `None` when the log holds nothing at or after it.
    pub(super) fn plan(&self, offset: &mut u64) -> Option<Plan> {
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
    pub(super) fn missing_error(&self, from: u64, to: u64, why: &str) -> Error {
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
    pub(super) fn resync(
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
            let mut next = 0;
            while next < positions {
                let i = next;
                // A frame's version byte (its 9th) is never zero: across a run of zeros (the
                // unwritten tail of a segment written in place, 64 MiB by default) only the
                // position 8 bytes before its end can start a frame.
                if buf.get(i + 8) == Some(&0) {
                    next += buf[i + 8..]
                        .iter()
                        .position(|b| *b != 0)
                        .unwrap_or(buf.len() - i - 8);
                    continue;
                }
                next += 1;
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

    pub(super) fn remember_damage(&self, path: &Path, from: u64, resume: u64, resume_pos: u64) {
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

    pub(super) fn forget_index(&self, path: &Path) {
        let mut g = self.inner.lock();
        if let Some(seg) = g.segments.iter_mut().find(|s| s.log_path == path) {
            tracing::warn!(log = %self.label, file = %seg.index_path.display(),
                "the index does not match the segment; reading it from the start");
            seg.index.truncate(1);
        }
    }
}

pub(super) fn read_at(file: &File, pos: u64, len: usize, path: &Path) -> Result<Bytes> {
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
