//! How a tributary event maps onto an Event Hubs (AMQP 1.0) message, exactly and reversibly,
//! while staying a normal event for every other Event Hubs client. Version 2:
//!
//! | event | message |
//! |---|---|
//! | payload | the body, one `data` section |
//! | key, UTF-8 of 1 to 128 bytes | the partition key (`x-opt-partition-key`), which places the event |
//! | key, anything else (binary, empty, longer) | application property `tributary-key` = the key (AMQP binary), and the partition key = its base64 (of its SHA-256 when that is empty or longer than 128 bytes), so equal keys still share a partition |
//! | timestamp | application property `tributary-ts` = milliseconds since the epoch (AMQP long) |
//! | headers with distinct names | one application property each, in order: a UTF-8 value as an AMQP string, any other value as AMQP binary |
//! | headers with a repeated name, or named like one of the three properties here or `tributary-v` (version 1's mark, below) | application property `tributary-envelope` = `1` and the body = core's header block (`tributary::envelope`, the one the Pub/Sub and Pulsar backends write) + the payload |
//! | (every event) | the message id (AMQP `properties`): a UUID of version 8 (RFC 9562's layout for ids of one's own) whose first six bytes are `trbtry` and whose seventh's low four bits are the mapping version (`2`); the last 62 bits differ per message. It marks a message tributary wrote |
//!
//! The mark is the message id, not an application property, because a message carries an id
//! anyway (the SDK gives one without it a random UUID) while a property costs every message
//! its bytes on the wire and its serialization by the SDK, twice per event sent. Version 1
//! marked each message with the application property `tributary-v` = `1` instead (and let the
//! SDK set a random id); it is still read as tributary's, and the name stays reserved, so a
//! header named so goes in the envelope.
//!
//! Reading, every message is an event: the body is the payload (several `data` sections are
//! joined; an `amqp-value` or `amqp-sequence` body reads as its text), application properties
//! become headers in wire order (strings and binaries as their bytes, other AMQP types as their
//! text: `42`, `true`, a timestamp as milliseconds), the partition key is the key, and
//! `tributary-ts` the timestamp. A message other clients wrote (without the mark) also shows
//! the service's annotations as headers after its own: `x-opt-enqueued-time` (milliseconds),
//! `x-opt-partition-key`, `x-opt-offset`, `x-opt-sequence-number`, and any other annotation
//! (IoT Hub's system properties such as `iothub-connection-device-id`, see `iothub.rs`); AMQP
//! properties such as `content-type`, `message-id`, `correlation-id` and `user-id` too, where
//! set. An event tributary wrote comes back exactly as it was sent, without them (the SDK's
//! own message id and the service's stamps are not the sender's headers), so a copy through
//! Event Hubs and back is the same event. An event without `tributary-ts` takes the enqueued
//! time as its timestamp when another client wrote it.

use std::borrow::Cow;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use azure_core::Uuid;
use azure_core_amqp::message::{
    AmqpAnnotationKey, AmqpApplicationProperties, AmqpMessageBody, AmqpMessageId,
    AmqpMessageProperties,
};
use azure_core_amqp::{AmqpMessage, AmqpSimpleValue, AmqpValue};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tributary::{Error, Event, Headers, Result, Timestamp};

use tributary::backend::HeaderNames;
use tributary::envelope::{self, AttributeRules};

pub(crate) const KEY: &str = "tributary-key";
pub(crate) const TIMESTAMP: &str = envelope::TIMESTAMP;
pub(crate) const ENVELOPE: &str = envelope::ENVELOPE;
/// Headers reach this mapping's envelope only when AMQP properties cannot hold them (repeated
/// names), so core's envelope is asked for its header block, never for attributes.
const BLOCK_ONLY: AttributeRules = AttributeRules::new(0, 0, 0, &[]);
/// Marked a message tributary wrote with mapping version 1 (read, no longer written).
pub(crate) const MARK: &str = "tributary-v";
/// The first six bytes of the message id of a message tributary wrote.
const MARK_TAG: [u8; 6] = *b"trbtry";
/// The mapping version, in the low four bits of the message id's seventh byte.
const MAPPING_VERSION: u8 = 2;
/// What the marked message id adds to a message: 16 bytes and their AMQP framing.
const MARK_BYTES: usize = 18;
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

/// A message id that marks a message as tributary's (see the table above): a version 8 UUID
/// with the tag, the mapping version, and 62 bits from a per-process random start plus a
/// per-process count, so ids do not repeat within a process and seldom across processes.
/// No allocation and no random draw per message (the SDK draws a random UUID for a message
/// without an id).
fn marked_id() -> Uuid {
    static START: OnceLock<u64> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        std::process::id().hash(&mut hasher);
        std::time::SystemTime::now().hash(&mut hasher);
        hasher.finish()
    });
    let unique = start.wrapping_add(COUNT.fetch_add(1, Ordering::Relaxed));
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&MARK_TAG);
    bytes[6] = 0x80 | MAPPING_VERSION;
    // A byte of the start again: the count's top bits give way to the variant below.
    bytes[7] = (start >> 56) as u8;
    bytes[8..].copy_from_slice(&unique.to_be_bytes());
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

