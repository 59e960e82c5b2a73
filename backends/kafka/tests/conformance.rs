//! The conformance suite against a real Kafka broker started by the fixture, plus the
//! capability snapshot that keeps the suite's gating honest.

use std::sync::Arc;

use tributary_conformance::{Harness, run};
use tributary_testcontainers::{Peer, Server, require_peer};

fn harness(server: &Arc<Server>) -> Harness {
    let server = server.clone();
    Harness::new("kafka", server.url())
        .with_unreachable_url("kafka://127.0.0.1:9?timeout=3s")
        .with_blocking_restart(move || server.restart())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_conformance() {
    let server = require_peer!(Peer::Kafka);
    tributary_kafka::register();
    let report = run(&harness(&server)).await;
    // Every case applies: the harness gives a restart hook and an unreachable URL.
    report.assert_conforms(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_capability_snapshot() {
    let server = require_peer!(Peer::Kafka);
    tributary_kafka::register();
    let backend = tributary::connect(server.url()).await.expect("connect");
    let expected = "Capabilities { native_headers: true, timestamps: true, ordering: PerKey, ack: Cumulative, nack: true, delivery_attempts: true, start: StartSupport { earliest: true, latest: true, timestamp: true, position: true }, receipts: ReceiptSupport { partition: true, position: true }, max_event_bytes: Some(1048516), lifecycle: Lifecycle { auto_create: false, networked: true, competing_consumers: true }, lag: true, admin: true }";
    assert_eq!(format!("{:?}", backend.capabilities()), expected);
}
