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
//! (binary values, repeated names, …) the headers travel in `data`, in this block:
//! `u32 count`, then per header `u32 name length`, name, `u32 value length`, value (big-endian
//! lengths), then the payload. Only tributary sets `tributary-envelope`, so a message from any
//! other client reads as a plain event: its attributes become headers (in name order), its
//! ordering key the key, its publish time the timestamp.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{BufMut, Bytes, BytesMut};
use tributary::{Event, Headers, Timestamp};

pub(crate) const KEY: &str = "tributary-key";
pub(crate) const TIMESTAMP: &str = "tributary-ts";
pub(crate) const ORDER: &str = "tributary-order";
pub(crate) const ENVELOPE: &str = "tributary-envelope";
const MAX_PLAIN_HEADERS: usize = 90;
const MAX_NAME: usize = 256;
const MAX_VALUE: usize = 1024;

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

fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with("goog")
        && !name.starts_with("tributary-")
}

fn headers_fit(headers: &Headers) -> bool {
    if headers.len() > MAX_PLAIN_HEADERS {
        return false;
    }
    let mut seen = std::collections::HashSet::with_capacity(headers.len());
    headers.iter().all(|(name, value)| {
        plain_name(name)
            && seen.insert(name)
            && value.len() <= MAX_VALUE
            && std::str::from_utf8(value).is_ok()
    })
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
    let order: Vec<&str> = event.headers.iter().map(|(name, _)| name).collect();
    let order_json = serde_json::to_string(&order).unwrap_or_default();
    let data = if event.headers.is_empty() {
        event.payload.clone()
    } else if headers_fit(&event.headers) && (order.len() < 2 || order_json.len() <= MAX_VALUE) {
        for (name, value) in event.headers.iter() {
            let value = std::str::from_utf8(value).expect("checked by headers_fit");
            attributes.insert(name.to_owned(), value.to_owned());
        }
        if order.len() >= 2 {
            attributes.insert(ORDER.to_owned(), order_json);
        }
        event.payload.clone()
    } else {
        attributes.insert(ENVELOPE.to_owned(), "1".to_owned());
        let mut block =
            BytesMut::with_capacity(event.payload.len() + event.headers.encoded_len() + 4);
        block.put_u32(event.headers.len() as u32);
        for (name, value) in event.headers.iter() {
            block.put_u32(name.len() as u32);
            block.put_slice(name.as_bytes());
            block.put_u32(value.len() as u32);
            block.put_slice(value);
        }
        block.put_slice(&event.payload);
        block.freeze()
    };
    Encoded {
        data,
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
    let order = attributes.remove(ORDER);
    let envelope = attributes.remove(ENVELOPE);
    let mut event = Event::new(data.clone());
    event.key = key;
    event.timestamp = timestamp;
    if envelope.as_deref() == Some("1") {
        match read_block(&data) {
            Ok((headers, payload)) => {
                event.headers = headers;
                event.payload = payload;
                return (event, problem);
            }
            Err(e) => {
                // Keep everything the message had, so nothing is silently dropped.
                let mut headers = Headers::default();
                let mut names: Vec<_> = raw.into_iter().collect();
                names.sort();
                for (name, value) in names {
                    headers.append(name, value);
                }
                event.headers = headers;
                return (event, Some(format!("malformed {ENVELOPE} block: {e}")));
            }
        }
    }
    let mut headers = Headers::default();
    if let Some(order) = order {
        match serde_json::from_str::<Vec<String>>(&order) {
            Ok(names) => {
                for name in names {
                    if let Some(value) = attributes.remove(&name) {
                        headers.append(name, value);
                    }
                }
            }
            Err(e) => {
                problem.get_or_insert_with(|| {
                    format!("attribute {ORDER} is not a JSON array of names: {e}")
                });
            }
        }
    }
    let mut rest: Vec<_> = attributes.into_iter().collect();
    rest.sort();
    for (name, value) in rest {
        headers.append(name, value);
    }
    event.headers = headers;
    (event, problem)
}

fn read_block(data: &Bytes) -> Result<(Headers, Bytes), String> {
    struct Reader<'a> {
        data: &'a Bytes,
        at: usize,
    }
    impl Reader<'_> {
        fn take(&mut self, n: usize) -> Result<Bytes, String> {
            let end = self
                .at
                .checked_add(n)
                .filter(|&e| e <= self.data.len())
                .ok_or("truncated")?;
            let out = self.data.slice(self.at..end);
            self.at = end;
            Ok(out)
        }
        fn length(&mut self) -> Result<usize, String> {
            let b = self.take(4)?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        }
    }
    let mut reader = Reader { data, at: 0 };
    let count = reader.length()?;
    let mut headers = Headers::default();
    for _ in 0..count {
        let name_len = reader.length()?;
        let name = reader.take(name_len)?;
        let name = std::str::from_utf8(&name)
            .map_err(|_| "header name is not UTF-8")?
            .to_owned();
        let value_len = reader.length()?;
        headers.append(name, reader.take(value_len)?);
    }
    let payload = data.slice(reader.at..);
    Ok((headers, payload))
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

        /// The envelope is used only when attributes cannot carry the headers.
        #[test]
        fn the_envelope_only_when_needed(event in arbitrary_event()) {
            let encoded = encode(&event);
            prop_assert_eq!(encoded.attributes.contains_key(ENVELOPE), !event.headers.is_empty() && !headers_fit(&event.headers));
            if !encoded.attributes.contains_key(ENVELOPE) {
                prop_assert_eq!(encoded.data, event.payload);
            }
        }

        /// Arbitrary bytes with the envelope flag never panic and never lose the data.
        #[test]
        fn garbage_envelopes_never_panic(data in prop::collection::vec(any::<u8>(), 0..64)) {
            let attributes = HashMap::from([(ENVELOPE.to_owned(), "1".to_owned())]);
            let (event, _) = decode(Bytes::from(data.clone()), attributes, String::new(), None);
            prop_assert!(event.payload.len() <= data.len());
        }
    }
}
