//! tributary's Pulsar producer and consumer beside the raw `pulsar` crate doing the same work,
//! against the same standalone in the same run (started by the fixture).
//!
//! `cargo bench -p tributary-pulsar --bench pulsar [-- EVENTS]` prints a table; nothing is
//! asserted. `BENCH_PULSAR_ROUNDS` sets the rounds (default 8; each alternates which Rust side
//! goes first; each goal is judged on the median of its per-round ratios with a 95% interval,
//! which needs 6 rounds or more), after `BENCH_PULSAR_WARMUP` rounds that are printed but not counted (default
//! 1: the fixture's broker is fresh, and its JIT compiler takes a quarter of the machine
//! during the first rounds), `BENCH_PULSAR_MODES` the modes (`unbatched,batched,latency`; `latency`: one event at a time,
//! send to receive), `BENCH_PULSAR_PYTHON=0`
//! leaves the Python peer out, and `BENCH_PULSAR_MARKS=1` prints each phase's start and end
//! for a profile of one phase alone (`probe::mark`, `perf report --time`). Beside each rate:
//! the client CPU per event (this process's user and system time, the crate's engine tasks
//! included; the broker runs in its own) and allocations per event, steadier than rates on a
//! shared machine. Same work means: the same events (100-byte payload, a key out of 1000, one
//! property), the same producer options (each event its own message, or batches of up to 1000
//! with `batched`), 1000 sends enqueued before their receipts are awaited; the consumers
//! (Failover subscription, prefetch 1000 per partition) copy each message out and ack it.
//!
//! A peer does the same work in the same rounds on a topic of its own: Apache's Python client
//! (`benches/py/perf.py`, pulsar-client with the C++ client underneath, from the peers'
//! virtualenv), so the table also shows where both Rust sides stand against the official
//! client on this machine. Without the virtualenv its column reads `-`.

#[path = "../../../benches/probe.rs"]
mod probe;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use probe::LATENCY_SAMPLES;
use pulsar::consumer::InitialPosition;
use pulsar::producer::ProducerOptions;
use pulsar::{Pulsar, SubType, TokioExecutor};
use tributary::{Backend, ConsumerOptions, Event, StartPosition, StreamSpec};
use tributary_testcontainers::{Peer, require, unique_name};

#[global_allocator]
static GLOBAL: probe::CountingAllocator = probe::CountingAllocator;

const MARKS: &str = "BENCH_PULSAR_MARKS";

/// What one side did over its timed part: events per second, and per event the client CPU
/// (µs) and allocations.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    rate: f64,
    cpu: f64,
    allocations: f64,
}

/// Started where a side's timed part starts (for consumers, at the first event: subscribing
/// is not throughput), finished after its `events`-th.
struct Meter {
    phase: &'static str,
    started: Instant,
    cpu: Duration,
    allocations: u64,
}

impl Meter {
    fn start(phase: &'static str) -> Meter {
        probe::mark(MARKS, phase, "start");
        Meter {
            phase,
            started: Instant::now(),
            cpu: probe::cpu_time(),
            allocations: probe::allocations().0,
        }
    }

    fn finish(self, events: usize) -> Figures {
        let elapsed = self.started.elapsed().as_secs_f64();
        let figures = Figures {
            rate: events as f64 / elapsed,
            cpu: (probe::cpu_time() - self.cpu).as_secs_f64() * 1e6 / events as f64,
            allocations: (probe::allocations().0 - self.allocations) as f64 / events as f64,
        };
        probe::mark(MARKS, self.phase, "end");
        figures
    }
}

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

async fn tributary_produce(backend: &dyn Backend, topic: &str, n: usize) -> Figures {
    let producer = backend.producer(topic).await.unwrap();
    let events = events(n);
    let meter = Meter::start("tributary-produce");
    for chunk in events.chunks(BATCH) {
        producer.send_batch(chunk.to_vec()).await.unwrap();
    }
    let figures = meter.finish(n);
    producer.close().await.unwrap();
    figures
}

/// What a user of the crate writes: one producer per partition (to route keys as tributary
/// does), messages built from the same events, receipts awaited per chunk.
async fn raw_produce(
    client: &Pulsar<TokioExecutor>,
    topic: &str,
    n: usize,
    batched: bool,
) -> Figures {
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
    let meter = Meter::start("raw-produce");
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
    meter.finish(n)
}

