//! Local backend throughput, latency and scaling beside baselines measured in the same run:
//! a `tokio::sync::mpsc` channel (the floor for in-process hand-off) and raw sequential file
//! writes of the same bytes, with and without an fdatasync per batch (the floor for appends).
//!
//! `cargo bench -p tributary --bench local [-- EVENTS]` prints tables; nothing is asserted.
//!
//! - **batch sweep**: producer and consumer run concurrently, `send_batch(B)` and
//!   `receive_batch(B)` with every delivery acked, for B = 1, 10, 100, 1000; the channel
//!   baseline sends each event and takes up to B at once (`recv_many`); in both the consumer is
//!   a spawned task and the producer the caller's (so two threads); the raw write baseline
//!   writes B frames per `write` (and fdatasyncs after each under `fsync=always`).
//!   The **log + group floor** (`baselines.rs`) is the least any log with per-event acks does
//!   (keep, share, track in flight, commit on ack) with no API around it: a bound on what the
//!   goals can ask of the backend.
//! - **latency**: one event sent, then received and acked, 2,000 times; percentiles.
//! - **partitions**: a backlog of EVENTS spread over 1, 4, 16, 64 partitions, then consumed by
//!   one consumer (`receive_batch(1000)`): events/s from the first read (joining the group and
//!   opening the partitions is timed apart) and resident memory (the process's VmRSS
//!   before the consumer opens, and its peak while it drains).
//!
//! Throughput rows are the median of `BENCH_ROUNDS` (default 12) rounds; in each round every
//! case runs at every batch size, a backend right after its baseline, so each goal is judged
//! on the median of its per-round ratios with a 95% interval (`benches/stats.rs`).
//! `BENCH_ONLY=WORD[,WORD…]` runs only the cases whose name contains one of the words (for
//! profiling; `memory`, `floor`, `never`, `always`, `latency`, `partitions`);
//! `BENCH_BATCH=B` only the batch size B of the sweep;
//! `BENCH_THREADS=1` prints, per throughput case, each thread's CPU and wait per event;
//! `BENCH_JSON=FILE` also writes the figures as JSON for `scripts/bench`'s report.
//!
//! `local/baselines.rs` has the baselines, `local/report.rs` the figures, their tables and JSON.

#[path = "local/baselines.rs"]
mod baselines;
#[path = "../../benches/probe.rs"]
mod probe;
#[path = "local/report.rs"]
mod report;
#[path = "../../benches/sched.rs"]
mod sched;
#[path = "local/threads.rs"]
mod threads;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tributary::{Backend, ConsumerOptions, Event, StartPosition, StreamSpec};

use baselines::{
    log_floor_throughput, mpsc_latency, mpsc_throughput, raw_latency, raw_spread_fsync_throughput,
    raw_throughput,
};
use report::{Latency, Results, Scaling, Throughput, percentiles, print, to_json};

const PAYLOAD: usize = 100;
const PINGS: usize = 2_000;
const BATCHES: [usize; 4] = [1, 10, 100, 1000];
const PARTITIONS: [u32; 4] = [1, 4, 16, 64];
/// Fsync rows write at most this many batches (an fdatasync costs milliseconds here).
const FSYNC_BATCHES: usize = 1_000;

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event::new(vec![b'x'; PAYLOAD]).with_key(format!("key-{:04}", i % 1000)))
        .collect()
}

fn wanted(case: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|w| case.contains(w)))
}

struct Opened {
    backend: Arc<dyn Backend>,
    producer: Box<dyn tributary::Producer>,
    consumer: Box<dyn tributary::Consumer>,
}

async fn open(url: &str, partitions: u32, produce_first: bool) -> Opened {
    let backend: Arc<dyn Backend> = tributary::connect(url).await.unwrap();
    backend
        .create_stream("bench", StreamSpec::with_partitions(partitions))
        .await
        .unwrap();
    let producer = backend.producer("bench").await.unwrap();
    let consumer = if produce_first {
        None
    } else {
        Some(consumer_of(&backend).await)
    };
    Opened {
        consumer: match consumer {
            Some(c) => c,
            None => Box::new(NoConsumer),
        },
        backend,
        producer,
    }
}

async fn consumer_of(backend: &Arc<dyn Backend>) -> Box<dyn tributary::Consumer> {
    backend
        .consumer(
            "bench",
            ConsumerOptions::new("bench").start(StartPosition::Earliest),
        )
        .await
        .unwrap()
}

