//! Headers on backends whose messages carry only string attributes (Pub/Sub attributes,
//! Pulsar properties): one attribute per header where that is exact, a small versioned block in
//! the message body where it is not. For backend authors; applications never see it.
//!
//! An event's headers are ordered, may repeat a name and have binary values; string attributes
//! are an unordered map of UTF-8 strings. Version 1 of the mapping:
//!
//! | headers | message |
//! |---|---|
//! | none | the payload as the body, no attribute |
//! | that fit the attributes | one attribute each; with two or more, [`ORDER`] = JSON array of the names in order |
//! | that do not fit | [`ENVELOPE`] = `1` and the body = header block + payload |
//!
//! Headers "fit" when every name is non-empty, unique, not reserved (`tributary-…` or a
//! backend's own prefixes) and within the backend's name limit, every value is UTF-8 within
//! its value limit, there are at most as many as the backend allows ([`AttributeRules`]), and
//! the [`ORDER`] list fits a value. Otherwise (binary values, repeated names, …) the header
//! block is: `u32 count`, then per header `u32 name length`, name, `u32 value length`, value
//! (big-endian lengths), then the payload. [`ByteReader`] reads it, and any other big-endian
//! layout a backend puts in a body (Kinesis's envelope).
//!
//! Only tributary sets [`ENVELOPE`], so a message from any other client reads as a plain event:
//! its attributes become headers, in name order. [`TIMESTAMP`] is the attribute backends use
//! for an event time they cannot carry natively (decimal milliseconds since the epoch).
//!
//! ```
//! use tributary::envelope::{AttributeRules, decode_headers, encode_headers};
//! use tributary::Headers;
//!
//! let mut headers = Headers::new();
//! headers.append("trace", "abc");
//! headers.append("raw", vec![0u8, 255]); // binary: needs the block
//! let rules = AttributeRules::unlimited();
//! let encoded = encode_headers(&headers, &"payload".into(), &rules);
//! assert!(encoded.enveloped());
//! let decoded = decode_headers(encoded.body, encoded.attributes.into_iter().collect()).unwrap();
//! assert_eq!(decoded.headers, headers);
//! assert_eq!(decoded.payload.as_ref(), b"payload");
//! ```

mod reader;

pub use reader::{ByteReader, Truncated};

use std::collections::{HashMap, HashSet};

use bytes::{BufMut, Bytes, BytesMut};

use crate::Headers;

/// Attribute naming the header order (a JSON array of names) when two or more headers travel
/// as attributes.
pub const ORDER: &str = "tributary-order";
/// Attribute marking a body that starts with the header block; its value is the version, `1`.
pub const ENVELOPE: &str = "tributary-envelope";
/// Attribute holding an event time a backend cannot carry natively (decimal milliseconds).
pub const TIMESTAMP: &str = "tributary-ts";
/// Prefix of every attribute name tributary reserves.
pub const RESERVED_PREFIX: &str = "tributary-";

/// What a backend's string attributes can hold, beyond tributary's own reserved names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttributeRules {
    /// Most headers carried as attributes (the rest of the budget goes to tributary's own).
    pub max_headers: usize,
    /// Longest attribute name, in bytes.
    pub max_name_bytes: usize,
    /// Longest attribute value, in bytes (the [`ORDER`] list included).
    pub max_value_bytes: usize,
    /// Name prefixes the backend reserves for itself (Pub/Sub: `goog`).
    pub reserved_prefixes: &'static [&'static str],
}

impl AttributeRules {
    /// No limit but tributary's reserved names (Pulsar properties).
    pub const fn unlimited() -> Self {
        AttributeRules {
            max_headers: usize::MAX,
            max_name_bytes: usize::MAX,
            max_value_bytes: usize::MAX,
            reserved_prefixes: &[],
        }
    }

