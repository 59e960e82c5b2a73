//! The write-ahead journal of a `file://` stream under `fsync=always`: what makes a write round
//! durable with one fdatasync however many partitions it touched.
//!
//! Each partition is its own file, so syncing the partitions a round wrote costs one fdatasync
//! each, and several fdatasyncs of different files cost about their sum even issued at once
//! (332,510 events/s for 4 files against 680,615/s for one, BENCHMARKS.md 2026-12-02). The
//! writer thread instead copies the bytes each partition log wrote in the round into one
//! buffer, writes it to the journal with one `pwrite`, and fdatasyncs only the journal. The
//! partition files are synced at checkpoints: when the journal is full, and when the writer stops.
//!
//! The file is written with zeros before frames go there and then reused in place, so the
//! fdatasync of a round has no size change to commit (pre-zeroed files sync about twice as
//! fast here). The zeros are written as the journal first fills, in doubling steps up to its
//! capacity, so a stream that writes little keeps a small journal.
//!
//! Layout:
//! ```text
//! header (at 0, HEADER_BYTES reserved) = magic "TBJL"  version:u32le=1  generation:u64le  crc:u32le
//! frame  (from HEADER_BYTES on)        = generation:u64le  partition:u32le  len:u32le  crc:u32le  payload[len]
//! ```
//! Both CRCs are CRC-32 (IEEE): the header's of the 16 bytes before it, a frame's of its first
//! 16 bytes and its payload. A payload is exactly the frames (codec.rs) the partition's log
//! wrote for the round, so replaying it writes the same bytes, offsets and append times
//! included. A checkpoint syncs every partition written since the last one, then writes the
//! header with the next generation: frames of older generations, wherever they lie, no longer
//! count. Frames are read from HEADER_BYTES while their generation is the header's and their
//! CRC holds; the first that fails ends the journal (a torn last write, or the zeros or stale
//! frames beyond it).

use crate::{Error, Result};
use bytes::Bytes;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The journal's name in the stream's directory (beside `stream.json` and the partition
/// directories; only directories named by a number are partitions).
pub(crate) const JOURNAL_FILE: &str = "journal";
/// Frames start here: a torn frame write never shares a sector with the header.
pub(crate) const HEADER_BYTES: u64 = 4096;
/// A frame's bytes before its payload.
pub(crate) const FRAME_HEADER: usize = 20;
/// The default capacity (`journal_bytes`).
pub(crate) const DEFAULT_BYTES: u64 = 64 << 20;
/// The smallest capacity accepted (`journal_bytes`).
pub(crate) const MIN_BYTES: u64 = 64 << 10;
/// The largest capacity accepted (`journal_bytes`): a frame's length is a u32, and a frame
/// too long for it cannot fit.
pub(crate) const MAX_BYTES: u64 = u32::MAX as u64;
const MAGIC: &[u8; 4] = b"TBJL";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 20;
/// The first zero fill; later ones double the filled size.
const FIRST_FILL: u64 = 1 << 20;
const ZERO_CHUNK: usize = 1 << 20;

fn io(context: impl std::fmt::Display, e: std::io::Error) -> Error {
    Error::io(context, e).with_backend("file")
}

fn encode_header(generation: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4..8].copy_from_slice(&VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The generation of a journal header, or why it is not one.
fn decode_header(bytes: &[u8]) -> std::result::Result<u64, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!("{} bytes is too short for a header", bytes.len()));
    }
    if &bytes[..4] != MAGIC {
        return Err("no journal magic".into());
    }
    let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..16]) != crc {
        return Err("header CRC mismatch".into());
    }
    let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(format!("version {version}, this build reads {VERSION}"));
    }
    Ok(u64::from_le_bytes(
        bytes[8..16].try_into().expect("8 bytes"),
    ))
}

/// Starts a frame of `partition` at the end of `buf`: its header, to be completed by
/// [`finish_frame`] once the payload follows it. Returns where the frame starts.
pub(crate) fn start_frame(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.resize(start + FRAME_HEADER, 0);
    start
}

