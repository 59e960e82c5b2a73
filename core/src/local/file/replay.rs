//! Restoring a partition's records from its stream's journal (see journal.rs): under
//! `fsync=always` the segment files are synced only at the journal's checkpoints, so after a
//! power loss the active segment may end before records that were acknowledged. The journal
//! holds the frames of every record written since the last checkpoint, exactly as the log
//! wrote them; those the segment lacks are written back before the marks judge the log.

use super::*;

/// The offset of the first record of `replay`, if it holds one.
pub(super) fn first_offset(replay: &Bytes) -> Option<u64> {
    match codec::decode(replay) {
        Frame::Record(r, _) => Some(r.offset),
        _ => None,
    }
}

impl FileLog {
    /// Writes back the records of `replay` from the last segment's end on, and syncs them.
    /// Records below it (already there, or removed by retention) are skipped; a journal that
    /// starts past it leaves a gap it cannot fill, which stays for the marks to report.
    pub(super) fn replay(&self, segments: &mut [Segment], replay: &Bytes) -> Result<()> {
        if replay.is_empty() {
            return Ok(());
        }
        let Some(last) = segments.last_mut() else {
            return Ok(());
        };
        let want = last.end;
        let (mut pos, mut from, mut expect) = (0usize, None, want);
        while pos < replay.len() {
            match codec::decode(&replay.slice(pos..)) {
                Frame::Record(r, len) if r.offset < want => pos += len,
                Frame::Record(r, len) if r.offset == expect => {
                    from.get_or_insert(pos);
                    expect += 1;
                    pos += len;
                }
                Frame::Record(r, _) => {
                    tracing::error!(log = %self.label, from = expect, to = r.offset,
                        "the journal does not hold these records: they cannot be restored");
                    break;
                }
                // The journal's frames are CRC-checked as a whole: this would be a bug.
                Frame::Incomplete(_) | Frame::Invalid(_) => {
                    tracing::error!(log = %self.label, at = pos,
                        "a journal payload holds no log frame here: not restored past it");
                    break;
                }
            }
        }
        let Some(from) = from else {
            return Ok(());
        };
        if let Some((at, reason)) = &last.damaged_at {
            tracing::error!(log = %self.label, file = %last.log_path.display(), at, %reason,
                "the last segment is damaged before the journal's records: they are not restored");
            return Ok(());
        }
        let bytes = &replay[from..pos];
        let at = last.size;
        last.file.write_all_at(bytes, at).map_err(|e| {
            io(
                format!("restoring records to {}", last.log_path.display()),
                e,
            )
        })?;
        let limit = at + bytes.len() as u64;
        let (stop, why) = self.scan(last, at, want, limit, u64::MAX)?;
        if let Some(why) = why {
            // Frames just written and checked by CRC do not read back.
            return Err(Error::corrupt(format!(
                "{}: restored records do not read back at byte {stop}: {why}",
                last.log_path.display()
            ))
            .with_backend("file"));
        }
        last.size = stop;
        last.capacity = last.capacity.max(stop);
        last.file
            .sync_data()
            .map_err(|e| io(format!("fsync {}", last.log_path.display()), e))?;
        self.rewrite_index(last)?;
        tracing::warn!(log = %self.label, from = want, to = expect,
            "restored records from the stream's journal (the segment lost them: a power loss)");
        Ok(())
    }
}
