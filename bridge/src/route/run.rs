//! The route loop: collect a batch, transform it, write it while the next batch is collected,
//! ack it at the source once the sink confirmed it, have it committed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tributary::{Delivery, Error, ErrorKind, Event, Result};

use super::commit::Committer;
use super::dead_letter::prepare;
use super::evaluate::{Evaluator, Item};
use super::lag::LagSource;
use super::lag::report_lag;
use super::lineage::{self, RouteLineage, with_lineage};
use super::sink::{OtherSinks, write};
use super::stats::RouteTimes;
use super::{CancellationToken, OpenRoute, RouteSpec, RouteStats, Running};
use crate::metrics::RouteMetrics;
use crate::transform::Outcome;

impl OpenRoute {
    /// Runs until `cancel` fires; then finishes the batch in hand and returns.
    ///
    /// Batches are pipelined: while batch N is written to the sink (and then acked), batch
    /// N + 1 is collected from the source, and it is written the moment N is confirmed. A
    /// batch started while the sink is idle goes at once (after `linger`, zero by default).
    /// Writes stay one at a time and in order, so per-key order holds however many batches are
    /// in hand, and each is acked only once the sink confirmed it.
    pub async fn run(self, stats: Arc<RouteStats>, cancel: CancellationToken) -> Result<()> {
        let OpenRoute {
            spec,
            consumer,
            producer,
            dead_letter,
        } = self;
        let metrics = RouteMetrics::new(&spec.name);
        let route = Running {
            spec: &spec,
            stats: &stats,
            metrics: &metrics,
            cancel: &cancel,
        };
        let consumer: Arc<dyn tributary::Consumer> = Arc::from(consumer);
        let lag_reporter = spec.report_lag.then(|| {
            report_lag(
                spec.name.clone(),
                LagSource::for_route(&spec, consumer.clone()),
                stats.clone(),
            )
        });
        let committer = Committer::start(spec.name.clone(), consumer.clone());
        let evaluator = match &spec.transform {
            Some(transform) => Evaluator::start(
                &spec.name,
                transform.clone(),
                spec.source.scheme(),
                spec.source_stream.clone(),
            )
            .map(Some),
            None => Ok(None),
        };
        let mut other_sinks = OtherSinks::default();
        let mut fixed_lineage = RouteLineage::new(&spec);
        let mut carried = VecDeque::new();
        let result = match evaluator {
            Err(e) => Err(e),
            Ok(evaluator) => {
                let mut next = collect(&route, consumer.as_ref(), &mut carried).await;
                loop {
                    let batch = match next {
                        Collected::Batch(batch) => batch,
                        Collected::Stopped => break Ok(()),
                        Collected::Failed(e) => break Err(e),
                    };
                    let started = Instant::now();
                    let trace = spec.tracer.as_ref().map(|tracer| {
                        crate::telemetry::BatchTrace::start(
                            tracer,
                            &spec,
                            &batch,
                            std::time::SystemTime::now(),
                        )
                    });
                    let groups = match prepare_batch(
                        &route,
                        &mut fixed_lineage,
                        evaluator.as_ref(),
                        dead_letter.as_ref(),
                        &batch,
                    )
                    .await
                    {
                        Ok(Some(groups)) => groups,
                        // Cancelled while the expressions ran: the batch is nacked, read again.
                        Ok(None) => break Ok(()),
                        Err(e) => {
                            metrics.errors.increment(1);
                            if let Some(trace) = trace {
                                trace.finish(Some(&e));
                            }
                            break Err(e.context(format!("route `{}`", spec.name)));
                        }
                    };
                    let delivered = deliver(
                        &route,
                        Sinks {
                            producer: producer.as_ref(),
                            others: &mut other_sinks,
                            dead_letter: dead_letter.as_ref(),
                        },
                        groups,
                        batch,
                        started,
                        &committer,
                        trace.as_ref(),
                    );
                    // While the sink confirms this batch, the next one fills with whatever
                    // arrives; it goes as soon as the confirmation is in (the write's round
                    // trip is the only linger when events keep coming).
                    let (delivered, ended) =
                        gather_while_writing(&route, consumer.as_ref(), &mut carried, delivered)
                            .await;
                    let written_at = Instant::now();
                    if let Some(trace) = trace {
                        trace.finish(delivered.as_ref().err());
                    }
                    if let Err(e) = delivered {
                        metrics.errors.increment(1);
                        // Unacked deliveries (this batch, the next) are nacked on drop: the
                        // source keeps them.
                        break Err(e);
                    }
                    next = match ended {
                        Some(ended) => ended,
                        None => collect(&route, consumer.as_ref(), &mut carried).await,
                    };
                    RouteTimes::add(&stats.times.source_stall, written_at.elapsed());
                }
            }
        };
        drop(carried);
        committer.stop(&spec.name).await;
        if let Some(reporter) = lag_reporter {
            reporter.abort();
        }
        let closed_consumer = consumer.close().await;
        let closed_producer = producer.close().await;
        other_sinks.close().await;
        if let Some((dlq, _)) = dead_letter {
            let _ = dlq.close().await;
        }
        result.and(closed_consumer).and(closed_producer)
    }
}

