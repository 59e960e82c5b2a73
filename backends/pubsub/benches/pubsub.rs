//! tributary's Pub/Sub producer and consumer beside the raw `google-cloud-pubsub` client doing
//! the same work, against the same pstest (started by the fixture) in the same run.
//!
//! `cargo bench -p tributary-pubsub --bench pubsub [-- EVENTS]` (or `BENCH_PUBSUB_EVENTS`) prints a table and a `goal:`
//! line; nothing is asserted. `BENCH_PUBSUB_ROUNDS` (default 8; the goal line gives the
//! median ratio's 95% interval, `benches/stats.rs`) rounds alternate which side goes first.
//! Same work means: the same messages (100-byte data, an ordering key out of 1000, one
//! attribute: what tributary's mapping makes of an event with a key and one header), one
//! `Publisher` per side with the backend's batching thresholds, batches of 1000 publishes
//! awaited together, on a topic without subscriptions (the publish path alone). Consuming: each
//! side reads `BENCH_PUBSUB_CONSUME_EVENTS` (default 1000) events it wrote itself through a
//! subscription made as the backend makes one, one streaming pull with the backend's flow
//! control, every message turned into an owned event (data, ordering key, attributes, publish
//! time) and acked; tributary reads twice, one subscription each: one `receive()` per event,
//! and `receive_batch(1000)`. Consumers are timed from their first message.
//!
//! pstest is a test fake, not a server built for load: every 10 ms it offers each stream the
//! waiting messages over an unbuffered channel and stops at the first the stream's sender is
//! not ready for, so a stream gets about one message per tick (75–100/s here, on both sides).
//! The consume rows therefore compare CPU time and allocations per event; their rates are
//! pstest's, and only the produce row is judged against the 0.95× goal.
//!
//! `BENCH_PUBSUB_MODES` picks the modes (`throughput,latency`). `latency`: one event at a time
//! published (its message id awaited), received through a streaming pull and acked, the raw
//! client, tributary and Google's Python client (`benches/py/latency.py`, when the peers'
//! virtualenv is there; `BENCH_PUBSUB_PYTHON=0` leaves it out), [`LATENCY_SAMPLES`] per
//! side in each of `BENCH_PUBSUB_LATENCY_ROUNDS` (default 3) alternating rounds, on topics of
//! their own, each sample after a pause of up to 10 ms ([`probe::latency_gap`]); p50/p90/p99/
//! p99.9 pooled. pstest's 10 ms delivery tick bounds every side alike.

#[path = "../../../benches/probe.rs"]
mod probe;

#[global_allocator]
static ALLOCATOR: probe::CountingAllocator = probe::CountingAllocator;

use std::time::Instant;

use futures::future::join_all;
use google_cloud_auth::credentials::anonymous;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin};
use google_cloud_pubsub::model::{Message, Subscription};
use tributary::{Backend, ConsumerOptions, Event, StartPosition};
use tributary_pubsub::PubSubConfig;
use tributary_testcontainers::{Peer, require, unique_name};

const BATCH: usize = 1000;
/// The longest pause before a `latency` sample ([`probe::latency_gap`]): pstest's delivery
/// tick, which a send right after a receive would otherwise always just miss.
const LATENCY_GAP: std::time::Duration = std::time::Duration::from_millis(10);
/// Samples per side per round in the `latency` mode: half the other benches'
/// [`probe::LATENCY_SAMPLES`], since each waits for the publisher's 10 ms batch delay and
/// pstest's 10 ms tick.
const LATENCY_SAMPLES: usize = 1000;
const PAYLOAD: usize = 100;
const KEYS: usize = 1000;
const PRODUCE: &str = "produce (batches of 1000 awaited together)";
const RECEIVE: &str = "consume, receive() and ack";
const RECEIVE_BATCH: &str = "consume, receive_batch(1000) and ack";

async fn create(backend: &dyn Backend, topic: &str) {
    backend
        .create_stream(topic, tributary::StreamSpec::default())
        .await
        .unwrap();
}

/// Events per second, CPU microseconds and allocations per event of one phase.
#[derive(Clone, Copy)]
struct Figures {
    rate: f64,
    cpu_us: f64,
    allocations: f64,
}

