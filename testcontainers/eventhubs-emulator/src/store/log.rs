//! A partition's data file: records appended as events arrive, compacted to the retained
//! ones, loaded (up to a torn last record) at start.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::partition::PartitionState;
use super::{Event, decode, encode, partition_key_of};

/// A partition's append-only file. Retention drops events from memory at once; the file is
/// rewritten with only the retained ones whenever it holds twice as many records as are kept,
/// so its size stays within about twice the retention, at an amortised cost of one extra
/// write per event.
pub(super) struct PartitionLog {
    pub(super) path: PathBuf,
    pub(super) file: BufWriter<File>,
    /// Records in the file, retained or not.
    pub(super) records: usize,
}

impl PartitionLog {
    pub(super) fn open(path: PathBuf, valid: u64, records: usize) -> std::io::Result<PartitionLog> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        // A torn last record would corrupt everything appended after it.
        file.set_len(valid)?;
        Ok(PartitionLog {
            path,
            file: BufWriter::new(file),
            records,
        })
    }

    /// Replaces the file with one holding `events` only: written beside it, synced, then
    /// renamed over it, so a crash leaves either the old file or the new one.
    pub(super) fn compact(&mut self, events: &VecDeque<Arc<Event>>) -> std::io::Result<()> {
        self.file.flush()?;
        let fresh = self.path.with_extension("compacting");
        let mut out = BufWriter::new(File::create(&fresh)?);
        for event in events {
            write_record(&mut out, event)?;
        }
        out.flush()?;
        out.get_ref().sync_all()?;
        drop(out);
        std::fs::rename(&fresh, &self.path)?;
        let file = OpenOptions::new().append(true).open(&self.path)?;
        self.file = BufWriter::new(file);
        self.records = events.len();
        Ok(())
    }

    pub(super) fn needs_compaction(&self, retained: usize, max_events: usize) -> bool {
        self.records > retained && self.records >= 2 * max_events.max(1)
    }
}

pub(super) fn write_record(log: &mut impl Write, event: &Event) -> std::io::Result<()> {
    let body = encode(&event.message).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len() + 24).map_err(std::io::Error::other)?;
    log.write_all(&len.to_be_bytes())?;
    log.write_all(&event.sequence.to_be_bytes())?;
    log.write_all(&event.offset.to_be_bytes())?;
    log.write_all(&event.enqueued_ms.to_be_bytes())?;
    log.write_all(&body)
}

/// Loads a partition log into `state`; returns the length of its valid prefix and how many
/// records that prefix holds.
pub(super) fn load_log(path: &Path, state: &mut PartitionState) -> std::io::Result<(u64, usize)> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    }
    let mut at = 0usize;
    let mut records = 0usize;
    let be = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
    while let Some(len_bytes) = bytes.get(at..at + 4) {
        let len = u32::from_be_bytes(len_bytes.try_into().unwrap_or([0; 4])) as usize;
        let Some(record) = bytes.get(at + 4..at + 4 + len).filter(|_| len >= 24) else {
            break;
        };
        let Ok(message) = decode(&record[24..]) else {
            tracing::warn!(path = %path.display(), at, "undecodable record; the log is cut here");
            break;
        };
        let event = Event {
            sequence: be(&record[0..8]),
            offset: be(&record[8..16]),
            enqueued_ms: be(&record[16..24]),
            partition_key: partition_key_of(&message),
            message,
        };
        state.next_sequence = event.sequence + 1;
        state.next_offset = event.offset + (len - 24).max(1) as i64;
        state.last_enqueued_ms = event.enqueued_ms;
        state.events.push_back(Arc::new(event));
        if state.events.len() > state.max_events {
            state.events.pop_front();
        }
        at += 4 + len;
        records += 1;
    }
    if at < bytes.len() {
        tracing::warn!(path = %path.display(), "dropping {} bytes of a torn record", bytes.len() - at);
    }
    Ok((at as u64, records))
}