/// What collecting a batch gave.
enum Collected {
    Batch(Vec<Delivery>),
    /// Cancelled, or the source closed: the route ends.
    Stopped,
    Failed(Error),
}

/// The next batch: up to `max_batch` events and `max_bytes` payload bytes (a single larger
/// event still goes). Events gathered while the previous batch was written go at once; with
/// none in hand the first event waits for as long as it takes (or until cancelled), and then
/// lingers for `linger` (zero by default) from that event, as Kafka's `linger.ms` does
/// (measured from the last event, a steady trickle held batches open until full). Events
/// received beyond the byte limit are carried over to the next batch, in order.
async fn collect(
    route: &Running<'_>,
    consumer: &dyn tributary::Consumer,
    carried: &mut VecDeque<Delivery>,
) -> Collected {
    let spec = route.spec;
    if carried.is_empty() {
        let received = tokio::select! {
            biased;
            _ = route.cancel.cancelled() => return Collected::Stopped,
            received = consumer.receive_batch(spec.max_batch, spec.linger) => received,
        };
        match received {
            Ok(batch) => carried.extend(batch),
            Err(e) if e.kind() == ErrorKind::Closed => return Collected::Stopped,
            Err(e) => return Collected::Failed(e),
        }
    } else if carried.len() < spec.max_batch {
        // Gathered while the last write was in flight: top it up with what is ready now,
        // without waiting (a future polled once and dropped loses nothing, see
        // `gather_while_writing`). An error here comes back on the next call.
        let ready = consumer.receive_batch(spec.max_batch - carried.len(), Duration::ZERO);
        if let Some(Ok(more)) = ready.now_or_never() {
            carried.extend(more);
        }
    }
    let mut batch = Vec::with_capacity(carried.len().min(spec.max_batch));
    let mut bytes = 0usize;
    while let Some(d) = carried.front() {
        let size = d.event.payload.len();
        if !batch.is_empty() && (batch.len() >= spec.max_batch || bytes + size > spec.max_bytes) {
            break;
        }
        bytes += size;
        batch.extend(carried.pop_front());
    }
    route
        .stats
        .received
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    route.metrics.events_in.increment(batch.len() as u64);
    route.metrics.bytes_in.increment(bytes as u64);
    Collected::Batch(batch)
}

/// Runs `write` (a batch's delivery) while gathering what the source has ready into `carried`,
/// up to a batch, without lingering: this is where a route waits for the sink, so the next
/// batch fills for free. Only `receive_batch` with no linger is raced against the write: it
/// takes what is ready in one step or waits for the first event, so dropping it when the write
/// ends loses nothing. Returns the write's result and, when the source stopped or failed
/// meanwhile, how the route ends once the write is done (gathered events are then nacked).
async fn gather_while_writing(
    route: &Running<'_>,
    consumer: &dyn tributary::Consumer,
    carried: &mut VecDeque<Delivery>,
    write: impl std::future::Future<Output = Result<()>>,
) -> (Result<()>, Option<Collected>) {
    let max = route.spec.max_batch;
    tokio::pin!(write);
    let mut ended = None;
    while ended.is_none() && carried.len() < max {
        tokio::select! {
            biased;
            written = &mut write => return (written, None),
            _ = route.cancel.cancelled() => ended = Some(Collected::Stopped),
            received = consumer.receive_batch(max - carried.len(), Duration::ZERO) => {
                match received {
                    Ok(batch) => carried.extend(batch),
                    Err(e) if e.kind() == ErrorKind::Closed => ended = Some(Collected::Stopped),
                    Err(e) => ended = Some(Collected::Failed(e)),
                }
            }
        }
    }
    (write.await, ended)
}

/// Loop prevention, filter and transform, and dead letters for the events the transform
/// failed on: the events to write, by sink stream. `None` when cancelled meanwhile.
async fn prepare_batch(
    route: &Running<'_>,
    fixed: &mut RouteLineage,
    evaluator: Option<&Evaluator>,
    dead_letter: Option<&(Box<dyn tributary::Producer>, String)>,
    batch: &[Delivery],
) -> Result<Option<Groups>> {
    let (mut verdicts, items) = judge(route, batch, evaluator.is_some());
    if let Some(evaluator) = evaluator.filter(|_| !items.is_empty())
        && !evaluate(route, evaluator, &mut verdicts, items).await?
    {
        return Ok(None);
    }
    let transformed = group(route.spec, fixed, batch, verdicts);
    prepare(route, transformed, dead_letter).await.map(Some)
}