    /// Rules with the given limits and reserved prefixes.
    pub const fn new(
        max_headers: usize,
        max_name_bytes: usize,
        max_value_bytes: usize,
        reserved_prefixes: &'static [&'static str],
    ) -> Self {
        AttributeRules {
            max_headers,
            max_name_bytes,
            max_value_bytes,
            reserved_prefixes,
        }
    }

    fn plain_name(&self, name: &str) -> bool {
        !name.is_empty()
            && name.len() <= self.max_name_bytes
            && !name.starts_with(RESERVED_PREFIX)
            && !self.reserved_prefixes.iter().any(|p| name.starts_with(p))
    }
}

/// Headers and payload as a message body plus attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedHeaders {
    /// The message body: the payload, or the header block followed by the payload.
    pub body: Bytes,
    /// Attributes to set: the headers (when they fit), [`ORDER`], [`ENVELOPE`].
    pub attributes: Vec<(String, String)>,
}

impl EncodedHeaders {
    /// Whether the headers travel in the body.
    pub fn enveloped(&self) -> bool {
        self.attributes.iter().any(|(name, _)| name == ENVELOPE)
    }
}

/// Whether `headers` travel as plain attributes under `rules` (the [`ORDER`] list aside).
pub fn headers_fit(headers: &Headers, rules: &AttributeRules) -> bool {
    if headers.len() > rules.max_headers {
        return false;
    }
    let plain = |(name, value): (&str, &Bytes)| {
        rules.plain_name(name)
            && value.len() <= rules.max_value_bytes
            && std::str::from_utf8(value).is_ok()
    };
    if headers.len() <= FEW_HEADERS {
        // A set would be one allocation per event for the usual one or two headers; comparing
        // each name with those before it costs less up to a handful.
        let names = || headers.iter().map(|(name, _)| name);
        return headers.iter().enumerate().all(|(i, header)| {
            plain(header) && !names().take(i).any(|earlier| earlier == header.0)
        });
    }
    let mut seen = HashSet::with_capacity(headers.len());
    headers
        .iter()
        .all(|header| seen.insert(header.0) && plain(header))
}

/// Up to this many headers, [`headers_fit`] finds repeated names without a set.
const FEW_HEADERS: usize = 8;

/// Maps headers and payload onto a body and attributes (see the module documentation).
pub fn encode_headers(
    headers: &Headers,
    payload: &Bytes,
    rules: &AttributeRules,
) -> EncodedHeaders {
    let (body, attributes) = encode_headers_into(headers, payload, rules);
    EncodedHeaders { body, attributes }
}

/// [`encode_headers`] with the attributes collected straight into the collection a backend
/// sends (a map of properties, say), without an intermediate list: the body and the
/// attributes.
pub fn encode_headers_into<A>(
    headers: &Headers,
    payload: &Bytes,
    rules: &AttributeRules,
) -> (Bytes, A)
where
    A: Default + Extend<(String, String)>,
{
    let mut attributes = A::default();
    if headers.is_empty() {
        return (payload.clone(), attributes);
    }
    let order = (headers.len() >= 2).then(|| {
        let names: Vec<&str> = headers.iter().map(|(name, _)| name).collect();
        serde_json::to_string(&names).unwrap_or_default()
    });
    let order_fits = order
        .as_ref()
        .is_none_or(|o| o.len() <= rules.max_value_bytes);
    if order_fits && headers_fit(headers, rules) {
        // One `extend`, so a map reserves room for the headers and the order at once.
        attributes.extend(
            headers
                .iter()
                .map(|(name, value)| {
                    let value = std::str::from_utf8(value).expect("checked by headers_fit");
                    (name.to_owned(), value.to_owned())
                })
                .chain(order.map(|order| (ORDER.to_owned(), order))),
        );
        return (payload.clone(), attributes);
    }
    let mut block =
        BytesMut::with_capacity(payload.len() + headers.encoded_len() + 4 + 8 * headers.len());
    block.put_u32(headers.len() as u32);
    for (name, value) in headers.iter() {
        block.put_u32(name.len() as u32);
        block.put_slice(name.as_bytes());
        block.put_u32(value.len() as u32);
        block.put_slice(value);
    }
    block.put_slice(payload);
    attributes.extend([(ENVELOPE.to_owned(), "1".to_owned())]);
    (block.freeze(), attributes)
}

