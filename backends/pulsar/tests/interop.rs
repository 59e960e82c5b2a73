//! Interop with Apache's official Python client (pulsar-client from PyPI, the C++ client
//! underneath) against the same standalone, both ways: keys, properties, event times and
//! partitions, with enough events to pass the consumers' prefetch several times over: 5000
//! events over 4 partitions, about 1250 a partition, against a prefetch of 200 messages a
//! partition on both sides (tributary's `receiver_queue`, the Python `receiver_queue_size`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tributary::{
    Backend, ConsumerExt, ConsumerOptions, Event, StartPosition, StreamSpec, Timestamp,
};
use tributary_testcontainers::python::{self, Script};
use tributary_testcontainers::{Peer, Server, require_peer, unique_name};

/// About six times the prefetch of each of the 4 partitions.
const EVENTS: usize = 5000;
/// Messages prefetched per partition, on both sides.
const PREFETCH: usize = 200;
const KEYS: usize = 10;

fn python() -> Option<PathBuf> {
    python::interpreter("pulsar")
}

async fn run_python(python: PathBuf, script: &str, args: Vec<String>) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    Script::new(&python, script).args(args).run().await
}

fn service_url(server: &Server) -> String {
    format!("pulsar://{}", server.address())
}

async fn backend(server: &Server) -> Arc<dyn Backend> {
    tributary_pulsar::register();
    tributary::connect(&format!("{}&receiver_queue={PREFETCH}", server.url()))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tributary_reads_what_the_python_client_produced() {
    let server = require_peer!(Peer::Pulsar);
    let Some(python) = python() else { return };
    let backend = backend(&server).await;
    let topic = unique_name("py-out");
    backend
        .create_stream(&topic, StreamSpec::with_partitions(4))
        .await
        .unwrap();
    let args = vec![service_url(&server), topic.clone(), EVENTS.to_string()];
    run_python(python, "produce.py", args).await;

    let consumer = backend
        .consumer(
            &topic,
            ConsumerOptions::new("reader").start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let mut last_per_key: BTreeMap<String, i64> = BTreeMap::new();
    let mut key_partitions = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < EVENTS {
        let d = consumer
            .receive_timeout(Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{} of {EVENTS} arrived", seen.len()));
        let payload = String::from_utf8(d.event.payload.to_vec()).unwrap();
        let i: i64 = payload.strip_prefix("py-").unwrap().parse().unwrap();
        let key = String::from_utf8(d.event.key.clone().unwrap().to_vec()).unwrap();
        assert_eq!(key, format!("key-{}", i % KEYS as i64));
        let headers: Vec<(&str, &[u8])> = d
            .event
            .headers
            .iter()
            .map(|(n, v)| (n, v.as_ref()))
            .collect();
        let seq = i.to_string();
        assert_eq!(
            headers,
            [("origin", &b"py"[..]), ("seq", seq.as_bytes())],
            "properties are headers, in name order"
        );
        assert_eq!(
            d.event.timestamp,
            Some(Timestamp::from_millis(1_700_000_000_000 + i))
        );
        // The Python client routes keys with its own hash (BoostHash, not settable from
        // Python), so only its consistency is checked: a key stays in one partition.
        let partition = d.partition.clone().unwrap();
        assert_eq!(
            *key_partitions
                .entry(key.clone())
                .or_insert(partition.clone()),
            partition,
            "{key} in two partitions"
        );
        if seen.insert(i) {
            let last = last_per_key.insert(key.clone(), i).unwrap_or(-1);
            assert!(i > last, "{key}: {i} after {last}");
        }
        d.ack();
    }
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_client_reads_what_tributary_produced() {
    let server = require_peer!(Peer::Pulsar);
    let Some(python) = python() else { return };
    let backend = backend(&server).await;
    let topic = unique_name("py-in");
    backend
        .create_stream(&topic, StreamSpec::with_partitions(4))
        .await
        .unwrap();
    let producer = backend.producer(&topic).await.unwrap();
    let mut events: Vec<Event> = (0..EVENTS)
        .map(|i| {
            Event::new(format!("rs-{i}"))
                .with_key(format!("key-{}", i % KEYS))
                .with_header("trace", format!("t{i}"))
                .with_header("origin", "rust")
                .with_timestamp(Timestamp::from_millis(1_700_000_000_000 + i as i64))
        })
        .collect();
    events.push(
        Event::new("binary")
            .with_key(vec![0xfe, 0x00])
            .with_header("raw", vec![0u8, 0xff]),
    );
    let mut receipts = Vec::new();
    for chunk in events.chunks(500) {
        receipts.extend(producer.send_batch(chunk.to_vec()).await.unwrap());
    }
    let args = vec![
        service_url(&server),
        topic.clone(),
        "py".into(),
        events.len().to_string(),
        PREFETCH.to_string(),
    ];
    let stdout = run_python(python, "consume.py", args).await;
    let messages: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(messages.len(), events.len());
    let data = |m: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(m["data"].as_str().unwrap())
            .unwrap()
    };
    let by_payload: HashMap<Vec<u8>, &serde_json::Value> =
        messages.iter().map(|m| (data(m), m)).collect();
    for (i, receipt) in receipts.iter().enumerate().take(EVENTS) {
        let m = by_payload[format!("rs-{i}").as_bytes()];
        assert_eq!(m["key"], format!("key-{}", i % KEYS));
        assert_eq!(m["event_time"], 1_700_000_000_000u64 + i as u64);
        assert_eq!(
            m["properties"],
            serde_json::json!({"trace": format!("t{i}"), "origin": "rust", "tributary-order": "[\"trace\",\"origin\"]"})
        );
        assert_eq!(
            m["partition"].as_u64(),
            receipt
                .partition
                .as_ref()
                .and_then(|p| p.as_index())
                .map(u64::from)
        );
    }
    let binary = by_payload
        .iter()
        .find(|(_, m)| m["properties"]["tributary-envelope"] == "1")
        .expect("the binary-header event")
        .1;
    assert!(
        data(binary).ends_with(b"binary"),
        "the payload follows the header block"
    );
    assert_eq!(
        binary["key"], "/gA=",
        "a binary key is the base64 partition key"
    );
}
