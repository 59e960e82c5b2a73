//! On-disk record framing of the file log.
//!
//! ```text
//! frame  = len:u32le  crc:u32le  body[len]          crc = CRC-32 (IEEE) of body
//! body   = version:u8=1  flags:u8  offset:u64le  append_ms:i64le
//!          [timestamp_ms:i64le]            if flags & HAS_TIMESTAMP
//!          [key_len:u32le key]             if flags & HAS_KEY
//!          header_count:u32le  (name_len:u16le name value_len:u32le value)*
//!          payload (the rest of the body)
//! ```
//! The offset inside each frame lets recovery and readers check that the file is what the index
//! says it is; the CRC covers everything a reader hands out.

use crate::{Error, Event, Headers, Result, Timestamp};
use bytes::{Buf, BufMut, Bytes};

pub(crate) const FRAME_HEADER: usize = 8;
const VERSION: u8 = 1;
const HAS_TIMESTAMP: u8 = 1;
const HAS_KEY: u8 = 2;
/// A frame larger than this is treated as garbage (a torn or corrupt length), not allocated.
pub(crate) const MAX_FRAME: usize = 256 << 20;

/// A record as stored: its offset, when the log appended it, and the event.
#[derive(Debug, Clone)]
pub(crate) struct StoredRecord {
    pub offset: u64,
    pub append_ms: i64,
    pub event: Event,
}

impl StoredRecord {
    /// The time used for seeking and age retention: the event time if set, else append time.
    pub fn effective_ms(&self) -> i64 {
        self.event
            .timestamp
            .map_or(self.append_ms, Timestamp::as_millis)
    }
}

#[cfg(test)]
pub(crate) fn encoded_frame_len(event: &Event) -> usize {
    FRAME_HEADER
        + 2
        + 16
        + if event.timestamp.is_some() { 8 } else { 0 }
        + event.key.as_ref().map_or(0, |k| 4 + k.len())
        + 4
        + event
            .headers
            .iter()
            .map(|(n, v)| 6 + n.len() + v.len())
            .sum::<usize>()
        + event.payload.len()
}

/// Appends one frame to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, offset: u64, append_ms: i64, event: &Event) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    let mut flags = 0;
    if event.timestamp.is_some() {
        flags |= HAS_TIMESTAMP;
    }
    if event.key.is_some() {
        flags |= HAS_KEY;
    }
    out.put_u8(VERSION);
    out.put_u8(flags);
    out.put_u64_le(offset);
    out.put_i64_le(append_ms);
    if let Some(ts) = event.timestamp {
        out.put_i64_le(ts.as_millis());
    }
    if let Some(key) = &event.key {
        out.put_u32_le(key.len() as u32);
        out.extend_from_slice(key);
    }
    out.put_u32_le(event.headers.len() as u32);
    for (name, value) in event.headers.iter() {
        out.put_u16_le(name.len() as u16);
        out.extend_from_slice(name.as_bytes());
        out.put_u32_le(value.len() as u32);
        out.extend_from_slice(value);
    }
    out.extend_from_slice(&event.payload);
    let body_len = out.len() - start - FRAME_HEADER;
    let crc = crc32fast::hash(&out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug)]
pub(crate) enum Frame {
    /// A whole, valid record and the frame's total length.
    Record(StoredRecord, usize),
    /// The buffer ends inside a frame that needs this many bytes in total.
    Incomplete(usize),
    /// The bytes are not a valid frame; the reason.
    Invalid(String),
}