/// Headers and payload read back from a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedHeaders {
    /// The headers, in their original order.
    pub headers: Headers,
    /// The payload.
    pub payload: Bytes,
    /// Something was odd but nothing was lost (an [`ORDER`] that is not a JSON list): for a
    /// log line.
    pub problem: Option<String>,
}

/// A body marked [`ENVELOPE`] whose header block cannot be read; the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedEnvelope(pub String);

impl std::fmt::Display for MalformedEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed {ENVELOPE} block: {}", self.0)
    }
}

impl std::error::Error for MalformedEnvelope {}

/// Reads headers and payload back. `attributes` are the message's attributes less those the
/// backend took for itself (key, timestamp). Attributes without an [`ORDER`] entry become
/// headers in name order, after the ordered ones. A malformed block is an error, so the
/// backend can keep the message as it came (see [`plain_headers`]).
pub fn decode_headers(
    body: Bytes,
    mut attributes: HashMap<String, String>,
) -> Result<DecodedHeaders, MalformedEnvelope> {
    let order = attributes.remove(ORDER);
    if attributes.remove(ENVELOPE).as_deref() == Some("1") {
        let (headers, payload) = read_block(&body).map_err(MalformedEnvelope)?;
        return Ok(DecodedHeaders {
            headers,
            payload,
            problem: None,
        });
    }
    let mut headers = Headers::new();
    let mut problem = None;
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
                problem = Some(format!(
                    "attribute {ORDER} is not a JSON array of names: {e}"
                ));
            }
        }
    }
    append_sorted(&mut headers, attributes);
    Ok(DecodedHeaders {
        headers,
        payload: body,
        problem,
    })
}

/// Every attribute as a header, in name order: how a message whose envelope cannot be read is
/// kept, so that nothing is silently dropped.
pub fn plain_headers(attributes: impl IntoIterator<Item = (String, String)>) -> Headers {
    let mut headers = Headers::new();
    append_sorted(&mut headers, attributes);
    headers
}

fn append_sorted(headers: &mut Headers, attributes: impl IntoIterator<Item = (String, String)>) {
    let mut rest: Vec<_> = attributes.into_iter().collect();
    rest.sort();
    for (name, value) in rest {
        headers.append(name, value);
    }
}

