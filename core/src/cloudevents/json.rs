//! The JSON event format (structured mode): members in the order they were given, JSON data
//! kept as its text, so a structured event converts to binary mode and back byte for byte.

use super::{AttributeValue, CloudEvent, is_json_media_type, is_text_media_type};
use crate::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

fn invalid(message: impl fmt::Display) -> Error {
    Error::config(format!("not a valid CloudEvent in JSON: {message}"))
}

/// The members of a JSON object in document order (serde_json's maps sort them).
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, &'de RawValue>()? {
                    members.push((name, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

pub(crate) fn read(text: &[u8]) -> Result<CloudEvent> {
    let Members(members) = serde_json::from_slice(text).map_err(invalid)?;
    let mut ce = CloudEvent::empty();
    let mut data: Option<&RawValue> = None;
    let mut data_base64: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    for (name, raw) in members {
        if !seen.insert(name.clone()) {
            return Err(invalid(format!("member `{name}` appears twice")));
        }
        match name.as_str() {
            "data" => data = Some(raw),
            "data_base64" => match serde_json::from_str::<Option<String>>(raw.get()) {
                Ok(v) => data_base64 = v,
                Err(_) => return Err(invalid("`data_base64` is not a string")),
            },
            _ => {
                let value: serde_json::Value = serde_json::from_str(raw.get()).map_err(invalid)?;
                let value = match value {
                    // Null is the same as absent.
                    serde_json::Value::Null => continue,
                    serde_json::Value::String(s) => AttributeValue::String(s),
                    serde_json::Value::Bool(b) => AttributeValue::Boolean(b),
                    serde_json::Value::Number(n) => match n.as_i64() {
                        Some(i) => AttributeValue::Integer(i),
                        None => {
                            return Err(invalid(format!(
                                "attribute `{name}` is {n}; numbers must be integers"
                            )));
                        }
                    },
                    _ => {
                        return Err(invalid(format!(
                            "attribute `{name}` is an object or array; attributes are strings, integers or booleans"
                        )));
                    }
                };
                ce.attributes.push((name, value));
            }
        }
    }
    match (data, data_base64) {
        (Some(_), Some(_)) => return Err(invalid("it has both `data` and `data_base64`")),
        (None, Some(b64)) => {
            let bytes = BASE64
                .decode(b64.as_bytes())
                .map_err(|e| invalid(format!("`data_base64` is not base64: {e}")))?;
            ce.data = Some(Bytes::from(bytes));
        }
        (Some(raw), None) => match ce.data_content_type().map(str::to_owned) {
            Some(ct) if !is_json_media_type(&ct) => {
                // Not JSON: the member is the data as a string.
                let text: String = serde_json::from_str(raw.get()).map_err(|_| {
                    invalid(format!(
                        "`data` is not a string, and `datacontenttype` `{ct}` is not JSON"
                    ))
                })?;
                ce.data = Some(Bytes::from(text));
            }
            ct => {
                // JSON data is its text; an event without a content type has JSON data, and
                // says so once it leaves this format (the JSON format asks for that).
                if ct.is_none() {
                    ce.set_attribute("datacontenttype", "application/json");
                }
                ce.data = Some(Bytes::copy_from_slice(raw.get().as_bytes()));
            }
        },
        (None, None) => {}
    }
    Ok(ce)
}

pub(crate) fn write(ce: &CloudEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + ce.data.as_ref().map_or(0, |d| d.len() * 4 / 3));
    out.push(b'{');
    let mut first = true;
    let mut member = |out: &mut Vec<u8>, name: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        push_json_string(out, name);
        out.push(b':');
    };
    for (name, value) in &ce.attributes {
        member(&mut out, name);
        match value {
            AttributeValue::String(s) => push_json_string(&mut out, s),
            AttributeValue::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
            AttributeValue::Boolean(b) => {
                out.extend_from_slice(if *b { b"true" } else { b"false" })
            }
        }
    }
    if let Some(data) = &ce.data {
        match ce.data_content_type() {
            Some(ct) if is_json_media_type(ct) => {
                match serde_json::from_slice::<&RawValue>(data) {
                    Ok(raw) => {
                        member(&mut out, "data");
                        out.extend_from_slice(raw.get().as_bytes());
                    }
                    // Declared JSON but is not: carried as bytes, so nothing is lost.
                    Err(_) => {
                        member(&mut out, "data_base64");
                        push_json_string(&mut out, &BASE64.encode(data));
                    }
                }
            }
            Some(ct) if is_text_media_type(ct) && std::str::from_utf8(data).is_ok() => {
                member(&mut out, "data");
                push_json_string(&mut out, std::str::from_utf8(data).unwrap_or_default());
            }
            _ => {
                member(&mut out, "data_base64");
                push_json_string(&mut out, &BASE64.encode(data));
            }
        }
    }
    out.push(b'}');
    out
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_keep_their_order_and_json_data_its_text() {
        let text = br#"{"specversion":"1.0","type":"t","source":"/s","id":"1","zeta":true,"alpha":-5,"datacontenttype":"application/json","data":{"b" : 1,"a":[1, 2]}}"#;
        let ce = read(text).unwrap();
        let names: Vec<_> = ce.attributes().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "specversion",
                "type",
                "source",
                "id",
                "zeta",
                "alpha",
                "datacontenttype"
            ]
        );
        assert_eq!(ce.data().unwrap().as_ref(), br#"{"b" : 1,"a":[1, 2]}"#);
        assert_eq!(write(&ce), text);
    }

    #[test]
    fn data_takes_the_form_its_content_type_asks_for() {
        let base = CloudEvent::new("1", "/s", "t");
        let text = write(&base.clone().with_data("text/plain", "hé \"x\""));
        assert!(
            text.ends_with(r#""data":"hé \"x\""}"#.as_bytes()),
            "{}",
            String::from_utf8_lossy(&text)
        );
        let bin = write(
            &base
                .clone()
                .with_data("application/avro", vec![0u8, 159, 146, 150]),
        );
        assert!(bin.ends_with(br#""data_base64":"AJ+Slg=="}"#));
        let opaque = write(&base.clone().with_opaque_data("{}"));
        assert!(opaque.ends_with(br#""data_base64":"e30="}"#));
        let broken = write(&base.clone().with_data("application/json", "{not json"));
        assert!(broken.ends_with(br#""data_base64":"e25vdCBqc29u"}"#));
        for ce in [
            base.clone().with_data("text/plain", "hé"),
            base.clone().with_data("application/avro", vec![0u8, 255]),
            base.clone().with_opaque_data("{}"),
            base.clone().with_data("application/json", "{not json"),
            base.clone().with_data("application/json", "null"),
            base.clone(),
        ] {
            assert_eq!(read(&write(&ce)).unwrap(), ce);
        }
    }

    #[test]
    fn malformed_documents_are_named() {
        for (text, expected) in [
            (&br#"[1]"#[..], "a JSON object"),
            (br#"{"id":"1","id":"2"}"#, "appears twice"),
            (br#"{"x":1.5}"#, "integers"),
            (br#"{"x":{}}"#, "object or array"),
            (br#"{"data":1,"data_base64":"AA=="}"#, "both"),
            (br#"{"data_base64":"%%"}"#, "not base64"),
            (
                br#"{"datacontenttype":"text/plain","data":5}"#,
                "`data` is not a string",
            ),
            (b"{", "EOF"),
        ] {
            let err = read(text).unwrap_err();
            assert!(err.to_string().contains(expected), "{err} / {expected}");
        }
    }
}
