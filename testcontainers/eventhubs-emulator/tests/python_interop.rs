//! Interop with another language's official client: Microsoft's Python `azure-eventhub`
//! (pure-Python AMQP transport, plain TCP through `UseDevelopmentEmulator=true`) and the Rust
//! SDK on the same emulator, with SAS tokens verified.
//!
//! The pure-Python AMQP transport of azure-eventhub 5.15 reads every performative by fixed
//! list position, while fe2o3-amqp omits trailing null fields as AMQP 1.0 allows; the
//! emulator's `wire_compat` layer writes full-length performatives for it.
//!
//! The Python client comes from `scripts/peers/install-pyclients.sh` (a venv in the peers
//! cache). Without it the test prints a loud SKIPPED notice; with `TRIBUTARY_REQUIRE_PEERS=1`
//! it fails instead.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use azure_messaging_eventhubs::models::EventData;
use azure_messaging_eventhubs::{SendEventOptions, StartLocation};
use common::*;
use tributary_eventhubs_emulator::{Config, HubConfig};
use tributary_testcontainers::python::Script;

fn python() -> Option<PathBuf> {
    tributary_testcontainers::python::interpreter("azure.eventhub")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_azure_eventhub_and_rust_sdk_share_a_hub() {
    let Some(python) = python() else { return };
    let emulator = start(
        Config::for_tests()
            .with_hub(HubConfig::new("interop", 4))
            .with_shared_access_key(KEY_NAME, KEY),
    )
    .await;

    let producer = producer(&emulator, "interop").await;
    for i in 0..2 {
        producer
            .send_event(
                EventData::builder()
                    .with_body(format!("from-rust-{i}"))
                    .add_property("lang".into(), "rust")
                    .build(),
                Some(SendEventOptions {
                    partition_id: Some("0".into()),
                }),
            )
            .await
            .expect("rust send");
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/interop.py");
    let connection = format!(
        "{};EntityPath=interop",
        emulator.connection_string(KEY_NAME, KEY)
    );
    let stdout = Script::new(&python, script)
        .args([connection.as_str(), "interop", "5"])
        .deadline(Duration::from_secs(120))
        .run()
        .await;
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON report");
    assert_eq!(
        report["partition_ids"],
        serde_json::json!(["0", "1", "2", "3"])
    );
    assert_eq!(report["last_enqueued_sequence_number"], 4);
    let received = report["received"].as_array().expect("received list");
    let bodies: Vec<&str> = received.iter().filter_map(|e| e["body"].as_str()).collect();
    assert_eq!(
        bodies,
        [
            "from-rust-0",
            "from-rust-1",
            "from-python-0",
            "from-python-1",
            "from-python-2"
        ]
    );
    // Python sees the Rust SDK's application property and its own.
    let langs: Vec<&str> = received
        .iter()
        .filter_map(|e| e["properties"]["lang"].as_str())
        .collect();
    assert_eq!(langs, ["rust", "rust", "python", "python", "python"]);
    let sequence: Vec<i64> = received
        .iter()
        .filter_map(|e| e["sequence_number"].as_i64())
        .collect();
    assert_eq!(sequence, [0, 1, 2, 3, 4]);

    // The Rust SDK reads what Python sent, keyed events on the gateway's partition for "7".
    let consumer = consumer(&emulator, "interop", None).await;
    let receiver = consumer
        .open_receiver_on_partition("3".into(), from(StartLocation::Earliest, false))
        .await
        .expect("receiver");
    let keyed = receive(&receiver, 2, Duration::from_secs(5)).await;
    assert_eq!(bodies_of(&keyed), ["keyed-python-0", "keyed-python-1"]);
    assert!(
        keyed
            .iter()
            .all(|e| e.partition_key().as_deref() == Some("7"))
    );
    let receiver = consumer
        .open_receiver_on_partition("0".into(), from(StartLocation::SequenceNumber(1), false))
        .await
        .expect("receiver");
    let events = receive(&receiver, 3, Duration::from_secs(5)).await;
    assert_eq!(
        bodies_of(&events),
        ["from-python-0", "from-python-1", "from-python-2"]
    );
    let lang = events[0]
        .event_data()
        .properties()
        .and_then(|p| p.get("lang"))
        .map(|v| format!("{v:?}"));
    assert!(
        lang.is_some_and(|v| v.contains("python")),
        "application property from Python"
    );
}

/// Microsoft's Python client reads 10,000 keyed events with string, int and binary application
/// properties as it reads 10,000 unkeyed ones: every event, every property intact, at a rate of
/// the same order (both printed; `tests/python/keyed_rate.py`). Issue 17 saw keyed events come
/// at ~5/s per partition; that was the client's one-event-per-partition-per-turn `receive`
/// with partitions of unequal length, not the emulator (see the script's docstring).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_reads_keyed_events_with_properties_as_it_reads_unkeyed_ones() {
    const EVENTS: u64 = 10_000;
    let Some(python) = python() else { return };
    let emulator = start(
        Config::for_tests()
            .with_hub(HubConfig::new("keyed", 4))
            .with_hub(HubConfig::new("unkeyed", 4))
            .with_shared_access_key(KEY_NAME, KEY),
    )
    .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/keyed_rate.py");
    let stdout = Script::new(&python, script)
        .arg(emulator.connection_string(KEY_NAME, KEY))
        .args(["keyed", "unkeyed", &EVENTS.to_string(), "200"])
        .deadline(Duration::from_secs(400))
        .run()
        .await;
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON report");
    for hub in ["unkeyed", "keyed"] {
        let side = &report[hub];
        assert_eq!(side["events"], EVENTS, "{hub}: {side}");
        assert_eq!(side["distinct"], EVENTS, "{hub}: {side}");
        assert_eq!(side["problems"], serde_json::json!([]), "{hub}: {side}");
        println!(
            "python receive_batch, {hub}: {EVENTS} events in {} s = {} events/s, per partition {}",
            side["seconds"], side["rate"], side["per_partition"]
        );
    }
}

fn bodies_of(events: &[azure_messaging_eventhubs::models::ReceivedEventData]) -> Vec<String> {
    bodies(events)
}
