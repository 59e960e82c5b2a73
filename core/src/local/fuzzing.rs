//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, not a public API): the file
//! log's decoders and its recovery, each with the properties it must keep. A broken property
//! panics, which the fuzzer reports as a crash.

use super::codec::{self, Frame, Marks};
use super::file::{FileLog, FsyncPolicy};
use super::journal;
use super::log::{LogConfig, PartitionLog};
use crate::{Event, Timestamp};
use bytes::Bytes;
use std::path::Path;

/// A frame decodes to a record that encodes back to the same bytes, or is refused; checked on
/// the input as is, and on the input as a frame body with a valid length and CRC (so the body
/// parser is reached, which a fuzzer cannot do by guessing CRCs).
pub fn frame(data: &[u8]) {
    check_frame(data);
    let mut framed = Vec::with_capacity(data.len() + codec::FRAME_HEADER);
    framed.extend_from_slice(&(data.len() as u32).to_le_bytes());
    framed.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    framed.extend_from_slice(data);
    check_frame(&framed);
}

fn check_frame(data: &[u8]) {
    let buf = Bytes::copy_from_slice(data);
    match codec::decode(&buf) {
        Frame::Record(r, used) => {
            let mut again = Vec::new();
            codec::encode(&mut again, r.offset, r.append_ms, &r.event);
            assert_eq!(
                again.as_slice(),
                &data[..used],
                "decode and encode disagree"
            );
        }
        Frame::Incomplete(need) => assert!(need > data.len()),
        Frame::Invalid(_) => {}
    }
}

/// The index decoder keeps only a consistent prefix, whatever the bytes.
pub fn index(data: &[u8]) {
    let (base, size) = match data.get(..16) {
        Some(h) => (
            u64::from_le_bytes(h[..8].try_into().expect("8")) % 1_000_000,
            u64::from_le_bytes(h[8..].try_into().expect("8")),
        ),
        None => (0, 1 << 20),
    };
    let body = data.get(16..).unwrap_or_default();
    let entries = codec::decode_index(body, base, size);
    if let Some(first) = entries.first() {
        assert_eq!((first.offset, first.pos), (base, 0));
    }
    for pair in entries.windows(2) {
        assert!(pair[1].offset > pair[0].offset && pair[1].pos > pair[0].pos);
        assert!(pair[1].max_ms_before >= pair[0].max_ms_before && pair[1].pos < size);
    }
    let mut again = Vec::new();
    codec::encode_index(&entries, &mut again);
    assert_eq!(again.as_slice(), &body[..again.len()]);
}

/// Marks decode to values that encode back to the same bytes, or are refused.
pub fn marks(data: &[u8]) {
    if let Ok(m) = codec::decode_marks(data) {
        assert!(m.start <= m.next);
        assert_eq!(codec::encode_marks(m).as_slice(), data);
    }
    let start = data.first().copied().unwrap_or(0) as u64;
    let m = Marks {
        start,
        next: start + data.len() as u64,
    };
    assert_eq!(codec::decode_marks(&codec::encode_marks(m)), Ok(m));
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        retention_bytes: None,
        retention_age: None,
        preallocate: false,
    }
}

/// The events of the log [`write_log`] writes; record `i` holds `base_event(i)`.
pub fn base_event(i: usize) -> Event {
    let mut e = Event::new(vec![b'a' + (i % 26) as u8; 10 + (i * 37) % 90])
        .with_timestamp(Timestamp::from_millis(1_000 + i as i64));
    if i.is_multiple_of(2) {
        e = e.with_key(format!("key-{i}"));
    }
    if i.is_multiple_of(3) {
        e = e.with_header("h", vec![i as u8; 3]);
    }
    e
}

/// Writes `count` events into a partition log in `dir` (segments of 1 KiB); returns the next
/// offset.
pub fn write_log(dir: &Path, count: usize) -> u64 {
    let log = FileLog::open(
        dir,
        "fuzz".into(),
        true,
        FsyncPolicy::Never,
        config(),
        false,
    )
    .expect("open a fresh log");
    for chunk in (0..count).collect::<Vec<_>>().chunks(7) {
        let events: Vec<Event> = chunk.iter().map(|i| base_event(*i)).collect();
        log.append(&events, 0).expect("append");
    }
    log.bounds().1
}

/// Opens a damaged log as a reader, then as the writer, reads everything with and without
/// `skip_damaged`, and appends. Never a wrong record, never a panic, and while the marks file
/// is intact no position below `next` is handed out again.
pub fn check_recovery(dir: &Path, next: u64, marks_intact: bool) {
    for writable in [false, true] {
        for skip in [false, true] {
            let Ok(log) = FileLog::open(
                dir,
                "fuzz".into(),
                writable,
                FsyncPolicy::Never,
                config(),
                skip,
            ) else {
                continue;
            };
            let (start, end) = log.bounds();
            assert!(start <= end);
            let mut offset = start;
            let mut rounds = 0;
            while offset < end && rounds < 10_000 {
                rounds += 1;
                match log.read(offset, 13, 4096) {
                    Ok(records) if records.is_empty() => break,
                    Ok(records) => {
                        for pair in records.windows(2) {
                            assert!(pair[1].offset > pair[0].offset, "records out of order");
                        }
                        for r in &records {
                            assert!(r.offset >= offset, "a record before the one asked for");
                            assert_eq!(
                                r.event,
                                base_event(r.offset as usize),
                                "a wrong record at {}",
                                r.offset
                            );
                        }
                        offset = records.last().expect("not empty").offset + 1;
                    }
                    // Damage not stepped over: go on after it, as an operator would.
                    Err(_) if !skip => offset += 1,
                    Err(_) => break,
                }
            }
            if writable {
                if let Ok(at) = log.append(&[Event::new("after")], 0) {
                    if marks_intact {
                        assert!(
                            at >= next,
                            "position {at} handed out again (next was {next})"
                        );
                    }
                    let back = log.read(at, 1, 1 << 20).expect("read the new record");
                    assert_eq!(back[0].event.payload.as_ref(), b"after");
                }
                return;
            }
        }
    }
}

