//! How an event maps onto a Pulsar message, exactly and reversibly, while staying an ordinary
//! message for every other Pulsar client.
//!
//! | event | message |
//! |---|---|
//! | payload | the payload |
//! | key, UTF-8 and not empty | the partition key |
//! | key, anything else | the partition key as base64 with `partition_key_b64_encoded` (Java's `keyBytes`), and the raw bytes as the ordering key |
//! | timestamp after the epoch | `event_time` |
//! | timestamp at or before the epoch (`event_time` 0 means "unset") | property `tributary-ts` |
//! | headers | properties, through `tributary::envelope`: one property each when names are unique and values UTF-8 (plus `tributary-order` with two or more), else the header block in the payload and `tributary-envelope` = `1` |
//!
//! Reading: a message without `tributary-envelope` is a plain event whatever client wrote it:
//! properties become headers (in name order), the partition key (or, without one, the
//! ordering key) the key, `event_time` (else the publish time) the timestamp.

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use pulsar::message::proto::{KeyValue, MessageMetadata};
use tributary::envelope::{self, AttributeRules};
use tributary::{Event, Headers, Timestamp};

/// Pulsar properties have no limits of their own beyond the message size.
const RULES: AttributeRules = AttributeRules::unlimited();

/// An event as the fields of a Pulsar message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Encoded {
    pub payload: Bytes,
    pub properties: HashMap<String, String>,
    pub partition_key: Option<String>,
    pub key_is_base64: bool,
    pub ordering_key: Option<Vec<u8>>,
    pub event_time: Option<u64>,
}

impl Encoded {
    /// Bytes counted against the event limit: payload, keys, and properties with their
    /// framing (up to 8 bytes each); the metadata's fixed fields are in `METADATA_RESERVE`.
    pub(crate) fn size(&self) -> usize {
        self.payload.len()
            + self.partition_key.as_ref().map_or(0, String::len)
            + self.ordering_key.as_ref().map_or(0, Vec::len)
            + self
                .properties
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum::<usize>()
    }

    /// The message for the `pulsar` crate.
    pub(crate) fn into_message(self) -> pulsar::producer::Message {
        pulsar::producer::Message {
            payload: self.payload.to_vec(),
            properties: self.properties,
            partition_key: self.partition_key,
            partition_key_b64_encoded: self.key_is_base64.then_some(true),
            ordering_key: self.ordering_key,
            event_time: self.event_time,
            ..Default::default()
        }
    }
}

/// The partition key `encode` gives `event`, for routing before the event is encoded.
pub(crate) fn partition_key(event: &Event) -> Option<Cow<'_, str>> {
    let key = event.key.as_ref()?;
    Some(key_text(key).map_or_else(|| Cow::Owned(BASE64.encode(key)), Cow::Borrowed))
}

/// A key that is non-empty UTF-8 is its own partition key; any other travels as base64.
fn key_text(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key)
        .ok()
        .filter(|text| !text.is_empty())
}

/// At least `encode(event).size()`, without encoding: a producer checks the limit with this
/// and encodes ahead only an event near it, so that a batch's events can be encoded as they
/// are sent and still all be checked before the first is.
pub(crate) fn size_bound(event: &Event) -> usize {
    let headers = &event.headers;
    let fields: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 8).sum();
    // As properties, with two or more headers their names as a JSON list too (escaping makes
    // at most 6 bytes of one); or else in the payload's header block, marked by a property.
    let order = match headers.len() {
        0 | 1 => 0,
        _ => {
            envelope::ORDER.len()
                + 8
                + 2
                + headers.iter().map(|(n, _)| 6 * n.len() + 3).sum::<usize>()
        }
    };
    let block = 4 + fields + envelope::ENVELOPE.len() + 1 + 8;
    // A key that is not UTF-8 goes as base64 and again as the ordering key.
    let key = event
        .key
        .as_ref()
        .map_or(0, |k| k.len().div_ceil(3) * 4 + k.len());
    // A timestamp at or before the epoch is a property: up to 20 digits and a sign.
    let time = envelope::TIMESTAMP.len() + 20 + 8;
    event.payload.len() + (fields + order).max(block) + key + time
}

pub(crate) fn encode(event: &Event) -> Encoded {
    let (payload, properties) =
        envelope::encode_headers_into(&event.headers, &event.payload, &RULES);
    let mut encoded = Encoded {
        payload,
        properties,
        ..Encoded::default()
    };
    if let Some(key) = &event.key {
        match key_text(key) {
            Some(text) => encoded.partition_key = Some(text.to_owned()),
            None => {
                encoded.partition_key = Some(BASE64.encode(key));
                encoded.key_is_base64 = true;
                encoded.ordering_key = Some(key.to_vec());
            }
        }
    }
    match event.timestamp.map(Timestamp::as_millis) {
        Some(ms) if ms > 0 => encoded.event_time = Some(ms as u64),
        Some(ms) => {
            encoded
                .properties
                .insert(envelope::TIMESTAMP.to_owned(), ms.to_string());
        }
        None => {}
    }
    encoded
}