/// Runs `phase` (which returns the events/s it measured) and adds what it cost per event.
async fn measured(n: usize, phase: impl std::future::Future<Output = f64>) -> Figures {
    let cpu = probe::cpu_time();
    let (allocations, _) = probe::allocations();
    let rate = phase.await;
    Figures {
        rate,
        cpu_us: (probe::cpu_time() - cpu).as_secs_f64() * 1e6 / n as f64,
        allocations: (probe::allocations().0 - allocations) as f64 / n as f64,
    }
}

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            Event::new(vec![b'x'; PAYLOAD])
                .with_key(format!("key-{:04}", i % KEYS))
                .with_header("seq", i.to_string())
        })
        .collect()
}

/// The raw client's clients, built as the backend builds its own (emulator endpoint, anonymous
/// credentials, the same publisher thresholds).
struct Raw {
    config: PubSubConfig,
    subscriptions: SubscriptionAdmin,
    subscriber: Subscriber,
}

impl Raw {
    async fn new(config: PubSubConfig) -> Raw {
        let endpoint = config.endpoint.clone().expect("pstest has an endpoint");
        let subscriptions = SubscriptionAdmin::builder()
            .with_endpoint(endpoint.clone())
            .with_credentials(anonymous::Builder::new().build())
            .build()
            .await
            .unwrap();
        let subscriber = Subscriber::builder()
            .with_endpoint(endpoint)
            .with_credentials(anonymous::Builder::new().build())
            .build()
            .await
            .unwrap();
        Raw {
            config,
            subscriptions,
            subscriber,
        }
    }

    fn topic(&self, stream: &str) -> String {
        format!("projects/{}/topics/{stream}", self.config.project)
    }

    fn subscription(&self, stream: &str, group: &str) -> String {
        format!(
            "projects/{}/subscriptions/{stream}.{group}",
            self.config.project
        )
    }

    /// A subscription as the backend creates one for a group.
    async fn subscribe(&self, stream: &str, group: &str) {
        let subscription = Subscription::new()
            .set_name(self.subscription(stream, group))
            .set_topic(self.topic(stream))
            .set_ack_deadline_seconds(self.config.ack_deadline.as_secs() as i32)
            .set_enable_message_ordering(self.config.ordering);
        self.subscriptions
            .create_subscription()
            .with_request(subscription)
            .send()
            .await
            .unwrap();
    }

    async fn unsubscribe(&self, stream: &str, group: &str) {
        let _ = self
            .subscriptions
            .delete_subscription()
            .set_subscription(self.subscription(stream, group))
            .send()
            .await;
    }

