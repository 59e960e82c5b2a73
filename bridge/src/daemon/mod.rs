//! The bridge daemon: every route of a configuration file, supervised, with an operations
//! endpoint (`/metrics` in Prometheus format, `/healthz`, `/readyz`) and a graceful shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tributary::{Backend, Error, Result};

use crate::config::{Plan, RoutePlan, Secrets};
use crate::route::{self, CancellationToken, OpenRoute, RetryPolicy, RouteSpec, RouteStats};

mod connections;
mod endpoint;
mod health;

use connections::Connections;
pub use health::{Health, RouteState};

/// A running daemon's routes and counters.
pub struct Running {
    /// Counters per route name.
    pub stats: Vec<(String, Arc<RouteStats>)>,
    /// The operations endpoint's bound address, when enabled.
    pub listening: Option<SocketAddr>,
    health: Arc<Health>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    cancel: CancellationToken,
    connections: Arc<Connections>,
}

/// Installs the Prometheus recorder (once per process), with every metric's help and buckets,
/// and returns its handle.
fn recorder() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for m in crate::metrics::ALL {
                if !m.buckets.is_empty() {
                    builder = match builder
                        .set_buckets_for_metric(Matcher::Full(m.name.to_owned()), m.buckets)
                    {
                        Ok(builder) => builder,
                        Err(e) => {
                            tracing::warn!(metric = m.name, error = %e, "histogram buckets refused; it is exported as a summary");
                            return None;
                        }
                    };
                }
            }
            match builder.install_recorder() {
                Ok(handle) => {
                    crate::metrics::describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
                    None
                }
            }
        })
        .clone()
}

/// What every route's supervisor shares.
struct Shared {
    connections: Arc<Connections>,
    health: Arc<Health>,
    cancel: CancellationToken,
    secrets: Secrets,
}

/// Starts the operations endpoint and a supervisor per route, and returns at once: routes
/// connect in their supervisors, so a server that cannot be reached delays nothing and a
/// shutdown never waits for a connection attempt. Until a route runs, `/healthz` says it is
/// connecting; a route that fails says why, and is reopened after a backoff.
pub async fn start(plan: Plan) -> Result<Running> {
    let secrets = plan.secrets.clone();
    start_scrubbed(plan)
        .await
        .map_err(|e| secrets.scrub_error(e))
}

async fn start_scrubbed(mut plan: Plan) -> Result<Running> {
    for route in &mut plan.routes {
        route.sink_url = kafka_sink_linger(&route.sink_url);
    }
    let metrics = recorder();
    let health = Arc::new(Health::new(plan.routes.iter().map(|r| r.name.as_str())));
    let cancel = CancellationToken::new();
    let listening = match plan.listen {
        Some(addr) => Some(endpoint::serve(addr, metrics, health.clone(), cancel.clone()).await?),
        None => None,
    };
    let connections = Arc::new(Connections::new(plan.routes.iter().flat_map(|r| {
        [Some(r.source_url.as_str()), Some(r.sink_url.as_str())]
            .into_iter()
            .chain([r.dead_letter.as_ref().map(|(u, _)| u.as_str())])
            .flatten()
    })));
    let shared = Arc::new(Shared {
        connections: connections.clone(),
        health: health.clone(),
        cancel: cancel.clone(),
        secrets: plan.secrets,
    });
    let mut stats = Vec::new();
    let mut tasks = Vec::new();
    for route in plan.routes {
        let route_stats = Arc::new(RouteStats::default());
        stats.push((route.name.clone(), route_stats.clone()));
        tasks.push(tokio::spawn(supervise(route, route_stats, shared.clone())));
    }
    Ok(Running {
        stats,
        listening,
        health,
        tasks,
        cancel,
        connections,
    })
}

/// librdkafka's `linger.ms` for a Kafka sink whose URL does not set `producer.linger.ms`.
/// A route hands its producer a whole batch at once and has batched already (see
/// [`RouteSpec::linger`]); librdkafka's default wait of 5 ms would only add to every event's
/// latency. 1 ms rather than 0 so that the records of one batch, enqueued one by one, still
/// leave in a few produce requests rather than one per record.
pub const KAFKA_SINK_LINGER_MS: u32 = 1;

/// `url` with `producer.linger.ms=`[`KAFKA_SINK_LINGER_MS`] added when it is a Kafka URL
/// without one; any other URL as it is.
pub fn kafka_sink_linger(url: &str) -> String {
    let Ok(parsed) = tributary::parse_url(url) else {
        return url.to_owned();
    };
    if parsed.scheme() != "kafka" || parsed.query_pairs().any(|(k, _)| k == "producer.linger.ms") {
        return url.to_owned();
    }
    let separator = match parsed.query() {
        None => "?",
        Some("") => "",
        Some(_) => "&",
    };
    format!("{url}{separator}producer.linger.ms={KAFKA_SINK_LINGER_MS}")
}

