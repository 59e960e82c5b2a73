//! Keys and payloads of small events copied into shared arenas when a log takes them, so
//! every later clone (a read, a delivery, the copy a group keeps for redelivery) is a
//! reference-count bump on the arena and never an allocation.

use crate::Event;
use bytes::{Bytes, BytesMut};

/// Events up to this size (key + payload) move into shared arenas; larger ones keep their own
/// buffers (copying them would cost more than the allocations saved).
const ARENA_EVENT: usize = 4 << 10;
/// Size of one arena: what a kept or delivered event can keep alive beyond itself is bounded by
/// it.
const ARENA_BYTES: usize = 64 << 10;

/// The events with their keys and payloads copied into a few shared buffers, for a log that
/// keeps them in memory (the memory log, the file log's tail).
///
/// A key or payload built from a `Vec` is promoted to a shared buffer (an allocation) the first
/// time it is cloned, and each reader clones every record it is served: in the profiles this was
/// two allocations and two frees per event on the consumer's path. Slices of one arena are
/// clones by reference count, and the senders' buffers are freed here.
pub(super) fn share(events: &mut [Event]) {
    let size_of = |event: &Event| event.key.as_ref().map_or(0, Bytes::len) + event.payload.len();
    // What the arenas still have to take: each is allocated to fit, never larger.
    let mut remaining: usize = events
        .iter()
        .map(size_of)
        .filter(|size| *size <= ARENA_EVENT)
        .sum();
    let mut arena = BytesMut::new();
    // The events whose bytes are in `arena` now: from `first` on, skipping large ones.
    let mut first = 0;
    let point_into = |arena: &mut BytesMut, events: &mut [Event]| {
        let frozen = arena.split().freeze();
        let mut at = 0;
        for event in events.iter_mut().filter(|e| size_of(e) <= ARENA_EVENT) {
            if let Some(key) = &mut event.key {
                *key = frozen.slice(at..at + key.len());
                at += key.len();
            }
            event.payload = frozen.slice(at..at + event.payload.len());
            at += event.payload.len();
        }
    };
    for i in 0..events.len() {
        let size = size_of(&events[i]);
        if size > ARENA_EVENT {
            continue;
        }
        if arena.len() + size > ARENA_BYTES {
            point_into(&mut arena, &mut events[first..i]);
            first = i;
        }
        if arena.capacity() - arena.len() < size {
            arena.reserve(remaining.min(ARENA_BYTES).max(size));
        }
        remaining -= size;
        if let Some(key) = &events[i].key {
            arena.extend_from_slice(key);
        }
        arena.extend_from_slice(&events[i].payload);
    }
    point_into(&mut arena, &mut events[first..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_events_keep_their_bytes_and_order() {
        let big = vec![7u8; ARENA_EVENT + 1];
        let events: Vec<Event> = (0..2000u32)
            .map(|i| {
                let payload = if i == 1000 {
                    big.clone()
                } else {
                    i.to_be_bytes().repeat(10)
                };
                let mut e = Event::new(payload).with_header("h", i.to_string());
                if i % 3 != 0 {
                    e = e.with_key(format!("key-{i}"));
                }
                e
            })
            .collect();
        let mut shared = events.clone();
        share(&mut shared);
        assert_eq!(shared.len(), events.len());
        for (a, b) in events.iter().zip(&shared) {
            assert_eq!(a.key, b.key);
            assert_eq!(a.payload, b.payload);
            assert_eq!(a.headers, b.headers);
        }
    }
}
