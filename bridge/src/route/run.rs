//! The route loop: take a batch, transform it, write it, ack the source, commit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tributary::{ConsumerExt, Delivery, Error, ErrorKind, Event, Result};

use super::dead_letter::prepare;
use super::evaluate::{Evaluator, Item};
use super::lineage::{self, RouteLineage, with_lineage};
use super::sink::{OtherSinks, write};
use super::stats::report_lag;
use super::{CancellationToken, OpenRoute, RouteSpec, RouteStats, Running};
use crate::metrics::RouteMetrics;
use crate::transform::Outcome;

/// How long a route waits for the previous batch's source commit before replicating on
/// without it. Healthy commits take milliseconds; a source that takes longer is reported.
const COMMIT_PATIENCE: Duration = Duration::from_secs(5);

impl OpenRoute {
    /// Runs until `cancel` fires; then finishes the batch in hand and returns.
    pub async fn run(self, stats: Arc<RouteStats>, cancel: CancellationToken) -> Result<()> {
        let OpenRoute {
            spec,
            consumer,
            producer,
        } = self;
        let dead_letter = match &spec.dead_letter {
            Some((backend, stream)) => Some((backend.producer(stream).await?, stream.clone())),
            None => None,
        };
        let metrics = RouteMetrics::new(&spec.name);
        let route = Running {
            spec: &spec,
            stats: &stats,
            metrics: &metrics,
            cancel: &cancel,
        };
        let consumer: Arc<dyn tributary::Consumer> = Arc::from(consumer);
        let lag_reporter = report_lag(metrics.source_lag.clone(), consumer.clone(), stats.clone());
        let evaluator = match &spec.transform {
            Some(transform) => Some(Evaluator::start(
                &spec.name,
                transform.clone(),
                spec.source.scheme(),
                spec.source_stream.clone(),
            )?),
            None => None,
        };
        let mut other_sinks = OtherSinks::default();
        let fixed_lineage = RouteLineage::new(&spec);
        let mut pending_commit: Option<tokio::task::JoinHandle<Result<()>>> = None;
        let mut commit_overdue = false;
        let mut batch: Vec<Delivery> = Vec::with_capacity(spec.max_batch);
        let result = loop {
            // The first event of a batch waits for as long as it takes (or until cancelled).
            let first = tokio::select! {
                biased;
                _ = cancel.cancelled() => break Ok(()),
                d = consumer.receive() => d,
            };
            let batch_started = std::time::Instant::now();
            match first {
                Ok(d) => batch.push(d),
                Err(e) if e.kind() == ErrorKind::Closed => break Ok(()),
                Err(e) => break Err(e),
            }
            let mut bytes: usize = batch[0].event.payload.len();
            // Linger counts from the batch's first event, as Kafka's linger.ms does: measured
            // from the last event instead, a steady trickle (one event every few ms) held a
            // batch open until it was full. Once it is over, what is already waiting still
            // joins the batch (a zero timeout polls once), so a backlog keeps batches full.
            let linger_ends = tokio::time::Instant::now() + spec.linger;
            while batch.len() < spec.max_batch && bytes < spec.max_bytes {
                let left = linger_ends.saturating_duration_since(tokio::time::Instant::now());
                match consumer.receive_timeout(left).await {
                    Ok(Some(d)) => {
                        bytes += d.event.payload.len();
                        batch.push(d);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(route = %spec.name, error = %e, "receive failed mid-batch");
                        break;
                    }
                }
            }
            stats
                .received
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            metrics.events_in.increment(batch.len() as u64);
            metrics.bytes_in.increment(bytes as u64);
            let (mut verdicts, items) = judge(&route, &batch, evaluator.is_some());
            if let Some(evaluator) = evaluator.as_ref().filter(|_| !items.is_empty()) {
                match evaluate(&route, evaluator, &mut verdicts, items).await {
                    Ok(true) => {}
                    // Cancelled while the expressions ran: the batch is nacked, read again.
                    Ok(false) => break Ok(()),
                    Err(e) => {
                        metrics.errors.increment(1);
                        break Err(e.context(format!("route `{}`", spec.name)));
                    }
                }
            }
            let transformed = group(&spec, &fixed_lineage, &batch, verdicts);
            let groups = match prepare(&route, transformed, dead_letter.as_ref()).await {
                Ok(groups) => groups,
                Err(e) => {
                    metrics.errors.increment(1);
                    break Err(e.context(format!("route `{}`", spec.name)));
                }
            };
            // Sink refusals dead-lettered below were counted as written: take them off after.
            let dead_before = stats.dead_lettered.load(Ordering::Relaxed);
            let mut written = 0u64;
            let mut written_bytes = 0u64;
            let mut failure = None;
            for (stream, events) in groups {
                let stream_name = stream.as_deref().unwrap_or(&spec.sink_stream);
                written += events.len() as u64;
                written_bytes += events.iter().map(|e| e.payload.len() as u64).sum::<u64>();
                let target = match &stream {
                    None => Ok(producer.as_ref()),
                    Some(s) => other_sinks.get(&spec.sink, s).await,
                };
                let result = match target {
                    Ok(target) => {
                        write(&route, target, dead_letter.as_ref(), events, stream_name).await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    failure = Some(e.context(format!(
                        "route `{}`: writing to stream `{stream_name}`",
                        spec.name
                    )));
                    break;
                }
            }
            if let Some(e) = failure {
                metrics.errors.increment(1);
                // Unacked deliveries are nacked on drop: the source keeps them.
                break Err(e);
            }
            let dead = stats.dead_lettered.load(Ordering::Relaxed) - dead_before;
            stats
                .replicated
                .fetch_add(written.saturating_sub(dead), Ordering::Relaxed);
            stats.bytes.fetch_add(written_bytes, Ordering::Relaxed);
            metrics.events_out.increment(written.saturating_sub(dead));
            metrics.bytes_out.increment(written_bytes);
            metrics
                .batch_seconds
                .record(batch_started.elapsed().as_secs_f64());
            let now = tributary::Timestamp::now().as_millis();
            for d in batch.drain(..) {
                // From the event's own time to the sink's confirmation, where it has one.
                if let Some(t) = d.event.timestamp {
                    let latency = (now - t.as_millis()).max(0) as f64 / 1000.0;
                    metrics.latency.record(latency);
                }
                d.ack();
            }
            // Persist the source position now, so a crash replays at most what was in flight
            // (plus the batch whose commit was under way), not everything since the backend's
            // last periodic commit. The commit runs while the next batch is collected: waiting
            // for its round trip held every batch back. At most one is outstanding. A commit
            // the source is slow to confirm is waited for only so long: replication goes on
            // (with a warning, since a crash would now replay more) rather than stalling.
            if let Some(mut previous) = pending_commit.take() {
                let patience = if commit_overdue {
                    Duration::ZERO
                } else {
                    COMMIT_PATIENCE
                };
                match tokio::time::timeout(patience, &mut previous).await {
                    Ok(outcome) => {
                        settle_commit(&spec.name, outcome);
                        commit_overdue = false;
                    }
                    Err(_) => {
                        if !commit_overdue {
                            tracing::warn!(route = %spec.name, patience = ?COMMIT_PATIENCE, "source commit not confirmed yet; replicating on without it, so a crash now would replay more than the in-flight window");
                        }
                        commit_overdue = true;
                        pending_commit = Some(previous);
                    }
                }
            }
            if pending_commit.is_none() {
                let committer = consumer.clone();
                pending_commit = Some(tokio::spawn(async move { committer.commit().await }));
            }
        };
        if let Some(mut last) = pending_commit.take() {
            // Closing the consumer commits what is acked anyway; a hung commit must not hold
            // the shutdown.
            match tokio::time::timeout(COMMIT_PATIENCE, &mut last).await {
                Ok(outcome) => settle_commit(&spec.name, outcome),
                Err(_) => {
                    tracing::warn!(route = %spec.name, "source commit still unconfirmed at shutdown; closing the source, which commits what is acked");
                    last.abort();
                }
            }
        }
        lag_reporter.abort();
        let closed_consumer = consumer.close().await;
        let closed_producer = producer.close().await;
        other_sinks.close().await;
        if let Some((dlq, _)) = dead_letter {
            let _ = dlq.close().await;
        }
        result.and(closed_consumer).and(closed_producer)
    }
}

/// Reports how a source commit started after an earlier batch ended; a failure only means a
/// crash would replay more, so it is logged, not fatal.
fn settle_commit(route: &str, commit: std::result::Result<Result<()>, tokio::task::JoinError>) {
    match commit {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(route, error = %e, "source commit failed; a crash may replay more")
        }
        Err(e) => tracing::warn!(route, error = %e, "source commit task failed"),
    }
}