/// Decodes the frame at the start of `buf` without copying: the event's key, payload and header
/// values are slices of `buf`.
pub(crate) fn decode(buf: &Bytes) -> Frame {
    if buf.len() < FRAME_HEADER {
        return Frame::Incomplete(FRAME_HEADER);
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len > MAX_FRAME {
        return Frame::Invalid(format!("frame length {len} exceeds {MAX_FRAME}"));
    }
    if len < 22 {
        return Frame::Invalid(format!("frame length {len} is too short for a record"));
    }
    if buf.len() < FRAME_HEADER + len {
        return Frame::Incomplete(FRAME_HEADER + len);
    }
    let body = buf.slice(FRAME_HEADER..FRAME_HEADER + len);
    if crc32fast::hash(&body) != crc {
        return Frame::Invalid("checksum mismatch".to_owned());
    }
    match parse_body(body) {
        Ok(record) => Frame::Record(record, FRAME_HEADER + len),
        Err(reason) => Frame::Invalid(reason),
    }
}

fn parse_body(mut b: Bytes) -> std::result::Result<StoredRecord, String> {
    fn need(b: &Bytes, n: usize, what: &str) -> std::result::Result<(), String> {
        if b.remaining() < n {
            Err(format!("record truncated in {what}"))
        } else {
            Ok(())
        }
    }
    need(&b, 18, "header")?;
    let version = b.get_u8();
    if version != VERSION {
        return Err(format!("unknown record version {version}"));
    }
    let flags = b.get_u8();
    if flags & !(HAS_TIMESTAMP | HAS_KEY) != 0 {
        // A flag this build does not know changes the layout: guessing would misread.
        return Err(format!("unknown record flags {flags:#04x}"));
    }
    let offset = b.get_u64_le();
    let append_ms = b.get_i64_le();
    let timestamp = if flags & HAS_TIMESTAMP != 0 {
        need(&b, 8, "timestamp")?;
        Some(Timestamp::from_millis(b.get_i64_le()))
    } else {
        None
    };
    let key = if flags & HAS_KEY != 0 {
        need(&b, 4, "key length")?;
        let n = b.get_u32_le() as usize;
        need(&b, n, "key")?;
        Some(b.split_to(n))
    } else {
        None
    };
    need(&b, 4, "header count")?;
    let count = b.get_u32_le() as usize;
    let mut headers = Headers::new();
    for _ in 0..count {
        need(&b, 2, "header name length")?;
        let n = b.get_u16_le() as usize;
        need(&b, n, "header name")?;
        let name = String::from_utf8(b.split_to(n).to_vec())
            .map_err(|_| "header name is not UTF-8".to_owned())?;
        need(&b, 4, "header value length")?;
        let v = b.get_u32_le() as usize;
        need(&b, v, "header value")?;
        headers.append(name, b.split_to(v));
    }
    Ok(StoredRecord {
        offset,
        append_ms,
        event: Event {
            key,
            payload: b,
            headers,
            timestamp,
        },
    })
}

/// Bytes of one index entry: offset u64, byte position u64, max time before it i64.
pub(crate) const INDEX_ENTRY: usize = 24;

/// One sparse index entry of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub offset: u64,
    pub pos: u64,
    /// Max effective time of the records before `pos` in this segment.
    pub max_ms_before: i64,
}

/// Appends the entries' on-disk form to `out`.
pub(crate) fn encode_index(entries: &[IndexEntry], out: &mut Vec<u8>) {
    for e in entries {
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.pos.to_le_bytes());
        out.extend_from_slice(&e.max_ms_before.to_le_bytes());
    }
}

/// The trustworthy prefix of an index file of the segment at `base` holding `size` bytes: it
/// starts at (base, 0), and offsets, positions and times only grow. The index is a hint, so
/// anything after the first inconsistent entry is ignored (and rebuilt by the caller's scan).
pub(crate) fn decode_index(bytes: &[u8], base: u64, size: u64) -> Vec<IndexEntry> {
    let mut out: Vec<IndexEntry> = Vec::new();
    for chunk in bytes.chunks_exact(INDEX_ENTRY) {
        let word = |i: usize| u64::from_le_bytes(chunk[i..i + 8].try_into().expect("8 bytes"));
        let e = IndexEntry {
            offset: word(0),
            pos: word(8),
            max_ms_before: word(16) as i64,
        };
        let consistent = match out.last() {
            None => e.offset == base && e.pos == 0,
            Some(prev) => {
                e.offset > prev.offset && e.pos > prev.pos && e.max_ms_before >= prev.max_ms_before
            }
        };
        if !consistent || e.pos >= size {
            break;
        }
        out.push(e);
    }
    out
}

