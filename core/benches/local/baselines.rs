//! The floors the local backend is measured against, on the same events and bytes: a
//! `tokio::sync::mpsc` channel for in-process hand-off, raw sequential file writes (with and
//! without an fdatasync) for appends.

use std::io::Write;
use std::time::Instant;
use tributary::Event;

use super::report::{Latency, percentiles};
use super::{PAYLOAD, PINGS, events};

/// Bytes of a frame of the file log for one bench event (header, key, payload, fixed fields).
const FRAME: usize = 8 + 26 + 8 + PAYLOAD + 8;

pub(crate) async fn mpsc_throughput(n: usize, batch: usize) -> f64 {
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

pub(crate) async fn mpsc_latency() -> Latency {
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

/// The same bytes as the file log writes, sequentially, `batch` frames per write.
pub(crate) fn raw_throughput(dir: &std::path::Path, n: usize, batch: usize, fsync: bool) -> f64 {
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

pub(crate) fn raw_latency(dir: &std::path::Path, fsync: bool) -> Latency {
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
