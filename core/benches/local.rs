//! Local backend throughput, latency and scaling beside baselines measured in the same run:
//! a `tokio::sync::mpsc` channel (the floor for in-process hand-off) and raw sequential file
//! writes of the same bytes, with and without an fdatasync per batch (the floor for appends).
//!
//! `cargo bench -p tributary --bench local [-- EVENTS]` prints tables; nothing is asserted.
//!
//! - **batch sweep**: producer and consumer run concurrently, `send_batch(B)` and
//!   `receive_batch(B)` with every delivery acked, for B = 1, 10, 100, 1000; the channel
//!   baseline sends each event and takes up to B at once (`recv_many`); the raw write baseline
//!   writes B frames per `write` (and fdatasyncs after each under `fsync=always`).
//! - **latency**: one event sent, then received and acked, 2,000 times; percentiles.
//! - **partitions**: a backlog of EVENTS spread over 1, 4, 16, 64 partitions, then consumed by
//!   one consumer (`receive_batch(1000)`): events/s from the first read (joining the group and
//!   opening the partitions is timed apart) and resident memory (the process's VmRSS
//!   before the consumer opens, and its peak while it drains).
//!
//! Throughput rows are the best of `BENCH_ROUNDS` (default 3) alternating rounds.
//! `BENCH_ONLY=WORD` runs only the cases whose name contains WORD (for profiling);
//! `BENCH_BATCH=B` only the batch size B of the sweep;
//! `BENCH_JSON=FILE` also writes the figures as JSON for `scripts/bench`'s report.

#[path = "../../benches/probe.rs"]
mod probe;

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tributary::{Backend, ConsumerOptions, Event, StartPosition, StreamSpec};

const PAYLOAD: usize = 100;
const PINGS: usize = 2_000;
const BATCHES: [usize; 4] = [1, 10, 100, 1000];
const PARTITIONS: [u32; 4] = [1, 4, 16, 64];
/// Fsync rows write at most this many batches (an fdatasync costs milliseconds here).
const FSYNC_BATCHES: usize = 1_000;
/// Bytes of a frame of the file log for one bench event (header, key, payload, fixed fields).
const FRAME: usize = 8 + 26 + 8 + PAYLOAD + 8;

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event::new(vec![b'x'; PAYLOAD]).with_key(format!("key-{:04}", i % 1000)))
        .collect()
}

fn wanted(case: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| case.contains(&only))
}

/// One throughput figure of the batch sweep.
struct Throughput {
    case: &'static str,
    baseline: bool,
    batch: usize,
    events: usize,
    per_sec: f64,
}

/// Latency percentiles of one case, in microseconds.
struct Latency {
    case: &'static str,
    baseline: bool,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
}

/// One row of the partition sweep.
struct Scaling {
    case: &'static str,
    partitions: u32,
    events: usize,
    per_sec: f64,
    /// Joining the group and opening the partitions, before the first read (not in `per_sec`).
    open_secs: f64,
    rss_before: u64,
    rss_peak: u64,
}

fn percentiles(case: &'static str, baseline: bool, mut samples: Vec<Duration>) -> Latency {
    samples.sort();
    let at = |p: f64| {
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    Latency {
        case,
        baseline,
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        p999: at(0.999),
    }
}

async fn mpsc_throughput(n: usize, batch: usize) -> f64 {
    let evs = events(n);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(1024);
    let started = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut count = 0;
        let mut buf = Vec::with_capacity(batch);
        while rx.recv_many(&mut buf, batch).await > 0 {
            count += buf.len();
            buf.clear();
        }
        count
    });
    for e in evs {
        tx.send(e).await.unwrap();
    }
    drop(tx);
    assert_eq!(consumer.await.unwrap(), n);
    n as f64 / started.elapsed().as_secs_f64()
}

