//! tributary's Kafka producer and consumer beside raw rdkafka doing the same work, against the
//! same broker in the same run (started by the fixture).
//!
//! `cargo bench -p tributary-kafka --bench kafka [-- EVENTS]` prints a table; nothing is
//! asserted. Same work means: the same events (100-byte payload, a key out of 1000, one
//! header), the same librdkafka settings (the raw clients use the backend's own
//! configuration), batches of 1000 awaited together; the consumers copy each message out of
//! librdkafka, mark it processed and commit every 500 ms.

use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tributary::{Backend, ConsumerOptions, Event, StartPosition, StreamSpec};
use tributary_testcontainers::{Peer, require, unique_name};

const BATCH: usize = 1000;
const PAYLOAD: usize = 100;
const PARTITIONS: u32 = 4;

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            Event::new(vec![b'x'; PAYLOAD])
                .with_key(format!("key-{:04}", i % 1000))
                .with_header("seq", i.to_string())
        })
        .collect()
}

async fn tributary_produce(backend: &dyn Backend, topic: &str, n: usize) -> f64 {
    let producer = backend.producer(topic).await.unwrap();
    let events = events(n);
    let started = Instant::now();
    for chunk in events.chunks(BATCH) {
        producer.send_batch(chunk.to_vec()).await.unwrap();
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    producer.close().await.unwrap();
    rate
}

async fn raw_produce(config: ClientConfig, topic: &str, n: usize) -> f64 {
    let producer: FutureProducer = config.create().unwrap();
    let events = events(n);
    let started = Instant::now();
    for chunk in events.chunks(BATCH) {
        let sends = chunk.iter().map(|event| {
            let mut headers = OwnedHeaders::new_with_capacity(event.headers.len());
            for (name, value) in event.headers.iter() {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_ref()),
                });
            }
            let record = FutureRecord::to(topic)
                .payload(event.payload.as_ref())
                .key(event.key.as_deref().unwrap())
                .headers(headers);
            producer.send(record, Duration::from_secs(60))
        });
        for result in join_all(sends).await {
            result.map_err(|(e, _)| e).unwrap();
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn tributary_consume(backend: &dyn Backend, topic: &str, n: usize) -> f64 {
    let consumer = backend
        .consumer(
            topic,
            ConsumerOptions::new(unique_name("bench")).start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    // Timed from the first event, like the raw consumer: joining the group is not throughput.
    consumer.receive().await.unwrap().ack();
    let started = Instant::now();
    for _ in 1..n {
        consumer.receive().await.unwrap().ack();
    }
    let rate = (n - 1) as f64 / started.elapsed().as_secs_f64();
    consumer.close().await.unwrap();
    rate
}

/// Raw consumer: poll on a thread, copy each message out, commit the next offsets every 500 ms.
fn raw_consume(mut config: ClientConfig, topic: &str, n: usize) -> f64 {
    config
        .set("group.id", unique_name("bench-raw"))
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = config.create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut next = std::collections::HashMap::new();
    let mut kept = 0usize;
    let mut started = None;
    let mut last_commit = Instant::now();
    let mut received = 0;
    while received < n {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.unwrap();
        if started.is_none() {
            started = Some(Instant::now());
            received += 1;
            continue;
        }
        let event = Event::new(bytes::Bytes::copy_from_slice(
            message.payload().unwrap_or_default(),
        ))
        .with_key(bytes::Bytes::copy_from_slice(
            message.key().unwrap_or_default(),
        ));
        let headers = message.headers().map(|h| h.iter().count()).unwrap_or(0);
        kept += event.payload.len() + headers;
        next.insert(message.partition(), message.offset() + 1);
        received += 1;
        if last_commit.elapsed() >= Duration::from_millis(500) {
            let mut list = TopicPartitionList::new();
            for (&p, &o) in &next {
                list.add_partition_offset(topic, p, Offset::Offset(o))
                    .unwrap();
            }
            consumer.commit(&list, CommitMode::Sync).unwrap();
            last_commit = Instant::now();
        }
    }
    assert!(kept > 0);
    (n - 1) as f64 / started.unwrap().elapsed().as_secs_f64()
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let Some(server) = require(Peer::Kafka) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tributary_kafka::register();
        let backend = tributary::connect(server.url()).await.unwrap();
        let kafka = backend.as_any().downcast_ref::<tributary_kafka::KafkaBackend>().unwrap();
        let mut rows: Vec<(&str, f64, f64)> = Vec::new();
        // Two rounds, alternating, so neither side always gets the warmer broker.
        for round in 0..2 {
            let raw_topic = unique_name("bench-raw");
            let trib_topic = unique_name("bench-trib");
            for topic in [&raw_topic, &trib_topic] {
                backend.create_stream(topic, StreamSpec::with_partitions(PARTITIONS)).await.unwrap();
            }
            let raw_p = raw_produce(kafka.producer_config(), &raw_topic, n).await;
            let trib_p = tributary_produce(backend.as_ref(), &trib_topic, n).await;
            let config = kafka.consumer_config();
            let topic = raw_topic.clone();
            let raw_c = tokio::task::spawn_blocking(move || raw_consume(config, &topic, n)).await.unwrap();
            let trib_c = tributary_consume(backend.as_ref(), &trib_topic, n).await;
            println!("round {round}: produce raw {raw_p:.0}/s tributary {trib_p:.0}/s; consume raw {raw_c:.0}/s tributary {trib_c:.0}/s");
            rows.push(("produce", raw_p, trib_p));
            rows.push(("consume", raw_c, trib_c));
        }
        println!("\nKafka {} · {n} events of {PAYLOAD} B · {PARTITIONS} partitions · best of 2 rounds", server.url());
        println!("| | raw rdkafka (events/s) | tributary (events/s) | ratio |");
        println!("|---|---|---|---|");
        for what in ["produce", "consume"] {
            let best = |pick: fn(&(&str, f64, f64)) -> f64| {
                rows.iter().filter(|r| r.0 == what).map(pick).fold(0.0, f64::max)
            };
            let (raw, trib) = (best(|r| r.1), best(|r| r.2));
            println!("| {what} | {raw:.0} | {trib:.0} | {:.2} |", trib / raw);
        }
    });
}
