//! The Pub/Sub envelope (the backend's own source file, compiled in here): decoding any message
//! never panics, and every event survives encode then decode unchanged.
#![no_main]

#[allow(dead_code)]
#[path = "../../backends/pubsub/src/envelope.rs"]
mod envelope;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use tributary::{Event, Timestamp};

/// Splits `data` at 0xFF bytes: message data, ordering key, then attribute names and values.
fn message(data: &[u8]) -> (Bytes, HashMap<String, String>, String) {
    let mut parts = data.split(|b| *b == 0xff);
    let body = Bytes::copy_from_slice(parts.next().unwrap_or_default());
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let ordering = parts.next().map(text).unwrap_or_default();
    let mut attributes = HashMap::new();
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        attributes.insert(text(k), text(v));
    }
    (body, attributes, ordering)
}

fuzz_target!(|data: &[u8]| {
    let (body, attributes, ordering) = message(data);
    let _ = envelope::decode(body.clone(), attributes.clone(), ordering.clone(), Some(7));

    // The same bytes as an event: key, headers and payload from the parts.
    let mut event = Event::new(body.clone());
    if !ordering.is_empty() {
        event = event.with_key(ordering.clone().into_bytes());
    }
    for (k, v) in &attributes {
        event = event.with_header(k.clone(), v.clone().into_bytes());
    }
    if data.len() % 3 == 0 {
        event = event.with_timestamp(Timestamp::from_millis(data.len() as i64 * 1_000));
    }
    let encoded = envelope::encode(&event);
    let (decoded, problem) = envelope::decode(
        encoded.data,
        encoded.attributes,
        encoded.ordering_key,
        Some(7),
    );
    assert!(problem.is_none(), "{problem:?}");
    // Without a tributary timestamp the message's publish time stands in (documented).
    let mut expected = event;
    expected.timestamp = expected.timestamp.or(Some(Timestamp::from_millis(7)));
    assert_eq!(decoded, expected);
});
