//! tributary's Pulsar producer and consumer beside the raw `pulsar` crate doing the same work,
//! against the same standalone in the same run (started by the fixture).
//!
//! `cargo bench -p tributary-pulsar --bench pulsar [-- EVENTS]` prints a table; nothing is
//! asserted. Same work means: the same events (100-byte payload, a key out of 1000, one
//! property), the same producer options (each event its own message, or batches of up to 1000
//! with `batched`), 1000 sends enqueued before their receipts are awaited; the consumers
//! (Failover subscription, prefetch 1000 per partition) copy each message out and ack it.
//!
//! A peer does the same work in the same rounds on a topic of its own: Apache's Python client
//! (`benches/py/perf.py`, pulsar-client with the C++ client underneath, from the peers'
//! virtualenv), so the table also shows where both Rust sides stand against the official
//! client on this machine. Without the virtualenv its column reads `-`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pulsar::consumer::InitialPosition;
use pulsar::producer::ProducerOptions;
use pulsar::{Pulsar, SubType, TokioExecutor};
use tributary::{Backend, ConsumerOptions, Event, StartPosition, StreamSpec};
use tributary_testcontainers::{Peer, peers_dir, require, unique_name};

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

/// What a user of the crate writes: one producer per partition (to route keys as tributary
/// does), messages built from the same events, receipts awaited per chunk.
async fn raw_produce(client: &Pulsar<TokioExecutor>, topic: &str, n: usize, batched: bool) -> f64 {
    let options = ProducerOptions {
        block_queue_if_full: true,
        batch_size: batched.then_some(BATCH as u32),
        batch_byte_size: batched.then_some(128 * 1024),
        batch_timeout: batched.then_some(Duration::from_millis(5)),
        ..ProducerOptions::default()
    };
    let mut producers = Vec::new();
    for p in 0..PARTITIONS {
        producers.push(
            client
                .producer()
                .with_topic(format!("persistent://public/default/{topic}-partition-{p}"))
                .with_options(options.clone())
                .build()
                .await
                .unwrap(),
        );
    }
    let events = events(n);
    let started = Instant::now();
    for chunk in events.chunks(BATCH) {
        let mut receipts = Vec::with_capacity(chunk.len());
        for event in chunk {
            let key = String::from_utf8(event.key.clone().unwrap().to_vec()).unwrap();
            let hash = murmur3::murmur3_32(&mut key.as_bytes(), 0).unwrap() & (i32::MAX as u32);
            let partition = (hash % PARTITIONS) as usize;
            let message = pulsar::producer::Message {
                payload: event.payload.to_vec(),
                properties: event
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_owned(), String::from_utf8(v.to_vec()).unwrap()))
                    .collect(),
                partition_key: Some(key),
                ..Default::default()
            };
            receipts.push(
                producers[partition]
                    .send_non_blocking(message)
                    .await
                    .unwrap(),
            );
        }
        for receipt in futures::future::join_all(receipts).await {
            receipt.unwrap();
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
    // Timed from the first event, like the raw consumer: subscribing is not throughput.
    consumer.receive().await.unwrap().ack();
    let started = Instant::now();
    for _ in 1..n {
        consumer.receive().await.unwrap().ack();
    }
    let rate = (n - 1) as f64 / started.elapsed().as_secs_f64();
    consumer.close().await.unwrap();
    rate
}

async fn raw_consume(client: &Pulsar<TokioExecutor>, topic: &str, n: usize) -> f64 {
    let mut consumer: pulsar::Consumer<Vec<u8>, TokioExecutor> = client
        .consumer()
        .with_topic(format!("persistent://public/default/{topic}"))
        .with_subscription(unique_name("bench-raw"))
        .with_subscription_type(SubType::Failover)
        .with_batch_size(1000)
        .with_options(pulsar::ConsumerOptions {
            initial_position: InitialPosition::Earliest,
            receiver_queue_size: Some(1000),
            ..Default::default()
        })
        .build()
        .await
        .unwrap();
    let mut started = None;
    let mut kept = 0usize;
    for _ in 0..n {
        let message = consumer.next().await.unwrap().unwrap();
        if started.is_none() {
            started = Some(Instant::now());
        }
        let event = Event::new(bytes::Bytes::from(message.payload.data.clone()));
        kept += event.payload.len() + message.metadata().properties.len();
        consumer.ack(&message).await.unwrap();
    }
    assert!(kept > 0);
    (n - 1) as f64 / started.unwrap().elapsed().as_secs_f64()
}

