//! End to end between backend pairs: local → local (file to memory), and Pub/Sub (the pstest
//! emulator) on one side or both: local → Pub/Sub, Pub/Sub → local, Kafka → Pub/Sub,
//! Pub/Sub → Kafka and Pub/Sub → Pub/Sub, Kafka → local, local → Pulsar → local, Kafka →
//! Pulsar → Kafka, Event Hubs both ways with local and with Pub/Sub, and Kinesis
//! (ferrokinesis, its group leases in dynalite) both ways with local and with Kafka (local →
//! Kafka and Kafka → Kafka are in `e2e_kafka.rs`). Each compares
//! the full sequence of events on both sides: payload, key, headers, timestamp, per-key order
//! and lineage headers.
//!
//! Pub/Sub keeps messages only for subscriptions that exist when they are published, so the
//! check consumer on the sink and the route's source subscription are opened first.
//! pstest hands a subscription about 90 messages a second, hence the modest counts.
//! Event Hubs (the project's emulator) both ways with the local backend and to Pub/Sub: hubs are
//! not created through the backend (the emulator makes them on first use).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tributary::{Backend, ConsumerOptions, Event, StartPosition, StreamSpec, Timestamp};
use tributary_bridge::route::{self, CancellationToken, RouteSpec, RouteStats, lineage};
use tributary_testcontainers::{Peer, require_peer, unique_name};

const EVENTS: usize = 160;
const KEYS: usize = 8;

fn source_events(tag: &str) -> Vec<Event> {
    (0..EVENTS)
        .map(|i| {
            Event::new(format!("{tag}-{}-{}", i % KEYS, i / KEYS))
                .with_key(format!("key-{}", i % KEYS))
                .with_header("n", i.to_string())
                .with_header("trace", format!("t-{i}"))
                .with_timestamp(Timestamp::from_millis(1_700_000_000_000 + i as i64))
        })
        .collect()
}

async fn pubsub(server_url: &str) -> Arc<dyn Backend> {
    tributary_pubsub::register();
    // Message ordering on: the route's source subscription hands out each key in order.
    tributary::connect(&format!("{server_url}&ordering=true"))
        .await
        .unwrap()
}

async fn eventhubs(server_url: &str) -> Arc<dyn Backend> {
    tributary_eventhubs::register();
    tributary::connect(&format!(
        "{server_url}&lease_ttl=6s&balance_interval=1s&commit_interval=200ms"
    ))
    .await
    .unwrap()
}

async fn kinesis() -> Option<Arc<dyn Backend>> {
    let kinesis = tributary_testcontainers::require(Peer::Kinesis)?;
    let dynamodb = tributary_testcontainers::require(Peer::DynamoDb)?;
    tributary_kinesis::register();
    let url = format!(
        "{}&dynamodb_endpoint={}&lease_ttl=3s",
        kinesis.url(),
        dynamodb.url()
    );
    Some(tributary::connect(&url).await.unwrap())
}

/// Creates the stream where the backend needs it.
async fn stream(backend: &Arc<dyn Backend>, prefix: &str) -> String {
    let name = unique_name(prefix);
    if !["memory", "file", "eventhubs"].contains(&backend.scheme()) {
        backend
            .create_stream(&name, StreamSpec::with_partitions(4))
            .await
            .unwrap();
    }
    name
}