async fn mpsc_latency() -> Latency {
    let (ping_tx, mut ping_rx) = tokio::sync::mpsc::channel::<Event>(1);
    let (pong_tx, mut pong_rx) = tokio::sync::mpsc::channel::<Event>(1);
    tokio::spawn(async move {
        while let Some(e) = ping_rx.recv().await {
            if pong_tx.send(e).await.is_err() {
                break;
            }
        }
    });
    let mut samples = Vec::with_capacity(PINGS);
    for e in events(PINGS) {
        let t = Instant::now();
        ping_tx.send(e).await.unwrap();
        pong_rx.recv().await.unwrap();
        samples.push(t.elapsed());
    }
    percentiles("tokio mpsc", true, samples)
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
    let o = open(url, 4, false).await;
    let evs = events(n);
    let started = Instant::now();
    let produce = async {
        let mut evs = evs.into_iter();
        loop {
            let chunk: Vec<Event> = evs.by_ref().take(batch).collect();
            if chunk.is_empty() {
                break;
            }
            o.producer.send_batch(chunk).await.unwrap();
        }
    };
    tokio::join!(produce, drain(&*o.consumer, n, batch));
    let per_sec = n as f64 / started.elapsed().as_secs_f64();
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

/// The same bytes as the file log writes, sequentially, `batch` frames per write.
fn raw_throughput(dir: &std::path::Path, n: usize, batch: usize, fsync: bool) -> f64 {
    let path = dir.join(format!("raw-{batch}-{fsync}"));
    let mut file = std::fs::File::create(&path).unwrap();
    let frame = vec![7u8; FRAME];
    let mut buf = Vec::with_capacity(FRAME * batch);
    let started = Instant::now();
    for _ in 0..n / batch {
        buf.clear();
        for _ in 0..batch {
            buf.extend_from_slice(&frame);
        }
        file.write_all(&buf).unwrap();
        if fsync {
            file.sync_data().unwrap();
        }
    }
    let per_sec = n as f64 / started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path).unwrap();
    per_sec
}

fn raw_latency(dir: &std::path::Path, fsync: bool) -> Latency {
    let path = dir.join(format!("raw-latency-{fsync}"));
    let mut file = std::fs::File::create(&path).unwrap();
    let frame = vec![7u8; FRAME];
    let mut samples = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let t = Instant::now();
        file.write_all(&frame).unwrap();
        if fsync {
            file.sync_data().unwrap();
        }
        samples.push(t.elapsed());
    }
    let case = if fsync {
        "raw write + fdatasync"
    } else {
        "raw write"
    };
    percentiles(case, true, samples)
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

#[derive(Default)]
struct Results {
    throughput: Vec<Throughput>,
    latency: Vec<Latency>,
    scaling: Vec<Scaling>,
}

/// The pairs the issue sets goals for: (case, its baseline, goal ratio).
const PAIRS: [(&str, &str, f64); 3] = [
    ("memory://", "tokio mpsc", 0.5),
    ("file:// fsync=never", "raw write", 0.5),
    ("file:// fsync=always", "raw write + fdatasync", 0.7),
];

fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1)
}