/// The Python client's produce and consume rates on `topic`, or `None` without the virtualenv.
async fn python_peer(
    address: String,
    topic: String,
    n: usize,
    batched: bool,
) -> Option<(f64, f64)> {
    let python = peers_dir().join("pyvenv/current/bin/python");
    if !python.is_file() {
        eprintln!("no Python peer: {} is missing", python.display());
        return None;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/py/perf.py");
    let run = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(format!("pulsar://{address}"))
            .arg(format!("persistent://public/default/{topic}"))
            .arg(n.to_string())
            .arg(if batched { "1" } else { "0" })
            .output()
    });
    let output = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("the Python peer finished within 15 minutes")
        .expect("join")
        .expect("run the Python peer");
    assert!(
        output.status.success(),
        "the Python peer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rate = |what: &str| -> f64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(what)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("the Python peer printed no {what} rate: {stdout}"))
    };
    Some((rate("produce"), rate("consume")))
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let Some(server) = require(Peer::Pulsar) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tributary_pulsar::register();
        let mut rows: Vec<Row> = Vec::new();
        for (mode, options) in [("unbatched", ""), ("batched", "&batch_size=1000")] {
            let url = format!("{}{options}", server.url());
            let backend = tributary::connect(&url).await.unwrap();
            let pulsar = backend
                .as_any()
                .downcast_ref::<tributary_pulsar::PulsarBackend>()
                .unwrap();
            let raw = pulsar.native().clone();
            // Two rounds, alternating, so neither side always gets the warmer broker.
            for round in 0..2 {
                let raw_topic = unique_name("bench-raw");
                let trib_topic = unique_name("bench-trib");
                let py_topic = unique_name("bench-py");
                for topic in [&raw_topic, &trib_topic, &py_topic] {
                    backend
                        .create_stream(topic, StreamSpec::with_partitions(PARTITIONS))
                        .await
                        .unwrap();
                }
                let (raw_p, trib_p) = if round == 0 {
                    let r = raw_produce(&raw, &raw_topic, n, mode == "batched").await;
                    (r, tributary_produce(backend.as_ref(), &trib_topic, n).await)
                } else {
                    let t = tributary_produce(backend.as_ref(), &trib_topic, n).await;
                    (raw_produce(&raw, &raw_topic, n, mode == "batched").await, t)
                };
                let (raw_c, trib_c) = if round == 0 {
                    let r = raw_consume(&raw, &raw_topic, n).await;
                    (r, tributary_consume(backend.as_ref(), &trib_topic, n).await)
                } else {
                    let t = tributary_consume(backend.as_ref(), &trib_topic, n).await;
                    (raw_consume(&raw, &raw_topic, n).await, t)
                };
                let py = python_peer(
                    server.address().to_string(),
                    py_topic,
                    n,
                    mode == "batched",
                )
                .await;
                println!(
                    "{mode} round {round}: produce raw {raw_p:.0}/s tributary {trib_p:.0}/s Python {}; consume raw {raw_c:.0}/s tributary {trib_c:.0}/s Python {}",
                    show(py.map(|p| p.0)),
                    show(py.map(|p| p.1)),
                );
                rows.push((format!("produce, {mode}"), raw_p, trib_p, py.map(|p| p.0)));
                rows.push((format!("consume, {mode}"), raw_c, trib_c, py.map(|p| p.1)));
            }
        }
        println!(
            "\nPulsar {} · {n} events of {PAYLOAD} B · {PARTITIONS} partitions · best of 2 rounds",
            server.url()
        );
        println!(
            "| | raw `pulsar` crate (events/s) | tributary (events/s) | ratio | Python pulsar-client (events/s) |"
        );
        println!("|---|---|---|---|---|");
        let mut kinds: Vec<&str> = Vec::new();
        for row in &rows {
            if !kinds.contains(&row.0.as_str()) {
                kinds.push(&row.0);
            }
        }
        for what in kinds {
            let best = |pick: fn(&Row) -> f64| {
                rows.iter().filter(|r| r.0 == what).map(pick).fold(0.0, f64::max)
            };
            let (raw, trib) = (best(|r| r.1), best(|r| r.2));
            let py = best(|r| r.3.unwrap_or(0.0));
            println!(
                "| {what} | {raw:.0} | {trib:.0} | {:.2} | {} |",
                trib / raw,
                show((py > 0.0).then_some(py))
            );
        }
    });
}

/// What was measured, then the raw crate's, tributary's and the Python peer's rates.
type Row = (String, f64, f64, Option<f64>);

fn show(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"))
}