/// Connects the route's backends (or reuses them) and opens it, sinks first. `Err` carries the
/// URLs whose clients should be replaced before the next attempt.
async fn open<'r>(
    route: &'r RoutePlan,
    connections: &Connections,
    report_lag: bool,
) -> std::result::Result<OpenRoute, (Vec<&'r str>, Error)> {
    let connect = |role: &'static str, url: &'r str| async move {
        connections
            .get(url)
            .await
            .map_err(|e| (vec![], e.context(format!("route `{}`: {role}", route.name))))
    };
    let sink = connect("sink", &route.sink_url).await?;
    let dead_letter = match &route.dead_letter {
        Some((url, stream)) => Some((connect("dead-letter sink", url).await?, stream.clone())),
        None => None,
    };
    let source = connect("source", &route.source_url).await?;
    let mut sink_urls = vec![route.sink_url.as_str()];
    sink_urls.extend(route.dead_letter.as_ref().map(|(u, _)| u.as_str()));
    let mut spec = spec(route, source, sink, dead_letter);
    spec.report_lag = report_lag;
    let sinks = route::open_sinks(spec).await.map_err(|e| (sink_urls, e))?;
    sinks
        .open_source()
        .await
        .map_err(|e| (vec![route.source_url.as_str()], e))
}

fn spec(
    route: &RoutePlan,
    source: Arc<dyn Backend>,
    sink: Arc<dyn Backend>,
    dead_letter: Option<(Arc<dyn Backend>, String)>,
) -> RouteSpec {
    let mut spec = RouteSpec::new(
        &route.name,
        source,
        &route.source_stream,
        sink,
        &route.sink_stream,
    );
    spec.group = route.group.clone();
    spec.start = route.start.clone();
    spec.max_batch = route.max_events;
    spec.max_bytes = route.max_bytes;
    spec.linger = route.linger;
    spec.in_flight = route.in_flight;
    spec.retry = route.retry.clone();
    spec.dead_letter = dead_letter;
    spec.keep_key = route.keep_key;
    spec.reset_lineage = route.reset_lineage;
    spec.transform = route.transform.clone();
    spec.source_identity = route.source_identity.clone();
    spec.sink_identity = route.sink_identity.clone();
    if route.traced {
        spec.tracer = Some(crate::telemetry::RouteTracer::global());
    }
    spec.cloudevents = route.cloudevents;
    spec
}

/// How long a route waits before reopening after its `failures`-th consecutive failure:
/// `retry.max_backoff`, doubling each time up to a minute (or `max_backoff` if longer), with
/// the retry jitter, so that a route that cannot open neither hammers its servers nor churns
/// its source's group.
pub fn reopen_delay(retry: &RetryPolicy, failures: u32) -> Duration {
    let ceiling = retry.max_backoff.max(Duration::from_secs(60));
    let policy = RetryPolicy {
        backoff: retry.max_backoff.max(Duration::from_millis(100)),
        max_backoff: ceiling,
        ..retry.clone()
    };
    policy.delay(failures.max(1))
}

/// Runs a route until cancelled: connect and open (sinks first), run; after a failure, report
/// it, replace the clients that failed to open, and try again after [`reopen_delay`]. What
/// the route had not acked is read again from the source.
async fn supervise(route: RoutePlan, stats: Arc<RouteStats>, shared: Arc<Shared>) {
    let Shared {
        connections,
        health,
        cancel,
        secrets,
    } = shared.as_ref();
    let mut failures = 0u32;
    // The broker's lag figures, where the source has them (Kafka), reported from the first
    // moment and whether or not the route runs: a route that cannot open is when the backlog
    // matters most.
    let mut broker_lag: Option<tokio::task::JoinHandle<()>> = None;
    while !cancel.is_cancelled() {
        health.set(&route.name, RouteState::Connecting(Instant::now()));
        let opened = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            opened = async {
                if broker_lag.is_none() {
                    broker_lag = start_broker_lag(&route, connections, &stats).await;
                }
                open(&route, connections, broker_lag.is_none()).await
            } => opened,
        };
        let (reconnect, error) = match opened {
            Ok(open) => {
                failures = 0;
                health.set(&route.name, RouteState::Running);
                match open.run(stats.clone(), cancel.clone()).await {
                    Ok(()) => break,
                    Err(e) => (Vec::new(), e),
                }
            }
            Err(failure) => failure,
        };
        failures = failures.saturating_add(1);
        let error = secrets.scrub_error(error);
        let delay = reopen_delay(&route.retry, failures);
        tracing::error!(route = %route.name, error = %error, failures, retry_in = ?delay, "route failed; reopening after the backoff");
        health.set(&route.name, RouteState::Failing(error.to_string()));
        for url in reconnect {
            connections.forget(url).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => break,
        }
    }
    if let Some(reporter) = broker_lag {
        reporter.abort();
    }
}

