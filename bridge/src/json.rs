//! The JSON line format of `tributary produce --format json` and `tributary consume --format json`.
//!
//! ```text
//! {"key": "user-7", "payload": "hello", "headers": {"trace": "abc"}, "timestamp": 1700000000000}
//! ```
//! Text that is not valid UTF-8 travels as base64 under a `_b64` name (`key_b64`, `payload_b64`)
//! or, for a header value, as `{"b64": "..."}`. Headers are an object (members have no order
//! in JSON: they are read in name order), or an array of `[name, value]` pairs, which keeps
//! order and repeated names; `consume` prints the object form only when it loses neither. `consume` also prints
//! `stream`, `partition`, `position` and `attempt`; `produce` accepts and ignores them, so the
//! output of one feeds the other. `key` and `payload` are strings (or `null`): a number or an
//! object is refused, since JSON gives no one byte form for them; JSON text goes in a string.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};
use tributary::{Bytes, Delivery, Error, Event, Headers, Result, Timestamp};

fn text_or_b64(map: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => map.insert(name.to_owned(), Value::String(s.to_owned())),
        Err(_) => map.insert(format!("{name}_b64"), Value::String(B64.encode(bytes))),
    };
}

fn header_value(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => json!({ "b64": B64.encode(bytes) }),
    }
}

/// Renders a delivery as one JSON line (without the newline).
pub fn delivery_to_json(stream: &str, d: &Delivery) -> String {
    let mut map = Map::new();
    map.insert("stream".into(), Value::String(stream.to_owned()));
    if let Some(p) = &d.partition {
        map.insert("partition".into(), Value::String(p.to_string()));
    }
    if let Some(p) = &d.position {
        map.insert("position".into(), Value::String(p.to_string()));
    }
    if let Some(a) = d.attempt {
        map.insert("attempt".into(), json!(a));
    }
    if let Some(t) = d.event.timestamp {
        map.insert("timestamp".into(), json!(t.as_millis()));
    }
    if let Some(k) = &d.event.key {
        text_or_b64(&mut map, "key", k);
    }
    let names: Vec<&str> = d.event.headers.iter().map(|(n, _)| n).collect();
    // A JSON object's members have no order (and are read back sorted), so headers print as
    // an object only when their names are unique and already in order; otherwise as pairs.
    let as_object = names.windows(2).all(|w| w[0] < w[1]);
    if !d.event.headers.is_empty() {
        let headers = if as_object {
            Value::Object(
                d.event
                    .headers
                    .iter()
                    .map(|(n, v)| (n.to_owned(), header_value(v)))
                    .collect(),
            )
        } else {
            Value::Array(
                d.event
                    .headers
                    .iter()
                    .map(|(n, v)| json!([n, header_value(v)]))
                    .collect(),
            )
        };
        map.insert("headers".into(), headers);
    }
    text_or_b64(&mut map, "payload", &d.event.payload);
    Value::Object(map).to_string()
}

