//! Interop with Google's own Python client (google-cloud-pubsub from PyPI) against the same
//! pstest: what a Python user publishes reads as a plain tributary event, and what tributary
//! publishes looks to a Python user like an ordinary message (attributes, ordering key).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use tributary::{ConsumerOptions, Event, StreamSpec, Timestamp};
use tributary_testcontainers::python::{self, Script};
use tributary_testcontainers::{Peer, Server, require_peer, unique_name};

const PROJECT: &str = "tributary-test";

/// The Python interpreter with google-cloud-pubsub, or `None` after a loud skip.
fn python() -> Option<PathBuf> {
    python::interpreter("google.cloud.pubsub_v1")
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

async fn run_python(server: &Server, python: PathBuf, args: Vec<String>) -> String {
    let (script, args) = args.split_first().expect("a script");
    Script::new(&python, script)
        .args(args)
        .env("PUBSUB_EMULATOR_HOST", server.address())
        .run()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tributary_reads_what_the_python_client_published() {
    let server = require_peer!(Peer::PubSub);
    let Some(python) = python() else { return };
    tributary_pubsub::register();
    let backend = tributary::connect(server.url()).await.expect("connect");
    let topic = unique_name("py-out");
    backend
        .create_stream(&topic, StreamSpec::default())
        .await
        .expect("create topic");
    let consumer = backend
        .consumer(&topic, ConsumerOptions::new("reader"))
        .await
        .expect("consumer");

    let before = Timestamp::now().as_millis();
    let args = vec![
        script("publish.py").display().to_string(),
        PROJECT.into(),
        topic.clone(),
    ];
    run_python(&server, python, args).await;
    let after = Timestamp::now().as_millis();

    let mut got = BTreeMap::new();
    while got.len() < 2 {
        let delivery = tokio::time::timeout(Duration::from_secs(60), consumer.receive())
            .await
            .expect("in time")
            .expect("receive");
        got.insert(delivery.event.payload.clone(), delivery.event.clone());
        delivery.ack();
    }
    let keyed = &got[&bytes::Bytes::from_static(b"from python")];
    assert_eq!(
        keyed.key.as_deref(),
        Some(&b"order-7"[..]),
        "the ordering key is the key"
    );
    let headers: Vec<(&str, &[u8])> = keyed.headers.iter().map(|(n, v)| (n, v.as_ref())).collect();
    assert_eq!(
        headers,
        [("origin", &b"py"[..]), ("trace", &b"abc"[..])],
        "attributes are headers, in name order"
    );
    let stamp = keyed.timestamp.expect("the publish time").as_millis();
    assert!(
        (before - 2000..=after + 2000).contains(&stamp),
        "publish time {stamp} outside [{before}, {after}]"
    );
    let plain = &got[&bytes::Bytes::from_static(b"no key, no attributes")];
    assert_eq!(plain.key, None);
    assert!(plain.headers.is_empty());
    consumer.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_reads_what_tributary_published() {
    let server = require_peer!(Peer::PubSub);
    let Some(python) = python() else { return };
    tributary_pubsub::register();
    let backend = tributary::connect(server.url()).await.expect("connect");
    let topic = unique_name("py-in");
    backend
        .create_stream(&topic, StreamSpec::default())
        .await
        .expect("create topic");
    // The group's subscription (`<topic>.py`) is what the Python user pulls from.
    let subscription_holder = backend
        .consumer(&topic, ConsumerOptions::new("py"))
        .await
        .expect("subscription");
    subscription_holder.close().await.expect("close");

    let producer = backend.producer(&topic).await.expect("producer");
    producer
        .send(
            Event::new("hello from rust")
                .with_key("order-8")
                .with_header("trace", "abc")
                .with_header("origin", "rust")
                .with_timestamp(Timestamp::from_millis(1_700_000_000_123)),
        )
        .await
        .expect("send");
    producer
        .send(Event::new("binary header").with_header("raw", vec![0u8, 0xff]))
        .await
        .expect("send");

    let args = vec![
        script("pull.py").display().to_string(),
        PROJECT.into(),
        format!("{topic}.py"),
        "2".into(),
    ];
    let stdout = run_python(&server, python, args).await;
    let messages: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let data = |m: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(m["data"].as_str().unwrap())
            .unwrap()
    };
    let plain = messages
        .iter()
        .find(|m| data(m) == b"hello from rust")
        .expect("the plain event");
    assert_eq!(plain["ordering_key"], "order-8");
    assert_eq!(
        plain["attributes"],
        serde_json::json!({"trace": "abc", "origin": "rust", "tributary-ts": "1700000000123", "tributary-order": "[\"trace\",\"origin\"]"})
    );
    let enveloped = messages
        .iter()
        .find(|m| m["attributes"]["tributary-envelope"] == "1")
        .expect("the binary-header event");
    assert!(
        data(enveloped).ends_with(b"binary header"),
        "the payload follows the header block"
    );
}