/// A placeholder until the partition sweep opens its consumer after the backlog.
struct NoConsumer;

#[async_trait::async_trait]
impl tributary::Consumer for NoConsumer {
    async fn receive(&self) -> tributary::Result<tributary::Delivery> {
        unreachable!("the partition sweep opens its consumer before reading")
    }
    async fn close(&self) -> tributary::Result<()> {
        Ok(())
    }
    async fn commit(&self) -> tributary::Result<()> {
        Ok(())
    }
    fn lag(&self) -> Option<u64> {
        None
    }
}

async fn close(o: Opened) {
    o.consumer.close().await.unwrap();
    o.producer.close().await.unwrap();
    o.backend.close().await.unwrap();
}

async fn drain(consumer: &dyn tributary::Consumer, n: usize, batch: usize) {
    let mut seen = 0;
    while seen < n {
        let deliveries = consumer.receive_batch(batch, Duration::ZERO).await.unwrap();
        seen += deliveries.len();
        for d in deliveries {
            d.ack();
        }
    }
    assert_eq!(seen, n, "more deliveries than events sent");
}

async fn backend_throughput(url: &str, n: usize, batch: usize) -> f64 {
    backend_throughput_on(url, 4, n, batch).await
}

async fn backend_throughput_on(url: &str, partitions: u32, n: usize, batch: usize) -> f64 {
    let mut o = open(url, partitions, false).await;
    let evs = events(n);
    let cpu = threads::snapshot();
    let started = Instant::now();
    // The consumer is a task of its own, as the channel's is: producer and consumer run on two
    // threads at once, each side's cost sets the rate only when it is the slower one. (Joined
    // in one task they ran on the caller's thread one after the other, the two sides' costs
    // added, while the channel's ran in parallel.)
    let consumer = std::mem::replace(&mut o.consumer, Box::new(NoConsumer));
    let consuming = tokio::spawn(async move {
        drain(&*consumer, n, batch).await;
        consumer
    });
    let mut evs = evs.into_iter();
    loop {
        let chunk: Vec<Event> = evs.by_ref().take(batch).collect();
        if chunk.is_empty() {
            break;
        }
        o.producer.send_batch(chunk).await.unwrap();
    }
    o.consumer = consuming.await.unwrap();
    let wall = started.elapsed();
    threads::report(url, batch, n, wall, &cpu);
    let per_sec = n as f64 / wall.as_secs_f64();
    close(o).await;
    per_sec
}

async fn backend_latency(case: &'static str, url: &str) -> Latency {
    let o = open(url, 4, false).await;
    let mut samples = Vec::with_capacity(PINGS);
    for e in events(PINGS) {
        let t = Instant::now();
        o.producer.send(e).await.unwrap();
        o.consumer.receive().await.unwrap().ack();
        samples.push(t.elapsed());
    }
    close(o).await;
    percentiles(case, false, samples)
}

