//! CloudEvents against the examples of the specifications themselves, byte for byte, and round
//! trips in both content modes through the local backends.
//!
//! The examples are quoted from the CloudEvents 1.0 specification (the Kafka and AMQP protocol
//! bindings, the JSON event format) and Google's Pub/Sub binding for CloudEvents. In the binding
//! examples a header is a line `name: value`; the Kafka example quotes string values, which is
//! its notation for a string, not part of the value.

use tributary::cloudevents::{AttributeValue, Binding, CloudEvent, Mode};
use tributary::{ConsumerOptions, Event, StartPosition};

/// `name: value` lines of a binding example, quotes of the notation removed, placeholder
/// lines (`....`) skipped.
fn example_headers(block: &str) -> Vec<(String, String)> {
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('.'))
        .map(|l| {
            let (name, value) = l.split_once(": ").expect("name: value");
            let value = value.trim_end_matches(',');
            let name = name.trim_matches('"');
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

fn headers_of(event: &Event) -> Vec<(String, String)> {
    event
        .headers
        .iter()
        .map(|(n, v)| (n.to_owned(), String::from_utf8(v.to_vec()).unwrap()))
        .collect()
}

/// The event of an example, with its attributes in the example's order.
fn event_with(attributes: &[(&str, &str)]) -> CloudEvent {
    let mut ce = CloudEvent::new("x", "x", "x");
    for name in ["specversion", "id", "source", "type"] {
        ce.remove_attribute(name);
    }
    for (name, value) in attributes {
        ce.set_attribute(name, *value);
    }
    ce
}

// Kafka protocol binding, 3.2.5: binary content mode.
const KAFKA_BINARY_HEADERS: &str = r#"
ce_specversion: "1.0"
ce_type: "com.example.someevent"
ce_source: "/mycontext/subcontext"
ce_id: "1234-1234-1234"
ce_time: "2018-04-05T03:56:24Z"
content-type: application/avro
"#;

#[test]
fn kafka_binary_mode_matches_the_binding_example() {
    let avro = vec![0x02u8, 0x06, b'f', b'o', b'o'];
    let ce = event_with(&[
        ("specversion", "1.0"),
        ("type", "com.example.someevent"),
        ("source", "/mycontext/subcontext"),
        ("id", "1234-1234-1234"),
        ("time", "2018-04-05T03:56:24Z"),
    ])
    .with_data("application/avro", avro.clone());
    let event = ce
        .to_event(Binding::Kafka, Mode::Binary)
        .unwrap()
        .with_key("mykey");
    assert_eq!(headers_of(&event), example_headers(KAFKA_BINARY_HEADERS));
    assert_eq!(event.payload.as_ref(), &avro[..]);
    assert_eq!(event.key.as_deref(), Some(&b"mykey"[..]));
    // And the example, read.
    let mut message = Event::new(avro).with_key("mykey");
    for (name, value) in example_headers(KAFKA_BINARY_HEADERS) {
        message.headers.append(name, value);
    }
    let read = CloudEvent::from_event(&message, Binding::Kafka).unwrap();
    assert_eq!(read, ce);
    assert_eq!(read.time(), Some("2018-04-05T03:56:24Z"));
}

#[test]
fn structured_content_types_match_the_binding_examples() {
    let ce = CloudEvent::new(
        "1234-1234-1234",
        "/mycontext/subcontext",
        "com.example.someevent",
    );
    // Kafka binding 3.3.1, Pub/Sub binding 3.2.1, AMQP binding 3.2.4.
    for (binding, example) in [
        (
            Binding::Kafka,
            "content-type: application/cloudevents+json; charset=UTF-8",
        ),
        (
            Binding::PubSub,
            r#""content-type": "application/cloudevents+json; charset=UTF-8""#,
        ),
        (
            Binding::Amqp,
            "content-type: application/cloudevents+json; charset=utf-8",
        ),
    ] {
        let event = ce.to_event(binding, Mode::Structured).unwrap();
        assert_eq!(headers_of(&event), example_headers(example), "{binding:?}");
        assert_eq!(CloudEvent::from_event(&event, binding).unwrap(), ce);
    }
}

// AMQP protocol binding, 3.1.4: binary content mode (the properties section's content-type,
// then the application properties).
const AMQP_BINARY_PROPERTIES: &str = "
content-type: application/json; charset=utf-8
";
const AMQP_BINARY_APPLICATION_PROPERTIES: &str = "
cloudEvents:specversion: 1.0
cloudEvents:type: com.example.someevent
cloudEvents:time: 2018-04-05T03:56:24Z
cloudEvents:id: 1234-1234-1234
cloudEvents:source: /mycontext/subcontext
       .... further attributes ...
";

#[test]
fn amqp_binary_mode_matches_the_binding_example() {
    let ce = event_with(&[
        ("specversion", "1.0"),
        ("type", "com.example.someevent"),
        ("time", "2018-04-05T03:56:24Z"),
        ("id", "1234-1234-1234"),
        ("source", "/mycontext/subcontext"),
    ])
    .with_data("application/json; charset=utf-8", r#"{"appinfoA":"abc"}"#);
    let event = ce.to_event(Binding::Amqp, Mode::Binary).unwrap();
    let mut expected = example_headers(AMQP_BINARY_APPLICATION_PROPERTIES);
    expected.extend(example_headers(AMQP_BINARY_PROPERTIES));
    assert_eq!(headers_of(&event), expected);
    assert_eq!(CloudEvent::from_event(&event, Binding::Amqp).unwrap(), ce);
}

// Google's Pub/Sub binding for CloudEvents, 3.1.4: binary content mode.
const PUBSUB_BINARY_ATTRIBUTES: &str = r#"
  "ce-specversion": "1.0",
  "ce-type": "com.example.someevent",
  "ce-time": "2020-03-10T03:56:24Z",
  "ce-id": "1234-1234-1234",
  "ce-source": "/mycontext/subcontext",
    .... further attributes ...
  "ce-datacontenttype": "application/json; charset=utf-8",
"#;

#[test]
fn pubsub_binary_mode_matches_the_binding_example() {
    let ce = event_with(&[
        ("specversion", "1.0"),
        ("type", "com.example.someevent"),
        ("time", "2020-03-10T03:56:24Z"),
        ("id", "1234-1234-1234"),
        ("source", "/mycontext/subcontext"),
    ])
    .with_data("application/json; charset=utf-8", "{}");
    let event = ce.to_event(Binding::PubSub, Mode::Binary).unwrap();
    assert_eq!(
        headers_of(&event),
        example_headers(PUBSUB_BINARY_ATTRIBUTES)
    );
    assert_eq!(CloudEvent::from_event(&event, Binding::PubSub).unwrap(), ce);
}

/// The JSON event format's examples (section 3.2), each with its re-encoding in HTTP binary
/// mode as the format gives it: headers, a blank line, the data.
const JSON_FORMAT_EXAMPLES: &[(&str, &str)] = &[
    (
        r#"{
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "id" : "B234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "unsetextension": null,
    "datacontenttype" : "application/xml",
    "data" : "<much wow=\"xml\"/>"
}"#,
        r#"ce-specversion: 1.0
ce-type: com.example.someevent
ce-source: /mycontext
ce-id: B234-1234-1234
ce-time: 2018-04-05T17:31:00Z
ce-comexampleextension1: value
ce-comexampleothervalue: 5
content-type: application/xml

<much wow="xml"/>"#,
    ),
    (
        r#"{
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "subject": null,
    "id" : "C234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "datacontenttype" : "application/json",
    "data" : {
        "appinfoA" : "abc",
        "appinfoB" : 123,
        "appinfoC" : true
    }
}"#,
        r#"ce-specversion: 1.0
ce-type: com.example.someevent
ce-source: /mycontext
ce-id: C234-1234-1234
ce-time: 2018-04-05T17:31:00Z
ce-comexampleextension1: value
ce-comexampleothervalue: 5
content-type: application/json

{
  "appinfoA" : "abc",
  "appinfoB" : 123,
  "appinfoC" : true
}"#,
    ),
    (
        r#"{
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "subject": null,
    "id" : "C234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "datacontenttype" : "application/json",
    "data" : 1.5
}"#,
        r#"ce-specversion: 1.0
ce-type: com.example.someevent
ce-source: /mycontext
ce-id: C234-1234-1234
ce-time: 2018-04-05T17:31:00Z
ce-comexampleextension1: value
ce-comexampleothervalue: 5
content-type: application/json

1.5"#,
    ),
    (
        r#"{
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "subject": null,
    "id" : "D234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "data" : "I'm just a string"
}"#,
        r#"ce-specversion: 1.0
ce-type: com.example.someevent
ce-source: /mycontext
ce-id: D234-1234-1234
ce-time: 2018-04-05T17:31:00Z
ce-comexampleextension1: value
ce-comexampleothervalue: 5
content-type: application/json

"I'm just a string""#,
    ),
    (
        r#"{
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "id" : "D234-1234-1234",
    "data_base64" : "eyAieHl6IjogMTIzIH0="
}"#,
        r#"ce-specversion: 1.0
