//! The driver against a real broker, where its internals show what a black-box test cannot.

use std::collections::HashSet;
use std::time::Duration;

use tributary::{Backend, ConsumerOptions, Event, StartPosition, StreamSpec, Url};
use tributary_testcontainers::{Peer, require_peer, unique_name};

use super::KafkaConsumer;
use crate::{KafkaBackend, KafkaConfig};

const EVENTS: usize = 5000;
const WAIT: Duration = Duration::from_secs(60);

/// A new 4-partition topic holding `events` events `e0`, `e1`…, keyed `k0`…`k39` in turn.
async fn topic_holding(backend: &KafkaBackend, prefix: &str, events: usize) -> String {
    let topic = unique_name(prefix);
    backend
        .create_stream(&topic, StreamSpec::with_partitions(4))
        .await
        .expect("create");
    let producer = backend.producer(&topic).await.expect("producer");
    let all: Vec<Event> = (0..events)
        .map(|i| Event::new(format!("e{i}")).with_key(format!("k{}", i % 40)))
        .collect();
    for chunk in all.chunks(1000) {
        producer.send_batch(chunk.to_vec()).await.expect("send");
    }
    producer.close().await.expect("close");
    topic
}

/// Issue 22's in-flight cliff: a consumer with a small window (`max_in_flight` 64, so a ready
/// queue of 64) whose application takes and acks everything promptly must never pause its
/// partitions. Each pause throws away librdkafka's prefetch and the resumed fetch waits for
/// the broker thread's next wake-up (up to a second): the driver that took 512 messages per
/// round whatever the queue's room paused on nearly every round, and a bridge route with
/// `in_flight` 200 copied ~1,000 events/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_window_that_keeps_up_never_pauses_its_partitions() {
    let server = require_peer!(Peer::Kafka);
    let config = KafkaConfig::from_url(&Url::parse(server.url()).expect("url")).expect("config");
    let backend = KafkaBackend::connect(config.clone())
        .await
        .expect("connect");
    let topic = topic_holding(&backend, "no-pause", EVENTS).await;

    let options = ConsumerOptions::new(unique_name("g"))
        .start(StartPosition::Earliest)
        .max_in_flight(64);
    let consumer = KafkaConsumer::start(&config, &topic, options, None)
        .await
        .expect("consumer");
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut received = 0;
    while received < EVENTS {
        let batch = tokio::time::timeout_at(
            deadline,
            tributary::Consumer::receive_batch(&consumer, 32, Duration::from_millis(5)),
        )
        .await
        .unwrap_or_else(|_| panic!("{received} of {EVENTS} events within {WAIT:?}"))
        .expect("receive");
        received += batch.len();
        for d in batch {
            d.ack();
        }
    }
    let pauses = consumer.shared.state.lock().pauses;
    tributary::Consumer::close(&consumer).await.expect("close");
    assert_eq!(
        pauses, 0,
        "the driver paused its partitions {pauses} times while the application kept up"
    );
}

/// A member whose application stopped taking events pauses its partitions in librdkafka; when
/// a rebalance hands some of them back to it, they must fetch again. librdkafka keeps a
/// partition's pause across unassign and assign, so they once stayed paused for good: a bridge
/// replica that joined a busy one left half the source unreplicated. The first member here
/// really has paused (its counter says so) before the second joins: since a fetch round takes
/// only what the queue has room for, a pause needs the application to stall for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_paused_by_a_stalled_application_fetch_again_after_a_rebalance() {
    const TOTAL: usize = 4000;
    let server = require_peer!(Peer::Kafka);
    let config = KafkaConfig::from_url(&Url::parse(server.url()).expect("url")).expect("config");
    let backend = KafkaBackend::connect(config.clone())
        .await
        .expect("connect");
    let topic = topic_holding(&backend, "paused-rebalance", TOTAL).await;
    let group = unique_name("g");
    let options = || {
        ConsumerOptions::new(group.clone())
            .start(StartPosition::Earliest)
            .max_in_flight(64)
    };
    let first = KafkaConsumer::start(&config, &topic, options(), None)
        .await
        .expect("first");
    let mut seen = std::collections::HashSet::new();
    let d = tokio::time::timeout(WAIT, tributary::Consumer::receive(&first))
        .await
        .expect("a first delivery within the deadline")
        .expect("receive");
    seen.insert(String::from_utf8_lossy(&d.event.payload).into_owned());
    d.ack();
    // The application stops taking events until the driver has paused the partitions.
    let stalled = tokio::time::Instant::now();
    while first.shared.state.lock().pauses == 0 {
        assert!(
            stalled.elapsed() < WAIT,
            "the driver never paused its partitions while the application took nothing for {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "paused after the application stalled for {:.1} s",
        stalled.elapsed().as_secs_f64()
    );
    let second = KafkaConsumer::start(&config, &topic, options(), None)
        .await
        .expect("second");

    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < TOTAL {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {TOTAL} events arrived after the rebalance",
            seen.len()
        );
        for consumer in [&first, &second] {
            // Bounded, so a stuck member fails the test at its deadline instead of hanging it.
            let batch = tokio::time::timeout(
                Duration::from_millis(200),
                tributary::Consumer::receive_batch(consumer, 500, Duration::from_millis(20)),
            )
            .await
            .unwrap_or(Ok(Vec::new()))
            .expect("receive");
            for d in batch {
                seen.insert(String::from_utf8_lossy(&d.event.payload).into_owned());
                d.ack();
            }
        }
    }
    tributary::Consumer::close(&first).await.expect("close");
    tributary::Consumer::close(&second).await.expect("close");
}

