//! tributary's Event Hubs producer and consumer against the raw Rust SDK
//! (`azure_messaging_eventhubs`), on the same emulator, in the same run, doing the same work:
//!
//! - produce: events of 100 bytes with one of 20 keys and one header, in chunks of 1000; each
//!   chunk split by key into SDK batches sent concurrently (what `send_batch` does);
//! - consume: every event of a 4-partition hub from the start: the raw side reads the four
//!   partitions with the SDK's receivers (prefetch 300); tributary reads through a group (the
//!   core engine, prefetch 300, acks and checkpoints in memory), acking each delivery, once
//!   with `receive()` and once more (another group) with `receive_batch(1000)`.
//!
//! Rounds alternate which side goes first (`BENCH_EH_ROUNDS`, default 4); the table shows the
//! best rate of each side, the median of the per-round ratios, and the CPU time this process
//! spent per event (the emulator, a process of its own, is not in it). `BENCH_EH_EVENTS` sets
//! the count (default 100,000). With `BENCH_EH_MARKS=1` each phase's start and end are printed
//! on CLOCK_MONOTONIC, for `perf record -k mono` then `perf report --time START,END`.
//!
//! ```sh
//! cargo bench -p tributary-eventhubs --bench eventhubs
//! ```

#[path = "../../../benches/probe.rs"]
mod probe;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use azure_messaging_eventhubs::models::EventData;
use azure_messaging_eventhubs::{
    ConsumerClient, EventDataBatchOptions, OpenReceiverOptions, ProducerClient, StartLocation,
    StartPosition as SdkStart,
};
use futures::StreamExt;
use futures::future::try_join_all;
use tributary::{ConsumerOptions, Event, StartPosition};
use tributary_testcontainers::{Peer, require, unique_name};

const KEYS: usize = 20;
const CHUNK: usize = 1000;
/// How long a consume phase may take in all before the run fails (no test waits forever).
const DEADLINE: Duration = Duration::from_secs(600);
const CONNECTION: &str = "Endpoint=sb://emulator.localhost/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE";

fn payload(i: usize) -> Vec<u8> {
    let mut body = format!("{i:>12}").into_bytes();
    body.resize(100, b'x');
    body
}

async fn raw_produce(endpoint: &str, hub: &str, events: usize) -> Duration {
    let producer = ProducerClient::builder()
        .with_custom_endpoint(endpoint.to_string())
        .open_with_connection_string(CONNECTION, Some(hub))
        .await
        .expect("producer");
    let started = Instant::now();
    for chunk in (0..events).collect::<Vec<_>>().chunks(CHUNK) {
        let mut by_key: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &i in chunk {
            by_key.entry(i % KEYS).or_default().push(i);
        }
        let producer = &producer;
        try_join_all(by_key.into_iter().map(|(key, numbers)| async move {
            let batch = producer
                .create_batch(Some(EventDataBatchOptions {
                    partition_key: Some(format!("key-{key}")),
                    ..Default::default()
                }))
                .await?;
            for i in numbers {
                let event = EventData::builder()
                    .with_body(payload(i))
                    .add_property("n".to_string(), i.to_string())
                    .build();
                assert!(
                    batch.try_add_event_data(event, None)?,
                    "a chunk fits one batch"
                );
            }
            producer.send_batch(batch, None).await
        }))
        .await
        .expect("send");
    }
    let elapsed = started.elapsed();
    producer.close().await.expect("close");
    elapsed
}

