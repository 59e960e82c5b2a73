//! The floors the local backend is measured against, on the same events and bytes: a
//! `tokio::sync::mpsc` channel for in-process hand-off, raw sequential file writes (with and
//! without an fdatasync) for appends.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;
use tributary::Event;

use super::report::{Latency, percentiles};
use super::{PAYLOAD, PINGS, events};

/// Bytes of a frame of the file log for one bench event (header, key, payload, fixed fields).
const FRAME: usize = 8 + 26 + 8 + PAYLOAD + 8;

pub(crate) async fn mpsc_throughput(n: usize, batch: usize) -> f64 {
    let evs = events(n);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(1024);
    let cpu = super::threads::snapshot();
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
    let wall = started.elapsed();
    super::threads::report("tokio mpsc", batch, n, wall, &cpu);
    n as f64 / wall.as_secs_f64()
}

/// The least any log with a consumer group does per event, with nothing of the API around it,
/// as a bound for the backend's goals: the producer appends a batch to a vector under a lock
/// (the log keeps every event, for replay and redelivery) and wakes the consumer; the consumer
/// takes up to `batch` new events as shared copies (a reference count per key and payload, and
/// the promotion of a vector-backed one the first time), keeps each in flight until its ack
/// and, on the ack, moves the committed offset over the acknowledged prefix. No positions, ack
/// handles, partitions, ownership or redelivery order: a backend with per-event acks cannot do
/// less, so its rate is above any such backend's here.
pub(crate) async fn log_floor_throughput(n: usize, batch: usize) -> f64 {
    struct Log {
        events: parking_lot::Mutex<Vec<Event>>,
        appended: tokio::sync::Notify,
    }
    let log = Arc::new(Log {
        events: parking_lot::Mutex::new(Vec::with_capacity(n)),
        appended: tokio::sync::Notify::new(),
    });
    let evs = events(n);
    let cpu = super::threads::snapshot();
    let started = Instant::now();
    let consumer = tokio::spawn({
        let log = log.clone();
        async move {
            let (mut cursor, mut committed) = (0usize, 0usize);
            // Acked flags of the deliveries from `committed` on.
            let mut window: VecDeque<bool> = VecDeque::new();
            let mut inflight: Vec<(usize, Event)> = Vec::with_capacity(batch);
            let mut deliveries: Vec<Event> = Vec::with_capacity(batch);
            while committed < n {
                let notified = log.appended.notified();
                {
                    let events = log.events.lock();
                    let end = events.len().min(cursor + batch);
                    deliveries.extend(events[cursor..end].iter().cloned());
                }
                if deliveries.is_empty() {
                    notified.await;
                    continue;
                }
                for event in deliveries.drain(..) {
                    // Kept for redelivery until acked: a second reference, as any group holds.
                    inflight.push((cursor, event.clone()));
                    window.push_back(false);
                    cursor += 1;
                    std::hint::black_box(&event);
                }
                // Every delivery acked, in order of delivery.
                for (offset, event) in inflight.drain(..) {
                    window[offset - committed] = true;
                    drop(event);
                    while window.front() == Some(&true) {
                        window.pop_front();
                        committed += 1;
                    }
                }
            }
            committed
        }
    });
    let mut evs = evs.into_iter();
    loop {
        let chunk: Vec<Event> = evs.by_ref().take(batch).collect();
        if chunk.is_empty() {
            break;
        }
        log.events.lock().extend(chunk);
        log.appended.notify_one();
    }
    assert_eq!(consumer.await.unwrap(), n);
    let wall = started.elapsed();
    super::threads::report("log + group floor", batch, n, wall, &cpu);
    n as f64 / wall.as_secs_f64()
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

/// Writes `bytes` zeros to `file` and makes them durable, then rewinds it: writes into it then
/// overwrite initialized blocks in place, so an fdatasync has no size or extent to commit.
fn prezero(file: &mut std::fs::File, bytes: usize) {
    use std::io::Seek;
    let zeros = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(zeros.len());
        file.write_all(&zeros[..n]).unwrap();
        left -= n;
    }
    file.sync_all().unwrap();
    file.rewind().unwrap();
}

/// The same bytes as the file log writes, sequentially, `batch` frames per write; into a file
/// written with zeros beforehand when `prezeroed`.
pub(crate) fn raw_throughput(
    dir: &std::path::Path,
    n: usize,
    batch: usize,
    fsync: bool,
    prezeroed: bool,
) -> f64 {
    let path = dir.join(format!("raw-{batch}-{fsync}"));
    let mut file = std::fs::File::create(&path).unwrap();
    if prezeroed {
        prezero(&mut file, n * FRAME);
    }
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

/// Each batch's frames spread over `files` files, as a stream of that many partitions lays them
/// out, written with one `write` per file and then fdatasynced all at once, by threads that live
/// across batches (as the file log's writer and fsync crew do): the floor for `fsync=always` on
/// a stream of `files` partitions, where one file's fdatasync is the floor for one partition.
pub(crate) fn raw_spread_fsync_throughput(
    dir: &std::path::Path,
    n: usize,
    batch: usize,
    files: usize,
    prezeroed: bool,
) -> f64 {
    use std::sync::mpsc::sync_channel;
    let paths: Vec<_> = (0..files)
        .map(|i| dir.join(format!("raw-spread-{batch}-{i}")))
        .collect();
    let mut handles: Vec<std::fs::File> = paths
        .iter()
        .map(|p| std::fs::File::create(p).unwrap())
        .collect();
    if prezeroed {
        for file in &mut handles {
            prezero(file, n.div_ceil(files) * FRAME);
        }
    }
    let frame = vec![7u8; FRAME];
    let mut bufs: Vec<Vec<u8>> = (0..files)
        .map(|_| Vec::with_capacity(FRAME * batch.div_ceil(files)))
        .collect();
    let per_sec = std::thread::scope(|scope| {
        let helpers: Vec<_> = handles[1..]
            .iter()
            .map(|file| {
                let file = file.try_clone().unwrap();
                let (job_tx, job_rx) = sync_channel::<()>(1);
                let (done_tx, done_rx) = sync_channel::<()>(1);
                scope.spawn(move || {
                    while job_rx.recv().is_ok() {
                        file.sync_data().unwrap();
                        done_tx.send(()).unwrap();
                    }
                });
                (job_tx, done_rx)
            })
            .collect();
        let started = Instant::now();
        for _ in 0..n / batch {
            for buf in &mut bufs {
                buf.clear();
            }
            for i in 0..batch {
                bufs[i % files].extend_from_slice(&frame);
            }
            for (file, buf) in handles.iter_mut().zip(&bufs) {
                if !buf.is_empty() {
                    file.write_all(buf).unwrap();
                }
            }
            for (job, _) in &helpers {
                job.send(()).unwrap();
            }
            handles[0].sync_data().unwrap();
            for (_, done) in &helpers {
                done.recv().unwrap();
            }
        }
        n as f64 / started.elapsed().as_secs_f64()
        // The helpers' senders drop here, which ends their threads before the scope closes.
    });
    drop(handles);
    for p in paths {
        std::fs::remove_file(p).unwrap();
    }
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
