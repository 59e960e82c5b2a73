//! Scale: a throughput smoke test that reports a figure and asserts only that nothing is lost.

use super::support::*;
use std::time::{Duration, Instant};
use tributary::{ConsumerExt, Event, StartPosition};

/// 100,000 small events (or the harness's scale) are produced in batches and consumed with none lost; events per second are reported.
pub(crate) async fn throughput(c: &mut Ctx) -> CaseOutcome {
    let n = c.harness.scale;
    let stream = c.stream("throughput", 4).await?;
    let consumer = c
        .consumer(&stream, &c.name("g"), StartPosition::Earliest)
        .await?;
    let producer = c.producer(&stream).await?;
    let started = Instant::now();
    let batch = 1000;
    let mut i = 0;
    while i < n {
        let events: Vec<Event> = (i..(i + batch).min(n))
            .map(|j| Event::new(format!("{j:08}")).with_key(format!("k{}", j % 64)))
            .collect();
        i += events.len();
        producer.send_batch(events).await.check("send_batch")?;
    }
    producer.flush().await.check("flush")?;
    let produce_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut seen = vec![false; n];
    let mut distinct = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while distinct < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(d) = consumer.receive_timeout(left).await.check("receive")? else {
            return Err(format!("received {distinct} of {n}"));
        };
        let idx: usize = std::str::from_utf8(&d.event.payload)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad payload")?;
        ensure!(idx < n, "unknown event {idx}");
        if !seen[idx] {
            seen[idx] = true;
            distinct += 1;
        }
        d.ack();
    }
    let consume_secs = started.elapsed().as_secs_f64();
    Ok(Some(format!(
        "{n} events: produce {:.0}/s, consume {:.0}/s",
        n as f64 / produce_secs,
        n as f64 / consume_secs
    )))
}
