//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, not a public API): the file
//! log's decoders and its recovery, each with the properties it must keep. A broken property
//! panics, which the fuzzer reports as a crash.

use super::codec::{self, Frame, Marks};
use super::file::{FileLog, FsyncPolicy};
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