/// Completes the frame started at `start` whose payload is everything after its header; a
/// frame with no payload is removed (nothing to replay).
pub(crate) fn finish_frame(buf: &mut Vec<u8>, start: usize, generation: u64, partition: u32) {
    let len = buf.len() - start - FRAME_HEADER;
    if len == 0 {
        buf.truncate(start);
        return;
    }
    let h = &mut buf[start..start + FRAME_HEADER];
    h[..8].copy_from_slice(&generation.to_le_bytes());
    h[8..12].copy_from_slice(&partition.to_le_bytes());
    h[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&buf[start..start + 16]);
    crc.update(&buf[start + FRAME_HEADER..]);
    let crc = crc.finalize();
    buf[start + 16..start + 20].copy_from_slice(&crc.to_le_bytes());
}

/// Calls `each(partition, payload)` for the frames of `generation` at the start of `bytes`, in
/// order, and returns how many bytes they take: the first frame whose generation differs,
/// whose length runs past the end, or whose CRC fails ends them.
pub(crate) fn decode_frames(
    bytes: &[u8],
    generation: u64,
    mut each: impl FnMut(u32, &[u8]),
) -> usize {
    let mut pos = 0;
    while bytes.len() - pos >= FRAME_HEADER {
        let h = &bytes[pos..pos + FRAME_HEADER];
        let frame_gen = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
        let partition = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(h[12..16].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
        if frame_gen != generation || len == 0 || len > bytes.len() - pos - FRAME_HEADER {
            break;
        }
        let payload = &bytes[pos + FRAME_HEADER..pos + FRAME_HEADER + len];
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&h[..16]);
        hasher.update(payload);
        if hasher.finalize() != crc {
            break;
        }
        each(partition, payload);
        pos += FRAME_HEADER + len;
    }
    pos
}

/// A stream's journal, owned by its writer thread.
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    label: String,
    generation: u64,
    /// Where the next frames go.
    pos: u64,
    /// How much of the file holds zeros or frames, durably: its length.
    filled: u64,
    capacity: u64,
    /// A write or sync failed: what the journal holds is unknown until the next checkpoint.
    broken: bool,
}

