//! A fetched message copied out of librdkafka in one piece.
//!
//! The key, the payload and every header name and value go into one buffer, followed by a
//! small layout (lengths). The event handed to the application holds slices of that buffer,
//! and the consumer keeps the buffer itself (one reference count) to build the event again
//! should it be nacked, instead of a second copy of the whole event per delivery. Buffers are
//! cut from a shared arena chunk ([`Arena`]), so most messages cost no allocation at all for
//! their content.

use bytes::{BufMut, Bytes, BytesMut};
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use tributary::{Event, Headers, Timestamp};

/// Marks an absent key or header value in the layout.
const NONE: u32 = u32::MAX;

/// Headers of a message read into a list on the stack; a message with more takes a vector.
const INLINE_HEADERS: usize = 8;

/// Chunks that fetched messages are cut from: one allocation (and one reference count) per
/// chunk instead of two per message. A chunk stays alive while any event cut from it does.
///
/// Full chunks are kept (the newest [`SPENT`]) and reused once every event cut from them is
/// gone, rather than freed by the application's thread and allocated again by the driver's.
/// A 64 KiB chunk freed into the driver thread's malloc arena is what librdkafka's `calloc`
/// of a header parser per message (on this thread, in `headers()`) was then cut from and
/// merged back into on free, at up to twice the instructions it costs in a raw rdkafka loop
/// (docs/benchmarks/NOTES.md, Kafka).
pub(crate) struct Arena {
    chunk: BytesMut,
    /// `chunk` is a standard one (not an oversized one for a single large message).
    standard: bool,
    /// Full standard chunks, oldest first; each is an empty handle on its buffer.
    spent: std::collections::VecDeque<BytesMut>,
}

/// Bytes per chunk: small enough that an event an application holds on to pins little.
const CHUNK: usize = 64 * 1024;

/// Full chunks kept for reuse: 1 MiB per consumer at most, room for a full ready queue of
/// small events (4,096 of about 150 bytes fill ten chunks) so that the oldest is free again
/// by the time the newest fills.
const SPENT: usize = 16;

impl Arena {
    pub(crate) fn new() -> Arena {
        Arena {
            chunk: BytesMut::new(),
            standard: false,
            spent: std::collections::VecDeque::new(),
        }
    }

    /// The chunk with room for `len` more bytes (another chunk when this one is full).
    fn room(&mut self, len: usize) -> &mut BytesMut {
        if self.chunk.capacity() - self.chunk.len() < len {
            // The oldest full chunk, if every event cut from it is gone.
            let standard = len <= CHUNK;
            let free = standard
                && self
                    .spent
                    .front_mut()
                    .is_some_and(|oldest| oldest.try_reclaim(CHUNK));
            let reused = if free { self.spent.pop_front() } else { None };
            let next = reused.unwrap_or_else(|| BytesMut::with_capacity(len.max(CHUNK)));
            let full = std::mem::replace(&mut self.chunk, next);
            if std::mem::replace(&mut self.standard, standard) {
                if self.spent.len() == SPENT {
                    self.spent.pop_front();
                }
                self.spent.push_back(full);
            }
        }
        &mut self.chunk
    }
}

pub(crate) use tributary::backend::HeaderNames as Names;

/// A message's content, shared by the event handed out and the copy kept for redelivery.
#[derive(Clone)]
pub(crate) struct Fetched {
    /// `key | payload | (name | value)* | layout`, the layout being `key length, payload
    /// length, header count, (name length, value length)*` as little-endian `u32`s.
    buf: Bytes,
    /// Where the layout starts.
    layout: u32,
    timestamp: Option<i64>,
}