/// Events of a batch grouped by sink stream (`None`: the route's own).
pub(super) type Groups = Vec<(Option<String>, Vec<Event>)>;

/// What becomes of one delivery of a batch.
enum Verdict {
    /// Replicate, to this stream (`None`: the route's own).
    Keep(Option<String>, Event),
    /// Already in the sink stream, or filtered out: acked, not replicated.
    Skip,
    /// The transform failed on it.
    Failed(Event, Error),
}

/// Loop prevention for a batch: a verdict for each delivery, `None` where the expressions
/// decide, and the items to evaluate for those. (Deliveries are not `Sync`: the batch is only
/// borrowed by the synchronous passes, never across an await.)
fn judge(
    route: &Running<'_>,
    batch: &[Delivery],
    evaluate: bool,
) -> (Vec<Option<Verdict>>, Vec<Item>) {
    let Running {
        spec,
        stats,
        metrics,
        ..
    } = route;
    let mut verdicts = Vec::with_capacity(batch.len());
    let mut items = Vec::new();
    for d in batch {
        if lineage::visited(&d.event, &spec.sink_identity) {
            stats.looped.fetch_add(1, Ordering::Relaxed);
            metrics.loop_dropped.increment(1);
            verdicts.push(Some(Verdict::Skip));
        } else if !evaluate {
            verdicts.push(Some(Verdict::Keep(None, d.event.clone())));
        } else {
            verdicts.push(None);
            items.push(Item {
                event: d.event.clone(),
                partition: d.partition.as_ref().map(|p| p.to_string()),
                position: d.position.as_ref().map(|p| p.to_string()),
            });
        }
    }
    (verdicts, items)
}

