//! The protocol bindings: where each attribute goes in binary mode, how the modes are told
//! apart, and conversion between bindings and modes.

use super::{AttributeValue, CloudEvent, JSON_MEDIA_TYPE, STRUCTURED_CONTENT_TYPE, json};
use crate::{Error, Event, Headers, Result};
use bytes::Bytes;

/// The two content modes of CloudEvents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Data in the payload as it is, attributes in headers.
    Binary,
    /// The whole event, data included, as JSON in the payload.
    Structured,
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode> {
        match s {
            "binary" => Ok(Mode::Binary),
            "structured" => Ok(Mode::Structured),
            other => Err(Error::config(format!(
                "unknown CloudEvents mode `{other}`; expected `binary` or `structured`"
            ))),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Binary => "binary",
            Mode::Structured => "structured",
        })
    }
}

/// A CloudEvents protocol binding: how attributes map to a platform's message headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Binding {
    /// The Kafka binding: `ce_` headers, `datacontenttype` in `content-type`.
    Kafka,
    /// The AMQP binding (Azure Event Hubs): `cloudEvents:` application properties
    /// (`cloudEvents_` read too), `datacontenttype` in the `content-type` property.
    Amqp,
    /// Google's Pub/Sub binding (a draft): `ce-` attributes, lower-case, `datacontenttype`
    /// in `ce-datacontenttype` (a `content-type` attribute is read as it too).
    PubSub,
    /// The HTTP binding: `ce-` headers read case-insensitively, `datacontenttype` in
    /// `content-type`.
    Http,
    /// Backends without a binding of their own (Pulsar, Kinesis, the local backend): Kafka's
    /// header names, with structured mode as the default.
    Generic,
}

impl Binding {
    /// The binding of a backend scheme (`kafka`, `eventhubs`, `pubsub`; the rest are
    /// [`Binding::Generic`]).
    pub fn for_scheme(scheme: &str) -> Binding {
        match scheme {
            "kafka" => Binding::Kafka,
            "eventhubs" => Binding::Amqp,
            "pubsub" => Binding::PubSub,
            _ => Binding::Generic,
        }
    }
    /// The mode written when none is asked for: binary where the platform has a binding,
    /// structured elsewhere.
    pub fn default_mode(self) -> Mode {
        match self {
            Binding::Generic => Mode::Structured,
            _ => Mode::Binary,
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            Binding::Kafka | Binding::Generic => "ce_",
            Binding::Amqp => "cloudEvents:",
            Binding::PubSub | Binding::Http => "ce-",
        }
    }
    fn read_prefixes(self) -> &'static [&'static str] {
        match self {
            Binding::Amqp => &["cloudEvents:", "cloudEvents_"],
            Binding::Kafka | Binding::Generic => &["ce_"],
            Binding::PubSub | Binding::Http => &["ce-"],
        }
    }
    fn case_insensitive(self) -> bool {
        matches!(self, Binding::PubSub | Binding::Http)
    }
    /// Where binary mode writes `datacontenttype`.
    fn data_content_type_header(self) -> &'static str {
        match self {
            Binding::PubSub => "ce-datacontenttype",
            _ => CONTENT_TYPE,
        }
    }
    /// The attribute a header carries in binary mode, if it carries one.
    fn attribute_of(self, header: &str) -> Option<String> {
        for prefix in self.read_prefixes() {
            let matches = if self.case_insensitive() {
                header.len() > prefix.len()
                    && header.is_char_boundary(prefix.len())
                    && header[..prefix.len()].eq_ignore_ascii_case(prefix)
            } else {
                header.len() > prefix.len() && header.starts_with(prefix)
            };
            if matches {
                let name = &header[prefix.len()..];
                return Some(if self.case_insensitive() {
                    name.to_ascii_lowercase()
                } else {
                    name.to_owned()
                });
            }
        }
        None
    }
    /// Whether two bindings write binary mode alike (Kafka and Generic do).
    fn same_binary_form(self, other: Binding) -> bool {
        self.read_prefixes() == other.read_prefixes()
            && self.prefix() == other.prefix()
            && self.case_insensitive() == other.case_insensitive()
            && self.data_content_type_header() == other.data_content_type_header()
    }
}