/// Bytes of a partition's marks file.
pub(crate) const MARKS_LEN: usize = 28;
const MARKS_MAGIC: &[u8; 4] = b"TBMK";
const MARKS_VERSION: u8 = 1;

/// A partition's water marks: the first offset the log still owes its readers (everything
/// below was removed by retention) and the next offset it will hand out (every one below was
/// handed out, so none is ever handed out again).
///
/// ```text
/// marks = magic "TBMK"  version:u8=1  0:u8 0:u8 0:u8  start:u64le  next:u64le  crc:u32le
/// ```
/// `crc` is CRC-32 of the 24 bytes before it. The file is rewritten in place; 28 bytes lie in
/// one disk sector, and the CRC tells a damaged copy from a good one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marks {
    pub start: u64,
    pub next: u64,
}

pub(crate) fn encode_marks(marks: Marks) -> [u8; MARKS_LEN] {
    let mut out = [0u8; MARKS_LEN];
    out[0..4].copy_from_slice(MARKS_MAGIC);
    out[4] = MARKS_VERSION;
    out[8..16].copy_from_slice(&marks.start.to_le_bytes());
    out[16..24].copy_from_slice(&marks.next.to_le_bytes());
    let crc = crc32fast::hash(&out[..24]);
    out[24..28].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a marks file; the reason when it is not one.
pub(crate) fn decode_marks(bytes: &[u8]) -> std::result::Result<Marks, String> {
    if bytes.len() != MARKS_LEN {
        return Err(format!("{} bytes, expected {MARKS_LEN}", bytes.len()));
    }
    if &bytes[0..4] != MARKS_MAGIC {
        return Err("not a marks file (bad magic)".to_owned());
    }
    if bytes[4] != MARKS_VERSION {
        return Err(format!("unknown marks version {}", bytes[4]));
    }
    if bytes[5..8] != [0, 0, 0] {
        return Err("reserved bytes 5 to 7 are not zero".to_owned());
    }
    let crc = u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..24]) != crc {
        return Err("checksum mismatch".to_owned());
    }
    let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let marks = Marks {
        start: word(8),
        next: word(16),
    };
    if marks.start > marks.next {
        return Err(format!(
            "start {} is after next {}",
            marks.start, marks.next
        ));
    }
    Ok(marks)
}

/// Bytes a frame's header and fixed body fields take: what [`plausible_frame`] looks at.
pub(crate) const PROBE: usize = FRAME_HEADER + 18;
/// The smallest frame: header plus the fixed body fields.
pub(crate) const MIN_FRAME: usize = FRAME_HEADER + 22;

/// Whether `probe` (the bytes at some position `distance` bytes after the start of a damaged
/// region whose first record had offset `expect`) could start a frame of a later record: a
/// plausible length, version, flags, and an offset after `expect` that the bytes in between
/// could hold (frames are at least [`MIN_FRAME`] bytes). A cheap filter; the caller then
/// checks the whole frame, CRC included.
pub(crate) fn plausible_frame(probe: &[u8], distance: u64, expect: u64) -> bool {
    let Some(h) = probe.get(..PROBE) else {
        return false;
    };
    let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
    if !(22..=MAX_FRAME).contains(&len) || h[8] != VERSION || h[9] & !(HAS_TIMESTAMP | HAS_KEY) != 0
    {
        return false;
    }
    let offset = u64::from_le_bytes(h[10..18].try_into().expect("8 bytes"));
    let reach = distance / MIN_FRAME as u64;
    offset > expect && offset <= expect.saturating_add(reach)
}

