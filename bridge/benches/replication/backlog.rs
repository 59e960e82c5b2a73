//! The backlog phase: producing it, and watching the target until it holds all of it.

use std::time::{Duration, Instant};

use tributary::{Backend, Event};

use crate::{BACKLOG_TIMEOUT, FIRST_EVENT_TIMEOUT, KEYS, PAYLOAD, PRODUCE_BATCH};

/// How a backlog was copied.
#[derive(Clone, Copy)]
pub(crate) struct Backlog {
    /// From the replicator's launch until all events were on the target.
    pub(crate) total: Duration,
    /// From launch until the first event was seen on the target.
    pub(crate) first_at: Duration,
    /// Events already on the target at that first sighting.
    pub(crate) first_count: u64,
    /// The replicator's CPU time (user + system) from that first sighting until all events
    /// were on the target: the steady copy, without start-up (a JVM's is seconds).
    pub(crate) steady_cpu: Duration,
    /// The replicator's CPU time from its launch until all events were on the target.
    pub(crate) total_cpu: Duration,
    /// Events on the target at the first sighting of at least half of them, and the
    /// replicator's CPU time from then until all were there: the copy's second half, when a
    /// JVM's compilers have had the first half to warm up.
    pub(crate) half_count: u64,
    pub(crate) half_cpu: Duration,
}

impl Backlog {
    pub(crate) fn rate(&self, n: u64) -> f64 {
        n as f64 / self.total.as_secs_f64()
    }
    pub(crate) fn steady(&self, n: u64) -> f64 {
        let span = (self.total - self.first_at).as_secs_f64();
        if span <= 0.0 {
            return f64::NAN;
        }
        (n - self.first_count) as f64 / span
    }
    /// CPU time per event of the steady copy, in µs.
    pub(crate) fn cpu_per_event_us(&self, n: u64) -> f64 {
        self.steady_cpu.as_secs_f64() * 1e6 / (n - self.first_count).max(1) as f64
    }
    /// CPU time per event over the second half of the copy, in µs.
    pub(crate) fn second_half_cpu_per_event_us(&self, n: u64) -> f64 {
        self.half_cpu.as_secs_f64() * 1e6 / n.saturating_sub(self.half_count).max(1) as f64
    }
    /// CPU time per event from the launch on (start-up and joins included), in µs.
    pub(crate) fn total_cpu_per_event_us(&self, n: u64) -> f64 {
        self.total_cpu.as_secs_f64() * 1e6 / n.max(1) as f64
    }
}

pub(crate) async fn wait_topic(backend: &dyn Backend, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while backend.describe_stream(topic).await.is_err() {
        assert!(Instant::now() < deadline, "topic {topic} never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The backlog: `n` events of 100 B over 20 keys, sent in batches of 1000. Returns events/s.
pub(crate) async fn produce_backlog(backend: &dyn Backend, stream: &str, n: u64) -> f64 {
    let producer = backend.producer(stream).await.unwrap();
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let batch: Vec<Event> = (sent..n.min(sent + PRODUCE_BATCH as u64))
            .map(|i| {
                let mut payload = format!("backlog {i}").into_bytes();
                payload.resize(PAYLOAD, b'.');
                Event::new(payload).with_key(format!("key-{:02}", i as usize % KEYS))
            })
            .collect();
        sent += batch.len() as u64;
        producer.send_batch(batch).await.unwrap();
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    producer.close().await.unwrap();
    rate
}

/// Sum of the partitions' next positions (Kafka: high watermarks via `fetch_watermarks`).
pub(crate) async fn high_watermarks(backend: &dyn Backend, stream: &str) -> u64 {
    backend
        .describe_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("describe {stream}: {e}"))
        .partitions
        .iter()
        .filter_map(|p| p.next.as_ref()?.as_offset())
        .sum()
}

/// Polls the targets every 50 ms until they hold `n` events between them; `cpu` reads the
/// replicator's CPU time so far.
pub(crate) async fn watch_backlog(
    target: &dyn Backend,
    streams: &[&str],
    n: u64,
    started: Instant,
    alive: &mut dyn FnMut() -> Result<(), String>,
    cpu: &dyn Fn() -> Duration,
) -> Backlog {
    let mut first: Option<(Duration, u64, Duration)> = None;
    let mut half: Option<(u64, Duration)> = None;
    loop {
        // Side by side: one after another, a poll of 16 targets took long enough to blur
        // the first sighting and the end.
        let counts =
            futures::future::join_all(streams.iter().map(|s| high_watermarks(target, s))).await;
        let count: u64 = counts.into_iter().sum();
        let now = started.elapsed();
        if count > 0 && first.is_none() {
            first = Some((now, count, cpu()));
        }
        if count >= n / 2 && half.is_none() && count < n {
            half = Some((count, cpu()));
        }
        if count >= n {
            let (first_at, first_count, first_cpu) = first.unwrap();
            let total_cpu = cpu();
            // A copy that went from under half to all of it between two polls has no second
            // half of its own: its steady part stands in.
            let (half_count, half_cpu) = half.unwrap_or((first_count, first_cpu));
            return Backlog {
                total: now,
                first_at,
                first_count: first_count.min(n),
                steady_cpu: total_cpu.saturating_sub(first_cpu),
                total_cpu,
                half_count: half_count.min(n),
                half_cpu: total_cpu.saturating_sub(half_cpu),
            };
        }
        if let Err(e) = alive() {
            panic!("{e}");
        }
        if first.is_none() && now > FIRST_EVENT_TIMEOUT {
            panic!("nothing replicated to {streams:?} within {FIRST_EVENT_TIMEOUT:?}");
        }
        if now > BACKLOG_TIMEOUT {
            panic!(
                "only {count} of {n} events replicated to {streams:?} within {BACKLOG_TIMEOUT:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
