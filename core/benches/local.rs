//! Local backend throughput and latency beside baselines measured in the same run:
//! a `tokio::sync::mpsc` channel (the floor for in-process hand-off) and raw sequential file
//! writes of the same bytes (the floor for durable appends).
//!
//! `cargo bench -p tributary --bench local [-- EVENTS]` prints a table; nothing is asserted.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tributary::{Backend, ConsumerOptions, Event, StartPosition, StreamSpec};

const BATCH: usize = 100;
const PAYLOAD: usize = 100;
const PINGS: usize = 2_000;

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event::new(vec![b'x'; PAYLOAD]).with_key(format!("key-{:04}", i % 1000)))
        .collect()
}

struct Row {
    name: String,
    events_per_sec: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1e6
}

async fn mpsc_baseline(n: usize) -> Row {
    let evs = events(n);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(1024);
    let started = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut count = 0;
        while rx.recv().await.is_some() {
            count += 1;
        }
        count
    });
    for e in evs {
        tx.send(e).await.unwrap();
    }
    drop(tx);
    assert_eq!(consumer.await.unwrap(), n);
    let throughput = n as f64 / started.elapsed().as_secs_f64();
    // Ping-pong latency through a pair of channels.
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
    Row {
        name: "tokio mpsc (baseline)".into(),
        events_per_sec: throughput,
        p50_us: Some(percentile(&mut samples, 0.5)),
        p99_us: Some(percentile(&mut samples, 0.99)),
    }
}

async fn backend_run(name: &str, url: &str, n: usize) -> Row {
    let backend: Arc<dyn Backend> = tributary::connect(url).await.unwrap();
    backend
        .create_stream("bench", StreamSpec::with_partitions(4))
        .await
        .unwrap();
    let producer = backend.producer("bench").await.unwrap();
    let consumer = backend
        .consumer(
            "bench",
            ConsumerOptions::new("bench").start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let evs = events(n);
    let started = Instant::now();
    let consume = async {
        for _ in 0..n {
            consumer.receive().await.unwrap().ack();
        }
    };
    let produce = async {
        for chunk in evs.chunks(BATCH) {
            producer.send_batch(chunk.to_vec()).await.unwrap();
        }
    };
    tokio::join!(produce, consume);
    let throughput = n as f64 / started.elapsed().as_secs_f64();
    // End-to-end latency: one event sent, then received, PINGS times.
    let mut samples = Vec::with_capacity(PINGS);
    for e in events(PINGS) {
        let t = Instant::now();
        producer.send(e).await.unwrap();
        consumer.receive().await.unwrap().ack();
        samples.push(t.elapsed());
    }
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    backend.close().await.unwrap();
    Row {
        name: name.into(),
        events_per_sec: throughput,
        p50_us: Some(percentile(&mut samples, 0.5)),
        p99_us: Some(percentile(&mut samples, 0.99)),
    }
}

/// The same bytes (framed like the file log: 8-byte header + key + payload + fixed fields)
/// written sequentially in batches of BATCH, with or without an fsync per batch.
fn raw_write(dir: &std::path::Path, n: usize, fsync: bool) -> Row {
    let path = dir.join(if fsync { "raw-fsync" } else { "raw" });
    let mut file = std::fs::File::create(&path).unwrap();
    let frame = vec![7u8; 8 + 26 + 8 + PAYLOAD + 8];
    let started = Instant::now();
    let mut buf = Vec::with_capacity(frame.len() * BATCH);
    for _ in 0..n / BATCH {
        buf.clear();
        for _ in 0..BATCH {
            buf.extend_from_slice(&frame);
        }
        file.write_all(&buf).unwrap();
        if fsync {
            file.sync_data().unwrap();
        }
    }
    let throughput = n as f64 / started.elapsed().as_secs_f64();
    let mut samples = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let t = Instant::now();
        file.write_all(&frame).unwrap();
        if fsync {
            file.sync_data().unwrap();
        }
        samples.push(t.elapsed());
    }
    Row {
        name: format!(
            "raw sequential write{} (baseline)",
            if fsync { " + fsync/batch" } else { "" }
        ),
        events_per_sec: throughput,
        p50_us: Some(percentile(&mut samples, 0.5)),
        p99_us: Some(percentile(&mut samples, 0.99)),
    }
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
    let dir = tempfile::tempdir().unwrap();
    let file_url =
        |sub: &str, fsync: &str| format!("file://{}/{sub}?fsync={fsync}", dir.path().display());
    let rows = rt.block_on(async {
        vec![
            mpsc_baseline(n).await,
            backend_run("memory://", "memory://", n).await,
            raw_write(dir.path(), n, false),
            backend_run("file:// fsync=never", &file_url("never", "never"), n).await,
            raw_write(dir.path(), n, true),
            backend_run("file:// fsync=always", &file_url("always", "always"), n).await,
        ]
    });
    println!(
        "\nlocal backend: {n} events of {PAYLOAD} B, batches of {BATCH}, produce and consume concurrently; latency = send one + receive it ({PINGS} samples)\n"
    );
    println!(
        "{:<42} {:>12} {:>10} {:>10}",
        "", "events/s", "p50 µs", "p99 µs"
    );
    for r in &rows {
        println!(
            "{:<42} {:>12.0} {:>10.1} {:>10.1}",
            r.name,
            r.events_per_sec,
            r.p50_us.unwrap_or(f64::NAN),
            r.p99_us.unwrap_or(f64::NAN)
        );
    }
    let ratio = |a: usize, b: usize| rows[a].events_per_sec / rows[b].events_per_sec;
    println!();
    println!(
        "memory:// / tokio mpsc                    {:.2}",
        ratio(1, 0)
    );
    println!(
        "file:// fsync=never / raw write           {:.2}",
        ratio(3, 2)
    );
    println!(
        "file:// fsync=always / raw write+fsync    {:.2}",
        ratio(5, 4)
    );
}
