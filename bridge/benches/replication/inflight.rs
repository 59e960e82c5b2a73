//! The in-flight curve: one Kafka→`file://` route in this process, copying the same backlog
//! with each pair of `batch.max_events` and `in_flight`, beside two baselines from the same
//! run: the Kafka consumer alone (read and ack, no sink) and the `file://` producer alone (the
//! same events in batches of 1,000). A route that waits out a round trip per batch shows as a
//! rate that grows with the batch size; one that keeps several batches moving does not.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tributary::{Backend, ConsumerOptions, StartPosition, StreamSpec};
use tributary_bridge::route::{self, CancellationToken, RouteSpec, RouteStats};
use tributary_testcontainers::unique_name;

/// (`batch.max_events`, `in_flight`) pairs: the smallest first, then `in_flight` from
/// one batch to a few thousand at batch sizes 100 and 1,000.
const POINTS: &[(usize, usize)] = &[
    (20, 40),
    (100, 100),
    (100, 200),
    (100, 400),
    (100, 1000),
    (100, 2000),
    (100, 4000),
    (1000, 1000),
    (1000, 2000),
    (1000, 4000),
];

/// One route run.
pub struct Point {
    pub batch: usize,
    pub in_flight: usize,
    pub rate: f64,
    /// Seconds from the route's start to the last event written.
    pub elapsed: f64,
    /// Where the route's time went, in seconds: waiting for the source once a batch was
    /// written, waiting for room in the in-flight window, writing to the sink.
    pub source_stall: f64,
    pub window_wait: f64,
    pub sink: f64,
}

/// The curve and its baselines, in events/s.
pub struct Curve {
    pub events: u64,
    pub raw_read: f64,
    pub raw_write: f64,
    pub points: Vec<Point>,
}

pub async fn measure(kafka: Arc<dyn Backend>, events: u64) -> Curve {
    let topic = unique_name("rep-curve");
    kafka
        .create_stream(&topic, StreamSpec::with_partitions(crate::PARTITIONS))
        .await
        .unwrap();
    let produced = crate::backlog::produce_backlog(kafka.as_ref(), &topic, events).await;
    eprintln!("[in-flight curve] {events} events produced at {produced:.0}/s");
    let raw_read = raw_read(kafka.as_ref(), &topic, events).await;
    let raw_write = raw_write(kafka.as_ref(), &topic, events).await;
    eprintln!("[in-flight curve] baselines: read {raw_read:.0}/s, write {raw_write:.0}/s");
    let mut points = Vec::new();
    for &(batch, in_flight) in POINTS {
        let dir = tempfile::tempdir().unwrap();
        let sink = tributary::connect(&format!("file://{}?fsync=always", dir.path().display()))
            .await
            .unwrap();
        let mut spec = RouteSpec::new("curve", kafka.clone(), &topic, sink.clone(), "copy");
        spec.group = unique_name("curve");
        spec.start = StartPosition::Earliest;
        spec.max_batch = batch;
        spec.in_flight = in_flight;
        let stats = Arc::new(RouteStats::default());
        let cancel = CancellationToken::new();
        let open = route::open(spec).await.unwrap();
        let started = Instant::now();
        let task = tokio::spawn(open.run(stats.clone(), cancel.clone()));
        let deadline = started + Duration::from_secs(600);
        while stats.replicated.load(Ordering::Relaxed) < events {
            assert!(
                Instant::now() < deadline,
                "batch {batch}, in_flight {in_flight}: stalled at {}",
                stats
            );
            assert!(!task.is_finished(), "the route stopped: {:?}", task.await);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let rate = events as f64 / elapsed;
        let seconds = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e9;
        let (source_stall, window_wait, sink_time) = (
            seconds(&stats.times.source_stall),
            seconds(&stats.times.window_wait),
            seconds(&stats.times.sink),
        );
        cancel.cancel();
        task.await.unwrap().unwrap();
        sink.close().await.unwrap();
        eprintln!(
            "[in-flight curve] batch {batch}, in_flight {in_flight}: {rate:.0}/s ({elapsed:.2} s: source stall {source_stall:.2} s, window {window_wait:.2} s, sink {sink_time:.2} s)"
        );
        points.push(Point {
            batch,
            in_flight,
            rate,
            elapsed,
            source_stall,
            window_wait,
            sink: sink_time,
        });
    }
    Curve {
        events,
        raw_read,
        raw_write,
        points,
    }
}

/// The consumer alone: receive, ack, commit per 1,000, as a route would without a sink.
async fn raw_read(kafka: &dyn Backend, topic: &str, events: u64) -> f64 {
    let consumer = kafka
        .consumer(
            topic,
            ConsumerOptions::new(unique_name("raw-read"))
                .start(StartPosition::Earliest)
                .max_in_flight(4000),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut read = 0u64;
    while read < events {
        let batch = consumer
            .receive_batch(1000, Duration::from_millis(5))
            .await
            .unwrap();
        read += batch.len() as u64;
        for delivery in batch {
            delivery.ack();
        }
        consumer.commit().await.unwrap();
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    consumer.close().await.unwrap();
    rate
}

/// The sink alone: the same number of 100-byte events into `file://`, 1,000 per send.
async fn raw_write(_kafka: &dyn Backend, _topic: &str, events: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let sink = tributary::connect(&format!("file://{}?fsync=always", dir.path().display()))
        .await
        .unwrap();
    let rate = crate::backlog::produce_backlog(sink.as_ref(), "copy", events).await;
    sink.close().await.unwrap();
    rate
}

pub fn print(curve: &Curve) {
    println!(
        "\nIn-flight curve · Kafka→file:// (fsync=always), one route in process · {} events of {} B, {} keys, {} partitions",
        curve.events,
        crate::PAYLOAD,
        crate::KEYS,
        crate::PARTITIONS
    );
    println!(
        "  baselines in the same run: Kafka consumer alone {:.0} events/s; file:// producer alone {:.0} events/s",
        curve.raw_read, curve.raw_write
    );
    println!(
        "| batch.max_events | in_flight | events/s | of the consumer alone | seconds | source stall | window wait | sink |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for p in &curve.points {
        println!(
            "| {} | {} | {:.0} | {:.0}% | {:.2} | {:.2} | {:.2} | {:.2} |",
            p.batch,
            p.in_flight,
            p.rate,
            100.0 * p.rate / curve.raw_read,
            p.elapsed,
            p.source_stall,
            p.window_wait,
            p.sink
        );
    }
    println!(
        "  seconds: from the route's start to the last event written; source stall: the route had written a batch and waited for the next; window wait: for room in the in-flight window (a commit confirmed); sink: writing until confirmed"
    );
}