impl Fetched {
    /// Copies a message out of librdkafka.
    pub(crate) fn copy(message: &BorrowedMessage<'_>, arena: &mut Arena) -> Fetched {
        let key = message.key();
        let payload = message.payload().unwrap_or_default();
        // Each header is looked up in librdkafka once (a lookup, a `strlen` and a UTF-8 check
        // of its name): the lengths and the copy both read this list.
        let mut inline = [("", None); INLINE_HEADERS];
        let spilled: Vec<(&str, Option<&[u8]>)>;
        let headers: &[(&str, Option<&[u8]>)] = match message.headers() {
            None => &[],
            Some(headers) if headers.count() <= INLINE_HEADERS => {
                let mut count = 0;
                for (slot, header) in inline.iter_mut().zip(headers.iter()) {
                    *slot = (header.key, header.value);
                    count += 1;
                }
                &inline[..count]
            }
            Some(headers) => {
                spilled = headers.iter().map(|h| (h.key, h.value)).collect();
                &spilled
            }
        };
        let mut body = key.map_or(0, <[u8]>::len) + payload.len();
        for (name, value) in headers {
            body += name.len() + value.map_or(0, <[u8]>::len);
        }
        let buf = arena.room(body + 4 * (3 + 2 * headers.len()));
        buf.put_slice(key.unwrap_or_default());
        buf.put_slice(payload);
        for (name, value) in headers {
            buf.put_slice(name.as_bytes());
            buf.put_slice(value.unwrap_or_default());
        }
        let layout = buf.len() as u32;
        buf.put_u32_le(key.map_or(NONE, |k| k.len() as u32));
        buf.put_u32_le(payload.len() as u32);
        buf.put_u32_le(headers.len() as u32);
        for (name, value) in headers {
            buf.put_u32_le(name.len() as u32);
            buf.put_u32_le(value.map_or(NONE, |v| v.len() as u32));
        }
        Fetched {
            buf: buf.split().freeze(),
            layout,
            timestamp: message.timestamp().to_millis(),
        }
    }

    /// An event with this payload and nothing else, for tests elsewhere in the crate.
    #[cfg(test)]
    pub(crate) fn for_test(payload: Bytes) -> Fetched {
        let mut buf = BytesMut::from(&payload[..]);
        let layout = buf.len() as u32;
        buf.put_u32_le(NONE);
        buf.put_u32_le(layout);
        buf.put_u32_le(0);
        Fetched {
            buf: buf.freeze(),
            layout,
            timestamp: None,
        }
    }

    /// Bytes of content (for the ready queue's bound).
    pub(crate) fn size(&self) -> usize {
        self.layout as usize
    }

