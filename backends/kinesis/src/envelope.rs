//! How a tributary event maps onto a Kinesis record, exactly and reversibly, while staying a
//! plain record for every other Kinesis client.
//!
//! A Kinesis record has a partition key (a string of 1 to 256 characters, hashed with MD5 to
//! pick the shard) and data (bytes); the service adds a sequence number and an approximate
//! arrival time. There are no headers, attributes or producer timestamps, so whatever the
//! partition key cannot carry rides in the data, in an envelope, and only then. Mapping,
//! version 1:
//!
//! | event | record |
//! |---|---|
//! | key: UTF-8, 1 to 256 bytes, not starting with `~tributary:` | partition key = the key |
//! | no key | partition key = `~tributary:` + 16 hex digits (a spread key, a new one per event) |
//! | key: anything else (binary, empty, longer) | partition key = `~tributary:k:` + hex MD5 of the key; the key in the envelope |
//! | payload | data, or the envelope's tail |
//! | timestamp | in the envelope |
//! | headers | in the envelope |
//!
//! The envelope is used only when the event has headers, a timestamp, a key the partition key
//! cannot carry, or a payload that starts with the envelope's or the KPL's magic bytes (so that
//! such a payload is never mistaken for either on the way back). Its layout:
//!
//! ```text
//! F5 54 52 42 ("\xF5TRB")  magic; F5 never occurs in UTF-8, so no text or JSON payload starts so
//! 01                       version
//! flags                    bit 0: timestamp, bit 1: key, bit 2: headers (other bits: reserved, 0)
//! [i64 BE]                 timestamp, milliseconds since the epoch          (bit 0)
//! [u32 BE length, bytes]   key                                              (bit 1)
//! [header block]           u32 count, per header u32 name length, name,     (bit 2)
//!                          u32 value length, value (big-endian lengths: the block of
//!                          `tributary::envelope`, shared with Pub/Sub and Pulsar)
//! payload                  the rest
//! ```
//!
//! Reading: a record whose data starts with the magic is unwrapped; any other record is a plain
//! event (the partition key as key, a spread key as no key, the arrival time as timestamp). An
//! envelope that cannot be read (a newer version, a truncated block) leaves the record a plain
//! event and says why, so nothing is lost. Records in the KPL's aggregated format are split
//! first (`kpl.rs`), and each user record is read the same way.

use bytes::{BufMut, Bytes, BytesMut};
use md5::{Digest, Md5};
use tributary::envelope::{AttributeRules, ByteReader, ENVELOPE, decode_headers, encode_headers};
use tributary::{Event, Headers, Timestamp};

/// The first bytes of an enveloped record.
pub const MAGIC: [u8; 4] = [0xF5, b'T', b'R', b'B'];
/// The envelope's version.
pub const VERSION: u8 = 1;
/// Partition keys starting with this are tributary's own (spread and digest keys).
pub const RESERVED_PREFIX: &str = "~tributary:";
/// Bytes of a spread partition key: the prefix and 16 hex digits.
pub const SPREAD_KEY_LEN: usize = RESERVED_PREFIX.len() + 16;
const DIGEST_PREFIX: &str = "~tributary:k:";
const MAX_PLAIN_KEY: usize = 256;
const HAS_TIMESTAMP: u8 = 1;
const HAS_KEY: u8 = 2;
const HAS_HEADERS: u8 = 4;
const KNOWN_FLAGS: u8 = HAS_TIMESTAMP | HAS_KEY | HAS_HEADERS;

/// Every header into the block: Kinesis has no attributes to carry them.
const NO_ATTRIBUTES: AttributeRules = AttributeRules::new(0, 0, 0, &[]);

/// An event as a Kinesis record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The record's partition key.
    pub partition_key: PartitionKey,
    /// The record's data.
    pub data: Bytes,
}