/// Header names longer than a u16 cannot be framed; the producer rejects them up front.
pub(crate) fn check_encodable(event: &Event, stream: &str) -> Result<()> {
    if let Some((name, _)) = event
        .headers
        .iter()
        .find(|(n, _)| n.len() > u16::MAX as usize)
    {
        return Err(Error::too_large(format!(
            "stream `{stream}`: header name of {} bytes exceeds the limit of {} bytes",
            name.len(),
            u16::MAX
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_event() -> impl Strategy<Value = Event> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::collection::vec(any::<u8>(), 0..200),
            proptest::collection::vec(
                (".{0,12}", proptest::collection::vec(any::<u8>(), 0..30)),
                0..6,
            ),
            proptest::option::of(any::<i64>()),
        )
            .prop_map(|(key, payload, headers, ts)| Event {
                key: key.map(Bytes::from),
                payload: Bytes::from(payload),
                headers: headers
                    .into_iter()
                    .map(|(n, v)| (n, Bytes::from(v)))
                    .collect(),
                timestamp: ts.map(Timestamp::from_millis),
            })
    }

    /// Found by the log_frame fuzz target: a body with unknown flag bits (0x2e) was read as
    /// if only the known ones were set.
    #[test]
    fn unknown_flags_are_refused() {
        let mut body = vec![1u8, 0x2e];
        body.extend_from_slice(&[0; 10]);
        body.extend_from_slice(&[0xff, 0x43]);
        body.extend_from_slice(&[0; 15]);
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        match decode(&Bytes::from(frame)) {
            Frame::Invalid(reason) => {
                assert!(reason.contains("unknown record flags 0x2e"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// Found by the log_marks fuzz target: marks whose three reserved bytes were not zero
    /// (under a CRC that matched) were read as good, so a file the format does not allow was
    /// taken for marks.
    #[test]
    fn marks_with_reserved_bytes_set_are_refused() {
        let mut bytes = encode_marks(Marks {
            start: 5,
            next: 900,
        });
        bytes[7] = 0x80;
        let crc = crc32fast::hash(&bytes[..24]);
        bytes[24..28].copy_from_slice(&crc.to_le_bytes());
        let reason = decode_marks(&bytes).unwrap_err();
        assert!(reason.contains("reserved"), "{reason}");
    }

    proptest! {
        /// Any event survives framing exactly, and the length estimate is exact.
        #[test]
        fn frames_round_trip(event in arb_event(), offset in any::<u64>(), append in any::<i64>()) {
            let mut buf = Vec::new();
            encode(&mut buf, offset, append, &event);
            prop_assert_eq!(buf.len(), encoded_frame_len(&event));
            match decode(&Bytes::from(buf)) {
                Frame::Record(r, used) => {
                    prop_assert_eq!(used, encoded_frame_len(&event));
                    prop_assert_eq!(r.offset, offset);
                    prop_assert_eq!(r.append_ms, append);
                    prop_assert_eq!(r.event, event);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

        /// Any single corrupted byte or truncation is detected: never a wrong record.
        #[test]
        fn corruption_is_detected(event in arb_event(), flip in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<prop::sample::Index>()) {
            let mut buf = Vec::new();
            encode(&mut buf, 7, 9, &event);
            let mut flipped = buf.clone();
            let i = flip.index(flipped.len());
            flipped[i] ^= 1 << bit;
            match decode(&Bytes::from(flipped)) {
                Frame::Record(r, _) => prop_assert!(false, "corrupt frame decoded as {:?}", r),
                Frame::Incomplete(_) | Frame::Invalid(_) => {}
            }
            let cut = cut.index(buf.len());
            let truncated = Bytes::copy_from_slice(&buf[..cut]);
            prop_assert!(matches!(decode(&truncated), Frame::Incomplete(_)));
        }
    }
}
