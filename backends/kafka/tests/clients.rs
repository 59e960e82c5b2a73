//! How many librdkafka clients a backend runs: every client has its own threads, timers and
//! broker connections, so a daemon with many routes paid for one producer client per stream
//! and one commit-reading client per group (252–263 threads at 16 Kafka→Kafka routes). A
//! backend's producers share one client, each keeping its own flush and close, and the client
//! stays until the backend closes; the backlog of any number of groups is read through one
//! client (the lag reader) beside the admin client.
//!
//! Counts the threads librdkafka names `rdk:main` (one per client) in this process, so this
//! binary holds one test: nextest runs each test in a process of its own, `cargo test` runs
//! a binary's tests side by side in one.

use std::time::{Duration, Instant};

use tributary::{ConsumerExt, ConsumerOptions, ErrorKind, Event, StartPosition, StreamSpec};
use tributary_kafka::KafkaBackend;
use tributary_testcontainers::{Peer, require_peer, thread_ids_named, threads_named, unique_name};

/// Threads of this process named `rdk:main`: one per librdkafka client.
fn clients() -> usize {
    threads_named(std::process::id(), "rdk:main")
}

/// The ids of this process's `rdk:main` threads: the same set before and after a step means
/// the same clients, where a count could hide one client replaced by another.
fn client_threads() -> std::collections::BTreeSet<u32> {
    thread_ids_named(std::process::id(), "rdk:main")
}

/// Waits until [`clients`] is `expected` (a client's threads end a moment after it is dropped).
async fn clients_become(expected: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while clients() != expected {
        assert!(
            Instant::now() < deadline,
            "{what}: {} librdkafka clients, expected {expected}",
            clients()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_and_lag_readings_of_one_backend_share_their_clients() {
    let server = require_peer!(Peer::Kafka);
    tributary_kafka::register();
    let backend = tributary::connect(&format!("kafka://{}", server.address()))
        .await
        .expect("connect");
    let before = clients();
    const STREAMS: usize = 8;
    let topics: Vec<String> = (0..STREAMS).map(|_| unique_name("shared")).collect();
    let mut producers = Vec::new();
    for topic in &topics {
        backend
            .create_stream(topic, StreamSpec::with_partitions(2))
            .await
            .expect("create");
        let producer = backend.producer(topic).await.expect("producer");
        producer
            .send(Event::new(format!("first to {topic}")))
            .await
            .expect("send");
        producers.push(producer);
    }
    assert_eq!(
        clients(),
        before + 1,
        "{STREAMS} producers on {STREAMS} topics run one librdkafka client"
    );

    // One producer's close ends that producer alone.
    let closed = producers.remove(0);
    closed.close().await.expect("close");
    let refused = closed
        .send(Event::new("after close"))
        .await
        .expect_err("a closed producer refuses sends");
    assert_eq!(refused.kind(), ErrorKind::Closed);
    drop(closed);
    for (producer, topic) in producers.iter().zip(&topics[1..]) {
        producer
            .send_batch(
                (0..50)
                    .map(|i| Event::new(format!("{topic} {i}")))
                    .collect(),
            )
            .await
            .expect("the others still send");
        producer.flush().await.expect("flush");
    }
    for topic in &topics {
        let info = backend.describe_stream(topic).await.expect("describe");
        let stored: u64 = info
            .partitions
            .iter()
            .map(|p| p.next.as_ref().and_then(|n| n.as_offset()).unwrap_or(0))
            .sum();
        let expected = if topic == &topics[0] { 1 } else { 51 };
        assert_eq!(stored, expected, "events stored in `{topic}`");
    }

    // The client stays when its last producer goes, so the next producer finds it connected
    // (a new client's first send waits for the idempotent producer's id).
    for producer in producers.drain(..) {
        producer.close().await.expect("close");
    }
    let kept = client_threads();
    assert_eq!(kept.len(), before + 1, "all producers closed and dropped");
    let again = backend.producer(&topics[1]).await.expect("producer");
    again.send(Event::new("again")).await.expect("send");
    assert_eq!(
        client_threads(),
        kept,
        "a new producer uses the client the others left (the same librdkafka main thread)"
    );
    again.close().await.expect("close");
    drop(again);

    // The backlog of four groups on `topics[1]` (52 events with "again"): one group reads and
    // acks 10 events, so its commits add up to 10; the others never joined.
    let topic = &topics[1];
    let groups: Vec<String> = (0..4).map(|_| unique_name("lag-reader")).collect();
    let consumer = backend
        .consumer(
            topic,
            ConsumerOptions::new(groups[0].clone()).start(StartPosition::Earliest),
        )
        .await
        .expect("consumer");
    let mut acked = 0;
    while acked < 10 {
        let delivery = consumer
            .receive_timeout(Duration::from_secs(30))
            .await
            .expect("receive")
            .expect("an event within 30 s");
        delivery.ack();
        acked += 1;
    }
    consumer
        .close()
        .await
        .expect("close (commits the acked prefix)");
    drop(consumer);
    clients_become(before + 1, "the consumer closed").await;
    let kafka = backend
        .as_any()
        .downcast_ref::<KafkaBackend>()
        .expect("a Kafka backend");
    for (i, group) in groups.iter().enumerate() {
        let lag = kafka.group_lag(topic, group).await.expect("group lag");
        let committed: u64 = lag.partitions.iter().filter_map(|p| p.committed).sum();
        let (expected_committed, expected_lag) = if i == 0 { (10, 42) } else { (0, 52) };
        assert_eq!(
            (committed, lag.total()),
            (expected_committed, expected_lag),
            "group `{group}`: committed and backlog"
        );
    }
    assert_eq!(
        clients(),
        before + 2,
        "the backlog of 4 groups read through the admin client and one reader of the ends"
    );
    // The backend's close lets go of the producer client.
    backend.close().await.expect("close the backend");
    clients_become(before + 1, "the backend closed").await;
}
