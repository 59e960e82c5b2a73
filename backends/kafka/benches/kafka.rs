//! tributary's Kafka producer and consumer beside raw rdkafka doing the same work, against the
//! same broker in the same run (started by the fixture).
//!
//! `cargo bench -p tributary-kafka --bench kafka [-- EVENTS]` prints a table; nothing is
//! asserted. `BENCH_KAFKA_ROUNDS` (default 12) rounds alternate the order of the phases; the
//! table shows the best rates, the median of the per-round ratios (steadier than the ratio of
//! bests on a shared machine; the goal lines give its 95% interval, `benches/stats.rs`), and the CPU each side spent per event. Same work means: the same events (100-byte payload, a key out of 1000, one
//! header), the same librdkafka settings (the raw clients use the backend's own
//! configuration), batches of 1000 awaited together; the consumers turn each message into an
//! owned event (payload, key, headers, timestamp copied out of librdkafka), mark it processed
//! and commit every 500 ms. tributary consumes twice: one `receive()` per event, and
//! `receive_batch(1000)`, which drains its ready queue once per call.
//!
//! `BENCH_KAFKA_MODES` picks the modes (`throughput,latency`). `latency`: one event at a time
//! sent (its delivery awaited), received and acked, raw and tributary, with the backend's
//! defaults and with `linger.ms=0`, [`probe::LATENCY_SAMPLES`] per side in each of
//! `BENCH_KAFKA_LATENCY_ROUNDS` (default 3) alternating rounds; p50/p90/p99/p99.9 pooled.

#[path = "../../../benches/probe.rs"]
mod probe;

use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tributary::{Backend, ConsumerOptions, Event, StartPosition, StreamSpec};
use tributary_testcontainers::{Peer, require, unique_name};

// Allocations per event, a figure the machine's load does not move (librdkafka's own mallocs
// are C's and not counted: this is what each side's Rust code allocates).
#[global_allocator]
static GLOBAL: probe::CountingAllocator = probe::CountingAllocator;

const BATCH: usize = 1000;
/// With `BENCH_KAFKA_MARKS=1`, each phase's start and end are printed for a profile of one
/// phase alone (`probe::mark`).
const MARKS: &str = "BENCH_KAFKA_MARKS";

const PAYLOAD: usize = 100;
const PARTITIONS: u32 = 4;

/// Events per second, CPU microseconds and allocations per event, of one phase.
#[derive(Clone, Copy)]
struct Figures {
    rate: f64,
    cpu_us: f64,
    allocs: f64,
}

/// Runs `phase` (which returns the events/s it measured) and adds the CPU and the allocations
/// it cost per event.
async fn measured(n: usize, phase: impl std::future::Future<Output = f64>) -> Figures {
    let cpu = probe::cpu_time();
    let (allocations, _) = probe::allocations();
    let rate = phase.await;
    Figures {
        rate,
        cpu_us: (probe::cpu_time() - cpu).as_secs_f64() * 1e6 / n as f64,
        allocs: (probe::allocations().0 - allocations) as f64 / n as f64,
    }
}

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
    probe::tributary_produce(backend, topic, || events(n), BATCH).await
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