/// Reads a message back, taking its metadata apart: the key and the properties move into the
/// event instead of being copied. A malformed envelope yields the message as it came (every
/// property a header) and the reason, for a log line; nothing panics, nothing is dropped.
pub(crate) fn decode(data: Bytes, mut metadata: MessageMetadata) -> (Event, Option<String>) {
    let mut problem = None;
    let b64 = metadata.partition_key_b64_encoded();
    let key = match metadata.partition_key.take() {
        Some(key) if b64 => match BASE64.decode(key.as_bytes()) {
            Ok(raw) => Some(Bytes::from(raw)),
            Err(e) => {
                problem = Some(format!("the base64 partition key does not decode: {e}"));
                Some(Bytes::from(key.into_bytes()))
            }
        },
        Some(key) => Some(Bytes::from(key.into_bytes())),
        None => metadata.ordering_key.take().map(Bytes::from),
    };
    let mut event = Event::new(data);
    event.key = key;
    if let Some(headers) = plain_properties(&mut metadata.properties) {
        // No tributary property and no repeated name: the headers are the properties in
        // name order, as `envelope::decode_headers` would make them, without its map.
        let ms = metadata
            .event_time
            .filter(|&t| t > 0)
            .unwrap_or(metadata.publish_time);
        event.timestamp = Some(Timestamp::from_millis(ms as i64));
        event.headers = headers;
        return (event, problem);
    }
    decode_properties(event, &metadata, problem)
}

/// The properties as headers in name order, moved out of `wire`, when none is tributary's own
/// and no name repeats (what tributary writes for a few headers, and what most clients do);
/// `None`, and `wire` untouched, otherwise.
fn plain_properties(wire: &mut Vec<KeyValue>) -> Option<Headers> {
    // Quadratic, so only for a handful; more go through the map.
    const FEW: usize = 8;
    if wire.len() > FEW {
        return None;
    }
    let reserved = |name: &str| {
        matches!(
            name,
            envelope::ENVELOPE | envelope::ORDER | envelope::TIMESTAMP
        )
    };
    for (i, kv) in wire.iter().enumerate() {
        if reserved(&kv.key) || wire[..i].iter().any(|earlier| earlier.key == kv.key) {
            return None;
        }
    }
    let mut properties = std::mem::take(wire);
    properties.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    Some(
        properties
            .into_iter()
            .map(|kv| (kv.key, Bytes::from(kv.value.into_bytes())))
            .collect(),
    )
}