async fn raw_consume(endpoint: &str, hub: &str, events: usize) -> Duration {
    let consumer = ConsumerClient::builder()
        .with_custom_endpoint(endpoint.to_string())
        .open_with_connection_string(CONNECTION, Some(hub))
        .await
        .expect("consumer");
    let partitions = consumer
        .get_eventhub_properties()
        .await
        .expect("properties")
        .partition_ids;
    let started = Instant::now();
    let consumer = &consumer;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let readers = partitions.into_iter().map(|id| {
        let tx = tx.clone();
        async move {
            let receiver = consumer
                .open_receiver_on_partition(
                    id,
                    Some(OpenReceiverOptions {
                        start_position: Some(SdkStart {
                            location: StartLocation::Earliest,
                            inclusive: false,
                        }),
                        prefetch: Some(300),
                        ..Default::default()
                    }),
                )
                .await
                .expect("receiver");
            let stream = receiver.stream_events();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let event = event.expect("event");
                // Copy out what an application reads, as tributary does.
                let body = event.event_data().body().map(<[u8]>::to_vec);
                if tx.send(body.map_or(0, |b| b.len())).is_err() {
                    break;
                }
            }
        }
    });
    let all = futures::future::join_all(readers);
    let count = async {
        let mut got = 0;
        while got < events {
            rx.recv().await.expect("readers run");
            got += 1;
        }
    };
    tokio::time::timeout(DEADLINE, async {
        tokio::select! {
            _ = all => panic!("readers ended early"),
            _ = count => {}
        }
    })
    .await
    .expect("every event within the deadline");
    started.elapsed()
}

async fn tributary_produce(backend: &dyn tributary::Backend, hub: &str, events: usize) -> Duration {
    let producer = backend.producer(hub).await.expect("producer");
    let started = Instant::now();
    for chunk in (0..events).collect::<Vec<_>>().chunks(CHUNK) {
        let batch: Vec<Event> = chunk
            .iter()
            .map(|&i| {
                Event::new(payload(i))
                    .with_key(format!("key-{}", i % KEYS))
                    .with_header("n", i.to_string())
            })
            .collect();
        producer.send_batch(batch).await.expect("send");
    }
    let elapsed = started.elapsed();
    producer.close().await.expect("close");
    elapsed
}

/// `batch`: `None` reads with `receive()`, one delivery a call (as the raw loop takes one event
/// a poll), `Some(n)` with `receive_batch(n)`.
async fn tributary_consume(
    backend: &dyn tributary::Backend,
    hub: &str,
    events: usize,
    batch: Option<usize>,
) -> Duration {
    let consumer = backend
        .consumer(
            hub,
            ConsumerOptions::new(unique_name("bench")).start(StartPosition::Earliest),
        )
        .await
        .expect("consumer");
    // From the join on, as the raw side from its receivers: the connection is open and the
    // group holds its first partitions (claiming them is not reading).
    let started = Instant::now();
    let read = async {
        let mut got = 0;
        while got < events {
            match batch {
                None => {
                    consumer.receive().await.expect("receive").ack();
                    got += 1;
                }
                Some(max) => {
                    let deliveries = consumer
                        .receive_batch(max, Duration::ZERO)
                        .await
                        .expect("receive");
                    got += deliveries.len();
                    for delivery in deliveries {
                        delivery.ack();
                    }
                }
            }
        }
    };
    // One deadline for the whole read, as on the raw side: a timer per receive would be work
    // the raw loop does not do.
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("every event within the deadline");
    let elapsed = started.elapsed();
    consumer.close().await.expect("close");
    elapsed
}

fn rate(events: usize, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64()
}

/// One side of one direction over the rounds: rates and CPU per event.
#[derive(Default)]
struct Side {
    rates: Vec<f64>,
    cpu_per_event: Vec<Duration>,
}

impl Side {
    async fn run<F: std::future::Future<Output = Duration>>(
        &mut self,
        phase: &str,
        events: usize,
        work: F,
    ) {
        let before = probe::cpu_time();
        probe::mark("BENCH_EH_MARKS", phase, "start");
        let elapsed = work.await;
        probe::mark("BENCH_EH_MARKS", phase, "end");
        self.cpu_per_event
            .push((probe::cpu_time() - before) / u32::try_from(events).expect("events fit u32"));
        self.rates.push(rate(events, elapsed));
    }

    fn best(&self) -> f64 {
        self.rates.iter().copied().fold(0.0, f64::max)
    }

