//! How a tributary event maps onto an Event Hubs (AMQP 1.0) message, exactly and reversibly,
//! while staying a normal event for every other Event Hubs client. Version 1:
//!
//! | event | message |
//! |---|---|
//! | payload | the body, one `data` section |
//! | key, UTF-8 of 1 to 128 bytes | the partition key (`x-opt-partition-key`), which places the event |
//! | key, anything else (binary, empty, longer) | application property `tributary-key` = the key (AMQP binary), and the partition key = its base64 (of its SHA-256 when that is empty or longer than 128 bytes), so equal keys still share a partition |
//! | timestamp | application property `tributary-ts` = milliseconds since the epoch (AMQP long) |
//! | headers with distinct names | one application property each, in order: a UTF-8 value as an AMQP string, any other value as AMQP binary |
//! | headers with a repeated name, or named like one of the four properties here | application property `tributary-envelope` = `1` and the body = core's header block (`tributary::envelope`, the one the Pub/Sub and Pulsar backends write) + the payload |
//! | (every event) | application property `tributary-v` = `1`: written by tributary, mapping version 1 |
//!
//! Reading, every message is an event: the body is the payload (several `data` sections are
//! joined; an `amqp-value` or `amqp-sequence` body reads as its text), application properties
//! become headers in wire order (strings and binaries as their bytes, other AMQP types as their
//! text: `42`, `true`, a timestamp as milliseconds), the partition key is the key, and
//! `tributary-ts` the timestamp. A message other clients wrote (no `tributary-v`) also shows
//! the service's annotations as headers after its own: `x-opt-enqueued-time` (milliseconds),
//! `x-opt-partition-key`, `x-opt-offset`, `x-opt-sequence-number`, and any other annotation
//! (IoT Hub's system properties such as `iothub-connection-device-id`, see `iothub.rs`); AMQP
//! properties such as `content-type`, `message-id`, `correlation-id` and `user-id` too, where
//! set. An event tributary wrote comes back exactly as it was sent, without them (the SDK's
//! own message id and the service's stamps are not the sender's headers), so a copy through
//! Event Hubs and back is the same event. An event without `tributary-ts` takes the enqueued
//! time as its timestamp when another client wrote it.

use std::borrow::Cow;

use azure_core_amqp::message::{
    AmqpAnnotationKey, AmqpApplicationProperties, AmqpMessageBody, AmqpMessageId,
    AmqpMessageProperties,
};
use azure_core_amqp::{AmqpMessage, AmqpSimpleValue, AmqpValue};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tributary::{Error, Event, Headers, Result, Timestamp};

use tributary::envelope::{self, AttributeRules};

pub(crate) const KEY: &str = "tributary-key";
pub(crate) const TIMESTAMP: &str = envelope::TIMESTAMP;
pub(crate) const ENVELOPE: &str = envelope::ENVELOPE;
/// Headers reach this mapping's envelope only when AMQP properties cannot hold them (repeated
/// names), so core's envelope is asked for its header block, never for attributes.
const BLOCK_ONLY: AttributeRules = AttributeRules::new(0, 0, 0, &[]);
/// Marks a message tributary wrote, with the mapping's version.
pub(crate) const MARK: &str = "tributary-v";
const MAPPING_VERSION: &str = "1";
/// The longest partition key the service accepts.
pub(crate) const MAX_PARTITION_KEY: usize = 128;

pub(crate) const ENQUEUED_TIME: &str = "x-opt-enqueued-time";
pub(crate) const PARTITION_KEY: &str = "x-opt-partition-key";
pub(crate) const OFFSET: &str = "x-opt-offset";
pub(crate) const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";

/// An event as a message. The partition key that places it is the caller's to give (see
/// [`partition_key`]): a batch names it once for all its messages (the SDK stamps each with
/// it), a single send stamps it on its message.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    pub message: AmqpMessage,
    /// Body and properties, as the service counts them against its size limit (roughly: the
    /// AMQP framing adds a few bytes per field).
    pub size: usize,
}