async fn tributary_consume(backend: &dyn Backend, topic: &str, n: usize, batch: bool) -> f64 {
    let options = ConsumerOptions::new(unique_name("bench")).start(StartPosition::Earliest);
    probe::tributary_consume(backend, topic, options, n, batch.then_some(BATCH)).await
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
        // The owned event an application gets, copied field by field.
        let mut event = Event::new(bytes::Bytes::copy_from_slice(
            message.payload().unwrap_or_default(),
        ))
        .with_key(bytes::Bytes::copy_from_slice(
            message.key().unwrap_or_default(),
        ));
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                event.headers.append(
                    header.key,
                    bytes::Bytes::copy_from_slice(header.value.unwrap_or_default()),
                );
            }
        }
        event.timestamp = message
            .timestamp()
            .to_millis()
            .map(tributary::Timestamp::from_millis);
        kept += event.payload.len() + event.headers.len();
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
    let rounds: usize = std::env::var("BENCH_KAFKA_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(12)
        .max(1);
    let latency_rounds: usize = std::env::var("BENCH_KAFKA_LATENCY_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    let modes =
        std::env::var("BENCH_KAFKA_MODES").unwrap_or_else(|_| "throughput,latency".to_owned());
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
        let kafka = backend
            .as_any()
            .downcast_ref::<tributary_kafka::KafkaBackend>()
            .unwrap();
        if modes.split(',').any(|m| m == "throughput") {
            throughput_rows(backend.clone(), kafka, server.url(), n, rounds).await;
        }
        if modes.split(',').any(|m| m == "latency") {
            latency_rows(server.url(), latency_rounds).await;
        }
    });
}

