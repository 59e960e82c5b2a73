//! The exact size of an event as a Kafka record (message format v2), so that "too large" is
//! decided before the event is queued, with the same arithmetic the broker uses.

use tributary::Event;

/// Fixed header of a record batch (base offset … record count).
pub(crate) const BATCH_OVERHEAD: usize = 61;

fn varint_len(value: i64) -> usize {
    // Zig-zag, then 7 bits per byte.
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn bytes_len(len: Option<usize>) -> usize {
    match len {
        None => varint_len(-1),
        Some(n) => varint_len(n as i64) + n,
    }
}

/// Bytes the event takes in a batch of its own: batch header plus the record.
pub(crate) fn batch_size(event: &Event) -> usize {
    sized(
        event.key.as_ref().map(|k| k.len()),
        event.payload.len(),
        event
            .headers
            .iter()
            .map(|(name, value)| (name.len(), value.len())),
    )
}

fn sized(
    key: Option<usize>,
    payload: usize,
    headers: impl ExactSizeIterator<Item = (usize, usize)>,
) -> usize {
    let mut body = 1 // attributes
        + varint_len(0) // timestamp delta
        + varint_len(0) // offset delta
        + bytes_len(key)
        + bytes_len(Some(payload))
        + varint_len(headers.len() as i64);
    for (name, value) in headers {
        body += bytes_len(Some(name)) + bytes_len(Some(value));
    }
    BATCH_OVERHEAD + varint_len(body as i64) + body
}

/// The largest payload of an event without key or headers that fits in `limit` bytes.
pub(crate) fn max_payload(limit: usize) -> usize {
    let fits = |payload: usize| sized(None, payload, std::iter::empty()) <= limit;
    let mut payload = limit.saturating_sub(BATCH_OVERHEAD);
    while payload > 0 && !fits(payload) {
        payload -= 1;
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_the_protocol() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(-1), 1);
        assert_eq!(varint_len(63), 1);
        assert_eq!(varint_len(64), 2);
        assert_eq!(varint_len(8191), 2);
        assert_eq!(varint_len(8192), 3);
    }

    #[test]
    fn a_small_record_has_the_known_size() {
        // Kafka's DefaultRecord.sizeInBytes for key "k", value "v", no headers: a 1-byte length
        // plus 8 bytes of body.
        let e = Event::new("v").with_key("k");
        assert_eq!(batch_size(&e), BATCH_OVERHEAD + 9);
    }

    #[test]
    fn the_largest_payload_fits_and_one_more_does_not() {
        let limit = 1_048_588;
        let max = max_payload(limit);
        assert!(batch_size(&Event::new(vec![0u8; max])) <= limit);
        assert!(batch_size(&Event::new(vec![0u8; max + 1])) > limit);
    }
}
