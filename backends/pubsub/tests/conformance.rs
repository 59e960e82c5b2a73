//! The conformance suite against Google's Pub/Sub fake (pstest), started by the fixture.

use tributary_conformance::{Harness, run};
use tributary_testcontainers::{Peer, require_peer};

/// pstest's gRPC server keeps Go's default 4 MiB message limit (the service allows 10 MB), so
/// the size case runs with a limit pstest can carry.
const PSTEST_MAX_EVENT_BYTES: usize = 4_000_000;

/// pstest hands a subscriber stream at most one message per 10 ms tick (its delivery loop
/// offers each message to an unbuffered channel without waiting): about 93 events/s. The
/// throughput case therefore runs 3,000 events instead of 100,000. A limit of the fake, not of
/// the service or of this backend (publishing runs at ~30,000 events/s against the same fake).
const PSTEST_THROUGHPUT_EVENTS: usize = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pubsub_conformance() {
    let server = require_peer!(Peer::PubSub);
    tributary_pubsub::register();
    // A closing consumer nacks what it holds, but a message the server sent just as the stream
    // ended is one no client has seen, so it comes back only when its lease runs out: after the
    // streaming pull's ack deadline, which the backend takes from `ack_deadline`. At the default
    // 30 s that is the suite's own 30 s wait, so the suite's groups use Pub/Sub's shortest.
    let url = format!(
        "{}&max_event_bytes={PSTEST_MAX_EVENT_BYTES}&ack_deadline=10s",
        server.url()
    );
    let harness = Harness::new("pubsub", &url)
        .with_unreachable_url("pubsub://p?endpoint=http://127.0.0.1:9&timeout=3s")
        .with_scale(PSTEST_THROUGHPUT_EVENTS);
    let report = run(&harness).await;
    report.assert_conforms(&[
        // A send reports a message id only: no partition, no position.
        "receipts",
        // Acks are individual, not a committed position.
        "out_of_order_acks",
        // No ordering keys in the default configuration (`ordering=true` enables them).
        "per_key_order",
        "nack_order",
        // A subscription made for a new group starts at latest; seeking to a time is not
        // declared (pstest crashes seeking before messages it holds).
        "start_earliest_latest",
        "start_at_timestamp",
        // pstest is an in-process fake the harness cannot restart.
        "server_restart",
        // Pub/Sub's backlog is known only to the service's monitoring.
        "lag",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_capability_snapshot() {
    let server = require_peer!(Peer::PubSub);
    tributary_pubsub::register();
    let backend = tributary::connect(server.url()).await.expect("connect");
    let expected = "Capabilities { native_headers: true, timestamps: true, ordering: None, ack: Individual, nack: true, delivery_attempts: false, start: StartSupport { earliest: false, latest: true, timestamp: false, position: false }, receipts: ReceiptSupport { partition: false, position: false }, max_event_bytes: Some(10000000), lifecycle: Lifecycle { auto_create: false, networked: true, competing_consumers: true }, lag: false, admin: true }";
    assert_eq!(format!("{:?}", backend.capabilities()), expected);
}