async fn scaling(case: &'static str, url: &str, n: usize, partitions: u32) -> Scaling {
    let mut o = open(url, partitions, true).await;
    let evs = events(n);
    for chunk in evs.chunks(1000) {
        o.producer.send_batch(chunk.to_vec()).await.unwrap();
    }
    drop(evs);
    let rss_before = probe::rss_bytes();
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = std::thread::spawn({
        let (peak, sampling) = (peak.clone(), sampling.clone());
        move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(probe::rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    let opening = Instant::now();
    o.consumer = consumer_of(&o.backend).await;
    let open_secs = opening.elapsed().as_secs_f64();
    let started = Instant::now();
    drain(&*o.consumer, n, 1000).await;
    let per_sec = n as f64 / started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    peak.fetch_max(probe::rss_bytes(), Ordering::Relaxed);
    close(o).await;
    Scaling {
        case,
        partitions,
        events: n,
        per_sec,
        open_secs,
        rss_before,
        rss_peak: peak.load(Ordering::Relaxed),
    }
}

fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(12)
        .max(1)
}

async fn run(n: usize, dir: &std::path::Path) -> Results {
    let mut r = Results::default();
    let mut dirs = 0;
    let mut file_url = |fsync: &str| {
        dirs += 1;
        format!("file://{}/{dirs}?fsync={fsync}", dir.display())
    };
    // Rounds, each running every case: on a shared machine one round's rate moves with the
    // neighbours, so figures are medians and goals are judged on per-round ratios.
    // `BENCH_BATCH=B` runs the sweep at one batch size only (for profiling one row).
    let only_batch: Option<usize> = std::env::var("BENCH_BATCH")
        .ok()
        .and_then(|b| b.parse().ok());
    let sweep: Vec<usize> = BATCHES
        .into_iter()
        .filter(|b| only_batch.is_none_or(|only| only == *b))
        .collect();
    for batch in sweep.iter().copied().cycle().take(sweep.len() * rounds()) {
        let fsync_n = n.min(batch * FSYNC_BATCHES);
        let mut row = |case, baseline, events, per_sec: f64| {
            eprintln!("  {case:<24} batch {batch:>4}: {per_sec:>12.0} events/s");
            match r
                .throughput
                .iter_mut()
                .find(|t| t.case == case && t.batch == batch)
            {
                Some(t) => t.rounds.push(per_sec),
                None => r.throughput.push(Throughput {
                    case,
                    baseline,
                    batch,
                    events,
                    rounds: vec![per_sec],
                }),
            }
        };
        if wanted("memory") {
            row("tokio mpsc", true, n, mpsc_throughput(n, batch).await);
        }
        if wanted("floor") {
            let floor = log_floor_throughput(n, batch).await;
            row("log + group floor", true, n, floor);
        }
        if wanted("memory") {
            let per_sec = backend_throughput("memory://", n, batch).await;
            row("memory://", false, n, per_sec);
        }
        if wanted("never") {
            row(
                "raw write",
                true,
                n,
                raw_throughput(dir, n, batch, false, false),
            );
            let per_sec = backend_throughput(&file_url("never"), n, batch).await;
            row("file:// fsync=never", false, n, per_sec);
        }
        if wanted("always") {
            let raw = raw_throughput(dir, fsync_n, batch, true, false);
            row("raw write + fdatasync", true, fsync_n, raw);
            // Into files written with zeros beforehand, as the log's segments are under
            // fsync=always: an fdatasync then has no size change to commit.
            let raw = raw_throughput(dir, fsync_n, batch, true, true);
            row("raw fdatasync, pre-zeroed", true, fsync_n, raw);
            let per_sec = backend_throughput(&file_url("always"), fsync_n, batch).await;
            row("file:// fsync=always", false, fsync_n, per_sec);
            // The same with segments written with zeros first and overwritten in place (an
            // option, off by default: it writes a segment of zeros per partition up front).
            let url = file_url("always&preallocate=true");
            let per_sec = backend_throughput(&url, fsync_n, batch).await;
            row("fsync=always preallocate", false, fsync_n, per_sec);
            // Like for like: the log keeps one file per partition, so a batch over 4
            // partitions makes 4 files durable where the baseline above makes one.
            let raw = raw_spread_fsync_throughput(dir, fsync_n, batch, 4, false);
            row("raw fdatasync, 4 files", true, fsync_n, raw);
            let raw = raw_spread_fsync_throughput(dir, fsync_n, batch, 4, true);
            row("raw fdatasync, 4 zeroed", true, fsync_n, raw);
            let url = file_url("always");
            let per_sec = backend_throughput_on(&url, 1, fsync_n, batch).await;
            row("fsync=always 1 partition", false, fsync_n, per_sec);
        }
    }
    if wanted("latency") {
        r.latency.push(mpsc_latency().await);
        r.latency
            .push(backend_latency("memory://", "memory://").await);
        r.latency.push(raw_latency(dir, false));
        let url = file_url("never");
        r.latency
            .push(backend_latency("file:// fsync=never", &url).await);
        r.latency.push(raw_latency(dir, true));
        let url = file_url("always");
        r.latency
            .push(backend_latency("file:// fsync=always", &url).await);
    }
    if wanted("partitions") {
        for partitions in PARTITIONS {
            let row = scaling("memory://", "memory://", n, partitions).await;
            eprintln!(
                "  partitions {partitions:>2} memory://: {:.0}/s",
                row.per_sec
            );
            r.scaling.push(row);
            let url = file_url("never");
            let row = scaling("file:// fsync=never", &url, n, partitions).await;
            eprintln!("  partitions {partitions:>2} file://: {:.0}/s", row.per_sec);
            r.scaling.push(row);
        }
    }
    r
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir_in(
        std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, Into::into),
    )
    .unwrap();
    let results = rt.block_on(run(n, dir.path()));
    print(n, &results);
    if let Some(path) = std::env::var_os("BENCH_JSON") {
        std::fs::write(&path, to_json(n, &results)).unwrap();
    }
}
