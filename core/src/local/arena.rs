//! Keys and payloads of small events copied into shared arenas when a log takes them, so
//! every later clone (a read, a delivery, the copy a group keeps for redelivery) is a
//! reference-count bump on the arena and never an allocation.

use crate::Event;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;

/// Events up to this size (key + payload) move into shared arenas; larger ones keep their own
/// buffers (copying them would cost more than the allocations saved).
const ARENA_EVENT: usize = 4 << 10;
/// Size of one arena: what a kept or delivered event can keep alive beyond itself is bounded by
/// it.
const ARENA_BYTES: usize = 64 << 10;

/// Least capacity of a new arena an [`Arena`] starts: its appends may be single events, and
/// each arena costs two allocations (its buffer and, once shared, the `bytes` crate's header).
const KEPT_ARENA: usize = 4 << 10;

/// The events with their keys and payloads copied into a few shared buffers, for a log that
/// keeps them in memory (the file log's tail).
///
/// A key or payload built from a `Vec` is promoted to a shared buffer (an allocation) the first
/// time it is cloned, and each reader clones every record it is served: in the profiles this was
/// two allocations and two frees per event on the consumer's path. Slices of one arena are
/// clones by reference count, and the senders' buffers are freed here.
pub(super) fn share(events: &mut [Event]) {
    fill(&mut BytesMut::new(), events, 0);
}

/// An arena a log keeps from one append to the next (the memory log): appends of one or a few
/// events fill the same buffer instead of each allocating its own, so sharing their keys and
/// payloads costs no allocation per append. What it holds beyond the events in it is its
/// unfilled capacity (at most [`ARENA_BYTES`]).
#[derive(Default)]
pub(super) struct Arena(Mutex<BytesMut>);

impl Arena {
    /// [`share`] into this arena's buffer, and new ones of at least [`KEPT_ARENA`] when it fills.
    pub(super) fn share(&self, events: &mut [Event]) {
        fill(&mut self.0.lock(), events, KEPT_ARENA);
    }
}

fn size_of(event: &Event) -> usize {
    event.key.as_ref().map_or(0, Bytes::len) + event.payload.len()
}

/// Copies the small events' keys and payloads into `arena`, starting new arenas (of at least
/// `least` bytes, and of at most [`ARENA_BYTES`] unless one event needs more) when it fills,
/// and points the events at the copies.
fn fill(arena: &mut BytesMut, events: &mut [Event], least: usize) {
    // What the arenas still have to take: a new one is allocated to fit, never larger.
    let mut remaining: usize = events
        .iter()
        .map(size_of)
        .filter(|size| *size <= ARENA_EVENT)
        .sum();
    // The events whose bytes are in `arena` now: from `first` on, skipping large ones.
    let mut first = 0;
    let point_into = |arena: &mut BytesMut, events: &mut [Event]| {
        if arena.is_empty() {
            return;
        }
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
        if arena.capacity() - arena.len() < size {
            point_into(arena, &mut events[first..i]);
            first = i;
            *arena = BytesMut::with_capacity(remaining.max(least).min(ARENA_BYTES).max(size));
        }
        remaining -= size;
        if let Some(key) = &events[i].key {
            arena.extend_from_slice(key);
        }
        arena.extend_from_slice(&events[i].payload);
    }
    point_into(arena, &mut events[first..]);
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

    #[test]
    fn a_kept_arena_takes_appends_of_one_event_into_one_buffer() {
        let arena = Arena::default();
        let big = vec![7u8; ARENA_EVENT + 1];
        let mut kept: Vec<Event> = Vec::new();
        for i in 0..3000u32 {
            let payload = if i % 500 == 499 {
                big.clone()
            } else {
                i.to_be_bytes().repeat(5)
            };
            let original = Event::new(payload).with_key(format!("k{i}"));
            let mut one = vec![original.clone()];
            let before = one[0].payload.as_ptr();
            arena.share(&mut one);
            assert_eq!(one[0].key, original.key);
            assert_eq!(one[0].payload, original.payload);
            if size_of(&original) > ARENA_EVENT {
                assert_eq!(
                    one[0].payload.as_ptr(),
                    before,
                    "a large event keeps its buffer"
                );
            }
            kept.extend(one);
        }
        // Small events of consecutive appends sit next to each other in one buffer (no arena
        // per append), and an arena holds at most ARENA_BYTES.
        let small: Vec<&Event> = kept.iter().filter(|e| size_of(e) <= ARENA_EVENT).collect();
        let adjacent = small
            .windows(2)
            .filter(|w| {
                let end = w[0].payload.as_ptr() as usize + w[0].payload.len();
                w[1].key.as_ref().expect("keyed").as_ptr() as usize == end
            })
            .count();
        let total: usize = small.iter().map(|e| size_of(e)).sum();
        assert!(
            small.len() - 1 - adjacent <= total / KEPT_ARENA + 1,
            "{adjacent} of {} appends followed the one before",
            small.len() - 1
        );
        for (i, e) in kept.iter().enumerate() {
            assert_eq!(e.key.as_deref(), Some(format!("k{i}").as_bytes()));
        }
    }
}