impl Journal {
    /// What the journal in `dir` holds for each of `partitions` partitions: the payloads of its
    /// frames of the current generation, concatenated in order (each a run of log frames with
    /// consecutive offsets). Empty when there is no journal, or its header is damaged (it is
    /// written only after every partition was synced, so nothing is lost then).
    pub(crate) fn recover(dir: &Path, partitions: u32, label: &str) -> Result<Vec<Bytes>> {
        let mut out: Vec<Vec<u8>> = vec![Vec::new(); partitions as usize];
        let path = dir.join(JOURNAL_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(out.into_iter().map(Bytes::from).collect());
            }
            Err(e) => return Err(io(format!("reading {}", path.display()), e)),
        };
        let generation = match decode_header(&bytes) {
            Ok(g) if bytes.len() as u64 >= HEADER_BYTES => g,
            Ok(_) | Err(_) if bytes.iter().all(|b| *b == 0) => 0,
            Ok(_) => return Ok(out.into_iter().map(Bytes::from).collect()),
            Err(reason) => {
                tracing::warn!(stream = label, file = %path.display(), %reason,
                    "ignoring a damaged journal header (written after a checkpoint: nothing to replay)");
                return Ok(out.into_iter().map(Bytes::from).collect());
            }
        };
        let mut frames = 0usize;
        let mut stray = 0usize;
        if generation > 0 {
            decode_frames(&bytes[HEADER_BYTES as usize..], generation, |p, payload| {
                frames += 1;
                match out.get_mut(p as usize) {
                    Some(o) => o.extend_from_slice(payload),
                    None => stray += 1,
                }
            });
        }
        if stray > 0 {
            tracing::error!(stream = label, file = %path.display(), frames = stray,
                "journal frames name partitions the stream does not have; ignored");
        }
        tracing::debug!(stream = label, generation, frames, "journal read");
        Ok(out.into_iter().map(Bytes::from).collect())
    }

    /// Opens the journal in `dir` for a new writer, once the partitions hold (durably) what it
    /// held: a checkpoint to the next generation, so the writer starts from an empty journal.
    pub(crate) fn start(dir: &Path, capacity: u64, label: &str) -> Result<Journal> {
        let path = dir.join(JOURNAL_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io(format!("opening {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| io(format!("reading {}", path.display()), e))?
            .len();
        let mut header = [0u8; HEADER_LEN];
        let generation = match file.read_exact_at(&mut header, 0) {
            Ok(()) if len >= HEADER_BYTES => decode_header(&header).ok(),
            _ => None,
        };
        let mut journal = Journal {
            path,
            file,
            label: label.to_owned(),
            generation: generation.unwrap_or(0),
            pos: HEADER_BYTES,
            filled: len,
            capacity: capacity.max(MIN_BYTES),
            broken: false,
        };
        if generation.is_none() && len > 0 {
            // No generation to go on from: stale frames could carry any. Start from zeros.
            journal
                .file
                .set_len(0)
                .map_err(|e| io(format!("truncating {}", journal.path.display()), e))?;
            journal.filled = 0;
        }
        if len == 0
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        journal.checkpoint()?;
        Ok(journal)
    }

    /// Removes the journal in `dir`, once the partitions hold what it held (a stream opened
    /// without `fsync=always` keeps none).
    pub(crate) fn remove(dir: &Path) -> Result<()> {
        let path = dir.join(JOURNAL_FILE);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("removing {}", path.display()), e)),
        }
    }

    /// The journal of a writer that has restored every partition from [`recover`]
    /// (Self::recover): started under `fsync=always`, removed otherwise.
    pub(crate) fn for_writer(
        dir: &Path,
        always: bool,
        capacity: u64,
        label: &str,
    ) -> Result<Option<Journal>> {
        if always {
            Journal::start(dir, capacity, label).map(Some)
        } else {
            Journal::remove(dir).map(|()| None)
        }
    }

    /// The generation new frames carry.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Writes `frames` (made with [`start_frame`]/[`finish_frame`] for this generation) and
    /// fdatasyncs the journal. `Ok(false)`: they do not fit, or the journal needs a checkpoint
    /// first; nothing was written.
    pub(crate) fn append(&mut self, frames: &[u8]) -> Result<bool> {
        let end = self.pos + frames.len() as u64;
        if self.broken || end > self.capacity {
            return Ok(false);
        }
        let outcome = self.grow_to(end).and_then(|()| {
            self.file
                .write_all_at(frames, self.pos)
                .and_then(|()| self.file.sync_data())
                .map_err(|e| io(format!("writing {}", self.path.display()), e))
        });
        match outcome {
            Ok(()) => {
                self.pos = end;
                Ok(true)
            }
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    /// Starts the next generation: every frame written so far stops counting. The caller has
    /// made every partition written since the last checkpoint durable.
    pub(crate) fn checkpoint(&mut self) -> Result<()> {
        let generation = self.generation + 1;
        let header = encode_header(generation);
        let outcome = self
            .grow_to(HEADER_BYTES + FIRST_FILL.min(self.capacity / 2))
            .and_then(|()| {
                self.file
                    .write_all_at(&header, 0)
                    .and_then(|()| self.file.sync_data())
                    .map_err(|e| io(format!("writing {}", self.path.display()), e))
            });
        match outcome {
            Ok(()) => {
                self.generation = generation;
                self.pos = HEADER_BYTES;
                self.broken = false;
                tracing::debug!(stream = %self.label, generation, "journal checkpoint");
                Ok(())
            }
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    /// Writes zeros up to at least `end` (the caller's fdatasync commits them): to double the
    /// filled size, up to the capacity.
    fn grow_to(&mut self, end: u64) -> Result<()> {
        if end <= self.filled {
            return Ok(());
        }
        let target = end
            .max(self.filled * 2)
            .max(HEADER_BYTES + FIRST_FILL)
            .min(self.capacity.max(end));
        static ZEROS: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];
        let mut at = self.filled;
        while at < target {
            let n = ((target - at) as usize).min(ZERO_CHUNK);
            self.file
                .write_all_at(&ZEROS[..n], at)
                .map_err(|e| io(format!("writing zeros to {}", self.path.display()), e))?;
            at += n as u64;
        }
        self.filled = target;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(generation: u64, parts: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut buf = Vec::new();
        for (p, payload) in parts {
            let start = start_frame(&mut buf);
            buf.extend_from_slice(payload);
            finish_frame(&mut buf, start, generation, *p);
        }
        buf
    }

    fn decoded(bytes: &[u8], generation: u64) -> (Vec<(u32, Vec<u8>)>, usize) {
        let mut out = Vec::new();
        let used = decode_frames(bytes, generation, |p, b| out.push((p, b.to_vec())));
        (out, used)
    }

    proptest! {
        /// Frames decode to what was framed; a cut anywhere, a flipped byte, or a stale
        /// generation after them ends the journal at the last intact frame before it.
        #[test]
        fn frames_round_trip_and_stop_at_the_first_bad_one(
            parts in prop::collection::vec((0u32..8, prop::collection::vec(any::<u8>(), 0..200)), 0..12),
            generation in 1u64..1000,
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let parts: Vec<_> = parts.into_iter().filter(|(_, b)| !b.is_empty()).collect();
            let mut bytes = frames(generation, &parts);
            let ends: Vec<usize> = parts
                .iter()
                .scan(0, |at, (_, b)| { *at += FRAME_HEADER + b.len(); Some(*at) })
                .collect();
            let (all, used) = decoded(&bytes, generation);
            prop_assert_eq!(&all, &parts);
            prop_assert_eq!(used, bytes.len());
            // Stale frames of the generation before, then zeros, after them: ignored.
            let stale = frames(generation - 1, &parts);
            let mut with_stale = bytes.clone();
            with_stale.extend_from_slice(&stale);
            with_stale.extend_from_slice(&[0; 64]);
            prop_assert_eq!(decoded(&with_stale, generation).0, parts.clone());
            // Nothing of this generation decodes under another.
            prop_assert!(decoded(&bytes, generation + 1).0.is_empty());
            if bytes.is_empty() {
                return Ok(());
            }
            // A torn write: only whole frames before the cut.
            let at = cut.index(bytes.len());
            let whole = ends.iter().filter(|e| **e <= at).count();
            prop_assert_eq!(decoded(&bytes[..at], generation).0, parts[..whole].to_vec());
            // A damaged byte: the frames before the one holding it.
            let at = flip.index(bytes.len());
            bytes[at] ^= 0x5a;
            let before = ends.iter().filter(|e| **e <= at).count();
            prop_assert_eq!(decoded(&bytes, generation).0, parts[..before].to_vec());
        }
    }

    #[test]
    fn a_journal_reopens_at_the_next_generation_with_its_frames_replayed_once() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            Journal::recover(dir.path(), 2, "s")
                .unwrap()
                .iter()
                .all(|b| b.is_empty())
        );
        let mut j = Journal::start(dir.path(), MIN_BYTES, "s").unwrap();
        let first = j.generation();
        assert!(
            j.append(&frames(first, &[(1, b"abc".to_vec()), (0, b"x".to_vec())]))
                .unwrap()
        );
        assert!(j.append(&frames(first, &[(1, b"de".to_vec())])).unwrap());
        let replay = Journal::recover(dir.path(), 2, "s").unwrap();
        assert_eq!(&replay[0][..], b"x");
        assert_eq!(&replay[1][..], b"abcde");
        // Too big for what is left: refused, nothing written.
        let big = frames(first, &[(0, vec![7; MIN_BYTES as usize])]);
        assert!(!j.append(&big).unwrap());
        drop(j);
        let j = Journal::start(dir.path(), MIN_BYTES, "s").unwrap();
        assert_eq!(j.generation(), first + 1);
        assert!(
            Journal::recover(dir.path(), 2, "s")
                .unwrap()
                .iter()
                .all(|b| b.is_empty())
        );
        // A damaged header: nothing replayed, and the next start begins from zeros.
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(JOURNAL_FILE))
            .unwrap()
            .write_all_at(b"junk", 0)
            .unwrap();
        assert!(
            Journal::recover(dir.path(), 2, "s")
                .unwrap()
                .iter()
                .all(|b| b.is_empty())
        );
        let j = Journal::start(dir.path(), MIN_BYTES, "s").unwrap();
        assert_eq!(j.generation(), 1);
    }
}
