//! Segments written in place under `fsync=always` with the `preallocate` option (off by
//! default: it writes a segment of zeros per partition up front).
//!
//! An fdatasync after an append that grew the file must also commit the new size and extents
//! (an ext4 journal commit); after an append that overwrote blocks already written it has only
//! the data to flush. Measured on the development disk (raw baselines of the local bench,
//! 2026-12-02): one pre-zeroed file synced per batch ran about 1.4× one growing file, four
//! synced together about 1.3×. So under `fsync=always` with `preallocate` a segment is written with zeros to
//! `segment_bytes` and synced once before it becomes active (zeros, not `fallocate`: writing
//! into unwritten extents changes metadata too), and appends overwrite it in place. The next
//! segment is prepared by a thread of its own once the active one is half full, so a roll does
//! not stall a batch behind a zero-fill; a roll that finds it unfinished takes a plain segment
//! (grown by its appends, as under the other policies) and leaves the prepared one for the next.
//!
//! Only the active segment has a zero tail: a roll first truncates the sealed segment to its
//! records. Recovery ends a segment's records at the first frame that does not decode; when
//! everything from there to the end of the file is zeros, that is where appends stopped (no
//! warning, nothing truncated); otherwise it is a torn write, handled as before (truncated when
//! beyond the marks), and the writer writes the zeros back.

use super::*;
use std::thread::JoinHandle;

/// Prepared segments are named `prepared.<pid>.<n>` until a roll renames them: never `.log`, so
/// a crash leaves nothing that looks like a segment, and never a name another process's thread
/// may still be writing.
const PREPARED_PREFIX: &str = "prepared.";
const ZERO_CHUNK: usize = 1 << 20;

/// A next segment being written with zeros by its own thread.
pub(super) struct Preparing {
    cancel: Arc<AtomicBool>,
    pub(super) thread: JoinHandle<std::io::Result<(File, PathBuf)>>,
}

impl Preparing {
    /// Stops the thread (at its next chunk) and removes its file.
    pub(super) fn cancel(self) {
        self.cancel.store(true, Ordering::Release);
        if let Ok(Ok((_, path))) = self.thread.join() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Writes zeros to `file` from byte `from` to byte `to`, then makes them and the size durable.
pub(super) fn write_zeros(
    file: &File,
    from: u64,
    to: u64,
    cancel: Option<&AtomicBool>,
) -> std::io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut pos = from;
    while pos < to {
        if cancel.is_some_and(|c| c.load(Ordering::Acquire)) {
            return Err(std::io::Error::other("cancelled"));
        }
        let n = ((to - pos) as usize).min(ZERO_CHUNK);
        file.write_all_at(&zeros[..n], pos)?;
        pos += n as u64;
    }
    file.sync_all()
}

/// Whether `file` holds only zeros from byte `from` to byte `to`.
pub(super) fn zeros_from(file: &File, from: u64, to: u64, path: &Path) -> Result<bool> {
    let mut pos = from;
    while pos < to {
        let buf = read_at(file, pos, ((to - pos) as usize).min(ZERO_CHUNK), path)?;
        if buf.is_empty() {
            break;
        }
        if buf.iter().any(|b| *b != 0) {
            return Ok(false);
        }
        pos += buf.len() as u64;
    }
    Ok(true)
}

impl FileLog {
    /// Whether this log's segments are written in place (see the module's docs).
    pub(super) fn preallocates(&self) -> bool {
        self.fsync == FsyncPolicy::Always && self.config.preallocate
    }

    /// Removes prepared segments a previous writer left (a crash, or a close mid-preparation).
    pub(super) fn remove_prepared_leftovers(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(PREPARED_PREFIX)
            {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Writes the active segment's zeros up to `segment_bytes` (a new log, an old log written by
    /// growing segments, a segment whose torn tail was truncated). Once per open, synchronously:
    /// appends of this process then overwrite in place from the first one on. Where that fails
    /// (a full disk), the segment grows with its appends instead, as under the other policies.
    pub(super) fn fill_active(&self, seg: &mut Segment) -> Result<()> {
        let to = self.config.segment_bytes;
        if seg.capacity >= to {
            return Ok(());
        }
        match write_zeros(&seg.file, seg.capacity, to, None) {
            Ok(()) => seg.capacity = to,
            Err(e) => {
                tracing::warn!(log = %self.label, file = %seg.log_path.display(), error = %e,
                    "cannot write the active segment's zeros; it grows with its appends instead");
                seg.file
                    .set_len(seg.capacity)
                    .and_then(|_| seg.file.sync_all())
                    .map_err(|e| io(format!("truncating {}", seg.log_path.display()), e))?;
            }
        }
        Ok(())
    }

    /// Starts preparing the next segment when the active one is half full and none is being
    /// prepared.
    pub(super) fn maybe_prepare(&self, g: &mut Inner) {
        if !self.preallocates() || g.preparing.is_some() {
            return;
        }
        let Some(active) = g.segments.last() else {
            return;
        };
        if active.size < self.config.segment_bytes / 2 {
            return;
        }
        g.prepared_seq += 1;
        let path = self.dir.join(format!(
            "{PREPARED_PREFIX}{}.{}",
            std::process::id(),
            g.prepared_seq
        ));
        let bytes = self.config.segment_bytes;
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = cancel.clone();
        #[cfg(test)]
        let hold = self.hold_preparation.clone();
        let spawned = std::thread::Builder::new()
            .name("tributary-prepare-segment".to_owned())
            .spawn(move || {
                #[cfg(test)]
                {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while hold.load(Ordering::Acquire)
                        && !stop.load(Ordering::Acquire)
                        && Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)?;
                match write_zeros(&file, 0, bytes, Some(&stop)) {
                    Ok(()) => Ok((file, path)),
                    Err(e) => {
                        let _ = fs::remove_file(&path);
                        Err(e)
                    }
                }
            });
        match spawned {
            Ok(thread) => g.preparing = Some(Preparing { cancel, thread }),
            Err(e) => tracing::warn!(log = %self.label, error = %e,
                "cannot start the thread that prepares the next segment; it will grow instead"),
        }
    }

    /// The prepared next segment's file, renamed to `log_path`, if its thread has finished
    /// (successfully); otherwise `None`, and an unfinished preparation stays for the next roll.
    pub(super) fn take_prepared(&self, g: &mut Inner, log_path: &Path) -> Option<File> {
        if !g.preparing.as_ref()?.thread.is_finished() {
            tracing::debug!(log = %self.label, "the next segment is still being prepared; rolling to a growing one");
            return None;
        }
        let preparing = g.preparing.take()?;
        match preparing.thread.join() {
            Ok(Ok((file, path))) => match fs::rename(&path, log_path) {
                Ok(()) => Some(file),
                Err(e) => {
                    tracing::warn!(log = %self.label, error = %e, "cannot rename the prepared segment");
                    let _ = fs::remove_file(&path);
                    None
                }
            },
            Ok(Err(e)) => {
                tracing::warn!(log = %self.label, error = %e, "preparing the next segment failed; it grows instead");
                None
            }
            Err(_) => None,
        }
    }
}
