//! The driver against a real broker, where its internals show what a black-box test cannot.

use std::time::Duration;

use tributary::{Backend, ConsumerOptions, Event, StartPosition, StreamSpec, Url};
use tributary_testcontainers::{Peer, require_peer, unique_name};

use super::KafkaConsumer;
use crate::{KafkaBackend, KafkaConfig};

const EVENTS: usize = 5000;
const WAIT: Duration = Duration::from_secs(60);

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
    let topic = unique_name("no-pause");
    backend
        .create_stream(&topic, StreamSpec::with_partitions(4))
        .await
        .expect("create");
    let producer = backend.producer(&topic).await.expect("producer");
    let events: Vec<Event> = (0..EVENTS)
        .map(|i| Event::new(format!("e{i}")).with_key(format!("k{}", i % 40)))
        .collect();
    for chunk in events.chunks(1000) {
        producer.send_batch(chunk.to_vec()).await.expect("send");
    }
    producer.close().await.expect("close");

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
