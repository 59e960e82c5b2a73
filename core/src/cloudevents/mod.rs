//! CloudEvents 1.0 on every backend, in binary and structured content mode, following each
//! platform's protocol binding (enabled by the `cloudevents` feature).
//!
//! | backend | [`Binding`] | binary mode | structured mode |
//! |---|---|---|---|
//! | Kafka | [`Binding::Kafka`] | `ce_` headers, `datacontenttype` in `content-type` | `content-type: application/cloudevents+json` |
//! | Event Hubs | [`Binding::Amqp`] | `cloudEvents:` application properties (`cloudEvents_` read too), `datacontenttype` in `content-type` | the same |
//! | Pub/Sub | [`Binding::PubSub`] | `ce-` attributes (Google's draft binding) | the same |
//! | Pulsar, Kinesis, `memory://`, `file://` | [`Binding::Generic`] | Kafka's header names | the default: JSON in the payload |
//!
//! Binary mode keeps the data as the payload, byte for byte, and each attribute in a header;
//! structured mode puts the whole event, data included, in the payload as JSON
//! (`application/cloudevents+json`). Receivers tell the modes apart by `content-type`, as
//! every binding says. Headers that are not CloudEvents attributes (`traceparent`, lineage)
//! are left alone in both modes, and the event's key is the caller's: bindings map the key
//! as the application chose (use [`CloudEvent::partition_key`] to key by `partitionkey`).
//!
//! ```
//! use tributary::cloudevents::{Binding, CloudEvent, Mode};
//!
//! let ce = CloudEvent::new("1234-1234-1234", "/mycontext/subcontext", "com.example.someevent")
//!     .with_time("2018-04-05T03:56:24Z")
//!     .with_data("application/json", r#"{"total":42}"#);
//! let event = ce.to_event(Binding::Kafka, Mode::Binary).unwrap();
//! assert_eq!(event.headers.get("ce_type").unwrap().as_ref(), b"com.example.someevent");
//! assert_eq!(event.headers.get("content-type").unwrap().as_ref(), b"application/json");
//! assert_eq!(event.payload.as_ref(), br#"{"total":42}"#);
//! assert_eq!(CloudEvent::from_event(&event, Binding::Kafka).unwrap(), ce);
//! ```
//!
//! [`CloudEvent`] keeps every attribute exactly as it was written (a `time` stays in the
//! form it came in, JSON data keeps its bytes), so converting between modes and bindings is
//! lossless. For the `cloudevents-sdk` crate's [`Event`](sdk::Event) (re-exported as
//! [`sdk`]), use `TryFrom` in either direction.
//!
//! A malformed CloudEvent (no `id`, a `time` that is not RFC 3339, a `specversion` other than
//! `1.0`, JSON that is not an event) is an [`ErrorKind::Config`](crate::ErrorKind::Config)
//! error naming what is wrong.

mod binding;
mod json;
mod sdk_conversion;

pub use binding::{Binding, Mode, convert, mode_of};
/// The `cloudevents-sdk` crate, for its [`Event`](sdk::Event) type and HTTP bindings.
pub use cloudevents as sdk;

use crate::{Error, Result};
use bytes::Bytes;

/// The CloudEvents version this module reads and writes.
pub const SPEC_VERSION: &str = "1.0";
/// The media type of the JSON event format (structured mode).
pub const JSON_MEDIA_TYPE: &str = "application/cloudevents+json";
/// The `content-type` value written in structured mode, as the Kafka, Pub/Sub and HTTP
/// bindings show it (the AMQP binding's example writes `charset=utf-8`; charsets are
/// case-insensitive).
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=UTF-8";

/// An attribute's value in the CloudEvents type system. Strings carry every type's canonical
/// string form (URI, timestamp, base64 binary); JSON keeps integers and booleans apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// A string, or the canonical string form of a URI, URI-reference, timestamp or binary.
    String(String),
    /// An integer (JSON number).
    Integer(i64),
    /// A boolean (JSON `true`/`false`).
    Boolean(bool),
}

impl AttributeValue {
    /// The canonical string form, as binary mode writes it.
    pub fn to_canonical_string(&self) -> String {
        match self {
            AttributeValue::String(s) => s.clone(),
            AttributeValue::Integer(i) => i.to_string(),
            AttributeValue::Boolean(b) => b.to_string(),
        }
    }
    /// The string, when it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttributeValue::String(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&str> for AttributeValue {
    fn from(s: &str) -> Self {
        AttributeValue::String(s.to_owned())
    }
}
impl From<String> for AttributeValue {
    fn from(s: String) -> Self {
        AttributeValue::String(s)
    }
}
impl From<i64> for AttributeValue {
    fn from(i: i64) -> Self {
        AttributeValue::Integer(i)
    }
}
impl From<bool> for AttributeValue {
    fn from(b: bool) -> Self {
        AttributeValue::Boolean(b)
    }
}