/// The part of a shutdown's deadline kept for closing the backends: a quarter, at most 5 s
/// (the default deadline of 30 s drains for 25).
fn close_share(deadline: Duration) -> Duration {
    (deadline / 4).min(Duration::from_secs(5))
}

/// Starts reporting the route's lag from the broker, if its source can give it (see
/// [`route::lag::LagSource::broker`]). `None` if the source cannot, or cannot be reached yet.
async fn start_broker_lag(
    route: &RoutePlan,
    connections: &Connections,
    stats: &Arc<RouteStats>,
) -> Option<tokio::task::JoinHandle<()>> {
    let source = connections.get(&route.source_url).await.ok()?;
    let lag =
        route::lag::LagSource::broker(&source, &route.source_stream, &route.group, &route.start)?;
    Some(route::lag::report_lag(
        route.name.clone(),
        lag,
        stats.clone(),
    ))
}

impl Running {
    /// Stops intake, lets each route finish and ack the batch in hand, closes the backends,
    /// all within `deadline`. Routes still connecting stop at once. `Err` (timeout) if
    /// draining takes longer than its part of `deadline`: the routes still draining are then
    /// stopped before the backends close, and what they had not acked is read again after a
    /// restart.
    pub async fn shutdown(self, deadline: Duration) -> Result<()> {
        self.health.stopping.store(true, Ordering::SeqCst);
        self.cancel.cancel();
        let started = tokio::time::Instant::now();
        let ends = started + deadline;
        // Closing (flushes, the drained batches' commits) keeps a share of the deadline, so a
        // route that cannot drain leaves it time, and the whole stays within the deadline: a
        // supervisor kills at it (Kubernetes' grace period), and a close cut short by the kill
        // loses the commits of what did drain (read again, so duplicates).
        let drain_ends = ends - close_share(deadline);
        let mut tasks = self.tasks;
        let drained =
            tokio::time::timeout_at(drain_ends, futures::future::join_all(tasks.iter_mut())).await;
        if drained.is_err() {
            // A route still draining is stopped before the backends close, not left sending
            // and committing through clients being closed under it. Dropping it drops its
            // deliveries unacked: the source's group hands them out again.
            let undrained: Vec<_> = tasks.into_iter().filter(|t| !t.is_finished()).collect();
            for task in &undrained {
                task.abort();
            }
            let _ = tokio::time::timeout_at(ends, futures::future::join_all(undrained)).await;
        }
        let backends = std::mem::take(&mut *self.connections.all.lock());
        // A backend that cannot reach its server gets what is left of the deadline, not forever.
        let closing = futures::future::join_all(backends.iter().map(|b| b.close()));
        let _ = tokio::time::timeout_at(ends, closing).await;
        match drained {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::timeout(format!(
                "routes still draining after {:?} of the {deadline:?} of daemon.shutdown_timeout were stopped (the rest went to closing the backends); unacked events will be read again on restart",
                drain_ends - started
            ))),
        }
    }

    /// Whether every route has opened once.
    pub fn ready(&self) -> bool {
        self.health.ready.load(Ordering::SeqCst)
    }

    /// Routes currently failing, with their last error.
    pub fn failing(&self) -> HashMap<String, String> {
        self.health.failing()
    }
}

/// One line describing a route, with its URLs as written (`${VAR}` references kept) and
/// redacted.
pub fn describe(route: &RoutePlan) -> String {
    format!(
        "route `{}`: {} `{}` (group `{}`) -> {} `{}`{}{}",
        route.name,
        route.source_shown,
        route.source_stream,
        route.group,
        route.sink_shown,
        route.sink_stream,
        route
            .dead_letter
            .as_ref()
            .zip(route.dead_letter_shown.as_ref())
            .map(|((_, s), shown)| format!(", dead letters to {shown} `{s}`"))
            .unwrap_or_default(),
        route
            .transform
            .as_ref()
            .map(|t| format!(", {}", t.summary()))
            .unwrap_or_default()
    ) + &route
        .cloudevents
        .map(|c| format!(", {}", c.summary()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::kafka_sink_linger;

    #[test]
    fn kafka_sinks_get_a_short_linger_unless_their_url_sets_one() {
        assert_eq!(
            kafka_sink_linger("kafka://h:9092"),
            "kafka://h:9092?producer.linger.ms=1"
        );
        assert_eq!(
            kafka_sink_linger("kafka://h:9092?acks=all"),
            "kafka://h:9092?acks=all&producer.linger.ms=1"
        );
        assert_eq!(
            kafka_sink_linger("kafka://h:9092?producer.linger.ms=20"),
            "kafka://h:9092?producer.linger.ms=20"
        );
        assert_eq!(kafka_sink_linger("memory://x"), "memory://x");
        assert_eq!(kafka_sink_linger("file:///tmp/x"), "file:///tmp/x");
    }
}