/// A member holds deliveries when a second member joins. The acks it makes while its revoke
/// waits for them (`revoke_grace`) are committed before its partitions move, so nobody reads
/// those events again, and nothing is lost. Before the wait, the revoke committed only what
/// was acked when it began, and all 100 were read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_made_while_a_revoke_waits_are_committed_before_the_partitions_move() {
    const SENT: usize = 400;
    const HELD: usize = 100;
    let server = require_peer!(Peer::Kafka);
    let mut config =
        KafkaConfig::from_url(&Url::parse(server.url()).expect("url")).expect("config");
    // The holding member hears of the rebalance within about 100 ms of the join.
    config
        .consumer
        .push(("heartbeat.interval.ms".into(), "100".into()));
    let backend = KafkaBackend::connect(config.clone())
        .await
        .expect("connect");
    let topic = topic_holding(&backend, "revoke-grace", SENT).await;
    let options = ConsumerOptions::new(unique_name("g")).start(StartPosition::Earliest);
    let first = KafkaConsumer::start(&config, &topic, options.clone(), None)
        .await
        .expect("first");
    let mut held = Vec::new();
    while held.len() < HELD {
        held.push(
            tokio::time::timeout(WAIT, tributary::Consumer::receive(&first))
                .await
                .expect("a delivery within the deadline")
                .expect("receive"),
        );
    }
    let payload = |d: &tributary::Delivery| String::from_utf8_lossy(&d.event.payload).into_owned();
    let acked: HashSet<String> = held.iter().map(payload).collect();
    assert_eq!(acked.len(), HELD, "the first deliveries are distinct");
    let joining = {
        let (config, topic) = (config.clone(), topic.clone());
        tokio::spawn(async move { KafkaConsumer::start(&config, &topic, options, None).await })
    };
    // The acks come while the first member's revoke waits for them, not before it began.
    let deadline = tokio::time::Instant::now() + WAIT;
    while first.shared.state.lock().revoking == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first member's revoke did not begin within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for delivery in held {
        delivery.ack();
    }
    let second = joining.await.expect("join task").expect("second");
    // A partition's next owner reads from its commit on, so an acked event read again would
    // come before the partition's unread ones: once every event was seen, none can come later.
    let mut seen = acked.clone();
    let mut again = 0;
    while seen.len() < SENT {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {SENT} events seen within {WAIT:?}",
            seen.len()
        );
        for consumer in [&first, &second] {
            // Bounded: a member whose partitions are all read waits for the first event.
            let batch = tokio::time::timeout(
                Duration::from_millis(200),
                tributary::Consumer::receive_batch(consumer, 100, Duration::from_millis(20)),
            )
            .await
            .unwrap_or(Ok(Vec::new()))
            .expect("receive");
            for d in batch {
                let p = payload(&d);
                again += usize::from(acked.contains(&p));
                seen.insert(p);
                d.ack();
            }
        }
    }
    assert_eq!(
        again, 0,
        "{again} of the {HELD} events acked during the revoke were read again"
    );
    tributary::Consumer::close(&first).await.expect("close");
    tributary::Consumer::close(&second).await.expect("close");
}