/// One CloudEvent: its context attributes in the order they were given, and its data.
///
/// Built with [`CloudEvent::new`] and the `with_` methods, or read from an event with
/// [`CloudEvent::from_event`]; [`CloudEvent::validate`] says whether it is a valid CloudEvent
/// 1.0 (encoding checks it too). Two events are equal when they have the same attributes,
/// in any order, and the same data.
#[derive(Debug, Clone)]
pub struct CloudEvent {
    attributes: Vec<(String, AttributeValue)>,
    data: Option<Bytes>,
}

impl PartialEq for CloudEvent {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data
            && self.attributes.len() == other.attributes.len()
            && self
                .attributes
                .iter()
                .all(|(n, v)| other.attribute(n) == Some(v))
    }
}

impl Eq for CloudEvent {}

impl CloudEvent {
    /// An event with the required attributes (`specversion` is `1.0`).
    pub fn new(id: impl Into<String>, source: impl Into<String>, ty: impl Into<String>) -> Self {
        CloudEvent {
            attributes: vec![
                ("specversion".into(), SPEC_VERSION.into()),
                ("id".into(), AttributeValue::String(id.into())),
                ("source".into(), AttributeValue::String(source.into())),
                ("type".into(), AttributeValue::String(ty.into())),
            ],
            data: None,
        }
    }

    pub(crate) fn empty() -> Self {
        CloudEvent {
            attributes: Vec::new(),
            data: None,
        }
    }

    /// Sets an attribute (core or extension), replacing one of the same name in place.
    pub fn with_attribute(mut self, name: &str, value: impl Into<AttributeValue>) -> Self {
        self.set_attribute(name, value);
        self
    }
    /// Sets an attribute (core or extension), replacing one of the same name in place.
    pub fn set_attribute(&mut self, name: &str, value: impl Into<AttributeValue>) {
        let value = value.into();
        match self.attributes.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.attributes.push((name.to_owned(), value)),
        }
    }
    /// Removes an attribute; returns its value.
    pub fn remove_attribute(&mut self, name: &str) -> Option<AttributeValue> {
        let i = self.attributes.iter().position(|(n, _)| n == name)?;
        Some(self.attributes.remove(i).1)
    }
    /// Sets `time` (RFC 3339, kept as written).
    pub fn with_time(self, time: impl Into<String>) -> Self {
        self.with_attribute("time", time.into())
    }
    /// Sets `subject`.
    pub fn with_subject(self, subject: impl Into<String>) -> Self {
        self.with_attribute("subject", subject.into())
    }
    /// Sets the data and its `datacontenttype`.
    pub fn with_data(mut self, content_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        self.set_attribute("datacontenttype", content_type.into());
        self.data = Some(data.into());
        self
    }
    /// Sets the data without a content type (it is then opaque bytes to every reader).
    pub fn with_opaque_data(mut self, data: impl Into<Bytes>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// An attribute by name.
    pub fn attribute(&self, name: &str) -> Option<&AttributeValue> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
    fn string(&self, name: &str) -> Option<&str> {
        self.attribute(name).and_then(AttributeValue::as_str)
    }
    /// Every attribute, in order.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &AttributeValue)> {
        self.attributes.iter().map(|(n, v)| (n.as_str(), v))
    }
    /// `specversion`.
    pub fn spec_version(&self) -> Option<&str> {
        self.string("specversion")
    }
    /// `id`.
    pub fn id(&self) -> Option<&str> {
        self.string("id")
    }
    /// `source`.
    pub fn source(&self) -> Option<&str> {
        self.string("source")
    }
    /// `type`.
    pub fn ty(&self) -> Option<&str> {
        self.string("type")
    }
    /// `subject`.
    pub fn subject(&self) -> Option<&str> {
        self.string("subject")
    }
    /// `time`, as written.
    pub fn time(&self) -> Option<&str> {
        self.string("time")
    }
    /// `datacontenttype`.
    pub fn data_content_type(&self) -> Option<&str> {
        self.string("datacontenttype")
    }
    /// `dataschema`.
    pub fn data_schema(&self) -> Option<&str> {
        self.string("dataschema")
    }
    /// The `partitionkey` extension (the Partitioning extension), for keying events by it.
    pub fn partition_key(&self) -> Option<&str> {
        self.string("partitionkey")
    }
    /// The data, if any.
    pub fn data(&self) -> Option<&Bytes> {
        self.data.as_ref()
    }
    /// Replaces the data (without touching `datacontenttype`).
    pub fn set_data(&mut self, data: Option<Bytes>) {
        self.data = data;
    }

    /// Checks the rules of CloudEvents 1.0: `specversion` is `1.0`; `id`, `source` and `type`
    /// are non-empty strings; attribute names are lower-case letters and digits; `time` is
    /// RFC 3339; `datacontenttype`, `dataschema` and `subject` are strings.
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(Error::config(format!("not a valid CloudEvent: {m}")));
        match self.attribute("specversion") {
            Some(AttributeValue::String(v)) if v == SPEC_VERSION => {}
            Some(v) => {
                return invalid(format!(
                    "specversion is `{}`; only `1.0` is supported",
                    v.to_canonical_string()
                ));
            }
            None => return invalid("specversion is missing".into()),
        }
        for required in ["id", "source", "type"] {
            match self.attribute(required) {
                Some(AttributeValue::String(v)) if !v.is_empty() => {}
                Some(AttributeValue::String(_)) => {
                    return invalid(format!("`{required}` is empty"));
                }
                Some(_) => return invalid(format!("`{required}` is not a string")),
                None => return invalid(format!("`{required}` is missing")),
            }
        }
        for (name, value) in &self.attributes {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                return invalid(format!(
                    "attribute name `{name}` is not lower-case letters and digits"
                ));
            }
            let is_string = matches!(value, AttributeValue::String(_));
            match name.as_str() {
                "datacontenttype" | "dataschema" | "subject" if !is_string => {
                    return invalid(format!("`{name}` is not a string"));
                }
                "time" => match value {
                    AttributeValue::String(t) if crate::time::parse_rfc3339(t).is_some() => {}
                    _ => {
                        return invalid(format!(
                            "`time` is `{}`, not an RFC 3339 timestamp",
                            value.to_canonical_string()
                        ));
                    }
                },
                _ => {}
            }
        }
        Ok(())
    }

    /// This event as a tributary event for `binding` in `mode`, with `time` as the event's
    /// timestamp and no key (choose one: [`crate::Event::with_key`]).
    pub fn to_event(&self, binding: Binding, mode: Mode) -> Result<crate::Event> {
        binding::encode(self, binding, mode)
    }

    /// Reads the CloudEvent in `event`, in whichever mode it was written for `binding`.
    /// An event that is no CloudEvent is an [`ErrorKind::Config`](crate::ErrorKind::Config)
    /// error; [`mode_of`] tells first without an error.
    pub fn from_event(event: &crate::Event, binding: Binding) -> Result<CloudEvent> {
        binding::decode(event, binding).map(|(ce, _)| ce)
    }

    /// The JSON event format (`application/cloudevents+json`), on one line.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        self.validate()?;
        Ok(json::write(self))
    }

    /// Reads the JSON event format.
    pub fn from_json(text: &[u8]) -> Result<CloudEvent> {
        let ce = json::read(text)?;
        ce.validate()?;
        Ok(ce)
    }
}