/// The journal's frame decoder: the frames it takes lie within the bytes and encode back to
/// them; checked on the input as is (its first 8 bytes as the generation), and on the input as
/// one frame's payload under a valid header and CRC (which a fuzzer cannot guess).
pub fn journal_frames(data: &[u8]) {
    let generation = data
        .get(..8)
        .map_or(1, |g| u64::from_le_bytes(g.try_into().expect("8 bytes")));
    check_journal_frames(data, generation);
    let mut framed = Vec::with_capacity(data.len() + journal::FRAME_HEADER);
    let start = journal::start_frame(&mut framed);
    framed.extend_from_slice(data);
    journal::finish_frame(&mut framed, start, 7, 3);
    let taken = check_journal_frames(&framed, 7);
    assert_eq!(taken, if data.is_empty() { 0 } else { 1 });
}

fn check_journal_frames(bytes: &[u8], generation: u64) -> usize {
    let mut again = Vec::with_capacity(bytes.len());
    let mut frames = 0;
    let used = journal::decode_frames(bytes, generation, |partition, payload| {
        frames += 1;
        let start = journal::start_frame(&mut again);
        again.extend_from_slice(payload);
        journal::finish_frame(&mut again, start, generation, partition);
    });
    assert!(used <= bytes.len());
    assert_eq!(
        again.as_slice(),
        &bytes[..used],
        "decode and encode disagree"
    );
    frames
}

/// A power loss under `fsync=always`, as the journal meets it: a partition log of `count`
/// records (one segment, append time 0), the journal holding the frames of records `from..count`
/// exactly as the log wrote them, then `garbage` after them (a torn or foreign tail), and the
/// segment cut at byte `cut` (what an unsynced page cache loses). Reopening the log as its
/// writer with that journal never panics and never serves a wrong record; when the cut lies at
/// or after the first record the journal holds (the checkpoint's promise), every record is back.
pub fn journal_replay(dir: &Path, count: usize, from: usize, cut: u64, garbage: &[u8]) {
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..config()
    };
    let log = FileLog::open(dir, "fuzz".into(), true, FsyncPolicy::Never, config, false)
        .expect("open a fresh log");
    let events: Vec<Event> = (0..count).map(base_event).collect();
    log.append(&events, 0).expect("append");
    drop(log);
    let from = from.min(count);
    // The segment's bytes are these frames one after the other: record `from` starts where
    // the frames before it end.
    let mut before = Vec::new();
    for (i, event) in events.iter().enumerate().take(from) {
        codec::encode(&mut before, i as u64, 0, event);
    }
    let covered_from = before.len() as u64;
    let mut replay = Vec::new();
    for (i, event) in events.iter().enumerate().skip(from) {
        codec::encode(&mut replay, i as u64, 0, event);
    }
    replay.extend_from_slice(garbage);
    let segment = dir.join(format!("{:020}.log", 0));
    let size = std::fs::metadata(&segment).expect("the segment").len();
    let cut = cut % (size + 1);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .and_then(|f| f.set_len(cut))
        .expect("cut the segment");
    let restorable = cut >= covered_from;
    let Ok(log) = FileLog::open_replaying(
        dir,
        "fuzz".into(),
        true,
        FsyncPolicy::Always,
        config,
        false,
        Bytes::from(replay),
    ) else {
        assert!(!restorable, "a log the journal can restore failed to open");
        return;
    };
    let mut offset = 0u64;
    let mut rounds = 0;
    while offset < count as u64 && rounds < 10_000 {
        rounds += 1;
        match log.read(offset, 13, 1 << 20) {
            Ok(records) if records.is_empty() => break,
            Ok(records) => {
                for r in &records {
                    assert!(r.offset >= offset, "a record before the one asked for");
                    if restorable {
                        assert_eq!(r.offset, offset, "record {offset} missing after replay");
                    }
                    if r.offset < count as u64 {
                        assert_eq!(
                            r.event, events[r.offset as usize],
                            "a wrong record at {}",
                            r.offset
                        );
                    }
                    offset = r.offset + 1;
                }
            }
            Err(e) => {
                assert!(!restorable, "record {offset} unreadable after replay: {e}");
                offset += 1;
            }
        }
    }
    if restorable {
        assert!(
            offset >= count as u64,
            "records {offset} to {count} missing after replay"
        );
    }
}