/// The partition key for an event key (see the table above).
pub(crate) fn partition_key(key: &[u8]) -> (String, bool) {
    match std::str::from_utf8(key) {
        Ok(text) if !text.is_empty() && text.len() <= MAX_PARTITION_KEY => {
            (text.to_string(), false)
        }
        _ => {
            let encoded = BASE64.encode(key);
            if !encoded.is_empty() && encoded.len() <= MAX_PARTITION_KEY {
                (encoded, true)
            } else {
                (BASE64.encode(Sha256::digest(key)), true)
            }
        }
    }
}

/// Whether a key is its own partition key (UTF-8 of 1 to 128 bytes), as [`partition_key`]
/// decides, without building the key.
fn plain_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_PARTITION_KEY && std::str::from_utf8(key).is_ok()
}

/// Stamps the partition key annotation a message sent on its own needs to be placed by key.
pub(crate) fn annotate_partition_key(message: &mut AmqpMessage, partition_key: String) {
    message.add_message_annotation(PARTITION_KEY.into(), AmqpValue::String(partition_key));
}

/// Takes the event by value: its payload and header values move into the message (no copy
/// when the caller's buffers are not shared), which is most of what producing costs here.
pub(crate) fn encode(event: Event) -> Encoded {
    let mut properties = AmqpApplicationProperties::new();
    properties.insert(
        MARK.to_string(),
        AmqpSimpleValue::String(MAPPING_VERSION.into()),
    );
    let mut size = MARK.len() + MAPPING_VERSION.len();
    if let Some(key) = &event.key {
        if plain_key(key) {
            size += key.len();
        } else {
            // The partition key is its base64 (or that of its digest): at most 128 bytes.
            size += KEY.len() + key.len() + (key.len().div_ceil(3) * 4).min(MAX_PARTITION_KEY);
            properties.insert(KEY.to_string(), AmqpSimpleValue::Binary(key.to_vec()));
        }
    }
    if let Some(timestamp) = event.timestamp {
        size += TIMESTAMP.len() + 8;
        properties.insert(
            TIMESTAMP.to_string(),
            AmqpSimpleValue::Long(timestamp.as_millis()),
        );
    }
    let body: Vec<u8> = if headers_are_plain(&event.headers) {
        for (name, value) in event.headers {
            size += name.len() + value.len();
            let amqp = match String::from_utf8(Vec::from(value)) {
                Ok(text) => AmqpSimpleValue::String(text),
                Err(bytes) => AmqpSimpleValue::Binary(bytes.into_bytes()),
            };
            properties.insert(name, amqp);
        }
        Vec::from(event.payload)
    } else {
        size += ENVELOPE.len() + 1;
        properties.insert(ENVELOPE.to_string(), AmqpSimpleValue::String("1".into()));
        Vec::from(envelope::encode_headers(&event.headers, &event.payload, &BLOCK_ONLY).body)
    };
    size += body.len();
    let message = AmqpMessage::builder()
        .with_body(AmqpMessageBody::Binary(vec![body]))
        .with_application_properties(properties)
        .build();
    Encoded { message, size }
}