/// Where a batch is written.
struct Sinks<'a> {
    producer: &'a dyn tributary::Producer,
    others: &'a mut OtherSinks,
    dead_letter: Option<&'a (Box<dyn tributary::Producer>, String)>,
}

/// Writes a prepared batch to its sink streams, in order; once every write is confirmed, acks
/// the batch at the source, has it committed, and records what was replicated.
async fn deliver(
    route: &Running<'_>,
    sinks: Sinks<'_>,
    groups: Groups,
    batch: Vec<Delivery>,
    started: Instant,
    committer: &Committer,
    trace: Option<&crate::telemetry::BatchTrace>,
) -> Result<()> {
    let Running {
        spec,
        stats,
        metrics,
        ..
    } = route;
    let Sinks {
        producer,
        others,
        dead_letter,
    } = sinks;
    // What a crash would replay stays within the in-flight window (see `commit.rs`).
    let waiting = Instant::now();
    committer
        .room_for(&spec.name, batch.len() as u64, spec.in_flight as u64)
        .await;
    let writing = Instant::now();
    RouteTimes::add(&stats.times.window_wait, writing - waiting);
    // Sink refusals dead-lettered below were counted as written: take them off after.
    let dead_before = stats.dead_lettered.load(Ordering::Relaxed);
    let mut written = 0u64;
    let mut written_bytes = 0u64;
    for (stream, events) in groups {
        let stream_name = stream.as_deref().unwrap_or(&spec.sink_stream);
        written += events.len() as u64;
        written_bytes += events.iter().map(|e| e.payload.len() as u64).sum::<u64>();
        let target = match &stream {
            None => Ok(producer),
            Some(s) => others.get(&spec.sink, s).await,
        };
        let send_trace = trace.map(|t| t.send(spec.sink.scheme(), stream_name, &events));
        let result = match target {
            Ok(target) => write(route, target, dead_letter, events, stream_name).await,
            Err(e) => Err(e),
        };
        if let Some(send_trace) = send_trace {
            send_trace.end(result.as_ref().map(|_| ()));
        }
        if let Err(e) = result {
            return Err(e.context(format!(
                "route `{}`: writing to stream `{stream_name}`",
                spec.name
            )));
        }
    }
    RouteTimes::add(&stats.times.sink, writing.elapsed());
    let dead = stats.dead_lettered.load(Ordering::Relaxed) - dead_before;
    stats
        .replicated
        .fetch_add(written.saturating_sub(dead), Ordering::Relaxed);
    stats.bytes.fetch_add(written_bytes, Ordering::Relaxed);
    metrics.events_out.increment(written.saturating_sub(dead));
    metrics.bytes_out.increment(written_bytes);
    metrics
        .batch_seconds
        .record(started.elapsed().as_secs_f64());
    let now = tributary::Timestamp::now().as_millis();
    let mut last = None;
    let acked = batch.len() as u64;
    for d in batch {
        // From the event's own time to the sink's confirmation, where it has one.
        if let Some(t) = d.event.timestamp {
            let latency = (now - t.as_millis()).max(0) as f64 / 1000.0;
            metrics.latency.record(latency);
            last = Some((latency, t));
        }
        d.ack();
    }
    committer.acked(acked);
    if let Some((latency, time)) = last {
        metrics.last_event_age.set(latency);
        metrics
            .last_event_timestamp
            .set(time.as_millis() as f64 / 1000.0);
    }
    Ok(())
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
        if !spec.reset_lineage && lineage::visited(&d.event, &spec.sink_identity) {
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
    fixed: &mut RouteLineage,
    batch: &[Delivery],
    verdicts: Vec<Option<Verdict>>,
) -> (Groups, Vec<(Event, Error)>) {
    let mut groups: Groups = Vec::new();
    let mut failed = Vec::new();
    for (d, verdict) in batch.iter().zip(verdicts) {
        match verdict {
            Some(Verdict::Keep(stream, event)) => {
                // CloudEvents conversion after the transform, before lineage: a failure goes
                // where a transform's does (dead letter, or the route stops).
                let event = match &spec.cloudevents {
                    None => event,
                    Some(conversion) => match conversion.apply(event) {
                        Ok(event) => event,
                        Err(error) => {
                            failed.push((d.event.clone(), error));
                            continue;
                        }
                    },
                };
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