/// A partition key: UTF-8 text. When it is the event's own key it shares the key's bytes, so
/// a producer hands it on (and hashes it to keep one record of a key in flight) without
/// copying it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey(Bytes);

impl PartitionKey {
    /// The key as text.
    pub fn as_str(&self) -> &str {
        // Built only from `&str` and `String` (below), so always UTF-8; checked rather than
        // assumed, which costs a few nanoseconds for a key of a few bytes.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::Deref for PartitionKey {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<[u8]> for PartitionKey {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl From<String> for PartitionKey {
    fn from(text: String) -> Self {
        PartitionKey(Bytes::from(text))
    }
}

impl From<&str> for PartitionKey {
    fn from(text: &str) -> Self {
        PartitionKey(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl std::fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for PartitionKey {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for PartitionKey {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<String> for PartitionKey {
    fn eq(&self, other: &String) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Encoded {
    /// What the service counts against its record size limit.
    pub fn size(&self) -> usize {
        self.partition_key.as_bytes().len() + self.data.len()
    }
}

/// The partition key a plain (UTF-8, short, unreserved) key is sent with, or `None`.
fn plain_key(key: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(key).ok()?;
    (!text.is_empty() && text.len() <= MAX_PLAIN_KEY && !text.starts_with(RESERVED_PREFIX))
        .then_some(text)
}

/// A spread partition key for a keyless event; `n` should differ from event to event.
pub fn spread_key(n: u64) -> String {
    format!("{RESERVED_PREFIX}{n:016x}")
}

fn is_spread_key(partition_key: &str) -> bool {
    partition_key.len() == SPREAD_KEY_LEN
        && partition_key
            .strip_prefix(RESERVED_PREFIX)
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The partition key of an event's key: the same key always gives the same partition key, so
/// events of one key land on one shard.
pub fn partition_key_of(key: &[u8]) -> String {
    match plain_key(key) {
        Some(text) => text.to_owned(),
        None => {
            let digest = Md5::digest(key);
            let mut out = String::with_capacity(DIGEST_PREFIX.len() + 32);
            out.push_str(DIGEST_PREFIX);
            for b in digest {
                out.push_str(&format!("{b:02x}"));
            }
            out
        }
    }
}

fn needs_escape(payload: &[u8]) -> bool {
    payload.starts_with(&MAGIC) || payload.starts_with(&crate::kpl::MAGIC)
}

/// Maps an event onto a record; `spread` gives a keyless event its partition key.
pub fn encode(event: &Event, spread: impl FnOnce() -> u64) -> Encoded {
    encode_owned(event.clone(), spread)
}

/// [`encode`] of an event the caller hands over (a producer's): its key and payload become
/// the partition key and data as they are. Cloning them instead costs an allocation each when
/// they were built from a `Vec` or `String` (`Bytes` moves such a buffer to the heap on its
/// first clone).
pub fn encode_owned(event: Event, spread: impl FnOnce() -> u64) -> Encoded {
    let Event {
        key,
        payload,
        headers,
        timestamp,
    } = event;
    let (partition_key, key_in_envelope) = match key {
        None => (PartitionKey::from(spread_key(spread())), None),
        Some(key) if plain_key(&key).is_some() => (PartitionKey(key), None),
        Some(key) => (PartitionKey::from(partition_key_of(&key)), Some(key)),
    };
    let plain = timestamp.is_none()
        && key_in_envelope.is_none()
        && headers.is_empty()
        && !needs_escape(&payload);
    if plain {
        return Encoded {
            partition_key,
            data: payload,
        };
    }
    let mut flags = 0;
    let mut out = BytesMut::with_capacity(payload.len() + 32);
    out.put_slice(&MAGIC);
    out.put_u8(VERSION);
    let flags_at = out.len();
    out.put_u8(0);
    if let Some(timestamp) = timestamp {
        flags |= HAS_TIMESTAMP;
        out.put_i64(timestamp.as_millis());
    }
    if let Some(key) = key_in_envelope {
        flags |= HAS_KEY;
        out.put_u32(key.len() as u32);
        out.put_slice(&key);
    }
    if headers.is_empty() {
        out.put_slice(&payload);
    } else {
        flags |= HAS_HEADERS;
        out.put_slice(&encode_headers(&headers, &payload, &NO_ATTRIBUTES).body);
    }
    out[flags_at] = flags;
    Encoded {
        partition_key,
        data: out.freeze(),
    }
}

/// Reads a record (or a KPL user record) back. `arrival` is the service's approximate arrival
/// time, the timestamp of events that carry none. An envelope that cannot be read gives the
/// record as a plain event and the reason, for a log line.
pub fn decode(
    partition_key: &str,
    data: Bytes,
    arrival: Option<Timestamp>,
) -> (Event, Option<String>) {
    decode_record(PartitionKey::from(partition_key), data, arrival)
}

/// [`decode`] of a partition key the caller owns (the SDK's record, a KPL user record): when it
/// is the event's key, its bytes become the key, not a copy of them.
pub fn decode_record(
    partition_key: PartitionKey,
    data: Bytes,
    arrival: Option<Timestamp>,
) -> (Event, Option<String>) {
    let plain_key = (!is_spread_key(&partition_key)).then_some(partition_key.0);
    if !data.starts_with(&MAGIC) {
        return (plain(plain_key, data, arrival), None);
    }
    match unwrap(&plain_key, &data, arrival) {
        Ok(event) => (event, None),
        Err(why) => (
            plain(plain_key, data, arrival),
            Some(format!(
                "a tributary envelope that cannot be read ({why}); delivered as it is"
            )),
        ),
    }
}

fn plain(key: Option<Bytes>, data: Bytes, arrival: Option<Timestamp>) -> Event {
    let mut event = Event::new(data);
    event.key = key;
    event.timestamp = arrival;
    event
}

/// `plain_key`: the partition key as the event's key (`None` for a spread key), the key of an
/// envelope that does not carry its own.
fn unwrap(
    plain_key: &Option<Bytes>,
    data: &Bytes,
    arrival: Option<Timestamp>,
) -> Result<Event, String> {
    let mut reader = ByteReader::starting_at(data, MAGIC.len());
    let head = reader.take(2)?;
    let (version, flags) = (head[0], head[1]);
    if version != VERSION {
        return Err(format!(
            "version {version}; this reader knows version {VERSION}"
        ));
    }
    if flags & !KNOWN_FLAGS != 0 {
        return Err(format!("unknown flags {flags:#04x}"));
    }
    let timestamp = if flags & HAS_TIMESTAMP != 0 {
        Some(Timestamp::from_millis(reader.i64()?))
    } else {
        arrival
    };
    let key = if flags & HAS_KEY != 0 {
        let len = reader.u32()? as usize;
        Some(reader.take(len)?)
    } else {
        plain_key.clone()
    };
    let rest = reader.rest();
    let (headers, payload) = if flags & HAS_HEADERS != 0 {
        let attributes = [(ENVELOPE.to_owned(), "1".to_owned())]
            .into_iter()
            .collect();
        let decoded = decode_headers(rest, attributes).map_err(|e| e.to_string())?;
        (decoded.headers, decoded.payload)
    } else {
        (Headers::new(), rest)
    };
    Ok(Event {
        key,
        payload,
        headers,
        timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ARRIVAL: Option<Timestamp> = Some(Timestamp::from_millis(42));

    fn round_trip(event: &Event) -> Event {
        let encoded = encode(event, || 7);
        let (decoded, problem) = decode(&encoded.partition_key, encoded.data, ARRIVAL);
        assert_eq!(problem, None);
        decoded
    }

    #[test]
    fn plain_events_are_plain_records() {
        let event = Event::new(r#"{"total":42}"#).with_key("customer-7");
        let encoded = encode(&event, || unreachable!("keyed"));
        assert_eq!(encoded.partition_key, "customer-7");
        assert_eq!(encoded.data.as_ref(), br#"{"total":42}"#);
        let mut want = event.clone();
        want.timestamp = ARRIVAL;
        assert_eq!(round_trip(&event), want);
    }

    #[test]
    fn keyless_events_get_a_spread_key_and_come_back_keyless() {
        let event = Event::new("x");
        let a = encode(&event, || 1);
        let b = encode(&event, || 2);
        assert_ne!(a.partition_key, b.partition_key);
        assert_eq!(a.partition_key.len(), SPREAD_KEY_LEN);
        assert_eq!(a.data.as_ref(), b"x", "no envelope for a keyless event");
        assert_eq!(round_trip(&event).key, None);
    }

    #[test]
    fn binary_long_and_reserved_keys_ride_in_the_envelope() {
        for key in [
            vec![0xff, 0x00],
            Vec::new(),
            vec![b'k'; 257],
            b"~tributary:0000000000000001".to_vec(),
        ] {
            let event = Event::new("p").with_key(key.clone());
            let encoded = encode(&event, || unreachable!("keyed"));
            assert!(encoded.partition_key.starts_with(DIGEST_PREFIX));
            assert_eq!(
                encoded.partition_key,
                partition_key_of(&key),
                "stable per key"
            );
            assert_eq!(round_trip(&event).key.as_deref(), Some(&key[..]));
        }
    }

    #[test]
    fn payloads_that_look_like_an_envelope_or_an_aggregate_are_escaped() {
        for payload in [MAGIC.to_vec(), crate::kpl::MAGIC.to_vec()] {
            let event = Event::new(payload).with_key("k");
            let encoded = encode(&event, || 0);
            assert!(encoded.data.starts_with(&MAGIC));
            assert_eq!(round_trip(&event).payload, event.payload);
        }
    }

    #[test]
    fn unreadable_envelopes_are_delivered_as_they_are() {
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&[2, 0, b'x']);
        let (event, problem) = decode("k", Bytes::from(data.clone()), ARRIVAL);
        assert!(problem.unwrap().contains("version 2"));
        assert_eq!(event.payload.as_ref(), &data[..]);
        assert_eq!(event.key.as_deref(), Some(&b"k"[..]));
    }

    fn arbitrary_event() -> impl Strategy<Value = Event> {
        let header = (".{0,12}", prop::collection::vec(any::<u8>(), 0..20));
        (
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64),
                Just(MAGIC.to_vec()),
                Just(crate::kpl::MAGIC.to_vec())
            ],
            prop::option::of(prop_oneof![
                prop::collection::vec(any::<u8>(), 0..16),
                "[a-z~:]{1,20}".prop_map(String::into_bytes),
                Just(vec![b'x'; 300])
            ]),
            prop::option::of(-10_000_000_000_000i64..10_000_000_000_000),
            prop::collection::vec(header, 0..6),
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
        /// Every event survives the trip exactly (a missing timestamp becomes the arrival time).
        #[test]
        fn every_event_round_trips(event in arbitrary_event()) {
            let mut want = event.clone();
            if want.timestamp.is_none() {
                want.timestamp = ARRIVAL;
            }
            prop_assert_eq!(round_trip(&event), want);
        }

        /// Partition keys are always valid for Kinesis: 1 to 256 bytes.
        #[test]
        fn partition_keys_are_valid(event in arbitrary_event(), n in any::<u64>()) {
            let encoded = encode(&event, || n);
            prop_assert!((1..=256).contains(&encoded.partition_key.len()));
        }

        /// Arbitrary data after the magic never panics and never loses bytes.
        #[test]
        fn garbage_envelopes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut data = MAGIC.to_vec();
            data.extend_from_slice(&tail);
            let (event, _) = decode("k", Bytes::from(data.clone()), None);
            prop_assert!(event.payload.len() <= data.len());
        }
    }
}
