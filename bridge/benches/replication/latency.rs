//! The latency phase: a paced stream, and when each event lands on the target.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tributary::{Backend, ConsumerExt, ConsumerOptions, Event, StartPosition, Timestamp};
use tributary_testcontainers::unique_name;

use crate::{DRAIN_TIMEOUT, KEYS, PACED_RATE, PAYLOAD};

/// A paced event slower than this (ms) is reported by its place in the stream: whether the
/// slow ones are the first few (a client looking up a new topic) or spread over the run.
const SLOW_MS: f64 = 200.0;

/// Replication latencies of the paced stream, in milliseconds.
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) samples: usize,
    /// Every sample, sorted: rounds pool them for percentiles over all their events.
    pub(crate) sorted: Vec<f64>,
    /// How the arrival time was taken.
    pub(crate) clock: &'static str,
}

/// The `q` quantile of `sorted` (nearest rank below), or NaN when there are no samples.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// Where the arrival time of a replicated event comes from.
#[derive(Clone, Copy)]
pub(crate) enum Clock {
    /// The target record's timestamp, stamped by the broker (LogAppendTime topics).
    LogAppendTime,
    /// When this process received it from the target (backends without broker timestamps).
    Receive,
}

pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Produces `PACED_RATE` events/s for `paced_for` to `source`, each carrying its creation time
/// (CreateTime in ms, and in µs in the payload), and measures when each one lands on `target`.
pub(crate) async fn paced_latency(
    source: &dyn Backend,
    source_stream: &str,
    target: &dyn Backend,
    target_stream: &str,
    clock: Clock,
    paced_for: Duration,
) -> Latency {
    let ticks = (paced_for.as_millis() / 10) as usize;
    let per_tick = PACED_RATE / 100;
    let total = ticks * per_tick;
    // The consumer is in its group (Kafka: partitions assigned) before the first event is sent.
    let consumer = target
        .consumer(
            target_stream,
            ConsumerOptions::new(unique_name("bench-latency")).start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let collector = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total);
        let mut slow = Vec::new();
        let give_up = Instant::now() + paced_for + DRAIN_TIMEOUT;
        while latencies.len() < total && Instant::now() < give_up {
            let Some(d) = consumer
                .receive_timeout(Duration::from_millis(200))
                .await
                .unwrap()
            else {
                continue;
            };
            let arrived_us = match clock {
                Clock::Receive => now_micros(),
                Clock::LogAppendTime => {
                    d.event
                        .timestamp
                        .expect("a Kafka record has a timestamp")
                        .as_millis()
                        * 1000
                }
            };
            let created_us: i64 = std::str::from_utf8(&d.event.payload[..16])
                .ok()
                .and_then(|s| s.parse().ok())
                .expect("a paced event starts with its creation time");
            let created_us = match clock {
                // Both in whole milliseconds, as Kafka stores them.
                Clock::LogAppendTime => created_us / 1000 * 1000,
                Clock::Receive => created_us,
            };
            let latency_ms = (arrived_us - created_us) as f64 / 1000.0;
            if latency_ms > SLOW_MS {
                // "{created} paced {seq}" and the padding: the third word is the sequence.
                let seq: usize = std::str::from_utf8(&d.event.payload)
                    .ok()
                    .and_then(|s| s.split(' ').nth(2)?.trim_end_matches('.').parse().ok())
                    .unwrap_or(usize::MAX);
                slow.push(seq);
            }
            latencies.push(latency_ms);
            d.ack();
        }
        consumer.close().await.unwrap();
        if !slow.is_empty() {
            slow.sort_unstable();
            eprintln!(
                "[paced] {} of {} events took over {SLOW_MS} ms, sent as events {} to {} of the stream",
                slow.len(),
                latencies.len(),
                slow[0],
                slow[slow.len() - 1]
            );
        }
        latencies
    });

    let producer = source.producer(source_stream).await.unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut seq = 0usize;
    for _ in 0..ticks {
        tick.tick().await;
        let batch: Vec<Event> = (0..per_tick)
            .map(|_| {
                let created = now_micros();
                let mut payload = format!("{created:016} paced {seq}").into_bytes();
                payload.resize(PAYLOAD, b'.');
                seq += 1;
                Event::new(payload)
                    .with_key(format!("key-{:02}", seq % KEYS))
                    .with_timestamp(Timestamp::from_millis(created / 1000))
            })
            .collect();
        producer.send_batch(batch).await.unwrap();
    }
    producer.close().await.unwrap();
    let mut latencies = collector.await.unwrap();
    assert!(
        latencies.len() == total,
        "only {} of {total} paced events reached {target_stream} within {DRAIN_TIMEOUT:?} after the last was sent (replicator stalled?)",
        latencies.len()
    );
    latencies.sort_by(f64::total_cmp);
    Latency {
        p50: quantile(&latencies, 0.50),
        p99: quantile(&latencies, 0.99),
        max: *latencies.last().unwrap(),
        samples: latencies.len(),
        sorted: latencies,
        clock: match clock {
            Clock::LogAppendTime => "target LogAppendTime − source CreateTime (ms)",
            Clock::Receive => "receive time at a consumer of the sink − creation time (µs)",
        },
    }
}