impl std::str::FromStr for Binding {
    type Err = Error;
    fn from_str(s: &str) -> Result<Binding> {
        match s {
            "kafka" => Ok(Binding::Kafka),
            "amqp" | "eventhubs" => Ok(Binding::Amqp),
            "pubsub" => Ok(Binding::PubSub),
            "http" => Ok(Binding::Http),
            "generic" => Ok(Binding::Generic),
            other => Err(Error::config(format!(
                "unknown CloudEvents binding `{other}`; expected kafka, amqp, pubsub, http or generic"
            ))),
        }
    }
}

const CONTENT_TYPE: &str = "content-type";

fn content_type(headers: &Headers) -> Option<&Bytes> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(CONTENT_TYPE))
        .map(|(_, v)| v)
}

fn is_cloudevents_media_type(value: &[u8]) -> bool {
    const PREFIX: &[u8] = b"application/cloudevents";
    value.len() >= PREFIX.len() && value[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
}

/// Which mode `event` is a CloudEvent in for `binding`: structured when its `content-type` is
/// a CloudEvents media type, binary when it has the binding's `specversion` header, `None`
/// when it is no CloudEvent.
pub fn mode_of(event: &Event, binding: Binding) -> Option<Mode> {
    if content_type(&event.headers).is_some_and(|v| is_cloudevents_media_type(v)) {
        return Some(Mode::Structured);
    }
    event
        .headers
        .iter()
        .any(|(n, _)| binding.attribute_of(n).as_deref() == Some("specversion"))
        .then_some(Mode::Binary)
}

/// The event format's media type without parameters, lower-cased.
fn essence(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Reads the CloudEvent in `event` and which of its headers carried it (and so are not
/// passed on as other headers when converting).
pub(crate) fn decode(event: &Event, binding: Binding) -> Result<(CloudEvent, Vec<bool>)> {
    let Some(mode) = mode_of(event, binding) else {
        return Err(Error::config(format!(
            "not a CloudEvent: no `content-type: {JSON_MEDIA_TYPE}` and no `{}specversion` header",
            binding.prefix()
        )));
    };
    let mut consumed = vec![false; event.headers.len()];
    let ce = match mode {
        Mode::Structured => {
            let format = content_type(&event.headers)
                .map(|v| essence(v))
                .unwrap_or_default();
            if format != JSON_MEDIA_TYPE {
                return Err(Error::unsupported(format!(
                    "CloudEvents format `{format}` is not supported; only {JSON_MEDIA_TYPE}"
                )));
            }
            for (i, (name, _)) in event.headers.iter().enumerate() {
                // Structured events may repeat attributes in headers; the payload is the event.
                consumed[i] =
                    name.eq_ignore_ascii_case(CONTENT_TYPE) || binding.attribute_of(name).is_some();
            }
            json::read(&event.payload)?
        }
        Mode::Binary => {
            let mut ce = CloudEvent::empty();
            let mut content_type_header: Option<String> = None;
            for (i, (name, value)) in event.headers.iter().enumerate() {
                let attribute = if name.eq_ignore_ascii_case(CONTENT_TYPE) {
                    consumed[i] = true;
                    let value = utf8(name, value)?;
                    content_type_header = Some(value);
                    continue;
                } else if let Some(attribute) = binding.attribute_of(name) {
                    attribute
                } else {
                    continue;
                };
                consumed[i] = true;
                if ce.attribute(&attribute).is_some() {
                    return Err(Error::config(format!(
                        "not a valid CloudEvent: attribute `{attribute}` appears twice"
                    )));
                }
                let value = utf8(name, value)?;
                ce.attributes
                    .push((attribute, AttributeValue::String(value)));
            }
            // The content type property is `datacontenttype` (Pub/Sub: it wins over
            // `ce-datacontenttype`, its binding says MUST).
            if let Some(ct) = content_type_header {
                ce.set_attribute("datacontenttype", ct);
            }
            // A message without a value is an event without data (Kafka's binding).
            ce.data = (!event.payload.is_empty()).then(|| event.payload.clone());
            ce
        }
    };
    ce.validate()?;
    Ok((ce, consumed))
}

fn utf8(header: &str, value: &Bytes) -> Result<String> {
    String::from_utf8(value.to_vec()).map_err(|_| {
        Error::config(format!(
            "not a valid CloudEvent: header `{header}` is not UTF-8"
        ))
    })
}

pub(crate) fn encode(ce: &CloudEvent, binding: Binding, mode: Mode) -> Result<Event> {
    ce.validate()?;
    let mut event = Event {
        timestamp: ce.time().and_then(crate::time::parse_rfc3339),
        ..Event::default()
    };
    match mode {
        Mode::Structured => {
            let content_type = match binding {
                Binding::Amqp => "application/cloudevents+json; charset=utf-8",
                _ => STRUCTURED_CONTENT_TYPE,
            };
            event.headers.append(CONTENT_TYPE, content_type);
            event.payload = Bytes::from(json::write(ce));
        }
        Mode::Binary => {
            let prefix = binding.prefix();
            for (name, value) in &ce.attributes {
                if name != "datacontenttype" {
                    event
                        .headers
                        .append(format!("{prefix}{name}"), value.to_canonical_string());
                }
            }
            // Last, where every binding's example has it.
            if let Some(ct) = ce.data_content_type() {
                event
                    .headers
                    .append(binding.data_content_type_header(), ct.to_owned());
            }
            event.payload = ce.data.clone().unwrap_or_default();
        }
    }
    Ok(event)
}

/// Converts a CloudEvent written for `from` into one for `to`, in `mode` (`None`: the mode
/// it is in). Key, timestamp and every header that is not a CloudEvents attribute are kept;
/// an event that is no CloudEvent, or is in a format other than JSON, is returned as it is
/// (the bindings let intermediaries forward what they cannot read). A malformed CloudEvent
/// is an error.
pub fn convert(event: Event, from: Binding, to: Binding, mode: Option<Mode>) -> Result<Event> {
    let Some(current) = mode_of(&event, from) else {
        return Ok(event);
    };
    let target = mode.unwrap_or(current);
    let unchanged = match (current, target) {
        (Mode::Structured, Mode::Structured) => true,
        (Mode::Binary, Mode::Binary) => from.same_binary_form(to),
        _ => false,
    };
    if unchanged {
        return Ok(event);
    }
    if current == Mode::Structured
        && content_type(&event.headers).map(|v| essence(v)).as_deref() != Some(JSON_MEDIA_TYPE)
    {
        return Ok(event);
    }
    let (ce, consumed) = decode(&event, from)?;
    let mut out = encode(&ce, to, target)?;
    out.key = event.key;
    out.timestamp = event.timestamp.or(out.timestamp);
    for ((name, value), consumed) in event.headers.into_iter().zip(consumed) {
        if !consumed {
            out.headers.append(name, value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CloudEvent {
        CloudEvent::new(
            "1234-1234-1234",
            "/mycontext/subcontext",
            "com.example.someevent",
        )
        .with_time("2018-04-05T03:56:24Z")
        .with_attribute("comexampleothervalue", 5)
        .with_data("application/json", r#"{"a" : 1}"#)
    }

    #[test]
    fn every_binding_round_trips_in_both_modes() {
        for binding in [
            Binding::Kafka,
            Binding::Amqp,
            Binding::PubSub,
            Binding::Http,
            Binding::Generic,
        ] {
            for mode in [Mode::Binary, Mode::Structured] {
                let event = encode(&sample(), binding, mode).unwrap();
                assert_eq!(mode_of(&event, binding), Some(mode), "{binding:?} {mode:?}");
                let back = CloudEvent::from_event(&event, binding).unwrap();
                let mut expected = sample();
                if mode == Mode::Binary {
                    // Binary mode has strings only.
                    expected.set_attribute("comexampleothervalue", "5");
                }
                assert_eq!(back, expected, "{binding:?} {mode:?}");
            }
        }
    }

    #[test]
    fn conversion_keeps_key_timestamp_and_other_headers() {
        let mut event = encode(&sample(), Binding::Kafka, Mode::Binary).unwrap();
        event.key = Some("k".into());
        event.headers.append(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        let to_pubsub = convert(event.clone(), Binding::Kafka, Binding::PubSub, None).unwrap();
        let names: Vec<_> = to_pubsub
            .headers
            .iter()
            .map(|(n, _)| n.to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "ce-specversion",
                "ce-id",
                "ce-source",
                "ce-type",
                "ce-time",
                "ce-comexampleothervalue",
                "ce-datacontenttype",
                "traceparent"
            ]
        );
        assert_eq!(to_pubsub.key, event.key);
        assert_eq!(to_pubsub.payload, event.payload);
        let structured = convert(
            to_pubsub,
            Binding::PubSub,
            Binding::Kafka,
            Some(Mode::Structured),
        )
        .unwrap();
        assert_eq!(structured.headers.len(), 2);
        assert!(structured.headers.get("traceparent").is_some());
        let back = convert(
            structured,
            Binding::Kafka,
            Binding::Kafka,
            Some(Mode::Binary),
        )
        .unwrap();
        assert_eq!(
            back, event,
            "binary → binary → structured → binary is lossless"
        );
        // Same form: nothing to do. Not a CloudEvent: passed on as it is.
        let same = convert(event.clone(), Binding::Kafka, Binding::Generic, None).unwrap();
        assert_eq!(same, event);
        let plain = Event::new("x").with_header("content-type", "text/plain");
        assert_eq!(
            convert(
                plain.clone(),
                Binding::Kafka,
                Binding::PubSub,
                Some(Mode::Structured)
            )
            .unwrap(),
            plain
        );
        let avro = Event::new("x").with_header("content-type", "application/cloudevents+avro");
        assert_eq!(
            convert(
                avro.clone(),
                Binding::Kafka,
                Binding::PubSub,
                Some(Mode::Binary)
            )
            .unwrap(),
            avro
        );
        assert_eq!(
            CloudEvent::from_event(&avro, Binding::Kafka)
                .unwrap_err()
                .kind(),
            crate::ErrorKind::Unsupported
        );
    }

    #[test]
    fn pubsub_content_type_attribute_wins() {
        let event = Event::new("<x/>")
            .with_header("ce-specversion", "1.0")
            .with_header("CE-ID", "1")
            .with_header("ce-source", "/s")
            .with_header("ce-type", "t")
            .with_header("ce-datacontenttype", "text/plain")
            .with_header("content-type", "application/xml");
        let ce = CloudEvent::from_event(&event, Binding::PubSub).unwrap();
        assert_eq!(ce.data_content_type(), Some("application/xml"));
        assert_eq!(ce.id(), Some("1"));
    }

    #[test]
    fn amqp_reads_both_separators() {
        let event = Event::new("")
            .with_header("cloudEvents_specversion", "1.0")
            .with_header("cloudEvents_id", "1")
            .with_header("cloudEvents_source", "/s")
            .with_header("cloudEvents_type", "t");
        let ce = CloudEvent::from_event(&event, Binding::Amqp).unwrap();
        assert_eq!(ce.ty(), Some("t"));
        assert!(ce.data().is_none());
        let twice = event.with_header("cloudEvents:id", "2");
        let err = CloudEvent::from_event(&twice, Binding::Amqp).unwrap_err();
        assert!(err.to_string().contains("`id` appears twice"), "{err}");
    }

    #[test]
    fn bad_binary_events_are_refused() {
        let not_ce = Event::new("x");
        let err = CloudEvent::from_event(&not_ce, Binding::Kafka).unwrap_err();
        assert!(err.to_string().contains("`ce_specversion`"), "{err}");
        let no_type = Event::new("x")
            .with_header("ce_specversion", "1.0")
            .with_header("ce_id", "1")
            .with_header("ce_source", "/s");
        let err = CloudEvent::from_event(&no_type, Binding::Kafka).unwrap_err();
        assert!(err.to_string().contains("`type` is missing"), "{err}");
        let bad_utf8 = Event::new("x")
            .with_header("ce_specversion", "1.0")
            .with_header("ce_id", vec![0xffu8]);
        assert!(CloudEvent::from_event(&bad_utf8, Binding::Kafka).is_err());
    }
}
