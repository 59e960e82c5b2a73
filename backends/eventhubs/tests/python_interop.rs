//! Interop with Microsoft's Python client (`azure-eventhub` 5.15, and its Blob checkpoint
//! store) on the same emulator and Azurite: events both ways (partition key, properties with
//! binary values, event time) in numbers that pass every prefetch several times, IoT Hub's
//! system annotations, and checkpoints that one side writes and the other honours.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tributary::{ConsumerOptions, Event, StartPosition, Timestamp};
use tributary_testcontainers::python::{self, Script};
use tributary_testcontainers::{Server, azurite_connection_string, unique_name};

/// More than the Python consumer's prefetch (50) and tributary's (300) several times over.
const COUNT: usize = 1500;

fn python() -> Option<PathBuf> {
    python::interpreter("azure.eventhub.extensions.checkpointstoreblobaio")
}

/// The emulator's address (`127.0.0.1:PORT`) from the fixture's URL.
fn emulator_address(eventhubs: &Server) -> String {
    eventhubs.address().to_string()
}

/// What the Python client connects with; its namespace is the endpoint's `host:port`.
fn python_connection(eventhubs: &Server) -> String {
    format!(
        "Endpoint=sb://{};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true",
        emulator_address(eventhubs)
    )
}

/// Runs the peer script, returning its JSON lines; panics with its stderr on failure.
async fn peer(python: &Path, args: &[&str]) -> Vec<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/eventhubs_peer.py");
    Script::new(python, script)
        .args(args)
        .run()
        .await
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_sends_tributary_reads() {
    let Some(python) = python() else { return };
    let Some((eventhubs, azurite)) = common::servers() else {
        return;
    };
    let hub = unique_name("py-to-trib");
    let sent = peer(
        &python,
        &[
            "send",
            &python_connection(&eventhubs),
            &hub,
            &COUNT.to_string(),
        ],
    )
    .await;
    assert_eq!(sent[0]["sent"], COUNT);

    let backend = common::connect(&common::url(&eventhubs, &azurite, "")).await;
    let consumer = common::read_from_earliest(&backend, &hub).await;
    let got = common::receive_n(&*consumer, COUNT, Duration::from_secs(20)).await;
    assert_eq!(got.len(), COUNT);
    let mut last_per_key: BTreeMap<String, i64> = BTreeMap::new();
    let mut seen = vec![false; COUNT];
    for delivery in got {
        let event = &delivery.event;
        let payload = event.payload.to_vec();
        assert_eq!(&payload[payload.len() - 2..], &[0, 255], "binary body kept");
        let i: usize = std::str::from_utf8(&payload[3..payload.len() - 2])
            .unwrap()
            .parse()
            .unwrap();
        assert!(!seen[i], "event {i} twice");
        seen[i] = true;
        let key = format!("py-key-{}", i % 7);
        assert_eq!(
            event.key.as_deref(),
            Some(key.as_bytes()),
            "the partition key is the key"
        );
        assert_eq!(
            event.headers.get("n").map(|v| v.to_vec()),
            Some(i.to_string().into_bytes())
        );
        assert_eq!(
            event.headers.get("raw").map(|v| v.to_vec()),
            Some(vec![0, 255, (i % 256) as u8]),
            "a binary property is the header's exact bytes"
        );
        assert_eq!(
            event.timestamp,
            Some(Timestamp::from_millis(1_700_000_000_000 + i as i64))
        );
        assert!(event.headers.get("x-opt-enqueued-time").is_some());
        assert_eq!(
            event.headers.get("x-opt-partition-key").map(|v| v.to_vec()),
            Some(key.clone().into_bytes())
        );
        let sequence: i64 = delivery
            .position
            .as_ref()
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        let partition = delivery.partition.as_ref().unwrap().as_str().to_string();
        if let Some(previous) = last_per_key.insert(format!("{partition}/{key}"), sequence) {
            assert!(previous < sequence, "per-key order");
        }
        delivery.ack();
    }
    assert!(seen.iter().all(|s| *s));
    consumer.close().await.expect("close");
    backend.close().await.expect("close backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tributary_sends_python_reads() {
    let Some(python) = python() else { return };
    let Some((eventhubs, azurite)) = common::servers() else {
        return;
    };
    let hub = unique_name("trib-to-py");
    let backend = common::connect(&common::url(&eventhubs, &azurite, "")).await;
    let producer = backend.producer(&hub).await.expect("producer");
    let events: Vec<Event> = (0..COUNT)
        .map(|i| {
            Event::new(format!("trib-{i}"))
                .with_key(format!("trib-key-{}", i % 5))
                .with_header("n", i.to_string())
                .with_header("raw", vec![0xfe, 0, (i % 256) as u8])
                .with_timestamp(Timestamp::from_millis(1_700_000_500_000 + i as i64))
        })
        .collect();
    for chunk in events.chunks(300) {
        producer.send_batch(chunk.to_vec()).await.expect("send");
    }
    producer.close().await.expect("close producer");
    let received = peer(
        &python,
        &[
            "receive",
            &python_connection(&eventhubs),
            &hub,
            &COUNT.to_string(),
        ],
    )
    .await;
    assert_eq!(received.len(), COUNT);
    let mut seen = vec![false; COUNT];
    for r in received {
        let body = String::from_utf8(
            (0..r["body_hex"].as_str().unwrap().len())
                .step_by(2)
                .map(|at| {
                    u8::from_str_radix(&r["body_hex"].as_str().unwrap()[at..at + 2], 16).unwrap()
                })
                .collect(),
        )
        .unwrap();
        let i: usize = body["trib-".len()..].parse().unwrap();
        assert!(!seen[i], "event {i} twice");
        seen[i] = true;
        assert_eq!(r["partition_key"], format!("trib-key-{}", i % 5));
        // The headers and the event time, and nothing of tributary's own: the mark is the
        // message id.
        let mut names: Vec<&str> = r["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["n", "raw", "tributary-ts"]);
        // pyamqp hands out AMQP strings and binaries alike as bytes.
        assert_eq!(r["properties"]["n"]["hex"], hex(i.to_string().as_bytes()));
        assert_eq!(
            r["properties"]["raw"]["hex"],
            hex(&[0xfe, 0, (i % 256) as u8])
        );
        assert_eq!(
            r["properties"]["tributary-ts"],
            1_700_000_500_000 + i as i64,
            "event time as a long"
        );
    }
    assert!(seen.iter().all(|s| *s));
    backend.close().await.expect("close backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn iot_hub_system_properties_are_headers() {
    let Some(python) = python() else { return };
    let Some((eventhubs, azurite)) = common::servers() else {
        return;
    };
    let hub = unique_name("iot");
    peer(&python, &["iot", &python_connection(&eventhubs), &hub]).await;
    let backend = common::connect(&common::url(&eventhubs, &azurite, "")).await;
    let consumer = backend
        .consumer(
            &hub,
            ConsumerOptions::new("$Default").start(StartPosition::Earliest),
        )
        .await
        .expect("consumer");
    let got = common::receive_n(&*consumer, 1, Duration::from_secs(20)).await;
    let event = &got[0].event;
    let header = |name: &str| {
        event
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| panic!("no header {name} in {:?}", event.headers))
    };
    assert_eq!(header("iothub-connection-device-id"), "thermostat-7");
    assert_eq!(header("iothub-connection-module-id"), "sensor");
    assert_eq!(header("iothub-enqueuedtime"), "1700000123456");
    assert_eq!(header("iothub-message-source"), "Telemetry");
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("content-encoding"), "utf-8");
    assert_eq!(header("alert"), "false");
    assert_eq!(event.key.as_deref(), Some(&b"thermostat-7"[..]));
    assert_eq!(&event.payload[..], br#"{"temperature": 21.5}"#);
    got.into_iter().for_each(|d| d.ack());
    consumer.close().await.expect("close");
    backend.close().await.expect("close backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoints_move_between_tributary_and_the_python_processor() {
    let Some(python) = python() else { return };
    let Some((eventhubs, azurite)) = common::servers() else {
        return;
    };
    let hub = unique_name("cp-interop");
    let group = unique_name("shared");
    let container = unique_name("interop");
    let key: String = url::form_urlencoded::byte_serialize(
        tributary_testcontainers::AZURITE_ACCOUNT_KEY.as_bytes(),
    )
    .collect();
    // The same container and the namespace the Python processor writes (`host:port`).
    let url = format!(
        "{}&storage_account_url={}&storage_account_key={key}&storage_container={container}&checkpoint_namespace={}&lease_ttl=6s&balance_interval=1s&commit_interval=200ms",
        eventhubs.url(),
        azurite.url(),
        emulator_address(&eventhubs)
    );
    let batch = |from: usize, n: usize| -> Vec<Event> {
        (from..from + n)
            .map(|i| Event::new(format!("e-{i}")).with_key(format!("k-{}", i % 4)))
            .collect()
    };
    let payloads = |events: &[tributary::Delivery]| -> Vec<String> {
        let mut out: Vec<String> = events
            .iter()
            .map(|d| String::from_utf8(d.event.payload.to_vec()).unwrap())
            .collect();
        out.sort();
        out
    };
    let expected = |from: usize, n: usize| -> Vec<String> {
        let mut out: Vec<String> = (from..from + n).map(|i| format!("e-{i}")).collect();
        out.sort();
        out
    };

    // 1. tributary processes the first 600 and checkpoints them.
    let backend = common::connect(&url).await;
    let producer = backend.producer(&hub).await.expect("producer");
    producer.send_batch(batch(0, 600)).await.expect("send");
    let consumer = backend
        .consumer(
            &hub,
            ConsumerOptions::new(&group).start(StartPosition::Earliest),
        )
        .await
        .expect("consumer");
    let got = common::receive_n(&*consumer, 601, Duration::from_secs(5)).await;
    assert_eq!(payloads(&got), expected(0, 600));
    got.into_iter().for_each(|d| d.ack());
    consumer.close().await.expect("close: commit and release");

    // 2. Python's processor, same group, same container: only what came after.
    producer.send_batch(batch(600, 400)).await.expect("send");
    let storage = azurite_connection_string(&azurite);
    let by_python = peer(
        &python,
        &[
            "process",
            &python_connection(&eventhubs),
            &hub,
            &storage,
            &container,
            &group,
            "400",
        ],
    )
    .await;
    let mut python_payloads: Vec<String> = by_python
        .iter()
        .map(|r| {
            let hex = r["body_hex"].as_str().unwrap();
            String::from_utf8(
                (0..hex.len())
                    .step_by(2)
                    .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
                    .collect(),
            )
            .unwrap()
        })
        .collect();
    python_payloads.sort();
    assert_eq!(
        python_payloads,
        expected(600, 400),
        "Python re-read none of tributary's and missed none"
    );

    // 3. tributary again: only what came after Python's checkpoints.
    producer.send_batch(batch(1000, 300)).await.expect("send");
    let consumer = backend
        .consumer(
            &hub,
            ConsumerOptions::new(&group).start(StartPosition::Earliest),
        )
        .await
        .expect("consumer again");
    let got = common::receive_n(&*consumer, 301, Duration::from_secs(8)).await;
    assert_eq!(
        payloads(&got),
        expected(1000, 300),
        "tributary re-read none of Python's"
    );
    got.into_iter().for_each(|d| d.ack());
    consumer.close().await.expect("close");
    producer.close().await.expect("close producer");
    backend.close().await.expect("close backend");
}