async fn tributary_consume(backend: &dyn Backend, topic: &str, n: usize) -> Figures {
    let consumer = backend
        .consumer(
            topic,
            ConsumerOptions::new(unique_name("bench")).start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    // Timed from the first event, like the raw consumer: subscribing is not throughput.
    consumer.receive().await.unwrap().ack();
    let meter = Meter::start("tributary-consume");
    for _ in 1..n {
        consumer.receive().await.unwrap().ack();
    }
    let figures = meter.finish(n - 1);
    consumer.close().await.unwrap();
    figures
}

async fn raw_consume(client: &Pulsar<TokioExecutor>, topic: &str, n: usize) -> Figures {
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
    let mut meter = None;
    let mut kept = 0usize;
    for _ in 0..n {
        let message = consumer.next().await.unwrap().unwrap();
        let event = Event::new(bytes::Bytes::from(message.payload.data.clone()));
        kept += event.payload.len() + message.metadata().properties.len();
        consumer.ack(&message).await.unwrap();
        if meter.is_none() {
            meter = Some(Meter::start("raw-consume"));
        }
    }
    assert!(kept > 0);
    meter.unwrap().finish(n - 1)
}

/// The raw crate's side of a `latency` round: one event at a time sent to its key's partition
/// producer (receipt awaited), received by a Failover consumer on the partitioned topic and
/// acked; the first is not timed (subscribing and the first fetch), as on tributary's side.
async fn raw_latency(client: &Pulsar<TokioExecutor>, topic: &str, samples: usize) -> Vec<f64> {
    let mut consumer: pulsar::Consumer<Vec<u8>, TokioExecutor> = client
        .consumer()
        .with_topic(format!("persistent://public/default/{topic}"))
        .with_subscription(unique_name("bench-raw-lat"))
        .with_subscription_type(SubType::Failover)
        .with_options(pulsar::ConsumerOptions {
            initial_position: InitialPosition::Earliest,
            receiver_queue_size: Some(1000),
            ..Default::default()
        })
        .build()
        .await
        .unwrap();
    let mut producers = Vec::new();
    for p in 0..PARTITIONS {
        producers.push(
            client
                .producer()
                .with_topic(format!("persistent://public/default/{topic}-partition-{p}"))
                .build()
                .await
                .unwrap(),
        );
    }
    let mut micros = Vec::with_capacity(samples);
    for (i, event) in events(samples + 1).into_iter().enumerate() {
        let key = String::from_utf8(event.key.clone().unwrap().to_vec()).unwrap();
        let hash = murmur3::murmur3_32(&mut key.as_bytes(), 0).unwrap() & (i32::MAX as u32);
        let message = pulsar::producer::Message {
            payload: event.payload.to_vec(),
            partition_key: Some(key),
            ..Default::default()
        };
        let started = Instant::now();
        producers[(hash % PARTITIONS) as usize]
            .send_non_blocking(message)
            .await
            .unwrap()
            .await
            .unwrap();
        let message = consumer.next().await.unwrap().unwrap();
        if i > 0 {
            micros.push(started.elapsed().as_secs_f64() * 1e6);
        }
        consumer.ack(&message).await.unwrap();
    }
    micros
}

/// tributary's side of a `latency` round (see [`probe::tributary_latency`]).
async fn tributary_latency(backend: &dyn Backend, topic: &str, samples: usize) -> Vec<f64> {
    let mut events = events(samples + 1);
    let first = events.remove(0);
    let options = ConsumerOptions::new(unique_name("bench-lat")).start(StartPosition::Earliest);
    probe::tributary_latency(backend, topic, options, first, events, Duration::ZERO).await
}

/// The Python client's send-to-receive times on `topic` (µs), or `None` without the virtualenv.
async fn python_latency(address: String, topic: String, samples: usize) -> Option<Vec<f64>> {
    let stdout = run_python(
        "latency.py",
        vec![
            format!("pulsar://{address}"),
            format!("persistent://public/default/{topic}"),
            samples.to_string(),
        ],
    )
    .await?;
    Some(probe::python_latencies(&stdout))
}

/// The `latency` mode: each side's send-to-receive percentiles over its rounds (samples pooled),
/// the Python client's beside them when `with_python` and its virtualenv is there.
async fn latency_rows(
    backend: &dyn Backend,
    raw: &Pulsar<TokioExecutor>,
    address: String,
    rounds: usize,
    with_python: bool,
) {
    let (mut raw_all, mut trib_all, mut py_all) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let topics = [
            unique_name("lat-raw"),
            unique_name("lat-trib"),
            unique_name("lat-py"),
        ];
        for topic in &topics {
            backend
                .create_stream(topic, StreamSpec::with_partitions(PARTITIONS))
                .await
                .unwrap();
        }
        let [raw_topic, trib_topic, py_topic] = topics;
        let (r, t) = if round % 2 == 0 {
            let r = raw_latency(raw, &raw_topic, LATENCY_SAMPLES).await;
            (
                r,
                tributary_latency(backend, &trib_topic, LATENCY_SAMPLES).await,
            )
        } else {
            let t = tributary_latency(backend, &trib_topic, LATENCY_SAMPLES).await;
            (raw_latency(raw, &raw_topic, LATENCY_SAMPLES).await, t)
        };
        let py = if with_python {
            python_latency(address.clone(), py_topic, LATENCY_SAMPLES).await
        } else {
            None
        };
        println!(
            "latency round {round}: p50/p99 raw {}, tributary {}, Python {}; load {}",
            probe::p50_p99(&r),
            probe::p50_p99(&t),
            py.as_deref().map_or_else(|| "-".to_owned(), probe::p50_p99),
            probe::load_average()
        );
        raw_all.extend(r);
        trib_all.extend(t);
        py_all.extend(py.unwrap_or_default());
    }
    probe::latency_table(
        &format!(
            "Pulsar latency: one event sent (receipt awaited), received and acked, {LATENCY_SAMPLES} per side per round, {rounds} alternating rounds pooled (µs)"
        ),
        &[
            ("raw `pulsar` crate", &raw_all),
            ("tributary", &trib_all),
            ("Python pulsar-client", &py_all),
        ],
    );
}

