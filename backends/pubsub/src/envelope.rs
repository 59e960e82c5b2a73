//! How a tributary event maps onto a Pub/Sub message, exactly and reversibly, while staying a
//! normal message for every other Pub/Sub client.
//!
//! Pub/Sub messages have `data` (bytes), `attributes` (an unordered map of UTF-8 strings, at
//! most 100, names up to 256 bytes and not starting with `goog`, values up to 1024 bytes), an
//! `ordering_key` (a UTF-8 string) and a server-set `publish_time`. Mapping, version 1:
//!
//! | event | message |
//! |---|---|
//! | payload | `data` |
//! | key (UTF-8, non-empty) | `ordering_key` |
//! | key (anything else) | `ordering_key` = base64 of the key, plus attribute `tributary-key` = the same base64 |
//! | timestamp | attribute `tributary-ts` = milliseconds since the epoch (decimal) |
//! | headers that fit attributes | one attribute each; with two or more, `tributary-order` = JSON array of the names in order |
//! | headers that do not fit | attribute `tributary-envelope` = `1` and `data` = header block + payload (below) |
//!
//! Headers "fit" when names are unique, not reserved (`goog…`, `tributary-…`), at most 256
//! bytes, values are UTF-8 of at most 1024 bytes, and there are at most 90 of them. Otherwise
//! (binary values, repeated names, …) the headers travel in `data`, in the header block of
//! `tributary::envelope` (the codec Pulsar uses too):
//! `u32 count`, then per header `u32 name length`, name, `u32 value length`, value (big-endian
//! lengths), then the payload. Only tributary sets `tributary-envelope`, so a message from any
//! other client reads as a plain event: its attributes become headers (in name order), its
//! ordering key the key, its publish time the timestamp.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use tributary::envelope::{self as codec, AttributeRules};
use tributary::{Event, Timestamp};

pub(crate) const KEY: &str = "tributary-key";
pub(crate) const TIMESTAMP: &str = codec::TIMESTAMP;
#[cfg(test)]
pub(crate) const ORDER: &str = codec::ORDER;
#[cfg(test)]
pub(crate) const ENVELOPE: &str = codec::ENVELOPE;
/// Pub/Sub's attribute limits, less room for tributary's own attributes.
const RULES: AttributeRules = AttributeRules::new(90, 256, 1024, &["goog"]);

/// The parts of a Pub/Sub message tributary sets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Encoded {
    pub data: Bytes,
    pub attributes: HashMap<String, String>,
    pub ordering_key: String,
}