/// Headers travel as plain properties when names are distinct and none is one of the three
/// this mapping uses itself (other `tributary-` names, such as the bridge's lineage, are plain).
fn headers_are_plain(headers: &Headers) -> bool {
    let reserved = |name: &str| [KEY, TIMESTAMP, ENVELOPE, MARK].contains(&name);
    // Events carry a handful of headers: comparing pairs beats hashing them into a set
    // allocated per event, up to a few dozen.
    if headers.len() <= 32 {
        return headers.iter().enumerate().all(|(i, (name, _))| {
            !reserved(name) && !headers.iter().take(i).any(|(earlier, _)| earlier == name)
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(headers.len());
    headers
        .iter()
        .all(|(name, _)| !reserved(name) && seen.insert(name))
}

/// What a received message carries beyond the event.
#[derive(Debug, Clone, Default)]
pub(crate) struct Received {
    pub event: Event,
    pub sequence_number: Option<i64>,
    pub offset: Option<String>,
}

/// Reads a received message as an event (see the module documentation).
#[cfg(test)]
pub(crate) fn decode(message: &AmqpMessage) -> Result<Received> {
    Decoder::new(true).decode(message)
}

/// Reads one partition's messages as events.
///
/// A partition's events come in runs of one key (a batch is stored whole on one partition), so
/// the decoder keeps the last key it built and hands the run's events that one buffer (a
/// reference count) instead of a copy each. It builds each event's headers in one list, and
/// the offset only for a checkpoint store that keeps offsets: an allocation each that the
/// profile counted per event.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    last_key: Option<Bytes>,
    offsets: bool,
}

impl Decoder {
    /// A decoder; `offsets`: whether [`Received::offset`] is wanted.
    pub(crate) fn new(offsets: bool) -> Self {
        Decoder {
            last_key: None,
            offsets,
        }
    }

    /// The key as shared bytes, the last one's when equal.
    fn key(&mut self, key: &[u8]) -> Bytes {
        match &self.last_key {
            Some(last) if last.as_ref() == key => last.clone(),
            _ => {
                let key = Bytes::copy_from_slice(key);
                self.last_key = Some(key.clone());
                key
            }
        }
    }

    /// Reads a received message as an event (see the module documentation).
    pub(crate) fn decode(&mut self, message: &AmqpMessage) -> Result<Received> {
        let mut payload = match &message.body {
            AmqpMessageBody::Binary(sections) => {
                if sections.len() == 1 {
                    Bytes::from(sections[0].clone())
                } else {
                    Bytes::from(sections.concat())
                }
            }
            AmqpMessageBody::Value(value) => Bytes::from(value_text(value).into_bytes()),
            AmqpMessageBody::Sequence(items) => Bytes::from(
                items
                    .iter()
                    .map(|list| format!("{list:?}"))
                    .collect::<Vec<_>>()
                    .join("\n")
                    .into_bytes(),
            ),
            _ => Bytes::new(),
        };
        let properties = message.application_properties.as_ref();
        // Sized for the properties; a message of our own carries one or two that are not
        // headers, so this list is seldom grown.
        let mut headers: Vec<(String, Bytes)> =
            Vec::with_capacity(properties.map_or(0, |p| p.0.len()));
        let mut key: Option<Bytes> = None;
        let mut timestamp = None;
        let mut enveloped = false;
        let mut ours = false;
        if let Some(properties) = properties {
            for (name, value) in properties.0.iter() {
                match name.as_str() {
                    MARK => ours = true,
                    KEY => {
                        key = Some(match value {
                            AmqpSimpleValue::Binary(bytes) => self.key(bytes),
                            other => self.key(&simple_bytes(other)),
                        });
                    }
                    TIMESTAMP => timestamp = simple_millis(value).map(Timestamp::from_millis),
                    ENVELOPE => enveloped = true,
                    _ => headers.push((name.clone(), Bytes::from(simple_bytes(value)))),
                }
            }
        }
        if enveloped {
            let marked = std::collections::HashMap::from([(ENVELOPE.to_string(), "1".to_string())]);
            let decoded = envelope::decode_headers(payload, marked).map_err(|e| {
                Error::corrupt(format!(
                    "an event marked `{ENVELOPE}` has a bad header block: {e}"
                ))
            })?;
            headers.extend(decoded.headers);
            payload = decoded.payload;
        }
        let mut received = Received::default();
        let mut partition_key_annotation = None;
        let mut enqueued = None;
        let mut annotations = Vec::new();
        if let Some(found) = &message.message_annotations {
            for (name, value) in found.0.iter() {
                let name = match name {
                    AmqpAnnotationKey::Symbol(symbol) => Cow::Borrowed(symbol.0.as_str()),
                    AmqpAnnotationKey::Ulong(code) => Cow::Owned(code.to_string()),
                };
                match name.as_ref() {
                    SEQUENCE_NUMBER => received.sequence_number = value_i64(value),
                    OFFSET if self.offsets => received.offset = Some(value_text(value)),
                    PARTITION_KEY => partition_key_annotation = Some(value),
                    ENQUEUED_TIME => enqueued = value_millis(value),
                    _ => {}
                }
                // An event tributary wrote comes back without the service's stamps: building
                // headers only to drop them costs two allocations per annotation per event.
                if !ours {
                    annotations.push((name.into_owned(), Bytes::from(annotation_bytes(value))));
                }
            }
        }
        if key.is_none() {
            key = partition_key_annotation.map(|value| match value {
                AmqpValue::String(text) => self.key(text.as_bytes()),
                other => self.key(value_text(other).as_bytes()),
            });
        }
        if !ours {
            if let Some(properties) = &message.properties {
                append_properties(&mut annotations, properties);
            }
            headers.append(&mut annotations);
            timestamp = timestamp.or(enqueued.map(Timestamp::from_millis));
        }
        received.event = Event {
            key,
            payload,
            headers: Headers::from_iter(headers),
            timestamp,
        };
        Ok(received)
    }
}

fn append_properties(headers: &mut Vec<(String, Bytes)>, properties: &AmqpMessageProperties) {
    let mut append =
        |name: &str, value: Vec<u8>| headers.push((name.to_string(), Bytes::from(value)));
    let id = |id: &AmqpMessageId| match id {
        AmqpMessageId::String(s) => s.clone().into_bytes(),
        AmqpMessageId::Uuid(u) => u.to_string().into_bytes(),
        AmqpMessageId::Binary(b) => b.clone(),
        AmqpMessageId::Ulong(n) => n.to_string().into_bytes(),
    };
    if let Some(content_type) = &properties.content_type {
        append("content-type", content_type.0.clone().into_bytes());
    }
    if let Some(encoding) = &properties.content_encoding {
        append("content-encoding", encoding.0.clone().into_bytes());
    }
    if let Some(message_id) = &properties.message_id {
        append("message-id", id(message_id));
    }
    if let Some(correlation_id) = &properties.correlation_id {
        append("correlation-id", id(correlation_id));
    }
    if let Some(user_id) = &properties.user_id {
        append("user-id", user_id.clone());
    }
    if let Some(subject) = &properties.subject {
        append("subject", subject.clone().into_bytes());
    }
}

fn simple_bytes(value: &AmqpSimpleValue) -> Vec<u8> {
    match value {
        AmqpSimpleValue::Binary(bytes) => bytes.clone(),
        AmqpSimpleValue::String(text) => text.clone().into_bytes(),
        AmqpSimpleValue::Symbol(symbol) => symbol.0.clone().into_bytes(),
        AmqpSimpleValue::Null => Vec::new(),
        AmqpSimpleValue::Boolean(b) => b.to_string().into_bytes(),
        AmqpSimpleValue::UByte(n) => n.to_string().into_bytes(),
        AmqpSimpleValue::Byte(n) => n.to_string().into_bytes(),
        AmqpSimpleValue::UShort(n) => n.to_string().into_bytes(),
        AmqpSimpleValue::Short(n) => n.to_string().into_bytes(),
        AmqpSimpleValue::UInt(n) => n.to_string().into_bytes(),
        AmqpSimpleValue::Int(n) => n.to_string().into_bytes(),
        AmqpSimpleValue::ULong(n) => n.to_string().into_bytes(),
        AmqpSimpleValue::Long(n) => n.to_string().into_bytes(),
        AmqpSimpleValue::Float(n) => n.to_string().into_bytes(),
        AmqpSimpleValue::Double(n) => n.to_string().into_bytes(),
        AmqpSimpleValue::Char(c) => c.to_string().into_bytes(),
        AmqpSimpleValue::TimeStamp(t) => {
            t.0.map(|t| Timestamp::from(t).as_millis().to_string())
                .unwrap_or_default()
                .into_bytes()
        }
        AmqpSimpleValue::Uuid(u) => u.to_string().into_bytes(),
        other => format!("{other:?}").into_bytes(),
    }
}

fn simple_millis(value: &AmqpSimpleValue) -> Option<i64> {
    match value {
        AmqpSimpleValue::Long(n) => Some(*n),
        AmqpSimpleValue::Int(n) => Some(i64::from(*n)),
        AmqpSimpleValue::UInt(n) => Some(i64::from(*n)),
        AmqpSimpleValue::ULong(n) => i64::try_from(*n).ok(),
        AmqpSimpleValue::TimeStamp(t) => t.0.map(|t| Timestamp::from(t).as_millis()),
        AmqpSimpleValue::String(text) => text.trim().parse().ok(),
        AmqpSimpleValue::Binary(bytes) => std::str::from_utf8(bytes).ok()?.trim().parse().ok(),
        _ => None,
    }
}

fn value_i64(value: &AmqpValue) -> Option<i64> {
    match value {
        AmqpValue::Long(n) => Some(*n),
        AmqpValue::Int(n) => Some(i64::from(*n)),
        AmqpValue::ULong(n) => i64::try_from(*n).ok(),
        AmqpValue::UInt(n) => Some(i64::from(*n)),
        AmqpValue::String(text) => text.parse().ok(),
        _ => None,
    }
}

/// A time annotation as epoch milliseconds: an AMQP timestamp, a number, or ISO 8601 text
/// (IoT Hub writes `iothub-enqueuedtime` either way).
pub(crate) fn value_millis(value: &AmqpValue) -> Option<i64> {
    match value {
        AmqpValue::TimeStamp(t) => t.0.map(|t| Timestamp::from(t).as_millis()),
        AmqpValue::String(text) => text
            .trim()
            .parse()
            .ok()
            .or_else(|| tributary::time::parse_rfc3339(text.trim()).map(|t| t.as_millis())),
        other => value_i64(other),
    }
}

fn value_text(value: &AmqpValue) -> String {
    match value {
        AmqpValue::String(text) => text.clone(),
        AmqpValue::Symbol(symbol) => symbol.0.clone(),
        AmqpValue::Binary(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        AmqpValue::Null => String::new(),
        AmqpValue::Boolean(b) => b.to_string(),
        AmqpValue::TimeStamp(_) => value_millis(value)
            .map(|m| m.to_string())
            .unwrap_or_default(),
        AmqpValue::Uuid(u) => u.to_string(),
        AmqpValue::Double(n) => n.to_string(),
        AmqpValue::Float(n) => n.to_string(),
        AmqpValue::Char(c) => c.to_string(),
        other => value_i64(other)
            .map(|n| n.to_string())
            .unwrap_or_else(|| format!("{other:?}")),
    }
}

fn annotation_bytes(value: &AmqpValue) -> Vec<u8> {
    match value {
        AmqpValue::Binary(bytes) => bytes.clone(),
        other => value_text(other).into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Encodes, stamps the annotations the service adds on the way, and decodes: an event
    /// tributary wrote must come back exactly, without them.
    fn round_trip(event: &Event) -> Event {
        let mut message = encode(event.clone()).message;
        if let Some(key) = &event.key {
            // As the SDK's batch or a single send stamps it.
            annotate_partition_key(&mut message, partition_key(key).0);
        }
        message.add_message_annotation(SEQUENCE_NUMBER.into(), AmqpValue::Long(7));
        message.add_message_annotation(OFFSET.into(), AmqpValue::String("4096".into()));
        message.add_message_annotation(ENQUEUED_TIME.into(), AmqpValue::Long(1_700_000_000_000));
        let received = decode(&message).unwrap();
        assert_eq!(received.sequence_number, Some(7));
        assert_eq!(received.offset.as_deref(), Some("4096"));
        received.event
    }

    #[test]
    fn plain_events_use_native_slots() {
        let event = Event::new("body")
            .with_key("customer-7")
            .with_header("trace", "abc")
            .with_header("raw", vec![0u8, 255])
            .with_timestamp(Timestamp::from_millis(1_700_000_000_123));
        let encoded = encode(event.clone());
        assert_eq!(
            partition_key(b"customer-7"),
            ("customer-7".to_string(), false)
        );
        let properties = &encoded.message.application_properties.as_ref().unwrap().0;
        let names: Vec<&str> = properties.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["tributary-v", "tributary-ts", "trace", "raw"]);
        assert!(
            properties
                .iter()
                .any(|(k, v)| k == "raw" && *v == AmqpSimpleValue::Binary(vec![0, 255]))
        );
        assert_eq!(round_trip(&event), event);
    }

    #[test]
    fn repeated_names_use_the_envelope_and_binary_keys_a_property() {
        let event = Event::new(vec![1u8, 2])
            .with_key(vec![0xffu8, 0])
            .with_header("a", "1")
            .with_header("a", "2");
        let encoded = encode(event.clone());
        assert_eq!(partition_key(&[0xff, 0]), ("/wA=".to_string(), true));
        let names: Vec<String> = encoded
            .message
            .application_properties
            .as_ref()
            .unwrap()
            .0
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(
            names,
            ["tributary-v", "tributary-key", "tributary-envelope"]
        );
        assert_eq!(round_trip(&event), event);
    }

    #[test]
    fn long_keys_hash_into_a_valid_partition_key() {
        let key = "k".repeat(500);
        let (partition_key, binary) = partition_key(key.as_bytes());
        assert!(binary && partition_key.len() <= MAX_PARTITION_KEY);
        assert_eq!(partition_key, super::partition_key(key.as_bytes()).0);
        let event = Event::new("x").with_key(key.clone());
        assert_eq!(round_trip(&event), event);
    }

    #[test]
    fn foreign_messages_read_as_plain_events_with_annotations() {
        let mut properties = AmqpApplicationProperties::new();
        properties.insert("count".into(), AmqpSimpleValue::Int(42));
        properties.insert("name".into(), AmqpSimpleValue::String("x".into()));
        let mut message = AmqpMessage::builder()
            .with_body(AmqpMessageBody::Binary(vec![
                b"hello ".to_vec(),
                b"world".to_vec(),
            ]))
            .with_application_properties(properties)
            .build();
        message.add_message_annotation(SEQUENCE_NUMBER.into(), AmqpValue::Long(7));
        message.add_message_annotation(OFFSET.into(), AmqpValue::String("4096".into()));
        message.add_message_annotation(PARTITION_KEY.into(), AmqpValue::String("pk".into()));
        message.add_message_annotation(
            ENQUEUED_TIME.into(),
            AmqpValue::TimeStamp(azure_core_amqp::AmqpTimestamp(Some(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_000),
            ))),
        );
        let received = decode(&message).unwrap();
        assert_eq!(received.sequence_number, Some(7));
        assert_eq!(received.offset.as_deref(), Some("4096"));
        let event = received.event;
        assert_eq!(event.payload.as_ref(), b"hello world");
        assert_eq!(event.key.as_deref(), Some(&b"pk"[..]));
        assert_eq!(
            event.timestamp,
            Some(Timestamp::from_millis(1_700_000_000_000))
        );
        let headers: Vec<(&str, &[u8])> =
            event.headers.iter().map(|(k, v)| (k, v.as_ref())).collect();
        assert_eq!(
            headers,
            [
                ("count", &b"42"[..]),
                ("name", b"x"),
                (SEQUENCE_NUMBER, b"7"),
                (OFFSET, b"4096"),
                (PARTITION_KEY, b"pk"),
                (ENQUEUED_TIME, b"1700000000000"),
            ]
        );
    }

    proptest! {
        #[test]
        fn any_event_round_trips(
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            headers in proptest::collection::vec(("[a-z\u{e9}]{1,4}", proptest::collection::vec(any::<u8>(), 0..8)), 0..6),
            timestamp in proptest::option::of(any::<i64>()),
        ) {
            let mut event = Event::new(payload);
            event.key = key.map(Bytes::from);
            for (name, value) in headers {
                event.headers.append(name, value);
            }
            event.timestamp = timestamp.map(Timestamp::from_millis);
            prop_assert_eq!(round_trip(&event), event);
        }
    }
}