ce-type: com.example.someevent
ce-source: /mycontext
ce-id: D234-1234-1234

{ "xyz": 123 }"#,
    ),
];

fn json(text: &[u8]) -> serde_json::Value {
    serde_json::from_slice(text).unwrap()
}

#[test]
fn the_json_format_examples_re_encode_in_binary_mode_as_the_format_shows() {
    for (structured, binary) in JSON_FORMAT_EXAMPLES {
        let (head, data) = binary.split_once("\n\n").unwrap();
        let message = Event::new(structured.to_string())
            .with_header("content-type", "application/cloudevents+json");
        let ce = CloudEvent::from_event(&message, Binding::Http).unwrap();
        let event = ce.to_event(Binding::Http, Mode::Binary).unwrap();
        assert_eq!(headers_of(&event), example_headers(head), "{structured}");
        if ce.id() == Some("C234-1234-1234") && data.starts_with('{') {
            // The example's binary form re-indents the object; the data is the same JSON.
            assert_eq!(json(&event.payload), json(data.as_bytes()));
            assert_eq!(
                ce.data().unwrap().as_ref(),
                b"{\n        \"appinfoA\" : \"abc\",\n        \"appinfoB\" : 123,\n        \"appinfoC\" : true\n    }",
                "JSON data is carried as the document wrote it"
            );
        } else {
            assert_eq!(event.payload.as_ref(), data.as_bytes(), "{structured}");
        }

        // The binary example, read back and written in the JSON format, is the same event.
        let mut message = Event::new(data.to_string());
        for (name, value) in example_headers(head) {
            message.headers.append(name, value);
        }
        let from_binary = CloudEvent::from_event(&message, Binding::Http).unwrap();
        let written = json(&from_binary.to_json().unwrap());
        let mut original = json(structured.as_bytes());
        let original = original.as_object_mut().unwrap();
        original.retain(|_, v| !v.is_null());
        // Binary mode has only strings, and JSON data without a content type says it is JSON.
        if let Some(number) = original.get_mut("comexampleothervalue") {
            *number = "5".into();
        }
        if original.contains_key("data") && !original.contains_key("datacontenttype") {
            original.insert("datacontenttype".into(), "application/json".into());
        }
        assert_eq!(
            &written,
            &serde_json::Value::Object(original.clone()),
            "{structured}"
        );
    }
}

