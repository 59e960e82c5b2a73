//! One replication route: source consumer → sink producer, acking the source only after the
//! sink confirmed (so a crash replays, never loses), batch by batch (so per-key order holds).
//!
//! [`run`](OpenRoute::run) is the loop; [`lineage`] the headers and loop prevention;
//! [`RetryPolicy`] the sink retries; [`dead_letter`] where refused events go; [`RouteStats`]
//! the counters.

use std::sync::Arc;
use std::time::Duration;

pub use tokio_util::sync::CancellationToken;
use tributary::{Backend, ConsumerOptions, Error, Result, StartPosition};

use crate::transform::Transform;

mod commit;
pub mod dead_letter;
mod evaluate;
pub(crate) mod lag;
pub mod lineage;
mod retry;
mod run;
mod sink;
mod stats;

pub use lineage::stream_identity;
pub use retry::RetryPolicy;
pub use stats::{RouteStats, RouteTimes};

/// Where a route reads and writes, and how.
#[derive(Clone)]
pub struct RouteSpec {
    /// Route name, written into the lineage header and used as the metrics label.
    pub name: String,
    /// Source backend.
    pub source: Arc<dyn Backend>,
    /// Source stream.
    pub source_stream: String,
    /// Source consumer group.
    pub group: String,
    /// Where a new group starts.
    pub start: StartPosition,
    /// Sink backend.
    pub sink: Arc<dyn Backend>,
    /// Sink stream.
    pub sink_stream: String,
    /// Largest batch sent to the sink, in events.
    pub max_batch: usize,
    /// Largest batch sent to the sink, in payload bytes (a single larger event still goes).
    pub max_bytes: usize,
    /// How long the first event of a batch started while the sink is idle waits for more
    /// before a partial batch is sent (zero by default: at once). A batch gathered while the
    /// previous write was in flight goes as soon as that write is confirmed.
    pub linger: Duration,
    /// Deliveries held from the source at most: the memory bound under a slow sink.
    pub in_flight: usize,
    /// How failed sink writes are retried.
    pub retry: RetryPolicy,
    /// Where events go that the sink refuses after all retries; without one the route stops
    /// and the source keeps them.
    pub dead_letter: Option<(Arc<dyn Backend>, String)>,
    /// Whether the sink receives the source key (`false`: the sink spreads events itself).
    pub keep_key: bool,
    /// Filter and transform, applied after the loop check and before lineage headers.
    pub transform: Option<Arc<Transform>>,
    /// The source stream's [`stream_identity`], recorded in [`lineage::PATH`].
    pub source_identity: String,
    /// The sink stream's [`stream_identity`]: events that have been there are not copied back.
    pub sink_identity: String,
    /// Makes the route's trace spans ([`crate::telemetry`]); `None`: no spans at all.
    pub tracer: Option<crate::telemetry::RouteTracer>,
    /// Converts CloudEvents to the sink's binding ([`crate::cloudevents`]), after the
    /// transform.
    pub cloudevents: Option<crate::cloudevents::Conversion>,
    /// Ignore the [`lineage::PATH`] found on source events: no loop check, and each copy's path
    /// starts afresh. For sources that applications write directly, whose headers the route
    /// should not trust.
    pub reset_lineage: bool,
    /// Whether the running route publishes its source lag (`tributary_bridge_source_lag_events`).
    /// The daemon turns it off for Kafka sources, whose lag it reports from the broker from
    /// the moment it starts, whether or not the route runs.
    pub report_lag: bool,
}

impl RouteSpec {
    /// A route with default batching (2000 events, 1 MiB, no linger), in-flight limit (4000),
    /// retries (5, from 100 ms to 10 s with 20% jitter) and no dead-letter sink.
    pub fn new(
        name: impl Into<String>,
        source: Arc<dyn Backend>,
        source_stream: impl Into<String>,
        sink: Arc<dyn Backend>,
        sink_stream: impl Into<String>,
    ) -> Self {
        let source_stream = source_stream.into();
        let sink_stream = sink_stream.into();
        // Without URLs, the backend object stands in for the place, which is right within one
        // process; the daemon sets identities from the configured URLs instead.
        let place = |b: &Arc<dyn Backend>| format!("{}@{:p}", b.scheme(), Arc::as_ptr(b));
        let source_identity = format!("{}/{source_stream}", place(&source));
        let sink_identity = format!("{}/{sink_stream}", place(&sink));
        RouteSpec {
            name: name.into(),
            source,
            source_stream,
            group: "tributary-bridge".into(),
            start: StartPosition::Earliest,
            sink,
            sink_stream,
            max_batch: 2000,
            max_bytes: 1 << 20,
            linger: Duration::ZERO,
            in_flight: 4000,
            retry: RetryPolicy::default(),
            dead_letter: None,
            keep_key: true,
            transform: None,
            source_identity,
            sink_identity,
            tracer: None,
            cloudevents: None,
            reset_lineage: false,
            report_lag: true,
        }
    }
}

