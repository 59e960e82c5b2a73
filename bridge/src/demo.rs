//! The self-contained demo behind `tributary demo`: a sample generator writes orders to a
//! source stream, a route replicates them to a sink stream, and a checker reads the sink and
//! verifies every event arrived with per-key order and lineage intact.

use crate::route::{self, CancellationToken, RouteSpec, RouteStats, lineage};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tributary::{
    Backend, ConsumerExt, ConsumerOptions, Error, Event, Result, StartPosition, StreamSpec,
    Timestamp,
};

/// What the demo saw.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Events generated into the source.
    pub generated: u64,
    /// Distinct events read back from the sink.
    pub verified: u64,
    /// Events the sink held more than once (allowed by at-least-once, reported).
    pub duplicates: u64,
    /// Wall time from first send to last verified event.
    pub elapsed: Duration,
}

/// Runs the demo between `source` and `sink` with `events` sample orders; `progress` is called
/// about four times a second with (generated, replicated, verified).
pub async fn run(
    source: Arc<dyn Backend>,
    sink: Arc<dyn Backend>,
    events: u64,
    mut progress: impl FnMut(u64, u64, u64),
) -> Result<DemoReport> {
    let (src_stream, dst_stream) = ("orders", "orders-replica");
    for (backend, stream) in [(&source, src_stream), (&sink, dst_stream)] {
        match backend
            .create_stream(stream, StreamSpec::with_partitions(4))
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind() == tributary::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let run_id = Timestamp::now().as_millis().to_string();
    let checker = sink
        .consumer(
            dst_stream,
            ConsumerOptions::new(format!("demo-checker-{run_id}")).start(StartPosition::Latest),
        )
        .await?;
    let cancel = CancellationToken::new();
    let stats = Arc::new(RouteStats::default());
    let mut spec = RouteSpec::new("demo", source.clone(), src_stream, sink.clone(), dst_stream);
    spec.group = format!("demo-bridge-{run_id}");
    spec.start = StartPosition::Latest;
    let route = route::open(spec).await?;
    let route = tokio::spawn(route.run(stats.clone(), cancel.clone()));
    let producer = source.producer(src_stream).await?;
    let started = Instant::now();
    let generator = {
        let run_id = run_id.clone();
        async move {
            let mut sent = 0u64;
            while sent < events {
                let batch: Vec<Event> = (sent..(sent + 200).min(events))
                    .map(|i| {
                        let customer = i % 50;
                        Event::new(format!(
                            r#"{{"order":{i},"customer":"c{customer}","total_cents":{}}}"#,
                            (i * 37) % 10_000
                        ))
                        .with_key(format!("customer-{customer}"))
                        .with_header("demo-run", run_id.clone())
                        .with_header("seq", i.to_string())
                        .with_timestamp(Timestamp::now())
                    })
                    .collect();
                sent += batch.len() as u64;
                producer.send_batch(batch).await?;
            }
            producer.close().await?;
            Ok::<_, Error>(sent)
        }
    };
    let stats_for_check = stats.clone();
    let check = async {
        let mut last_per_key: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut seen = vec![false; events as usize];
        let (mut verified, mut duplicates) = (0u64, 0u64);
        let mut last_report = Instant::now();
        while verified < events {
            let Some(d) = checker.receive_timeout(Duration::from_secs(30)).await? else {
                return Err(Error::timeout(format!(
                    "the demo sink received {verified} of {events} events and then nothing for 30 s"
                )));
            };
            let seq: u64 = d
                .event
                .headers
                .get("seq")
                .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
                .ok_or_else(|| Error::other("replicated event lacks its seq header"))?;
            if lineage::Origin::of(&d.event).is_none_or(|origin| origin.route != "demo") {
                return Err(Error::other(format!("event {seq} lacks lineage headers")));
            }
            let key = d.event.key.clone().unwrap_or_default().to_vec();
            if let Some(prev) = last_per_key.insert(key.clone(), seq)
                && prev >= seq
                && !seen[seq as usize]
            {
                return Err(Error::other(format!(
                    "per-key order broken for {}: {seq} after {prev}",
                    String::from_utf8_lossy(&key)
                )));
            }
            if std::mem::replace(&mut seen[seq as usize], true) {
                duplicates += 1;
            } else {
                verified += 1;
            }
            d.ack();
            if last_report.elapsed() >= Duration::from_millis(250) {
                last_report = Instant::now();
                progress(
                    events,
                    stats_for_check.replicated.load(Ordering::Relaxed),
                    verified,
                );
            }
        }
        Ok::<_, Error>((verified, duplicates))
    };
    let (generated, checked) = tokio::join!(generator, check);
    let generated = generated?;
    let (verified, duplicates) = checked?;
    let elapsed = started.elapsed();
    progress(
        generated,
        stats.replicated.load(Ordering::Relaxed),
        verified,
    );
    cancel.cancel();
    route
        .await
        .map_err(|e| Error::other(format!("route task failed: {e}")))??;
    checker.close().await?;
    Ok(DemoReport {
        generated,
        verified,
        duplicates,
        elapsed,
    })
}
