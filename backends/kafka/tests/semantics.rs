//! Promises the Kafka backend shares with every other backend, checked on a real broker where
//! Kafka's own behaviour once broke them: nack redelivery order, topic creation on a broker
//! that auto-creates topics itself, and `Consumer::lag` from the moment a consumer joins.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use tributary::{
    Backend, Consumer, ConsumerExt, ConsumerOptions, Delivery, Event, Producer, StartPosition,
    StreamSpec,
};
use tributary_testcontainers::{Peer, Server, require_peer, unique_name};

const WAIT: Duration = Duration::from_secs(60);

async fn connect(url: &str) -> Arc<dyn Backend> {
    tributary_kafka::register();
    tributary::connect(url).await.expect("connect")
}

async fn receive(consumer: &dyn Consumer) -> Delivery {
    consumer
        .receive_timeout(WAIT)
        .await
        .expect("receive")
        .expect("a delivery within the deadline")
}

/// `n` events `e0`, `e1`…, keyed `k0`…`k{keys-1}` in turn, or unkeyed.
fn numbered(n: usize, keys: Option<usize>) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let event = Event::new(format!("e{i}"));
            match keys {
                Some(keys) => event.with_key(format!("k{}", i % keys)),
                None => event,
            }
        })
        .collect()
}

/// A fresh topic of `partitions` partitions holding `events` (sent in batches of 1,000), and
/// its producer, still open.
async fn topic_holding(
    backend: &dyn Backend,
    prefix: &str,
    partitions: u32,
    events: &[Event],
) -> (String, Box<dyn Producer>) {
    let topic = unique_name(prefix);
    backend
        .create_stream(&topic, StreamSpec::with_partitions(partitions))
        .await
        .expect("create");
    let producer = backend.producer(&topic).await.expect("producer");
    for chunk in events.chunks(1000) {
        producer.send_batch(chunk.to_vec()).await.expect("send");
    }
    (topic, producer)
}

/// A member of `group` (a fresh one unless given) reading from the earliest event.
async fn consumer_from_earliest(
    backend: &dyn Backend,
    topic: &str,
    group: Option<&str>,
) -> Box<dyn Consumer> {
    let group = group.map_or_else(|| unique_name("g"), str::to_owned);
    backend
        .consumer(
            topic,
            ConsumerOptions::new(group).start(StartPosition::Earliest),
        )
        .await
        .expect("consumer")
}

fn label(d: &Delivery) -> String {
    format!(
        "{}#{}",
        String::from_utf8_lossy(&d.event.payload),
        d.attempt.unwrap_or(0)
    )
}

/// All events under one key (one partition); receive e0, e1, e2; nack e0 and e1; ack e2. The
/// nacked events come back first, in the order they were first delivered, then e3 onwards:
/// what `memory://` and `file://` do. Kafka once sent them after everything it had buffered,
/// in reverse order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_events_come_back_before_later_events_in_first_delivery_order() {
    let server = require_peer!(Peer::Kafka);
    let backend = connect(server.url()).await;
    let (topic, producer) =
        topic_holding(backend.as_ref(), "nack-order", 3, &numbered(20, Some(1))).await;
    let consumer = consumer_from_earliest(backend.as_ref(), &topic, None).await;

    let e0 = receive(consumer.as_ref()).await;
    let e1 = receive(consumer.as_ref()).await;
    let e2 = receive(consumer.as_ref()).await;
    assert_eq!(
        [&e0, &e1, &e2].map(label),
        ["e0#1", "e1#1", "e2#1"],
        "first deliveries"
    );
    e0.nack();
    e1.nack();
    e2.ack();
    let mut next = Vec::new();
    for _ in 0..3 {
        next.push(receive(consumer.as_ref()).await);
    }
    assert_eq!(
        next.iter().map(label).collect::<Vec<_>>(),
        ["e0#2", "e1#2", "e3#1"],
        "after nacking e0 and e1 and acking e2"
    );
    // Dropped deliveries count as nacked; dropped in reverse, they still come back in the
    // order they were first delivered.
    while let Some(d) = next.pop() {
        drop(d);
    }
    let mut again = Vec::new();
    for _ in 0..4 {
        again.push(receive(consumer.as_ref()).await);
    }
    assert_eq!(
        again.iter().map(label).collect::<Vec<_>>(),
        ["e0#3", "e1#3", "e3#2", "e4#1"],
        "after dropping e3, e1 and e0"
    );
    for d in again {
        d.ack();
    }
    // The rest follows in order, once each.
    for i in 5..20 {
        let d = receive(consumer.as_ref()).await;
        assert_eq!(label(&d), format!("e{i}#1"));
        d.ack();
    }
    consumer.close().await.expect("close");
    producer.close().await.expect("close");
}