/// Whether a media type declares JSON data: `*/json` or `*/*+json`, parameters aside.
pub(crate) fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.split_once('/') {
        Some((_, sub)) => sub == "json" || sub.ends_with("+json"),
        None => false,
    }
}

/// Whether a media type declares text, which the JSON format carries as a string: `text/*`,
/// XML, or any type with a `charset`.
pub(crate) fn is_text_media_type(content_type: &str) -> bool {
    let lower = content_type.to_ascii_lowercase();
    let essence = lower.split(';').next().unwrap_or("").trim();
    essence.starts_with("text/")
        || essence.ends_with("/xml")
        || essence.ends_with("+xml")
        || lower
            .split(';')
            .skip(1)
            .any(|p| p.trim().starts_with("charset="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        let ok = CloudEvent::new("1", "/s", "t").with_time("2018-04-05T17:31:00Z");
        ok.validate().unwrap();
        let cases = [
            (CloudEvent::new("", "/s", "t"), "`id` is empty"),
            (
                CloudEvent::new("1", "/s", "t").with_attribute("specversion", "0.3"),
                "only `1.0`",
            ),
            (
                CloudEvent::new("1", "/s", "t").with_time("yesterday"),
                "RFC 3339",
            ),
            (
                CloudEvent::new("1", "/s", "t").with_attribute("Bad-Name", "x"),
                "`Bad-Name`",
            ),
            (
                CloudEvent::new("1", "/s", "t").with_attribute("subject", 5),
                "`subject` is not a string",
            ),
        ];
        for (ce, expected) in cases {
            let err = ce.validate().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config);
            assert!(err.to_string().contains(expected), "{err} / {expected}");
        }
        let mut missing = CloudEvent::new("1", "/s", "t");
        missing.remove_attribute("type");
        assert!(
            missing
                .validate()
                .unwrap_err()
                .to_string()
                .contains("`type` is missing")
        );
    }

    #[test]
    fn media_types() {
        for json in [
            "application/json",
            "application/json; charset=utf-8",
            "application/cloudevents+json",
            "text/JSON",
        ] {
            assert!(is_json_media_type(json), "{json}");
        }
        for other in ["application/xml", "text/plain", "application/jsonx", "json"] {
            assert!(!is_json_media_type(other), "{other}");
        }
        assert!(is_text_media_type("text/plain"));
        assert!(is_text_media_type("application/xml"));
        assert!(is_text_media_type("application/atom+xml"));
        assert!(is_text_media_type("application/x-thing; charset=utf-8"));
        assert!(!is_text_media_type("application/avro"));
    }
}