    async fn produce(&self, stream: &str, n: usize) -> f64 {
        let publisher = Publisher::builder(self.topic(stream))
            .set_message_count_threshold(self.config.batch_count)
            .set_byte_threshold(self.config.batch_bytes)
            .set_delay_threshold(self.config.batch_delay)
            .with_endpoint(self.config.endpoint.clone().unwrap())
            .with_credentials(anonymous::Builder::new().build())
            .build()
            .await
            .unwrap();
        let events = events(n);
        let started = Instant::now();
        for chunk in events.chunks(BATCH) {
            let sends = chunk.iter().map(|event| {
                let key = std::str::from_utf8(event.key.as_deref().unwrap()).unwrap();
                let attributes = event.headers.iter().map(|(name, value)| {
                    (name.to_owned(), String::from_utf8(value.to_vec()).unwrap())
                });
                publisher.publish(
                    Message::new()
                        .set_data(event.payload.clone())
                        .set_ordering_key(key)
                        .set_attributes(attributes),
                )
            });
            for result in join_all(sends).await {
                result.unwrap();
            }
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        publisher.flush().await;
        rate
    }

    /// One streaming pull with the backend's flow control: each message copied out as the
    /// owned event an application gets, then acked.
    async fn consume(&self, stream: &str, group: &str, n: usize) -> f64 {
        let mut messages = self
            .subscriber
            .subscribe(self.subscription(stream, group))
            .set_max_outstanding_messages(ConsumerOptions::new("x").max_in_flight as i64)
            .set_max_lease_extension(self.config.ack_deadline)
            .build();
        let mut started = None;
        let mut kept = 0usize;
        for _ in 0..n {
            let (message, handler) = messages.next().await.unwrap().unwrap();
            started.get_or_insert_with(Instant::now);
            let mut event = Event::new(message.data).with_key(message.ordering_key.into_bytes());
            for (name, value) in message.attributes {
                event.headers.append(name, value.into_bytes());
            }
            event.timestamp = message.publish_time.map(|t| {
                tributary::Timestamp::from_millis(
                    t.seconds() * 1000 + i64::from(t.nanos()) / 1_000_000,
                )
            });
            kept += event.payload.len() + event.headers.len();
            handler.ack();
        }
        let rate = (n - 1) as f64 / started.unwrap().elapsed().as_secs_f64();
        assert!(kept > 0);
        let shutdown = messages.shutdown_token();
        drop(messages);
        shutdown.shutdown().await;
        rate
    }

    /// The raw side of a `latency` round on `stream` (its subscription `group` made): one
    /// message at a time published with the backend's thresholds, received on one streaming
    /// pull and acked; µs from the publish to the receive. The first goes through untimed.
    async fn latency(&self, stream: &str, group: &str, samples: usize) -> Vec<f64> {
        let publisher = Publisher::builder(self.topic(stream))
            .set_message_count_threshold(self.config.batch_count)
            .set_byte_threshold(self.config.batch_bytes)
            .set_delay_threshold(self.config.batch_delay)
            .with_endpoint(self.config.endpoint.clone().unwrap())
            .with_credentials(anonymous::Builder::new().build())
            .build()
            .await
            .unwrap();
        let mut messages = self
            .subscriber
            .subscribe(self.subscription(stream, group))
            .set_max_outstanding_messages(ConsumerOptions::new("x").max_in_flight as i64)
            .set_max_lease_extension(self.config.ack_deadline)
            .build();
        let (mut micros, mut sends) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
        for (i, event) in events(samples + 1).into_iter().enumerate() {
            let key = std::str::from_utf8(event.key.as_deref().unwrap())
                .unwrap()
                .to_owned();
            let attributes = event
                .headers
                .iter()
                .map(|(name, value)| (name.to_owned(), String::from_utf8(value.to_vec()).unwrap()))
                .collect::<Vec<_>>();
            tokio::time::sleep(probe::latency_gap(i, LATENCY_GAP)).await;
            let started = Instant::now();
            publisher
                .publish(
                    Message::new()
                        .set_data(event.payload.clone())
                        .set_ordering_key(key)
                        .set_attributes(attributes),
                )
                .await
                .unwrap();
            let published = started.elapsed();
            let (message, handler) = messages.next().await.unwrap().unwrap();
            if i > 0 {
                micros.push(started.elapsed().as_secs_f64() * 1e6);
                sends.push(published.as_secs_f64() * 1e6);
            }
            assert_eq!(message.data.len(), PAYLOAD);
            handler.ack();
        }
        let shutdown = messages.shutdown_token();
        drop(messages);
        shutdown.shutdown().await;
        println!("  raw publish alone: p50/p99 {}", probe::p50_p99(&sends));
        micros
    }
}

/// Google's Python client's publish-to-receive times on `stream` (µs), through the
/// subscription `group` (made beforehand); `None` without the peers' virtualenv.
async fn python_latency(
    raw: &Raw,
    endpoint: &str,
    stream: &str,
    group: &str,
    samples: usize,
) -> Option<Vec<f64>> {
    let python = tributary_testcontainers::python::interpreter("google.cloud.pubsub_v1")?;
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/py/latency.py");
    let emulator = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let stdout = tributary_testcontainers::python::Script::new(&python, script)
        .arg(&raw.config.project)
        .arg(stream)
        .arg(format!("{stream}.{group}"))
        .arg(samples.to_string())
        .env("PUBSUB_EMULATOR_HOST", emulator)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .deadline(std::time::Duration::from_secs(600))
        .run()
        .await;
    Some(probe::python_latencies(&stdout))
}

/// The `latency` mode: raw, tributary and (when `with_python`) Google's Python client, each on
/// a topic and subscription of its own per round, the Rust sides alternating which goes first.
async fn latency_rows(raw: &Raw, backend: &dyn Backend, rounds: usize, with_python: bool) {
    let samples = LATENCY_SAMPLES;
    let endpoint = raw.config.endpoint.clone().unwrap();
    let (mut raw_all, mut trib_all, mut py_all) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let topics = [
            unique_name("lat-raw"),
            unique_name("lat-trib"),
            unique_name("lat-py"),
        ];
        for topic in &topics {
            create(backend, topic).await;
            raw.subscribe(topic, "lat").await;
        }
        let [raw_topic, trib_topic, py_topic] = &topics;
        let trib = || {
            let mut events = events(samples + 1);
            let first = events.remove(0);
            let options = ConsumerOptions::new("lat").start(StartPosition::Latest);
            probe::tributary_latency(backend, trib_topic, options, first, events, LATENCY_GAP)
        };
        let (r, t) = if round % 2 == 0 {
            let r = raw.latency(raw_topic, "lat", samples).await;
            (r, trib().await)
        } else {
            let t = trib().await;
            (raw.latency(raw_topic, "lat", samples).await, t)
        };
        let py = if with_python {
            python_latency(raw, &endpoint, py_topic, "lat", samples).await
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
        for topic in &topics {
            raw.unsubscribe(topic, "lat").await;
            let _ = backend.delete_stream(topic).await;
        }
    }
    probe::latency_table(
        &format!(
            "Pub/Sub latency: one event published (id awaited), received and acked, {samples} per side per round, {rounds} alternating rounds pooled (µs)"
        ),
        &[
            ("raw google-cloud-pubsub", &raw_all),
            ("tributary", &trib_all),
            ("Python google-cloud-pubsub", &py_all),
        ],
    );
}

async fn tributary_produce(backend: &dyn Backend, stream: &str, n: usize) -> f64 {
    probe::tributary_produce(backend, stream, || events(n), BATCH).await
}

async fn tributary_consume(
    backend: &dyn Backend,
    stream: &str,
    group: &str,
    n: usize,
    batch: bool,
) -> f64 {
    let options = ConsumerOptions::new(group).start(StartPosition::Latest);
    probe::tributary_consume(backend, stream, options, n, batch.then_some(BATCH)).await
}

fn main() {
    let n: usize = std::env::var("BENCH_PUBSUB_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .or_else(|| std::env::args().skip(1).find_map(|a| a.parse().ok()))
        .unwrap_or(100_000);
    let rounds: usize = std::env::var("BENCH_PUBSUB_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(8)
        .max(1);
    let latency_rounds: usize = std::env::var("BENCH_PUBSUB_LATENCY_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    let modes =
        std::env::var("BENCH_PUBSUB_MODES").unwrap_or_else(|_| "throughput,latency".to_owned());
    let with_python = std::env::var("BENCH_PUBSUB_PYTHON").as_deref() != Ok("0");
    let Some(server) = require(Peer::PubSub) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tributary_pubsub::register();
        let url = tributary::parse_url(server.url()).unwrap();
        let raw = Raw::new(PubSubConfig::from_url(&url).unwrap()).await;
        let backend = tributary::connect(server.url()).await.unwrap();
        if modes.split(',').any(|m| m == "throughput") {
            throughput_rows(&raw, backend.clone(), server.url(), n, rounds).await;
        }
        if modes.split(',').any(|m| m == "latency") {
            // `BENCH_PUBSUB_LATENCY_OPTIONS=batch_delay=1ms`, say: the latency mode's raw and
            // tributary sides with other backend options (the Python side keeps its defaults).
            match std::env::var("BENCH_PUBSUB_LATENCY_OPTIONS") {
                Ok(options) => {
                    let joined = format!("{}&{options}", server.url());
                    let url = tributary::parse_url(&joined).unwrap();
                    let raw = Raw::new(PubSubConfig::from_url(&url).unwrap()).await;
                    let backend = tributary::connect(&joined).await.unwrap();
                    latency_rows(&raw, backend.as_ref(), latency_rounds, with_python).await;
                }
                Err(_) => latency_rows(&raw, backend.as_ref(), latency_rounds, with_python).await,
            }
        }
    });
}

/// The throughput mode: both sides' produce and consume rates, CPU and allocations per event.
async fn throughput_rows(
    raw: &Raw,
    backend: std::sync::Arc<dyn Backend>,
    url: &str,
    n: usize,
    rounds: usize,
) {
    {
        let m: usize = std::env::var("BENCH_PUBSUB_CONSUME_EVENTS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(1000)
            .max(2);
        // (what, raw, tributary) per round.
        let mut rows: Vec<(&str, Figures, Figures)> = Vec::new();
        for round in 0..rounds {
            let raw_first = round % 2 == 0;
            // Produce: topics without subscriptions, so the phase is the publish path alone.
            let (raw_topic, trib_topic) = (unique_name("bench-raw"), unique_name("bench-trib"));
            for topic in [&raw_topic, &trib_topic] {
                create(backend.as_ref(), topic).await;
            }
            let (raw_p, trib_p) = if raw_first {
                let r = measured(n, raw.produce(&raw_topic, n)).await;
                (
                    r,
                    measured(n, tributary_produce(backend.as_ref(), &trib_topic, n)).await,
                )
            } else {
                let t = measured(n, tributary_produce(backend.as_ref(), &trib_topic, n)).await;
                (measured(n, raw.produce(&raw_topic, n)).await, t)
            };
            // Consume: each side reads what it wrote, through subscriptions that existed
            // before the (untimed) publish; tributary's topic has one per way of receiving.
            raw.subscribe(&raw_topic, "one").await;
            raw.subscribe(&trib_topic, "one").await;
            raw.subscribe(&trib_topic, "batch").await;
            raw.produce(&raw_topic, m).await;
            tributary_produce(backend.as_ref(), &trib_topic, m).await;
            let consume = |group: &'static str, batch: bool| {
                let (backend, topic) = (backend.clone(), trib_topic.clone());
                async move {
                    measured(
                        m,
                        tributary_consume(backend.as_ref(), &topic, group, m, batch),
                    )
                    .await
                }
            };
            let (raw_c, trib_c, trib_b) = if raw_first {
                let r = measured(m, raw.consume(&raw_topic, "one", m)).await;
                let one = consume("one", false).await;
                (r, one, consume("batch", true).await)
            } else {
                let b = consume("batch", true).await;
                let one = consume("one", false).await;
                (measured(m, raw.consume(&raw_topic, "one", m)).await, one, b)
            };
            println!(
                "round {round} ({} first): produce raw {:.0}/s tributary {:.0}/s; consume raw {:.0}/s tributary receive {:.0}/s receive_batch {:.0}/s",
                if raw_first { "raw" } else { "tributary" },
                raw_p.rate,
                trib_p.rate,
                raw_c.rate,
                trib_c.rate,
                trib_b.rate
            );
            rows.push((PRODUCE, raw_p, trib_p));
            rows.push((RECEIVE, raw_c, trib_c));
            rows.push((RECEIVE_BATCH, raw_c, trib_b));
            raw.unsubscribe(&raw_topic, "one").await;
            raw.unsubscribe(&trib_topic, "one").await;
            raw.unsubscribe(&trib_topic, "batch").await;
            for topic in [&raw_topic, &trib_topic] {
                let _ = backend.delete_stream(topic).await;
            }
        }
        println!(
            "\nPub/Sub (pstest {}) · {n} events of {PAYLOAD} B produced, {m} consumed · a key out of {KEYS} · median (min–max) of {rounds} alternating rounds · load {}",
            url,
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split(' ')
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!(
            "| | raw google-cloud-pubsub (events/s) | tributary (events/s) | median ratio per round | CPU µs/event raw / tributary | allocations/event raw / tributary |"
        );
        println!("|---|---|---|---|---|---|");
        let mut produce_ratios = Vec::new();
        for what in [PRODUCE, RECEIVE, RECEIVE_BATCH] {
            let mine: Vec<_> = rows.iter().filter(|r| r.0 == what).collect();
            let pick = |f: fn(&(&str, Figures, Figures)) -> f64| {
                probe::spread(mine.iter().map(|r| f(r)).collect())
            };
            let (raw, trib) = (pick(|r| r.1.rate), pick(|r| r.2.rate));
            let ratio = pick(|r| r.2.rate / r.1.rate).0;
            println!(
                "| {what} | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {ratio:.2} | {:.1} / {:.1} | {:.1} / {:.1} |",
                raw.0,
                raw.1,
                raw.2,
                trib.0,
                trib.1,
                trib.2,
                pick(|r| r.1.cpu_us).0,
                pick(|r| r.2.cpu_us).0,
                pick(|r| r.1.allocations).0,
                pick(|r| r.2.allocations).0,
            );
            if what == PRODUCE {
                produce_ratios = mine.iter().map(|r| r.2.rate / r.1.rate).collect();
            }
        }
        println!(
            "(consume: {m} events per phase; pstest hands a stream at most one message per 10 ms delivery tick, so both consumers' rates are pstest's, and their CPU and allocations per event are the figures to compare)"
        );
        // Only the produce row is a goal here: pstest sets both consumers' rate.
        probe::ratio_goal(
            &format!("Pub/Sub {PRODUCE} vs raw google-cloud-pubsub (median ratio per round)"),
            &produce_ratios,
            0.95,
        );
    }
}