/// The fixture's broker must auto-create topics itself (Kafka's default), or the next test
/// proves nothing.
async fn broker_auto_creates(server: &Server) -> bool {
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", server.address())
        .create()
        .expect("admin client");
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let configs = admin
        .describe_configs([&ResourceSpecifier::Broker(1)], &options)
        .await
        .expect("describe the broker");
    configs
        .into_iter()
        .flatten()
        .find_map(|c| {
            c.get("auto.create.topics.enable")
                .and_then(|e| e.value.clone())
        })
        .is_some_and(|v| v == "true")
}

/// `auto_create=true&partitions=4` makes 4-partition topics even where the broker would create
/// a missing topic on the first metadata request, with its own `num.partitions` (1 here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_create_makes_the_partitions_asked_for_on_an_auto_creating_broker() {
    let server = require_peer!(Peer::Kafka);
    assert!(
        broker_auto_creates(&server).await,
        "the fixture's broker must have auto.create.topics.enable=true"
    );
    let backend = connect(&format!("{}?auto_create=true&partitions=4", server.url())).await;

    let by_producer = unique_name("auto-producer");
    let producer = backend.producer(&by_producer).await.expect("producer");
    producer
        .send(Event::new("x").with_key("k"))
        .await
        .expect("send");
    producer.close().await.expect("close");
    let by_consumer = unique_name("auto-consumer");
    let consumer = backend
        .consumer(&by_consumer, ConsumerOptions::new(unique_name("g")))
        .await
        .expect("consumer");
    consumer.close().await.expect("close");

    for topic in [&by_producer, &by_consumer] {
        let info = backend.describe_stream(topic).await.expect("describe");
        assert_eq!(info.partitions.len(), 4, "partitions of `{topic}`");
    }
}

/// `lag()` answers from the moment `consumer()` returns, and follows acks at once: right after
/// 6,000 acks it said `None` although the capabilities declare lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_known_from_the_join_and_follows_acks() {
    let server = require_peer!(Peer::Kafka);
    let backend = connect(server.url()).await;
    assert!(backend.capabilities().lag);
    let (topic, producer) =
        topic_holding(backend.as_ref(), "lag", 4, &numbered(6000, Some(50))).await;
    let group = unique_name("g");
    let consumer = consumer_from_earliest(backend.as_ref(), &topic, Some(&group)).await;
    assert_eq!(consumer.lag(), Some(6000), "lag right after joining");
    let mut held = Vec::new();
    for _ in 0..6000 {
        held.push(receive(consumer.as_ref()).await);
    }
    assert_eq!(
        consumer.lag(),
        Some(6000),
        "received but not acked still counts"
    );
    let rest = held.split_off(2000);
    for d in held {
        d.ack();
    }
    assert_eq!(consumer.lag(), Some(4000), "right after 2,000 acks");
    for d in rest {
        d.ack();
    }
    assert_eq!(consumer.lag(), Some(0), "right after 6,000 acks");

    producer
        .send_batch((0..100).map(|i| Event::new(format!("more{i}"))).collect())
        .await
        .expect("send more");
    // New events count once the consumer has seen them arrive (it fetches continuously).
    let deadline = tokio::time::Instant::now() + WAIT;
    while consumer.lag() != Some(100) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag {:?}, expected Some(100)",
            consumer.lag()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer.close().await.expect("close");

    // A new member of the group knows the lag at once too: 100 unacked events.
    let again = consumer_from_earliest(backend.as_ref(), &topic, Some(&group)).await;
    assert_eq!(again.lag(), Some(100), "lag right after rejoining");
    again.close().await.expect("close");
    producer.close().await.expect("close");
}

/// `receive_batch` hands out what is ready, at most `max`, in partition order, and a nacked
/// event comes back at the head of a later batch, as with `receive`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_batch_keeps_order_and_redelivers_nacked_events_first() {
    let server = require_peer!(Peer::Kafka);
    let backend = connect(server.url()).await;
    let (topic, producer) =
        topic_holding(backend.as_ref(), "batch", 1, &numbered(3000, None)).await;
    let consumer = consumer_from_earliest(backend.as_ref(), &topic, None).await;
    let mut next = 0;
    let mut batches = 0;
    let mut nacked_once = false;
    while next < 3000 {
        let batch =
            tokio::time::timeout(WAIT, consumer.receive_batch(500, Duration::from_millis(20)))
                .await
                .expect("in time")
                .expect("receive_batch");
        assert!(
            !batch.is_empty() && batch.len() <= 500,
            "{} events",
            batch.len()
        );
        batches += 1;
        let mut batch = batch.into_iter();
        for d in batch.by_ref() {
            assert_eq!(
                label(&d).split('#').next(),
                Some(format!("e{next}").as_str())
            );
            if next == 1234 && !nacked_once {
                // Nack one in the middle: it heads the next batch, then the rest follows.
                nacked_once = true;
                d.nack();
                break;
            }
            next += 1;
            d.ack();
        }
        // Deliveries after the nacked one were never looked at: dropped, so nacked too.
        drop(batch);
    }
    assert!(nacked_once);
    println!("3000 events in {batches} batches");
    consumer.close().await.expect("close");
    producer.close().await.expect("close");
}