/// Everything else: tributary's own properties (the header order, the envelope, an old
/// timestamp) and repeated names.
fn decode_properties(
    mut event: Event,
    metadata: &MessageMetadata,
    mut problem: Option<String>,
) -> (Event, Option<String>) {
    let mut properties: HashMap<String, String> = metadata
        .properties
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    // Only a client that repeats a property name needs the list as it came.
    let repeated = properties.len() < metadata.properties.len();
    let wire = || {
        metadata
            .properties
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
    };
    let ts_property = properties.remove(envelope::TIMESTAMP);
    let timestamp = match (metadata.event_time.filter(|&t| t > 0), ts_property) {
        (Some(t), _) => Some(Timestamp::from_millis(t as i64)),
        (None, Some(raw)) => match raw.parse::<i64>() {
            Ok(ms) => Some(Timestamp::from_millis(ms)),
            Err(_) => {
                problem.get_or_insert_with(|| {
                    format!("property {} is not a number", envelope::TIMESTAMP)
                });
                Some(Timestamp::from_millis(metadata.publish_time as i64))
            }
        },
        (None, None) => Some(Timestamp::from_millis(metadata.publish_time as i64)),
    };
    event.timestamp = timestamp;
    if repeated && !properties.contains_key(envelope::ENVELOPE) {
        // A client that repeats a property name: keep every one, in wire order.
        event.headers = wire()
            .filter(|(name, _)| name != envelope::TIMESTAMP)
            .collect();
        return (event, problem);
    }
    match envelope::decode_headers(event.payload.clone(), properties) {
        Ok(decoded) => {
            event.headers = decoded.headers;
            event.payload = decoded.payload;
            if let Some(p) = decoded.problem {
                problem.get_or_insert(p);
            }
        }
        Err(e) => {
            event.headers = envelope::plain_headers(wire());
            problem = Some(e.to_string());
        }
    }
    (event, problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the broker hands a consumer for `encoded`, publish time 42.
    fn as_received(encoded: &Encoded) -> MessageMetadata {
        MessageMetadata {
            properties: encoded
                .properties
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            partition_key: encoded.partition_key.clone(),
            partition_key_b64_encoded: encoded.key_is_base64.then_some(true),
            ordering_key: encoded.ordering_key.clone(),
            event_time: encoded.event_time,
            publish_time: 42,
            ..Default::default()
        }
    }

    fn round_trip(event: &Event) -> Event {
        let encoded = encode(event);
        let (decoded, problem) = decode(encoded.payload.clone(), as_received(&encoded));
        assert_eq!(problem, None);
        decoded
    }

    #[test]
    fn plain_events_look_plain() {
        let event = Event::new("hello")
            .with_key("order-7")
            .with_header("trace", "abc")
            .with_timestamp(Timestamp::from_millis(1_700_000_000_123));
        let encoded = encode(&event);
        assert_eq!(encoded.payload.as_ref(), b"hello");
        assert_eq!(encoded.partition_key.as_deref(), Some("order-7"));
        assert_eq!(encoded.ordering_key, None);
        assert_eq!(encoded.event_time, Some(1_700_000_000_123));
        assert_eq!(
            encoded.properties,
            HashMap::from([("trace".to_owned(), "abc".to_owned())])
        );
        assert_eq!(round_trip(&event), event);
    }

    #[test]
    fn binary_keys_and_old_timestamps() {
        let event = Event::new("x")
            .with_key(vec![0xfe, 0x00])
            .with_timestamp(Timestamp::from_millis(-5));
        let encoded = encode(&event);
        assert_eq!(encoded.partition_key.as_deref(), Some("/gA="));
        assert!(encoded.key_is_base64);
        assert_eq!(encoded.ordering_key.as_deref(), Some(&[0xfe, 0x00][..]));
        assert_eq!(encoded.event_time, None);
        assert_eq!(encoded.properties["tributary-ts"], "-5");
        assert_eq!(round_trip(&event), event);
        let empty_key = Event::new("y").with_key("");
        assert_eq!(round_trip(&empty_key).key.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn messages_from_other_clients_read_as_plain_events() {
        let metadata = MessageMetadata {
            properties: vec![
                KeyValue {
                    key: "b".into(),
                    value: "2".into(),
                },
                KeyValue {
                    key: "a".into(),
                    value: "1".into(),
                },
            ],
            ordering_key: Some(vec![1, 2]),
            publish_time: 7,
            ..Default::default()
        };
        let (event, problem) = decode(Bytes::from_static(b"x"), metadata.clone());
        assert_eq!(problem, None);
        assert_eq!(
            event.key.as_deref(),
            Some(&[1u8, 2][..]),
            "the ordering key without a partition key"
        );
        assert_eq!(event.timestamp, Some(Timestamp::from_millis(7)));
        let names: Vec<_> = event.headers.iter().map(|(n, _)| n.to_owned()).collect();
        assert_eq!(names, ["a", "b"]);
        let mut repeated = metadata.clone();
        repeated.properties.push(KeyValue {
            key: "b".into(),
            value: "3".into(),
        });
        let (event, _) = decode(Bytes::from_static(b"x"), repeated);
        assert_eq!(event.headers.get_all("b").count(), 2, "{:?}", event.headers);
    }

    #[test]
    fn a_malformed_envelope_keeps_the_message() {
        let metadata = MessageMetadata {
            properties: vec![KeyValue {
                key: "tributary-envelope".into(),
                value: "1".into(),
            }],
            ..Default::default()
        };
        let (event, problem) = decode(Bytes::from_static(b"\x00\x00\x00\x09ab"), metadata);
        assert!(problem.is_some());
        assert_eq!(event.payload.as_ref(), b"\x00\x00\x00\x09ab");
        assert_eq!(event.headers.len(), 1);
    }

    fn arbitrary_event() -> impl Strategy<Value = Event> {
        let header = (".{0,12}", prop::collection::vec(any::<u8>(), 0..20));
        (
            prop::collection::vec(any::<u8>(), 0..64),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
            prop::option::of(-10_000_000_000_000i64..10_000_000_000_000),
            prop::collection::vec(header, 0..6),
        )
            .prop_map(|(payload, key, timestamp, headers)| {
                let mut event = Event::new(payload);
                event.key = key.map(Bytes::from);
                event.timestamp = timestamp.map(Timestamp::from_millis);
                event.headers = headers.into_iter().collect();
                event
            })
    }

    proptest! {
        /// Every event survives the trip exactly (a missing timestamp becomes the publish time).
        #[test]
        fn every_event_round_trips(event in arbitrary_event()) {
            let mut want = event.clone();
            want.timestamp.get_or_insert(Timestamp::from_millis(42));
            prop_assert_eq!(round_trip(&event), want);
        }

        /// The bound a producer checks the limit with is never below the encoded size, and
        /// events are routed by the partition key they are encoded with.
        #[test]
        fn size_bound_and_routing_key_match_the_encoding(event in arbitrary_event()) {
            let encoded = encode(&event);
            prop_assert!(size_bound(&event) >= encoded.size());
            let key = partition_key(&event);
            prop_assert_eq!(key.as_deref(), encoded.partition_key.as_deref());
        }
    }
}