    fn cpu_us(&self) -> f64 {
        let mut sorted = self.cpu_per_event.clone();
        sorted.sort();
        sorted[sorted.len() / 2].as_secs_f64() * 1e6
    }
}

fn median_ratio(ours: &Side, raw: &Side) -> f64 {
    let mut ratios: Vec<f64> = ours
        .rates
        .iter()
        .zip(&raw.rates)
        .map(|(t, r)| t / r)
        .collect();
    ratios.sort_by(f64::total_cmp);
    let mid = ratios.len() / 2;
    if ratios.len().is_multiple_of(2) {
        (ratios[mid - 1] + ratios[mid]) / 2.0
    } else {
        ratios[mid]
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(server) = require(Peer::EventHubs) else {
        return;
    };
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let events = env("BENCH_EH_EVENTS", 100_000);
    let rounds = env("BENCH_EH_ROUNDS", 4).max(1);
    let endpoint = format!("amqp://{}", server.address());
    tributary_eventhubs::register();
    let backend = tributary::connect(server.url()).await.expect("connect");
    let (mut raw_p, mut raw_c, mut trib_p, mut trib_c, mut trib_b) = (
        Side::default(),
        Side::default(),
        Side::default(),
        Side::default(),
        Side::default(),
    );
    for round in 0..rounds {
        let raw_hub = unique_name("bench-raw");
        let trib_hub = unique_name("bench-trib");
        // Each side goes first in every other round: the emulator's state (hubs already
        // written, memory in use) and the neighbours' load then weigh on both alike.
        let raw_first = round.is_multiple_of(2);
        for first in [true, false] {
            if first == raw_first {
                raw_p
                    .run(
                        "raw-produce",
                        events,
                        raw_produce(&endpoint, &raw_hub, events),
                    )
                    .await;
            } else {
                trib_p
                    .run(
                        "tributary-produce",
                        events,
                        tributary_produce(&*backend, &trib_hub, events),
                    )
                    .await;
            }
        }
        for first in [true, false] {
            if first == raw_first {
                raw_c
                    .run(
                        "raw-consume",
                        events,
                        raw_consume(&endpoint, &raw_hub, events),
                    )
                    .await;
            } else {
                trib_c
                    .run(
                        "tributary-consume",
                        events,
                        tributary_consume(&*backend, &trib_hub, events, None),
                    )
                    .await;
                trib_b
                    .run(
                        "tributary-consume-batch",
                        events,
                        tributary_consume(&*backend, &trib_hub, events, Some(CHUNK)),
                    )
                    .await;
            }
        }
        let last = |side: &Side| side.rates.last().copied().unwrap_or_default();
        println!(
            "round {round} ({} first): produce raw {:.0}/s tributary {:.0}/s; consume raw {:.0}/s tributary {:.0}/s, receive_batch {:.0}/s",
            if raw_first { "raw" } else { "tributary" },
            last(&raw_p),
            last(&trib_p),
            last(&raw_c),
            last(&trib_c),
            last(&trib_b),
        );
    }
    println!(
        "\nEvent Hubs emulator, {events} events of 100 B, {KEYS} keys, 4 partitions, {rounds} rounds:"
    );
    println!(
        "| | raw azure_messaging_eventhubs (best) | tributary (best) | median ratio per round | CPU per event, raw / tributary |"
    );
    println!("|---|---|---|---|---|");
    for (what, raw, ours) in [
        ("produce", &raw_p, &trib_p),
        ("consume, `receive()`", &raw_c, &trib_c),
        ("consume, `receive_batch(1000)`", &raw_c, &trib_b),
    ] {
        println!(
            "| {what} | {:.0}/s | {:.0}/s | {:.2} | {:.2} / {:.2} µs |",
            raw.best(),
            ours.best(),
            median_ratio(ours, raw),
            raw.cpu_us(),
            ours.cpu_us(),
        );
    }
    backend.close().await.expect("close");
}