async fn run(n: usize, dir: &std::path::Path) -> Results {
    let mut r = Results::default();
    let mut dirs = 0;
    let mut file_url = |fsync: &str| {
        dirs += 1;
        format!("file://{}/{dirs}?fsync={fsync}", dir.display())
    };
    // Best of alternating rounds: on a shared machine the slowest rounds measure the neighbours.
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
                Some(t) => t.per_sec = t.per_sec.max(per_sec),
                None => r.throughput.push(Throughput {
                    case,
                    baseline,
                    batch,
                    events,
                    per_sec,
                }),
            }
        };
        if wanted("memory") {
            row("tokio mpsc", true, n, mpsc_throughput(n, batch).await);
            let per_sec = backend_throughput("memory://", n, batch).await;
            row("memory://", false, n, per_sec);
        }
        if wanted("never") {
            row("raw write", true, n, raw_throughput(dir, n, batch, false));
            let per_sec = backend_throughput(&file_url("never"), n, batch).await;
            row("file:// fsync=never", false, n, per_sec);
        }
        if wanted("always") {
            let raw = raw_throughput(dir, fsync_n, batch, true);
            row("raw write + fdatasync", true, fsync_n, raw);
            let per_sec = backend_throughput(&file_url("always"), fsync_n, batch).await;
            row("file:// fsync=always", false, fsync_n, per_sec);
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

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn print(n: usize, r: &Results) {
    println!(
        "\nlocal backend: events of {PAYLOAD} B with a key out of 1000, 4 partitions; produce \
         and consume concurrently, send_batch(B) / receive_batch(B) + ack each; {n} events \
         (fsync rows: at most {FSYNC_BATCHES} batches)\n"
    );
    print!("{:<24}", "events/s, batch");
    for b in BATCHES {
        print!(" {b:>12}");
    }
    println!();
    let mut cases: Vec<&str> = Vec::new();
    for t in &r.throughput {
        if !cases.contains(&t.case) {
            cases.push(t.case);
        }
    }
    let per_sec = |case: &str, batch: usize| {
        r.throughput
            .iter()
            .find(|t| t.case == case && t.batch == batch)
            .map(|t| t.per_sec)
    };
    for case in &cases {
        print!("{case:<24}");
        for b in BATCHES {
            print!(" {:>12.0}", per_sec(case, b).unwrap_or(f64::NAN));
        }
        println!();
    }
    println!();
    for (case, baseline, goal) in PAIRS {
        if per_sec(case, 100).is_none() {
            continue;
        }
        print!("{:<46}", format!("{case} / {baseline}"));
        for b in BATCHES {
            let ratio =
                per_sec(case, b).unwrap_or(f64::NAN) / per_sec(baseline, b).unwrap_or(f64::NAN);
            print!(" {ratio:>6.2}");
        }
        println!("   (goal ≥ {goal} at batch 100)");
    }
    if !r.latency.is_empty() {
        println!(
            "\nlatency: send one event, receive and ack it ({PINGS} samples); raw write: one frame\n"
        );
        println!(
            "{:<24} {:>10} {:>10} {:>10} {:>10}",
            "µs", "p50", "p90", "p99", "p99.9"
        );
        for l in &r.latency {
            println!(
                "{:<24} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
                l.case, l.p50, l.p90, l.p99, l.p999
            );
        }
    }
    if !r.scaling.is_empty() {
        println!(
            "\npartitions: consume a backlog of {n} events with one consumer, receive_batch(1000)\n"
        );
        println!(
            "{:<24} {:>10} {:>12} {:>10} {:>16} {:>16}",
            "", "partitions", "events/s", "open ms", "RSS before MiB", "RSS peak MiB"
        );
        for s in &r.scaling {
            println!(
                "{:<24} {:>10} {:>12.0} {:>10.1} {:>16.1} {:>16.1}",
                s.case,
                s.partitions,
                s.per_sec,
                s.open_secs * 1e3,
                mib(s.rss_before),
                mib(s.rss_peak)
            );
        }
    }
}

fn json_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn to_json(n: usize, r: &Results) -> String {
    let mut out = String::new();
    write!(
        out,
        "{{\"bench\":\"local\",\"events\":{n},\"payload\":{PAYLOAD},"
    )
    .unwrap();
    out.push_str("\"throughput\":[");
    for (i, t) in r.throughput.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write!(
            out,
            "{{\"case\":{},\"baseline\":{},\"batch\":{},\"events\":{},\"per_sec\":{:.1}}}",
            json_str(t.case),
            t.baseline,
            t.batch,
            t.events,
            t.per_sec
        )
        .unwrap();
    }
    out.push_str("],\"pairs\":[");
    for (i, (case, baseline, goal)) in PAIRS.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write!(
            out,
            "{{\"case\":{},\"baseline\":{},\"goal\":{goal},\"batch\":100}}",
            json_str(case),
            json_str(baseline)
        )
        .unwrap();
    }
    out.push_str("],\"latency\":[");
    for (i, l) in r.latency.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write!(
            out,
            "{{\"case\":{},\"baseline\":{},\"p50\":{:.2},\"p90\":{:.2},\"p99\":{:.2},\"p999\":{:.2}}}",
            json_str(l.case),
            l.baseline,
            l.p50,
            l.p90,
            l.p99,
            l.p999
        )
        .unwrap();
    }
    out.push_str("],\"scaling\":[");
    for (i, s) in r.scaling.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write!(
            out,
            "{{\"case\":{},\"partitions\":{},\"events\":{},\"per_sec\":{:.1},\"open_secs\":{:.4},\"rss_before\":{},\"rss_peak\":{}}}",
            json_str(s.case),
            s.partitions,
            s.events,
            s.per_sec,
            s.open_secs,
            s.rss_before,
            s.rss_peak
        )
        .unwrap();
    }
    out.push_str("]}\n");
    out
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