/// The throughput mode: both sides' rates, CPU and allocations per event over `rounds`.
async fn throughput_rows(
    backend: std::sync::Arc<dyn Backend>,
    kafka: &tributary_kafka::KafkaBackend,
    url: &str,
    n: usize,
    rounds: usize,
) {
    {
        let mut rows: Vec<(&str, Figures, Figures)> = Vec::new();
        // Rounds alternate the order of the phases, so that neither side always gets the
        // warmer broker or the quieter moment on a shared machine.
        for round in 0..rounds {
            let raw_topic = unique_name("bench-raw");
            let trib_topic = unique_name("bench-trib");
            for topic in [&raw_topic, &trib_topic] {
                backend
                    .create_stream(topic, StreamSpec::with_partitions(PARTITIONS))
                    .await
                    .unwrap();
            }
            let (raw_p, trib_p) = if round % 2 == 0 {
                let raw = measured(n, raw_produce(kafka.producer_config(), &raw_topic, n)).await;
                (
                    raw,
                    measured(n, tributary_produce(backend.as_ref(), &trib_topic, n)).await,
                )
            } else {
                let trib = measured(n, tributary_produce(backend.as_ref(), &trib_topic, n)).await;
                (
                    measured(n, raw_produce(kafka.producer_config(), &raw_topic, n)).await,
                    trib,
                )
            };
            let raw_consume_phase = || {
                let config = kafka.consumer_config();
                let topic = raw_topic.clone();
                async move {
                    probe::mark(MARKS, "raw-consume", "start");
                    let figures = measured(n, async {
                        tokio::task::spawn_blocking(move || raw_consume(config, &topic, n))
                            .await
                            .unwrap()
                    })
                    .await;
                    probe::mark(MARKS, "raw-consume", "end");
                    figures
                }
            };
            let trib_consume_phase = |batch: bool| {
                let (backend, topic) = (backend.clone(), trib_topic.clone());
                async move {
                    let phase = if batch {
                        "tributary-consume-batch"
                    } else {
                        "tributary-consume"
                    };
                    probe::mark(MARKS, phase, "start");
                    let figures =
                        measured(n, tributary_consume(backend.as_ref(), &topic, n, batch)).await;
                    probe::mark(MARKS, phase, "end");
                    figures
                }
            };
            let (raw_c, trib_c, trib_b) = if round % 2 == 0 {
                let raw = raw_consume_phase().await;
                let one = trib_consume_phase(false).await;
                (raw, one, trib_consume_phase(true).await)
            } else {
                let batch = trib_consume_phase(true).await;
                let one = trib_consume_phase(false).await;
                (raw_consume_phase().await, one, batch)
            };
            println!(
                "round {round}: produce raw {:.0}/s tributary {:.0}/s ({:.2}); consume raw {:.0}/s tributary receive {:.0}/s ({:.2}) receive_batch {:.0}/s ({:.2}); consume CPU µs/event raw {:.2} receive {:.2} receive_batch {:.2}",
                raw_p.rate,
                trib_p.rate,
                trib_p.rate / raw_p.rate,
                raw_c.rate,
                trib_c.rate,
                trib_c.rate / raw_c.rate,
                trib_b.rate,
                trib_b.rate / raw_c.rate,
                raw_c.cpu_us,
                trib_c.cpu_us,
                trib_b.cpu_us
            );
            rows.push(("produce", raw_p, trib_p));
            rows.push(("consume, receive()", raw_c, trib_c));
            rows.push(("consume, receive_batch(1000)", raw_c, trib_b));
        }
        println!(
            "\nKafka {} · {n} events of {PAYLOAD} B · {PARTITIONS} partitions · {rounds} rounds",
            url
        );
        println!(
            "| | raw rdkafka events/s (best) | tributary events/s (best) | ratio of bests | median ratio per round | raw CPU µs/event | tributary CPU µs/event | CPU ratio | allocations/event, raw / tributary |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        let mut goals = Vec::new();
        for what in [
            "produce",
            "consume, receive()",
            "consume, receive_batch(1000)",
        ] {
            let mine: Vec<_> = rows.iter().filter(|r| r.0 == what).collect();
            let best_rate = |pick: fn(&(&str, Figures, Figures)) -> Figures| {
                mine.iter().map(|r| pick(r).rate).fold(0.0, f64::max)
            };
            let least_cpu = |pick: fn(&(&str, Figures, Figures)) -> Figures| {
                mine.iter()
                    .map(|r| pick(r).cpu_us)
                    .fold(f64::INFINITY, f64::min)
            };
            let mut ratios: Vec<f64> = mine.iter().map(|r| r.2.rate / r.1.rate).collect();
            ratios.sort_by(f64::total_cmp);
            let (raw, trib) = (best_rate(|r| r.1), best_rate(|r| r.2));
            let (raw_cpu, trib_cpu) = (least_cpu(|r| r.1), least_cpu(|r| r.2));
            // The same in every round but for commits and wake-ups: the median says it.
            let allocs = |pick: fn(&(&str, Figures, Figures)) -> Figures| {
                probe::spread(mine.iter().map(|r| pick(r).allocs).collect()).0
            };
            println!(
                "| {what} | {raw:.0} | {trib:.0} | {:.2} | {:.2} | {raw_cpu:.2} | {trib_cpu:.2} | {:.2} | {:.2} / {:.2} |",
                trib / raw,
                probe::spread(ratios.clone()).0,
                trib_cpu / raw_cpu,
                allocs(|r| r.1),
                allocs(|r| r.2)
            );
            goals.push((what, ratios));
        }
        for (what, ratios) in goals {
            probe::ratio_goal(
                &format!("Kafka {what} vs raw rdkafka (median ratio per round)"),
                &ratios,
                0.95,
            );
        }
        println!(
            "(ratios: tributary / raw events per second, higher is better; a round's ratio compares phases run minutes apart at most, so it is steadier than the ratio of bests on a shared machine; CPU ratio: tributary / raw CPU per event, least of the rounds, lower is better)"
        );
    }
}

/// The raw side of a `latency` round: the backend's own producer and consumer configuration,
/// one event at a time sent (its delivery report awaited), polled and its offset kept for the
/// commit every 500 ms, as in the throughput rows; the time from the send to the poll's
/// return, in µs. The first event goes through untimed (the group join and first fetch).
fn raw_latency(
    producer: ClientConfig,
    mut consumer: ClientConfig,
    topic: &str,
    samples: usize,
) -> Vec<f64> {
    consumer
        .set("group.id", unique_name("bench-raw-lat"))
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = consumer.create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let producer: FutureProducer = producer.create().unwrap();
    let mut next = std::collections::HashMap::new();
    let mut last_commit = Instant::now();
    let mut micros = Vec::with_capacity(samples);
    for (i, event) in events(samples + 1).into_iter().enumerate() {
        let mut headers = OwnedHeaders::new_with_capacity(1);
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
        let started = Instant::now();
        futures::executor::block_on(producer.send(record, Duration::from_secs(60)))
            .map_err(|(e, _)| e)
            .unwrap();
        let message = loop {
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                break message.unwrap();
            }
        };
        if i > 0 {
            micros.push(started.elapsed().as_secs_f64() * 1e6);
        }
        // What an application keeps of the message, as the throughput rows copy it.
        let payload = bytes::Bytes::copy_from_slice(message.payload().unwrap_or_default());
        assert_eq!(payload.len(), PAYLOAD);
        next.insert(message.partition(), message.offset() + 1);
        if last_commit.elapsed() >= Duration::from_millis(500) {
            let mut list = TopicPartitionList::new();
            for (&p, &o) in &next {
                list.add_partition_offset(topic, p, Offset::Offset(o))
                    .unwrap();
            }
            consumer.commit(&list, CommitMode::Async).unwrap();
            last_commit = Instant::now();
        }
    }
    micros
}