/// The Python client's produce and consume rates on `topic`, or `None` without the virtualenv.
async fn python_peer(
    address: String,
    topic: String,
    n: usize,
    batched: bool,
) -> Option<(f64, f64)> {
    let stdout = run_python(
        "perf.py",
        vec![
            format!("pulsar://{address}"),
            format!("persistent://public/default/{topic}"),
            n.to_string(),
            if batched { "1" } else { "0" }.to_owned(),
        ],
    )
    .await?;
    let rate = |what: &str| -> f64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(what)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("the Python peer printed no {what} rate: {stdout}"))
    };
    Some((rate("produce"), rate("consume")))
}

/// Runs `benches/py/<script>` with the peers' virtualenv (killed after 15 minutes) and returns
/// what it printed, or `None` (with a loud notice) without a virtualenv that imports `pulsar`.
async fn run_python(script: &str, args: Vec<String>) -> Option<String> {
    let python = tributary_testcontainers::python::interpreter("pulsar")?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("benches/py")
        .join(script);
    Some(
        tributary_testcontainers::python::Script::new(&python, script)
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .deadline(Duration::from_secs(900))
            .run()
            .await,
    )
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One row's figures over the rounds: per round the raw crate's, tributary's and the Python
/// peer's.
#[derive(Default)]
struct Row {
    raw: Vec<Figures>,
    tributary: Vec<Figures>,
    python: Vec<f64>,
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let rounds: usize = env_or("BENCH_PULSAR_ROUNDS", 8);
    let warmup: usize = env_or("BENCH_PULSAR_WARMUP", 1);
    let modes: String = env_or("BENCH_PULSAR_MODES", "unbatched,batched,latency".to_owned());
    let with_python = std::env::var("BENCH_PULSAR_PYTHON").as_deref() != Ok("0");
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
        let mut rows: Vec<(String, Row)> = Vec::new();
        for mode in modes.split(',') {
            if mode == "latency" {
                let backend = tributary::connect(server.url()).await.unwrap();
                let pulsar = backend
                    .as_any()
                    .downcast_ref::<tributary_pulsar::PulsarBackend>()
                    .unwrap();
                latency_rows(
                    backend.as_ref(),
                    &pulsar.native().clone(),
                    server.address().to_string(),
                    rounds,
                    with_python,
                )
                .await;
                continue;
            }
            let batched = match mode {
                "unbatched" => false,
                "batched" => true,
                other => panic!("BENCH_PULSAR_MODES: unknown mode `{other}`"),
            };
            let options = if batched { "&batch_size=1000" } else { "" };
            let url = format!("{}{options}", server.url());
            let backend = tributary::connect(&url).await.unwrap();
            let pulsar = backend
                .as_any()
                .downcast_ref::<tributary_pulsar::PulsarBackend>()
                .unwrap();
            let raw = pulsar.native().clone();
            let mut produce = Row::default();
            let mut consume = Row::default();
            // Alternating, so neither side always gets the warmer broker.
            for round in 0..warmup + rounds {
                let raw_topic = unique_name("bench-raw");
                let trib_topic = unique_name("bench-trib");
                let py_topic = unique_name("bench-py");
                for topic in [&raw_topic, &trib_topic, &py_topic] {
                    backend
                        .create_stream(topic, StreamSpec::with_partitions(PARTITIONS))
                        .await
                        .unwrap();
                }
                let raw_first = round % 2 == 0;
                let (raw_p, trib_p) = if raw_first {
                    let r = raw_produce(&raw, &raw_topic, n, batched).await;
                    (r, tributary_produce(backend.as_ref(), &trib_topic, n).await)
                } else {
                    let t = tributary_produce(backend.as_ref(), &trib_topic, n).await;
                    (raw_produce(&raw, &raw_topic, n, batched).await, t)
                };
                let (raw_c, trib_c) = if raw_first {
                    let r = raw_consume(&raw, &raw_topic, n).await;
                    (r, tributary_consume(backend.as_ref(), &trib_topic, n).await)
                } else {
                    let t = tributary_consume(backend.as_ref(), &trib_topic, n).await;
                    (raw_consume(&raw, &raw_topic, n).await, t)
                };
                let py = if with_python {
                    python_peer(server.address().to_string(), py_topic, n, batched).await
                } else {
                    None
                };
                let counted = round >= warmup;
                println!(
                    "{mode} {} {round}: produce raw {} tributary {} Python {}; consume raw {} tributary {} Python {}; load {}",
                    if counted { "round" } else { "warm-up round" },
                    show_figures(&raw_p),
                    show_figures(&trib_p),
                    show(py.map(|p| p.0)),
                    show_figures(&raw_c),
                    show_figures(&trib_c),
                    show(py.map(|p| p.1)),
                    probe::load_average(),
                );
                if !counted {
                    continue;
                }
                produce.raw.push(raw_p);
                produce.tributary.push(trib_p);
                consume.raw.push(raw_c);
                consume.tributary.push(trib_c);
                if let Some((p, c)) = py {
                    produce.python.push(p);
                    consume.python.push(c);
                }
            }
            rows.push((format!("produce, {mode}"), produce));
            rows.push((format!("consume, {mode}"), consume));
        }
        println!(
            "\nPulsar {} · {n} events of {PAYLOAD} B · {PARTITIONS} partitions · median (min–max) of {rounds} alternating rounds · load {}",
            server.url(),
            probe::load_average(),
        );
        println!(
            "| | raw `pulsar` crate (events/s) | tributary (events/s) | ratio of medians | median ratio per round | CPU µs/event raw / tributary | allocations/event raw / tributary | Python pulsar-client (events/s) |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for (what, row) in &rows {
            let rate = |side: &[Figures]| probe::spread(side.iter().map(|f| f.rate).collect());
            let (raw, trib) = (rate(&row.raw), rate(&row.tributary));
            let median_of = |side: &[Figures], pick: fn(&Figures) -> f64| {
                probe::spread(side.iter().map(pick).collect()).0
            };
            let python = if row.python.is_empty() {
                "-".to_owned()
            } else {
                show_spread(probe::spread(row.python.clone()))
            };
            println!(
                "| {what} | {} | {} | {:.2} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {python} |",
                show_spread(raw),
                show_spread(trib),
                trib.0 / raw.0,
                probe::ratio_with_interval(&round_ratios(row)),
                median_of(&row.raw, |f| f.cpu),
                median_of(&row.tributary, |f| f.cpu),
                median_of(&row.raw, |f| f.allocations),
                median_of(&row.tributary, |f| f.allocations),
            );
        }
        for (what, row) in &rows {
            probe::ratio_goal(
                &format!("Pulsar {what} vs the raw `pulsar` crate (median ratio per round)"),
                &round_ratios(row),
                0.95,
            );
        }
    });
}

/// tributary's rate over the raw crate's in each round: the two ran seconds apart on the same
/// broker, so a round's load weighs on both.
fn round_ratios(row: &Row) -> Vec<f64> {
    row.tributary
        .iter()
        .zip(&row.raw)
        .map(|(ours, raw)| ours.rate / raw.rate)
        .collect()
}

fn show_spread((median, min, max): (f64, f64, f64)) -> String {
    format!("{median:.0} ({min:.0}–{max:.0})")
}

fn show_figures(f: &Figures) -> String {
    format!(
        "{:.0}/s ({:.1} µs, {:.1} allocs/event)",
        f.rate, f.cpu, f.allocations
    )
}

fn show(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}/s"))
}