/// Replicates `EVENTS` events from `source` to `sink` and compares both sides.
async fn bridge_pair(source: Arc<dyn Backend>, sink: Arc<dyn Backend>, name: &str) {
    let (from, to) = (stream(&source, "from").await, stream(&sink, "to").await);
    let check = sink
        .consumer(
            &to,
            ConsumerOptions::new(unique_name("check")).start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let mut spec = RouteSpec::new(name, source.clone(), from.clone(), sink.clone(), to.clone());
    spec.group = unique_name("bridge");
    spec.max_batch = 50;
    spec.in_flight = 100;
    let open = route::open(spec).await.unwrap();

    let sent = source_events(name);
    source
        .producer(&from)
        .await
        .unwrap()
        .send_batch(sent.clone())
        .await
        .unwrap();
    let stats = Arc::new(RouteStats::default());
    let cancel = CancellationToken::default();
    let task = tokio::spawn(open.run(stats.clone(), cancel.clone()));

    // At-least-once: a redelivered event may arrive twice; the first copy counts.
    let mut got: Vec<Event> = Vec::new();
    let started = std::time::Instant::now();
    while got.len() < EVENTS {
        let d = tokio::time::timeout(Duration::from_secs(60), check.receive())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{name}: {} of {EVENTS} arrived, then nothing for 60 s; route: {stats} (ended: {}); the reader's lag {:?}",
                    got.len(),
                    task.is_finished(),
                    check.lag()
                )
            })
            .unwrap();
        if !got.iter().any(|e| e.payload == d.event.payload) {
            got.push(d.event.clone());
        }
        d.ack();
    }
    let elapsed = started.elapsed();
    cancel.cancel();
    task.await.unwrap().unwrap();
    check.close().await.unwrap();

    let per_key = |events: &[Event]| {
        let mut map: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
        for e in events {
            map.entry(e.key.clone().unwrap().to_vec())
                .or_default()
                .push(e.payload.to_vec());
        }
        map
    };
    assert_eq!(per_key(&got), per_key(&sent), "{name}: per-key order");
    for e in &got {
        let n: usize = std::str::from_utf8(e.headers.get("n").unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let original = &sent[n];
        assert_eq!(e.payload, original.payload, "{name}: event {n}");
        assert_eq!(e.timestamp, original.timestamp, "{name}: timestamp of {n}");
        assert_eq!(
            e.headers.get("trace"),
            original.headers.get("trace"),
            "{name}"
        );
        let header = |h: &str| std::str::from_utf8(e.headers.get(h).unwrap()).unwrap();
        let origin = lineage::Origin::of(e).unwrap_or_else(|| panic!("{name}: no origin"));
        assert_eq!(origin.backend, source.scheme(), "{name}");
        assert_eq!(origin.stream, from, "{name}");
        assert_eq!(origin.route, name, "{name}");
        assert!(
            header(lineage::PATH).ends_with(&format!("/{from}")),
            "{name}"
        );
        if source.scheme() != "pubsub" {
            // Logs know where an event was; Pub/Sub has no partitions or offsets.
            assert!(origin.position.is_some(), "{name}");
        }
    }
    println!(
        "{name}: {EVENTS} events, content, timestamps, per-key order and lineage match ({:.1} s)",
        elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_file_to_local_memory() {
    let dir = tempfile::tempdir().unwrap();
    let file = tributary::connect(&format!("file://{}?partitions=4", dir.path().display()))
        .await
        .unwrap();
    let memory = tributary::connect("memory://e2e-local?partitions=4")
        .await
        .unwrap();
    bridge_pair(file, memory, "file-to-memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_to_pubsub_and_back() {
    let server = require_peer!(Peer::PubSub);
    let ps = pubsub(server.url()).await;
    let local = tributary::connect("memory://e2e-pubsub?partitions=4")
        .await
        .unwrap();
    bridge_pair(local.clone(), ps.clone(), "local-to-pubsub").await;
    bridge_pair(ps, local, "pubsub-to-local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_to_pubsub_and_back() {
    let kafka_server = require_peer!(Peer::Kafka);
    let server = require_peer!(Peer::PubSub);
    tributary_kafka::register();
    let kafka = tributary::connect(kafka_server.url()).await.unwrap();
    let ps = pubsub(server.url()).await;
    bridge_pair(kafka.clone(), ps.clone(), "kafka-to-pubsub").await;
    bridge_pair(ps, kafka, "pubsub-to-kafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_to_local() {
    let kafka_server = require_peer!(Peer::Kafka);
    tributary_kafka::register();
    let kafka = tributary::connect(kafka_server.url()).await.unwrap();
    let local = tributary::connect("memory://e2e-from-kafka?partitions=4")
        .await
        .unwrap();
    bridge_pair(kafka, local, "kafka-to-local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pubsub_to_pubsub() {
    let server = require_peer!(Peer::PubSub);
    let ps = pubsub(server.url()).await;
    bridge_pair(ps.clone(), ps, "pubsub-to-pubsub").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_to_pulsar_and_back() {
    let server = require_peer!(Peer::Pulsar);
    tributary_pulsar::register();
    let pulsar = tributary::connect(server.url()).await.unwrap();
    let local = tributary::connect("memory://e2e-pulsar?partitions=4")
        .await
        .unwrap();
    bridge_pair(local.clone(), pulsar.clone(), "local-to-pulsar").await;
    bridge_pair(pulsar, local, "pulsar-to-local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_to_pulsar_and_back() {
    let kafka_server = require_peer!(Peer::Kafka);
    let server = require_peer!(Peer::Pulsar);
    tributary_kafka::register();
    tributary_pulsar::register();
    let kafka = tributary::connect(kafka_server.url()).await.unwrap();
    let pulsar = tributary::connect(server.url()).await.unwrap();
    bridge_pair(kafka.clone(), pulsar.clone(), "kafka-to-pulsar").await;
    bridge_pair(pulsar, kafka, "pulsar-to-kafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_to_eventhubs_and_back() {
    let server = require_peer!(Peer::EventHubs);
    let eh = eventhubs(server.url()).await;
    let local = tributary::connect("memory://e2e-eventhubs?partitions=4")
        .await
        .unwrap();
    bridge_pair(local.clone(), eh.clone(), "local-to-eventhubs").await;
    bridge_pair(eh, local, "eventhubs-to-local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eventhubs_to_pubsub_and_back() {
    let eh_server = require_peer!(Peer::EventHubs);
    let server = require_peer!(Peer::PubSub);
    let eh = eventhubs(eh_server.url()).await;
    let ps = pubsub(server.url()).await;
    bridge_pair(eh.clone(), ps.clone(), "eventhubs-to-pubsub").await;
    bridge_pair(ps, eh, "pubsub-to-eventhubs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_to_kinesis_and_back() {
    let Some(kinesis) = kinesis().await else {
        return;
    };
    let local = tributary::connect("memory://e2e-kinesis?partitions=4")
        .await
        .unwrap();
    bridge_pair(local.clone(), kinesis.clone(), "local-to-kinesis").await;
    bridge_pair(kinesis, local, "kinesis-to-local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_to_kinesis_and_back() {
    let kafka_server = require_peer!(Peer::Kafka);
    let Some(kinesis) = kinesis().await else {
        return;
    };
    tributary_kafka::register();
    let kafka = tributary::connect(kafka_server.url()).await.unwrap();
    bridge_pair(kafka.clone(), kinesis.clone(), "kafka-to-kinesis").await;
    bridge_pair(kinesis, kafka, "kinesis-to-kafka").await;
}