#[test]
fn structured_mode_keeps_typed_extensions() {
    let (structured, _) = JSON_FORMAT_EXAMPLES[0];
    let ce = CloudEvent::from_json(structured.as_bytes()).unwrap();
    assert_eq!(
        ce.attribute("comexampleothervalue"),
        Some(&AttributeValue::Integer(5))
    );
    assert!(ce.attribute("unsetextension").is_none());
    let again = CloudEvent::from_json(&ce.to_json().unwrap()).unwrap();
    assert_eq!(again, ce);
}

fn samples() -> Vec<CloudEvent> {
    let base = CloudEvent::new("a-1", "urn:tributary:test", "com.example.order.placed")
        .with_time("2024-05-01T10:00:00.123+02:00")
        .with_subject("orders/7")
        .with_attribute("partitionkey", "customer-7")
        .with_attribute("priority", 3);
    vec![
        base.clone()
            .with_data("application/json", "{\n  \"total\" : 42.50\n}"),
        base.clone().with_data("text/plain; charset=utf-8", "héllo"),
        base.clone()
            .with_data("application/octet-stream", (0u8..=255).collect::<Vec<_>>()),
        base.clone(),
    ]
}

async fn round_trip(url: &str) {
    let backend = tributary::connect(url).await.unwrap();
    let binding = Binding::for_scheme(backend.scheme());
    assert_eq!(binding, Binding::Generic);
    let producer = backend.producer("ce").await.unwrap();
    let mut sent = Vec::new();
    for mode in [Mode::Binary, Mode::Structured] {
        for ce in samples() {
            let key = ce.partition_key().unwrap().to_owned();
            let event = ce.to_event(binding, mode).unwrap().with_key(key);
            sent.push((ce, mode, event.clone()));
            producer.send(event).await.unwrap();
        }
    }
    let consumer = backend
        .consumer(
            "ce",
            ConsumerOptions::new("g").start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    for _ in 0..sent.len() {
        let d = consumer.receive().await.unwrap();
        received.push(d.event.clone());
        d.ack();
    }
    consumer.close().await.unwrap();
    // One key: the order is kept.
    for ((ce, mode, event), got) in sent.iter().zip(&received) {
        assert_eq!(got.payload, event.payload, "{url} {mode}");
        assert_eq!(got.headers, event.headers, "{url} {mode}");
        assert_eq!(tributary::cloudevents::mode_of(got, binding), Some(*mode));
        let back = CloudEvent::from_event(got, binding).unwrap();
        let mut expected = ce.clone();
        if *mode == Mode::Binary {
            expected.set_attribute("priority", "3");
        }
        assert_eq!(back, expected, "{url} {mode}");
        assert_eq!(back.time(), Some("2024-05-01T10:00:00.123+02:00"));
        assert_eq!(
            got.timestamp,
            tributary::time::parse_rfc3339("2024-05-01T08:00:00.123Z")
        );
    }
    backend.close().await.unwrap();
}

#[tokio::test]
async fn round_trips_in_both_modes_on_the_local_backends() {
    round_trip("memory://").await;
    let dir = tempfile::tempdir().unwrap();
    round_trip(&format!("file://{}", dir.path().display())).await;
}