    /// The event: slices of the buffer, no copy of the content; header names from `names`.
    pub(crate) fn event(&self, names: &mut Names) -> Event {
        let mut layout = self.buf[self.layout as usize..]
            .chunks_exact(4)
            .map(|n| u32::from_le_bytes([n[0], n[1], n[2], n[3]]));
        let mut next = move || layout.next().unwrap_or(0);
        let mut at = 0usize;
        // Ranges first, slices second: a header name is read in place, never as a `Bytes`
        // slice, whose reference count (shared by every message of an arena chunk, and
        // touched by the driver thread and the application's at once) showed in the profile.
        let mut span = |len: u32| {
            let len = if len == NONE { 0 } else { len as usize };
            at += len;
            at - len..at
        };
        let take = |range: std::ops::Range<usize>| self.buf.slice(range);
        let key_len = next();
        let key = span(key_len);
        let key = (key_len != NONE).then(|| take(key));
        let mut event = Event::new(take(span(next())));
        event.key = key;
        let count = next();
        if count > 0 {
            let mut headers = Headers::with_capacity(count as usize);
            for _ in 0..count {
                let name = span(next());
                let value = span(next());
                // Names were `&str` in librdkafka: valid UTF-8, checked again (a few bytes)
                // rather than assumed, without the lossy conversion's chunking.
                let name = &self.buf[name];
                match names.get(name) {
                    Some(name) => headers.append_static(name, take(value)),
                    // Names were `&str` in librdkafka: valid UTF-8.
                    None => headers.append(String::from_utf8_lossy(name), take(value)),
                }
            }
            event.headers = headers;
        }
        event.timestamp = self.timestamp.map(Timestamp::from_millis);
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the buffer the way `copy` does, from parts instead of a librdkafka message.
    fn fetched(key: Option<&[u8]>, payload: &[u8], headers: &[(&str, Option<&[u8]>)]) -> Fetched {
        let mut buf = BytesMut::new();
        buf.put_slice(key.unwrap_or_default());
        buf.put_slice(payload);
        for (name, value) in headers {
            buf.put_slice(name.as_bytes());
            buf.put_slice(value.unwrap_or_default());
        }
        let layout = buf.len() as u32;
        buf.put_u32_le(key.map_or(NONE, |k| k.len() as u32));
        buf.put_u32_le(payload.len() as u32);
        buf.put_u32_le(headers.len() as u32);
        for (name, value) in headers {
            buf.put_u32_le(name.len() as u32);
            buf.put_u32_le(value.map_or(NONE, |v| v.len() as u32));
        }
        Fetched {
            buf: buf.freeze(),
            layout,
            timestamp: Some(1_700_000_000_000),
        }
    }

    #[test]
    fn events_come_back_as_they_were() {
        let f = fetched(
            Some(b"k"),
            b"payload",
            &[
                ("a", Some(b"1")),
                ("a", Some(b"")),
                ("nul", None),
                ("\u{e9}", Some(b"x")),
            ],
        );
        let names = &mut Names::new();
        let event = f.event(names);
        assert_eq!(event.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(event.payload.as_ref(), b"payload");
        let headers: Vec<(&str, &[u8])> =
            event.headers.iter().map(|(n, v)| (n, v.as_ref())).collect();
        assert_eq!(
            headers,
            [("a", &b"1"[..]), ("a", b""), ("nul", b""), ("\u{e9}", b"x")]
        );
        assert_eq!(
            event.timestamp.map(|t| t.as_millis()),
            Some(1_700_000_000_000)
        );
        assert_eq!(f.event(names), event, "built again, the same event");
        assert_eq!(f.size(), 1 + 7 + 1 + 1 + 1 + 3 + 2 + 1);

        let bare = fetched(None, b"", &[]).event(names);
        assert_eq!(bare.key, None);
        assert!(bare.payload.is_empty());
        assert!(bare.headers.is_empty());
        let empty_key = fetched(Some(b""), b"x", &[]).event(names);
        assert_eq!(empty_key.key.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn names_are_kept_once_and_long_ones_are_copied() {
        let long = "n".repeat(Names::MAX_NAME_LEN + 1);
        let f = fetched(None, b"", &[("trace", Some(b"1")), (&long, Some(b"2"))]);
        let (mut a, mut b) = (Names::new(), Names::new());
        let (first, second) = (f.event(&mut a), f.event(&mut b));
        assert_eq!(first, second);
        let names: Vec<&str> = first.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["trace", long.as_str()]);
        let kept = |names: &mut Names| names.get(b"trace").map(str::as_ptr);
        assert_eq!(kept(&mut a), kept(&mut b), "one copy per process");
        assert!(a.get(long.as_bytes()).is_none());
        assert!(
            a.get(b"\xff").is_none(),
            "not UTF-8: copied (lossily) per event"
        );
    }

    /// Cuts `len` bytes from the arena, as `copy` does.
    fn cut(arena: &mut Arena, len: usize) -> Bytes {
        let chunk = arena.room(len);
        chunk.put_bytes(7, len);
        chunk.split().freeze()
    }

    /// A full chunk is used again once every event cut from it is gone, and not before.
    #[test]
    fn chunks_are_reused_once_their_events_are_gone() {
        let mut arena = Arena::new();
        let half = CHUNK / 2;
        let first = cut(&mut arena, half);
        let kept = cut(&mut arena, half);
        // The first chunk is full: a second one, while `first` and `kept` live.
        let second = cut(&mut arena, half);
        assert_ne!(second.as_ptr(), first.as_ptr());
        let _ = cut(&mut arena, half);
        // The oldest full chunk is still in use (`kept`): a third.
        let third = cut(&mut arena, half);
        assert_ne!(third.as_ptr(), first.as_ptr());
        assert_ne!(third.as_ptr(), second.as_ptr());
        let first_at = first.as_ptr();
        drop((first, kept));
        let _ = cut(&mut arena, half);
        // Now the first chunk's events are gone: it is reused from its start.
        let reused = cut(&mut arena, half);
        assert_eq!(reused.as_ptr(), first_at);
        assert!(reused.iter().all(|&b| b == 7));

        // A message larger than a chunk gets a chunk of its own, which is not kept.
        let large = cut(&mut arena, CHUNK + 1);
        assert_eq!(large.len(), CHUNK + 1);
        drop(large);
        let _ = cut(&mut arena, half);
        assert!(arena.spent.iter().all(|c| c.capacity() <= CHUNK));
        assert!(arena.spent.len() <= SPENT);
    }
}
