//! The Kinesis envelope (`tributary_kinesis::envelope`): any record decodes without a panic,
//! and what it decodes to survives encode then decode unchanged; any event survives encode
//! then decode unchanged, on a partition key Kinesis accepts.
//!
//! Input: a record as `partition key, 0xFF, data` (0xFF never occurs in UTF-8); the same bytes
//! cut at 0xFE give an event (payload, key, then header names and values).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tributary::{Event, Timestamp};
use tributary_kinesis::envelope;

const ARRIVAL: Timestamp = Timestamp::from_millis(1_700_000_000_000);

/// Encodes `event`, checks the partition key, and decodes it back with `arrival`.
fn round_trip(event: &Event, arrival: Option<Timestamp>) -> Event {
    let encoded = envelope::encode(event, || 0x0123_4567_89ab_cdef);
    let key_len = encoded.partition_key.len();
    assert!(
        (1..=256).contains(&key_len),
        "partition key of {key_len} bytes"
    );
    let (decoded, problem) = envelope::decode(&encoded.partition_key, encoded.data, arrival);
    assert_eq!(problem, None, "our own record: {event:?}");
    decoded
}

fn event_from(data: &[u8]) -> Event {
    let mut parts = data.split(|b| *b == 0xfe);
    let mut event = Event::new(Bytes::copy_from_slice(parts.next().unwrap_or_default()));
    if let Some(key) = parts.next() {
        event = event.with_key(Bytes::copy_from_slice(key));
    }
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        event = event.with_header(
            String::from_utf8_lossy(name).into_owned(),
            Bytes::copy_from_slice(value),
        );
    }
    if data.len() % 3 == 0 {
        event = event.with_timestamp(Timestamp::from_millis(-(data.len() as i64) * 1_000));
    }
    event
}

fuzz_target!(|data: &[u8]| {
    // Any record: decoding never panics; whatever it gives (a plain event, an unwrapped one, or
    // one delivered as it is with a problem) is an event, and events survive the trip.
    let (partition_key, record) = match data.iter().position(|b| *b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b"k"[..], data),
    };
    let partition_key = String::from_utf8_lossy(partition_key);
    let arrival = (data.len() % 2 == 0).then_some(ARRIVAL);
    let (decoded, _problem) =
        envelope::decode(&partition_key, Bytes::copy_from_slice(record), arrival);
    if decoded.timestamp.is_none() {
        assert_eq!(
            arrival, None,
            "a record without a timestamp gets its arrival"
        );
    }
    assert_eq!(round_trip(&decoded, None), decoded);

    // The bytes as an event: exactly the same after the trip, the arrival standing in for a
    // missing timestamp.
    let event = event_from(data);
    let mut expected = event.clone();
    expected.timestamp = expected.timestamp.or(Some(ARRIVAL));
    assert_eq!(round_trip(&event, Some(ARRIVAL)), expected);
});
