//! The conformance suite against ferrokinesis, with the group's leases and checkpoints in
//! dynalite (DynamoDB), both started by the fixtures.
//!
//! Not applicable against ferrokinesis, exactly:
//! - `start_at_timestamp`: ferrokinesis (like kinesalite) keeps arrival times to the second, so
//!   a start at a time is exact only against the service; the backend declares exact time
//!   starts only when its endpoint is not a local emulator.
//! - `server_restart` in the main run, which uses the shared, in-memory emulator: the case
//!   runs on its own against a ferrokinesis that keeps its streams on disk (`--state-dir`,
//!   slower, since it syncs every write).

mod common;

use std::sync::Arc;

use tributary_conformance::{Harness, run, run_filtered};
use tributary_testcontainers::{Peer, require_peer};

fn url(kinesis: &str, dynamodb: &str) -> String {
    // A short lease time so that the rebalance and no-ack cases see leases move quickly.
    format!("{kinesis}&dynamodb_endpoint={dynamodb}&lease_ttl=3s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kinesis_conformance() {
    let kinesis = require_peer!(Peer::Kinesis);
    let dynamodb = require_peer!(Peer::DynamoDb);
    tributary_kinesis::register();
    let harness = Harness::new("kinesis", &url(kinesis.url(), dynamodb.url()))
        .with_unreachable_url(
            "kinesis://us-east-1?endpoint=http://127.0.0.1:9&timeout=3s&checkpoints=memory",
        );
    let report = run(&harness).await;
    // Emulators keep arrival times to the second, so a start at a time is not exact there;
    // the restart case runs in its own test against a ferrokinesis that keeps its state.
    report.assert_conforms(&["start_at_timestamp", "server_restart"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kinesis_conformance_server_restart() {
    let dynamodb = require_peer!(Peer::DynamoDb);
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap().to_owned();
    let Some(kinesis) = common::own_kinesis(&["--state-dir", &state_dir]) else {
        return;
    };
    let kinesis = Arc::new(kinesis);
    tributary_kinesis::register();
    let url = url(kinesis.url(), dynamodb.url());
    let server = kinesis.clone();
    let harness = Harness::new("kinesis (durable emulator)", &url)
        .with_blocking_restart(move || server.restart());
    let report = run_filtered(&harness, |name| name == "server_restart").await;
    report.print();
    assert_eq!(
        (report.passed(), report.failed()),
        (1, 0),
        "{}",
        report.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_capability_snapshot() {
    let server = require_peer!(Peer::Kinesis);
    tributary_kinesis::register();
    let backend = tributary::connect(&format!("{}&checkpoints=memory", server.url()))
        .await
        .expect("connect");
    let expected = "Capabilities { native_headers: false, timestamps: true, ordering: PerKey, ack: Cumulative, nack: true, delivery_attempts: true, start: StartSupport { earliest: true, latest: true, timestamp: false, position: true }, receipts: ReceiptSupport { partition: true, position: true }, max_event_bytes: Some(1048549), lifecycle: Lifecycle { auto_create: false, networked: true, competing_consumers: true }, lag: true, admin: true }";
    assert_eq!(format!("{:?}", backend.capabilities()), expected);
}