impl Encoded {
    /// What the service counts against its message size limit.
    pub(crate) fn size(&self) -> usize {
        self.data.len()
            + self.ordering_key.len()
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

pub(crate) fn encode(event: &Event) -> Encoded {
    let mut attributes = HashMap::new();
    let mut ordering_key = String::new();
    if let Some(key) = &event.key {
        match std::str::from_utf8(key) {
            Ok(text) if !text.is_empty() => ordering_key = text.to_owned(),
            _ => {
                let encoded = BASE64.encode(key);
                attributes.insert(KEY.to_owned(), encoded.clone());
                ordering_key = encoded;
            }
        }
    }
    if let Some(timestamp) = event.timestamp {
        attributes.insert(TIMESTAMP.to_owned(), timestamp.as_millis().to_string());
    }
    let encoded = codec::encode_headers(&event.headers, &event.payload, &RULES);
    attributes.extend(encoded.attributes);
    Encoded {
        data: encoded.body,
        attributes,
        ordering_key,
    }
}

/// Reads a message back. `publish_time_ms` is the service's publish time, used when the
/// message carries no tributary timestamp. A malformed envelope yields the message as a plain
/// event (nothing is lost, nothing panics) and `Err` with the reason, for a log line.
pub(crate) fn decode(
    data: Bytes,
    mut attributes: HashMap<String, String>,
    ordering_key: String,
    publish_time_ms: Option<i64>,
) -> (Event, Option<String>) {
    let mut problem = None;
    let raw = attributes.clone();
    let key = match attributes.remove(KEY) {
        Some(encoded) => match BASE64.decode(encoded.as_bytes()) {
            Ok(key) => Some(Bytes::from(key)),
            Err(e) => {
                problem = Some(format!("attribute {KEY} is not base64: {e}"));
                Some(Bytes::from(encoded.into_bytes()))
            }
        },
        None if !ordering_key.is_empty() => Some(Bytes::from(ordering_key.into_bytes())),
        None => None,
    };
    let timestamp = match attributes.remove(TIMESTAMP).map(|t| t.parse::<i64>()) {
        Some(Ok(ms)) => Some(Timestamp::from_millis(ms)),
        Some(Err(_)) => {
            problem.get_or_insert_with(|| format!("attribute {TIMESTAMP} is not a number"));
            publish_time_ms.map(Timestamp::from_millis)
        }
        None => publish_time_ms.map(Timestamp::from_millis),
    };
    let mut event = Event::new(data.clone());
    event.key = key;
    event.timestamp = timestamp;
    match codec::decode_headers(data, attributes) {
        Ok(decoded) => {
            event.headers = decoded.headers;
            event.payload = decoded.payload;
            if let Some(p) = decoded.problem {
                problem.get_or_insert(p);
            }
            (event, problem)
        }
        // Keep everything the message had, so nothing is silently dropped.
        Err(e) => {
            event.headers = codec::plain_headers(raw);
            (event, Some(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(event: &Event) -> Event {
        let encoded = encode(event);
        let (decoded, problem) = decode(
            encoded.data,
            encoded.attributes,
            encoded.ordering_key,
            Some(42),
        );
        assert_eq!(problem, None);
        decoded
    }

    #[test]
    fn plain_events_look_plain() {
        let event = Event::new("hello")
            .with_key("order-7")
            .with_header("trace", "abc")
            .with_header("origin", "eu")
            .with_timestamp(Timestamp::from_millis(1_700_000_000_123));
        let encoded = encode(&event);
        assert_eq!(encoded.data.as_ref(), b"hello");
        assert_eq!(encoded.ordering_key, "order-7");
        assert_eq!(
            encoded.attributes.get("trace").map(String::as_str),
            Some("abc")
        );
        assert_eq!(
            encoded.attributes.get(TIMESTAMP).map(String::as_str),
            Some("1700000000123")
        );
        assert_eq!(
            encoded.attributes.get(ORDER).map(String::as_str),
            Some(r#"["trace","origin"]"#)
        );
        assert!(!encoded.attributes.contains_key(ENVELOPE));
        assert_eq!(round_trip(&event), event);
    }

    #[test]
    fn binary_and_repeated_headers_use_the_envelope() {
        let event = Event::new(vec![0xff, 0])
            .with_key(vec![0xfe, 0x00])
            .with_header("bin", vec![0u8, 255])
            .with_header("dup", "1")
            .with_header("dup", "2");
        let encoded = encode(&event);
        assert_eq!(
            encoded.attributes.get(ENVELOPE).map(String::as_str),
            Some("1")
        );
        assert_eq!(
            encoded.attributes.get(KEY).map(String::as_str),
            Some("/gA=")
        );
        assert_eq!(encoded.ordering_key, "/gA=");
        let mut want = event.clone();
        want.timestamp = Some(Timestamp::from_millis(42));
        assert_eq!(round_trip(&event), want);
    }

    /// The exact bytes and attributes Pub/Sub messages carry, pinned so that data written by
    /// earlier versions keeps reading (and other readers keep parsing what is written now).
    #[test]
    fn the_wire_format_is_pinned() {
        let event = Event::new("pay")
            .with_key(vec![0xfe, 0x00])
            .with_header("bin", vec![0u8, 255])
            .with_header("dup", "1")
            .with_header("dup", "2")
            .with_timestamp(Timestamp::from_millis(-5));
        let encoded = encode(&event);
        let want: &[u8] = b"\x00\x00\x00\x03\
            \x00\x00\x00\x03bin\x00\x00\x00\x02\x00\xff\
            \x00\x00\x00\x03dup\x00\x00\x00\x011\
            \x00\x00\x00\x03dup\x00\x00\x00\x012\
            pay";
        assert_eq!(encoded.data.as_ref(), want);
        assert_eq!(encoded.ordering_key, "/gA=");
        let mut attributes: Vec<_> = encoded.attributes.into_iter().collect();
        attributes.sort();
        assert_eq!(
            attributes,
            [
                ("tributary-envelope".to_owned(), "1".to_owned()),
                ("tributary-key".to_owned(), "/gA=".to_owned()),
                ("tributary-ts".to_owned(), "-5".to_owned()),
            ]
        );
        let plain = encode(&Event::new("p").with_header("a", "x").with_header("b", "y"));
        assert_eq!(plain.data.as_ref(), b"p");
        let mut attributes: Vec<_> = plain.attributes.into_iter().collect();
        attributes.sort();
        assert_eq!(
            attributes,
            [
                ("a".to_owned(), "x".to_owned()),
                ("b".to_owned(), "y".to_owned()),
                ("tributary-order".to_owned(), r#"["a","b"]"#.to_owned()),
            ]
        );
        // 91 headers: over Pub/Sub's plain-attribute budget, so they travel in the block.
        let mut many = Event::new("");
        for i in 0..91 {
            many.headers.append(format!("h{i}"), "v");
        }
        assert_eq!(
            encode(&many).attributes.get(ENVELOPE).map(String::as_str),
            Some("1")
        );
    }

    #[test]
    fn messages_from_other_clients_read_as_plain_events() {
        let attributes = HashMap::from([
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ]);
        let (event, problem) = decode(Bytes::from_static(b"x"), attributes, "k".into(), Some(7));
        assert_eq!(problem, None);
        assert_eq!(event.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(event.timestamp, Some(Timestamp::from_millis(7)));
        let headers: Vec<_> = event
            .headers
            .iter()
            .map(|(n, v)| (n.to_owned(), v.clone()))
            .collect();
        assert_eq!(
            headers,
            [
                ("a".to_owned(), Bytes::from("1")),
                ("b".to_owned(), Bytes::from("2"))
            ]
        );
    }

    #[test]
    fn a_malformed_envelope_keeps_the_message() {
        let attributes = HashMap::from([(ENVELOPE.to_owned(), "1".to_owned())]);
        let (event, problem) = decode(
            Bytes::from_static(b"\x00\x00\x00\x09ab"),
            attributes,
            String::new(),
            None,
        );
        assert!(problem.is_some());
        assert_eq!(event.payload.as_ref(), b"\x00\x00\x00\x09ab");
        assert_eq!(
            event.headers.get(ENVELOPE).map(|v| v.as_ref()),
            Some(&b"1"[..])
        );
    }

    fn arbitrary_event() -> impl Strategy<Value = Event> {
        let header = (
            prop_oneof![
                ".{0,12}",
                "[a-z]{1,6}",
                "tributary-[a-z]{1,4}",
                "goog[a-z]{0,3}"
            ],
            prop::collection::vec(any::<u8>(), 0..20),
        );
        let utf8_header = ("[a-z]{1,8}", "[ -~é€]{0,20}").prop_map(|(n, v)| (n, v.into_bytes()));
        (
            prop::collection::vec(any::<u8>(), 0..64),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
            prop::option::of(-10_000_000_000_000i64..10_000_000_000_000),
            prop_oneof![
                prop::collection::vec(header, 0..6),
                prop::collection::vec(utf8_header, 0..6)
            ],
        )
            .prop_map(|(payload, key, timestamp, headers)| {
                let mut event = Event::new(payload);
                event.key = key.map(Bytes::from);
                event.timestamp = timestamp.map(Timestamp::from_millis);
                for (name, value) in headers {
                    event.headers.append(name, value);
                }
                event
            })
    }

    // The header codec's own properties (envelope only when needed, garbage never panics)
    // are tested with it, in `tributary::envelope`.
    proptest! {
        /// Every event survives the trip exactly (a missing timestamp becomes the publish time).
        #[test]
        fn every_event_round_trips(event in arbitrary_event()) {
            let mut want = event.clone();
            if want.timestamp.is_none() {
                want.timestamp = Some(Timestamp::from_millis(42));
            }
            prop_assert_eq!(round_trip(&event), want);
        }
    }
}