fn read_block(data: &Bytes) -> Result<(Headers, Bytes), String> {
    let mut reader = ByteReader::new(data);
    let count = reader.u32()?;
    let mut headers = Headers::new();
    for _ in 0..count {
        let name_len = reader.u32()? as usize;
        let name = reader.take(name_len)?;
        let name = std::str::from_utf8(&name)
            .map_err(|_| "header name is not UTF-8")?
            .to_owned();
        let value_len = reader.u32()? as usize;
        headers.append(name, reader.take(value_len)?);
    }
    Ok((headers, reader.rest()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Pub/Sub's limits, the strictest rules a backend uses today.
    const STRICT: AttributeRules = AttributeRules::new(90, 256, 1024, &["goog"]);

    fn round_trip(headers: &Headers, payload: &Bytes, rules: &AttributeRules) -> (Headers, Bytes) {
        let encoded = encode_headers(headers, payload, rules);
        let decoded = decode_headers(encoded.body, encoded.attributes.into_iter().collect())
            .expect("well formed");
        assert_eq!(decoded.problem, None);
        (decoded.headers, decoded.payload)
    }

    #[test]
    fn a_malformed_block_is_an_error() {
        let attributes = HashMap::from([(ENVELOPE.to_owned(), "1".to_owned())]);
        let err =
            decode_headers(Bytes::from_static(b"\x00\x00\x00\x09ab"), attributes).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        let kept = plain_headers([
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ]);
        assert_eq!(kept.iter().map(|(n, _)| n).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn a_bad_order_list_keeps_every_header() {
        let attributes = HashMap::from([
            (ORDER.to_owned(), "not json".to_owned()),
            ("x".to_owned(), "1".to_owned()),
        ]);
        let decoded = decode_headers(Bytes::from_static(b"p"), attributes).unwrap();
        assert!(decoded.problem.is_some());
        assert_eq!(
            decoded.headers.get("x").map(|v| v.as_ref()),
            Some(&b"1"[..])
        );
    }

    /// A repeated name sends the headers into the body, with few headers (no set) and many.
    #[test]
    fn repeated_names_never_fit() {
        for count in [2, FEW_HEADERS, FEW_HEADERS + 1, 20] {
            let unique: Headers = (0..count).map(|i| (format!("h{i}"), "v")).collect();
            assert!(
                headers_fit(&unique, &AttributeRules::unlimited()),
                "{count}"
            );
            for repeated in [0, count - 2] {
                let twice: Headers = (0..count - 1)
                    .map(|i| format!("h{i}"))
                    .chain([format!("h{repeated}")])
                    .map(|name| (name, "v"))
                    .collect();
                assert!(
                    !headers_fit(&twice, &AttributeRules::unlimited()),
                    "{count} headers, h{repeated} twice"
                );
            }
        }
    }

    fn arbitrary_headers() -> impl Strategy<Value = Headers> {
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
        prop_oneof![
            prop::collection::vec(header, 0..6),
            prop::collection::vec(utf8_header, 0..6)
        ]
        .prop_map(|headers| headers.into_iter().collect())
    }

    proptest! {
        /// Every header set survives the trip exactly, under strict and unlimited rules.
        #[test]
        fn headers_round_trip(headers in arbitrary_headers(), payload in prop::collection::vec(any::<u8>(), 0..64)) {
            let payload = Bytes::from(payload);
            for rules in [STRICT, AttributeRules::unlimited()] {
                prop_assert_eq!(round_trip(&headers, &payload, &rules), (headers.clone(), payload.clone()));
            }
        }

        /// The block is used only when attributes cannot carry the headers; otherwise the
        /// body is the payload, untouched.
        #[test]
        fn the_envelope_only_when_needed(headers in arbitrary_headers(), payload in prop::collection::vec(any::<u8>(), 0..64)) {
            let payload = Bytes::from(payload);
            for rules in [STRICT, AttributeRules::unlimited()] {
                let encoded = encode_headers(&headers, &payload, &rules);
                prop_assert_eq!(encoded.enveloped(), !headers.is_empty() && !headers_fit(&headers, &rules));
                if !encoded.enveloped() {
                    prop_assert_eq!(&encoded.body, &payload);
                }
            }
        }

        /// Collecting straight into a map gives what the list gives.
        #[test]
        fn into_a_map_as_into_a_list(headers in arbitrary_headers(), payload in prop::collection::vec(any::<u8>(), 0..64)) {
            let payload = Bytes::from(payload);
            for rules in [STRICT, AttributeRules::unlimited()] {
                let listed = encode_headers(&headers, &payload, &rules);
                let (body, mapped): (Bytes, HashMap<String, String>) = encode_headers_into(&headers, &payload, &rules);
                prop_assert_eq!(body, listed.body);
                prop_assert_eq!(mapped, listed.attributes.into_iter().collect::<HashMap<_, _>>());
            }
        }

        /// Arbitrary bytes marked as an envelope never panic.
        #[test]
        fn garbage_envelopes_never_panic(data in prop::collection::vec(any::<u8>(), 0..64)) {
            let attributes = HashMap::from([(ENVELOPE.to_owned(), "1".to_owned())]);
            if let Ok(decoded) = decode_headers(Bytes::from(data.clone()), attributes) {
                prop_assert!(decoded.payload.len() <= data.len());
            }
        }
    }
}