/// Whether a message id is one [`marked_id`] makes (any mapping version from 2 on).
fn is_marked_id(id: &AmqpMessageId) -> bool {
    match id {
        AmqpMessageId::Uuid(uuid) => {
            let bytes = uuid.as_bytes();
            bytes[..6] == MARK_TAG && bytes[6] >> 4 == 8 && bytes[6] & 0x0f >= 2
        }
        _ => false,
    }
}

/// Takes the event by value: its payload and header values move into the message (no copy
/// when the caller's buffers are not shared), which is most of what producing costs here.
pub(crate) fn encode(event: Event) -> Encoded {
    let mut properties = AmqpApplicationProperties::new();
    let mut size = MARK_BYTES;
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
    let mut message = AmqpMessage::builder()
        .with_body(AmqpMessageBody::Binary(vec![body]))
        .with_application_properties(properties)
        .build();
    message.set_message_id(marked_id());
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
/// reference count) instead of a copy each. Header names recur on every event, so they are
/// kept once per process ([`HeaderNames`]) and named, not copied: the name was an allocation
/// per event that the application's thread freed, on another thread than the receive task
/// that made it, which glibc pays for. It builds each event's headers in one list, and the
/// offset only for a checkpoint store that keeps offsets: an allocation each that the profile
/// counted per event.
///
/// Payloads and header values of up to [`SHARED_MAX`] bytes are copied into shared chunks of
/// [`CHUNK`] bytes (a chunk lives while any event cut from it does): a payload copied into a
/// `Vec` of its own cost an allocation, and another when the engine first cloned it (the copy
/// it keeps for a nack), where slices of a chunk are clones by reference count.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    last_key: Option<Bytes>,
    offsets: bool,
    chunk: BytesMut,
    names: HeaderNames,
}

/// Bytes per shared chunk: what an event an application holds on to can keep alive beyond
/// itself is bounded by it.
const CHUNK: usize = 64 << 10;
/// Values longer than this keep buffers of their own (copying them into chunks would waste
/// more chunk than the allocations it saves).
const SHARED_MAX: usize = 4 << 10;

impl Decoder {
    /// A decoder; `offsets`: whether [`Received::offset`] is wanted.
    pub(crate) fn new(offsets: bool) -> Self {
        Decoder {
            last_key: None,
            offsets,
            chunk: BytesMut::new(),
            names: HeaderNames::new(),
        }
    }

    /// `bytes` as shared bytes: a slice of the current chunk when small (see [`Decoder`]).
    fn share(&mut self, bytes: &[u8]) -> Bytes {
        if bytes.len() > SHARED_MAX {
            return Bytes::copy_from_slice(bytes);
        }
        if self.chunk.capacity() - self.chunk.len() < bytes.len() {
            self.chunk = BytesMut::with_capacity(CHUNK);
        }
        self.chunk.extend_from_slice(bytes);
        self.chunk.split().freeze()
    }

    /// A property's value as shared bytes (see [`simple_bytes`]).
    fn value(&mut self, value: &AmqpSimpleValue) -> Bytes {
        match value {
            AmqpSimpleValue::Binary(bytes) => self.share(bytes),
            AmqpSimpleValue::String(text) => self.share(text.as_bytes()),
            other => Bytes::from(simple_bytes(other)),
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
                    self.share(&sections[0])
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
        // Built in place, sized for the properties that are headers (none: no allocation).
        let mut headers = Headers::with_capacity(properties.map_or(0, |p| {
            p.0.iter()
                .filter(|(name, _)| !matches!(name.as_str(), MARK | KEY | TIMESTAMP | ENVELOPE))
                .count()
        }));
        let mut key: Option<Bytes> = None;
        let mut timestamp = None;
        let mut enveloped = false;
        let mut ours = message
            .properties
            .as_ref()
            .and_then(|p| p.message_id.as_ref())
            .is_some_and(is_marked_id);
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
                    _ => {
                        let value = self.value(value);
                        match self.names.get(name.as_bytes()) {
                            Some(name) => headers.append_static(name, value),
                            None => headers.append(name.clone(), value),
                        }
                    }
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
            headers.extend_from(&decoded.headers);
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
                    // Only a message other clients wrote takes it as its timestamp.
                    ENQUEUED_TIME if !ours => enqueued = value_millis(value),
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
            for (name, value) in annotations {
                headers.append(name, value);
            }
            timestamp = timestamp.or(enqueued.map(Timestamp::from_millis));
        }
        received.event = Event {
            key,
            payload,
            headers,
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
mod tests;