/// Errors name the backend, the operation and the stream, whether the backend came from a URL
/// through `tributary::connect` or from a `KafkaConfig` built in code and stamped; connecting
/// to no broker names the backend too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_backend_operation_and_stream_from_a_url_or_a_typed_config() {
    use tributary::ErrorKind;
    use tributary_kafka::{KafkaBackend, KafkaConfig};

    let server = require_peer!(Peer::Kafka);
    let from_url = connect(server.url()).await;
    let mut config = KafkaConfig::new(server.address());
    config.timeout = Duration::from_secs(30);
    let from_code =
        tributary::backend::stamped(KafkaBackend::connect(config).await.expect("connect"));
    let missing = unique_name("missing");
    for backend in [&from_url, &from_code] {
        let Err(e) = backend.producer(&missing).await else {
            panic!("a producer for a missing topic without auto_create");
        };
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert_eq!(e.backend(), Some("kafka"), "{e}");
        assert_eq!(e.operation(), Some("open producer"), "{e}");
        assert_eq!(e.stream(), Some(missing.as_str()), "{e}");
        let e = backend.describe_stream(&missing).await.unwrap_err();
        assert_eq!(
            (e.kind(), e.backend(), e.operation(), e.stream()),
            (
                ErrorKind::NotFound,
                Some("kafka"),
                Some("describe stream"),
                Some(missing.as_str())
            ),
            "{e}"
        );
    }

    // A closed producer refuses sends with `Closed`, stamped like every other error.
    let stream = unique_name("closed");
    from_code
        .create_stream(&stream, StreamSpec::with_partitions(1))
        .await
        .expect("create");
    let producer = from_code.producer(&stream).await.expect("producer");
    producer.close().await.expect("close");
    producer.close().await.expect("closing twice is harmless");
    let e = producer.send(Event::new("late")).await.unwrap_err();
    assert_eq!(
        (e.kind(), e.backend(), e.operation(), e.stream()),
        (
            ErrorKind::Closed,
            Some("kafka"),
            Some("send"),
            Some(stream.as_str())
        ),
        "{e}"
    );

    // No broker at all: the typed constructor names the backend itself.
    let mut nowhere = KafkaConfig::new("127.0.0.1:9");
    nowhere.timeout = Duration::from_secs(1);
    let e = KafkaBackend::connect(nowhere).await.unwrap_err();
    assert_eq!(e.backend(), Some("kafka"), "{e}");
}

/// A batch larger than librdkafka's local queue waits for room record by record: every event
/// lands once, in batch order within each key, and each receipt names the partition and offset
/// a consumer then reads the event at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_local_queue_lands_in_order_as_its_receipts_say() {
    let server = require_peer!(Peer::Kafka);
    let backend = connect(&format!(
        "kafka://{}?producer.queue.buffering.max.messages=16",
        server.address()
    ))
    .await;
    let topic = unique_name("queue-full");
    backend
        .create_stream(&topic, StreamSpec::with_partitions(2))
        .await
        .expect("create");
    let producer = backend.producer(&topic).await.expect("producer");
    let events = numbered(200, Some(3));
    let receipts = producer.send_batch(events.clone()).await.expect("send");
    assert_eq!(receipts.len(), events.len(), "a receipt per event");
    let consumer = consumer_from_earliest(backend.as_ref(), &topic, None).await;
    let mut last_of_key = std::collections::HashMap::new();
    for _ in 0..events.len() {
        let d = receive(consumer.as_ref()).await;
        let payload = String::from_utf8(d.event.payload.to_vec()).expect("utf-8");
        let index: usize = payload[1..].parse().expect("e<index>");
        let receipt = &receipts[index];
        assert_eq!(
            (&d.partition, &d.position),
            (&receipt.partition, &receipt.position),
            "{payload} was read where its receipt said"
        );
        let key = d.event.key.clone().expect("keyed");
        if let Some(before) = last_of_key.insert(key, index) {
            assert!(before < index, "{payload} after e{before} of the same key");
        }
        d.ack();
    }
    consumer.close().await.expect("close");
    producer.close().await.expect("close");
}