/// The `latency` mode: one event at a time, send to receive, raw rdkafka and tributary in
/// alternating rounds, each with the backend's defaults and again with `linger.ms=0` (the
/// producer's one setting that waits on purpose). No Kafka client in another language is
/// installed here, so there is no third column.
async fn latency_rows(url: &str, rounds: usize) {
    let samples = probe::LATENCY_SAMPLES;
    let mut sides: Vec<(&str, Vec<f64>)> = [
        "raw rdkafka",
        "tributary",
        "raw rdkafka, linger.ms=0",
        "tributary, producer.linger.ms=0",
    ]
    .into_iter()
    .map(|who| (who, Vec::new()))
    .collect();
    for round in 0..rounds {
        let mut line = Vec::new();
        for (variant, query) in [("", ""), (", linger 0", "?producer.linger.ms=0")] {
            let backend = tributary::connect(&format!("{url}{query}")).await.unwrap();
            let kafka = backend
                .as_any()
                .downcast_ref::<tributary_kafka::KafkaBackend>()
                .unwrap();
            let (raw_topic, trib_topic) = (unique_name("lat-raw"), unique_name("lat-trib"));
            for topic in [&raw_topic, &trib_topic] {
                backend
                    .create_stream(topic, StreamSpec::with_partitions(PARTITIONS))
                    .await
                    .unwrap();
            }
            let raw = || {
                let (producer, consumer) = (kafka.producer_config(), kafka.consumer_config());
                let topic = raw_topic.clone();
                tokio::task::spawn_blocking(move || {
                    raw_latency(producer, consumer, &topic, samples)
                })
            };
            let trib = || {
                let options =
                    ConsumerOptions::new(unique_name("bench-lat")).start(StartPosition::Earliest);
                let mut events = events(samples + 1);
                let first = events.remove(0);
                probe::tributary_latency(
                    backend.as_ref(),
                    &trib_topic,
                    options,
                    first,
                    events,
                    Duration::ZERO,
                )
            };
            let (r, t) = if round % 2 == 0 {
                let r = raw().await.unwrap();
                (r, trib().await)
            } else {
                let t = trib().await;
                (raw().await.unwrap(), t)
            };
            line.push(format!(
                "raw{variant} {}, tributary{variant} {}",
                probe::p50_p99(&r),
                probe::p50_p99(&t)
            ));
            let at = if variant.is_empty() { 0 } else { 2 };
            sides[at].1.extend(r);
            sides[at + 1].1.extend(t);
            for topic in [&raw_topic, &trib_topic] {
                backend.delete_stream(topic).await.unwrap();
            }
            backend.close().await.unwrap();
        }
        println!(
            "latency round {round}: p50/p99 {}; load {}",
            line.join(", "),
            probe::load_average()
        );
    }
    let sides: Vec<(&str, &[f64])> = sides.iter().map(|(w, m)| (*w, m.as_slice())).collect();
    probe::latency_table(
        &format!(
            "Kafka latency: one event sent (delivery awaited), received and acked, {samples} per side per round, {rounds} alternating rounds pooled (µs)"
        ),
        &sides,
    );
}