/// Runs the filter and transform on the route's evaluator thread and fills in the verdicts;
/// `Ok(false)` when cancelled while they ran.
async fn evaluate(
    route: &Running<'_>,
    evaluator: &Evaluator,
    verdicts: &mut [Option<Verdict>],
    items: Vec<Item>,
) -> Result<bool> {
    let Running {
        spec,
        stats,
        metrics,
        cancel,
    } = route;
    let originals: Vec<Event> = items.iter().map(|i| i.event.clone()).collect();
    let outcomes = tokio::select! {
        outcomes = evaluator.apply(items) => outcomes?,
        _ = cancel.cancelled() => return Ok(false),
    };
    let mut outcomes = outcomes.into_iter();
    let pending = verdicts.iter_mut().filter(|v| v.is_none());
    for (slot, original) in pending.zip(originals) {
        *slot = Some(match outcomes.next() {
            Some(Ok(Outcome::Keep { event, stream })) => {
                Verdict::Keep(stream.filter(|s| *s != spec.sink_stream), event)
            }
            Some(Ok(Outcome::Drop)) => {
                stats.filtered.fetch_add(1, Ordering::Relaxed);
                metrics.filtered.increment(1);
                Verdict::Skip
            }
            Some(Err(error)) => Verdict::Failed(original, error),
            // The evaluator stops early only once the route gave up on the batch.
            None => return Ok(false),
        });
    }
    Ok(true)
}

/// Adds lineage and groups what is kept by sink stream, keeping the batch order inside each
/// group (so per-key order holds in every stream); also returns the events the transform
/// failed on, with the error.
fn group(
    spec: &RouteSpec,
    fixed: &RouteLineage,
    batch: &[Delivery],
    verdicts: Vec<Option<Verdict>>,
) -> (Groups, Vec<(Event, Error)>) {
    let mut groups: Groups = Vec::new();
    let mut failed = Vec::new();
    for (d, verdict) in batch.iter().zip(verdicts) {
        match verdict {
            Some(Verdict::Keep(stream, event)) => {
                let event = with_lineage(spec.keep_key, fixed, d, event);
                match groups.iter_mut().find(|(s, _)| *s == stream) {
                    Some((_, group)) => group.push(event),
                    None => groups.push((stream, vec![event])),
                }
            }
            Some(Verdict::Failed(event, error)) => failed.push((event, error)),
            Some(Verdict::Skip) | None => {}
        }
    }
    (groups, failed)
}