fn bytes_field(map: &Map<String, Value>, name: &str, line: usize) -> Result<Option<Bytes>> {
    let b64_name = format!("{name}_b64");
    match (map.get(name), map.get(&b64_name)) {
        (Some(_), Some(_)) => Err(Error::config(format!(
            "line {line}: give `{name}` or `{b64_name}`, not both"
        ))),
        (Some(Value::String(s)), None) => Ok(Some(Bytes::from(s.clone()))),
        (Some(Value::Null), None) | (None, None) => Ok(None),
        // A number or object has no one byte form (`1e2`, `100.0` and `100` are one number):
        // refuse rather than guess; JSON text travels as a string.
        (Some(other), None) => Err(Error::config(format!(
            "line {line}: `{name}` must be a string, not {}; to send JSON as the {name}, \
             put it in a string (\"{{\\\"a\\\":1}}\"); bytes go in `{b64_name}`",
            json_type(other)
        ))),
        (None, Some(Value::String(s))) => {
            B64.decode(s).map(|b| Some(Bytes::from(b))).map_err(|e| {
                Error::config(format!(
                    "line {line}: `{b64_name}` is not valid base64: {e}"
                ))
            })
        }
        (None, Some(_)) => Err(Error::config(format!(
            "line {line}: `{b64_name}` must be a base64 string"
        ))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_header_value(v: &Value, line: usize, name: &str) -> Result<Bytes> {
    match v {
        Value::String(s) => Ok(Bytes::from(s.clone())),
        Value::Object(o) if o.len() == 1 && o.get("b64").is_some_and(Value::is_string) => {
            let s = o["b64"].as_str().expect("checked");
            B64.decode(s).map(Bytes::from).map_err(|e| {
                Error::config(format!("line {line}: header `{name}`: invalid base64: {e}"))
            })
        }
        _ => Err(Error::config(format!(
            "line {line}: header `{name}` must be a string or {{\"b64\": \"...\"}}"
        ))),
    }
}

const KNOWN: &[&str] = &[
    "key",
    "key_b64",
    "payload",
    "payload_b64",
    "headers",
    "timestamp",
    "stream",
    "partition",
    "position",
    "attempt",
];

/// Parses one input line into an event. `line` is 1-based, for error messages.
pub fn event_from_json(text: &str, line: usize) -> Result<Event> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Error::config(format!("line {line}: not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(Error::config(format!(
            "line {line}: expected a JSON object"
        )));
    };
    if let Some(unknown) = map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(Error::config(format!(
            "line {line}: unknown field `{unknown}`; known fields: {}",
            KNOWN.join(", ")
        )));
    }
    let mut headers = Headers::new();
    match map.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            for (n, v) in o {
                headers.append(n.clone(), parse_header_value(v, line, n)?);
            }
        }
        Some(Value::Array(pairs)) => {
            for pair in pairs {
                match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(n), v]) => {
                        headers.append(n.clone(), parse_header_value(v, line, n)?)
                    }
                    _ => {
                        return Err(Error::config(format!(
                            "line {line}: header pairs must be [\"name\", value]"
                        )));
                    }
                }
            }
        }
        Some(_) => {
            return Err(Error::config(format!(
                "line {line}: `headers` must be an object or an array of [name, value] pairs"
            )));
        }
    }
    let timestamp = match map.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(Timestamp::from_millis(n.as_i64().ok_or_else(|| {
            Error::config(format!(
                "line {line}: `timestamp` must be integer milliseconds"
            ))
        })?)),
        Some(Value::String(s)) => Some(tributary::time::parse_rfc3339(s).ok_or_else(|| {
            Error::config(format!(
                "line {line}: `timestamp` `{s}` is not RFC 3339 (e.g. 2024-05-01T10:00:00Z)"
            ))
        })?),
        Some(_) => {
            return Err(Error::config(format!(
                "line {line}: `timestamp` must be milliseconds or an RFC 3339 string"
            )));
        }
    };
    Ok(Event {
        key: bytes_field(&map, "key", line)?,
        payload: bytes_field(&map, "payload", line)?.unwrap_or_default(),
        headers,
        timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_binary_and_duplicates() {
        let event = Event::new(vec![0xffu8, 0])
            .with_key(vec![0xfeu8])
            .with_header("a", "1")
            .with_header("a", vec![0xffu8])
            .with_timestamp(Timestamp::from_millis(5));
        let d = tributary::Delivery {
            event: event.clone(),
            partition: None,
            position: None,
            attempt: None,
            handle: tributary::AckHandle::new(Box::new(Noop)),
        };
        let line = delivery_to_json("s", &d);
        assert_eq!(event_from_json(&line, 1).unwrap(), event);
        d.ack();
    }

    /// Found by the json_lines fuzz target: unique header names out of name order came back
    /// sorted.
    #[test]
    fn header_order_survives_the_round_trip() {
        let line = r#"{"headers":[["dup","1"],["du1",{"b64":"AP8="}]],"payload":"p"}"#;
        let event = event_from_json(line, 1).unwrap();
        let d = tributary::Delivery {
            event: event.clone(),
            partition: None,
            position: None,
            attempt: None,
            handle: tributary::AckHandle::new(Box::new(Noop)),
        };
        assert_eq!(
            event_from_json(&delivery_to_json("s", &d), 1).unwrap(),
            event
        );
        d.ack();
    }

    struct Noop;
    impl tributary::Acknowledge for Noop {
        fn settle(self: Box<Self>, _: tributary::Outcome) {}
    }

    #[test]
    fn errors_name_the_line_and_field() {
        for (input, needle) in [
            ("{", "line 3: not valid JSON"),
            ("[]", "expected a JSON object"),
            (r#"{"paylod": "x"}"#, "unknown field `paylod`"),
            (r#"{"key_b64": "!!"}"#, "not valid base64"),
            (r#"{"headers": {"h": 1}}"#, "header `h`"),
            (r#"{"timestamp": "yesterday"}"#, "not RFC 3339"),
            (r#"{"key": "a", "key_b64": "YQ=="}"#, "not both"),
            (
                r#"{"payload": 12}"#,
                "`payload` must be a string, not a number",
            ),
            (
                r#"{"payload": {"a": 1}}"#,
                "`payload` must be a string, not an object",
            ),
            (r#"{"payload": true}"#, "not a boolean"),
            (r#"{"key": 7}"#, "`key` must be a string, not a number"),
        ] {
            let e = event_from_json(input, 3).unwrap_err().to_string();
            assert!(e.contains(needle), "{input}: {e}");
        }
    }
}