/// A route whose sink side is open and checked; its source group not joined yet.
pub struct OpenSinks {
    spec: RouteSpec,
    producer: Box<dyn tributary::Producer>,
    dead_letter: Option<(Box<dyn tributary::Producer>, String)>,
}

/// A route whose consumer and producers are open: its start position is fixed.
pub struct OpenRoute {
    spec: RouteSpec,
    consumer: Box<dyn tributary::Consumer>,
    producer: Box<dyn tributary::Producer>,
    dead_letter: Option<(Box<dyn tributary::Producer>, String)>,
}

/// Opens the sink side first: the sink's producer and the dead-letter sink's, each checked
/// with a round trip to its backend. A sink that cannot take events is found before the
/// source's group is joined: joining only to leave again moves every member's partitions
/// twice, and a route retrying that every few seconds keeps the whole group rebalancing.
pub async fn open_sinks(spec: RouteSpec) -> Result<OpenSinks> {
    check(&spec)?;
    let producer = open_sink(&spec.sink, &spec.sink_stream, &spec.retry)
        .await
        .map_err(|e| e.context(format!("route `{}`: sink", spec.name)))?;
    let dead_letter = match &spec.dead_letter {
        Some((backend, stream)) => match open_sink(backend, stream, &spec.retry).await {
            Ok(producer) => Some((producer, stream.clone())),
            Err(e) => {
                let _ = producer.close().await;
                return Err(e.context(format!("route `{}`: dead-letter sink", spec.name)));
            }
        },
        None => None,
    };
    Ok(OpenSinks {
        spec,
        producer,
        dead_letter,
    })
}

/// A producer for `stream`, once the backend answered about it (a stream that does not exist
/// yet is fine: sinks may create it). A transient answer (a topic created a moment ago whose
/// partition leaders are not known yet) is asked again with the route's retry policy.
async fn open_sink(
    backend: &Arc<dyn Backend>,
    stream: &str,
    retry: &RetryPolicy,
) -> Result<Box<dyn tributary::Producer>> {
    let producer = backend.producer(stream).await?;
    let mut attempt = 1;
    loop {
        match backend.describe_stream(stream).await {
            Ok(_) => return Ok(producer),
            Err(e) if e.kind() == tributary::ErrorKind::NotFound => return Ok(producer),
            Err(e) if e.is_retryable() && attempt < retry.attempts => {
                tokio::time::sleep(retry.delay(attempt)).await;
                attempt += 1;
            }
            Err(e) => {
                let _ = producer.close().await;
                return Err(e);
            }
        }
    }
}

impl OpenSinks {
    /// Joins the source's group: the route is ready to run.
    pub async fn open_source(self) -> Result<OpenRoute> {
        let OpenSinks {
            spec,
            producer,
            dead_letter,
        } = self;
        let consumer = spec
            .source
            .consumer(
                &spec.source_stream,
                ConsumerOptions::new(spec.group.clone())
                    .start(spec.start.clone())
                    .max_in_flight(spec.in_flight.max(spec.max_batch)),
            )
            .await;
        match consumer {
            Ok(consumer) => Ok(OpenRoute {
                spec,
                consumer,
                producer,
                dead_letter,
            }),
            Err(e) => {
                let _ = producer.close().await;
                if let Some((dlq, _)) = dead_letter {
                    let _ = dlq.close().await;
                }
                Err(e.context(format!("route `{}`: source", spec.name)))
            }
        }
    }
}

/// Opens the route: its sinks, then its source (see [`open_sinks`]).
pub async fn open(spec: RouteSpec) -> Result<OpenRoute> {
    open_sinks(spec).await?.open_source().await
}

/// Opens and runs a route until `cancel` fires.
pub async fn run_route(
    spec: RouteSpec,
    stats: Arc<RouteStats>,
    cancel: CancellationToken,
) -> Result<()> {
    open(spec).await?.run(stats, cancel).await
}

/// What every step of a running route reads.
struct Running<'a> {
    spec: &'a RouteSpec,
    stats: &'a RouteStats,
    metrics: &'a crate::metrics::RouteMetrics,
    cancel: &'a CancellationToken,
}

/// Validates a route before running it, with errors naming the route.
pub fn check(spec: &RouteSpec) -> Result<()> {
    if spec.max_batch == 0 {
        return Err(Error::config(format!(
            "route `{}`: max_batch must be at least 1",
            spec.name
        )));
    }
    if spec.retry.attempts == 0 {
        return Err(Error::config(format!(
            "route `{}`: retry attempts must be at least 1",
            spec.name
        )));
    }
    Ok(())
}
