//! One replication route: source consumer → sink producer, acking the source only after the
//! sink confirmed (so a crash replays, never loses), batch by batch (so per-key order holds).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util_free::CancelToken;
use tributary::{
    Backend, ConsumerExt, ConsumerOptions, Delivery, Error, ErrorKind, Event, Result, StartPosition,
};

use crate::transform::{Origin, Outcome, Transform};

/// Lineage headers added to every replicated event.
pub mod lineage {
    /// Scheme of the backend the event was read from.
    pub const BACKEND: &str = "tributary-origin-backend";
    /// Stream it was read from.
    pub const STREAM: &str = "tributary-origin-stream";
    /// Partition it was read from.
    pub const PARTITION: &str = "tributary-origin-partition";
    /// Position it was read at.
    pub const POSITION: &str = "tributary-origin-position";
    /// Route that copied it.
    pub const ROUTE: &str = "tributary-route";
    /// Every stream the event has been replicated from, oldest first, comma-separated
    /// [`super::stream_identity`]s. Unlike the headers above it is extended, not replaced, at
    /// each hop: a route drops an event that has already been in its sink stream, which is what
    /// stops bidirectional (or longer circular) replication from looping.
    pub const PATH: &str = "tributary-path";

    /// Whether `event` has already been in the stream `identity`.
    pub fn visited(event: &tributary::Event, identity: &str) -> bool {
        event.headers.get(PATH).is_some_and(|path| {
            path.split(|b| *b == b',')
                .any(|hop| hop == identity.as_bytes())
        })
    }
}

/// The name of a stream that stays the same wherever it is reached from: `cluster` (when the
/// configuration names one, because the same cluster may be reached by different addresses)
/// or the URL's scheme, address and path, without credentials or options; then `/stream`.
/// Commas are escaped so identities can be listed in [`lineage::PATH`].
pub fn stream_identity(url: &str, cluster: Option<&str>, stream: &str) -> String {
    let place = match cluster {
        Some(cluster) => cluster.to_string(),
        None => match tributary::parse_url(url) {
            Ok(u) => {
                let mut place = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
                if let Some(port) = u.port() {
                    place.push_str(&format!(":{port}"));
                }
                place.push_str(u.path().trim_end_matches('/'));
                place
            }
            Err(_) => url.to_string(),
        },
    };
    format!("{place}/{stream}").replace(',', "%2C")
}

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
    /// How long a batch's first event waits for more before a partial batch is sent.
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
}

impl RouteSpec {
    /// A route with default batching (2000 events, 1 MiB, 5 ms), in-flight limit (4000),
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
            linger: Duration::from_millis(5),
            in_flight: 4000,
            retry: RetryPolicy::default(),
            dead_letter: None,
            keep_key: true,
            transform: None,
            source_identity,
            sink_identity,
        }
    }
}

/// Retries of a failed sink write: exponential backoff with jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per write, the first included.
    pub attempts: u32,
    /// Backoff after the first failure; doubles each time.
    pub backoff: Duration,
    /// Backoff ceiling.
    pub max_backoff: Duration,
    /// Random spread of each backoff, 0 to 1 (0.2: ±20%).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponential = self
            .backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let base = exponential.min(self.max_backoff).as_secs_f64();
        // Spread retries of many routes so a recovering sink is not hit in lockstep.
        let spread = 1.0 + self.jitter * (2.0 * unit_random() - 1.0);
        Duration::from_secs_f64((base * spread).max(0.0))
    }
}

/// A number in [0, 1) that differs call to call; statistical quality is not needed for jitter.
fn unit_random() -> f64 {
    use std::sync::atomic::AtomicU64;
    static STATE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mut x = STATE.fetch_add(nanos | 1, Ordering::Relaxed) ^ nanos.rotate_left(29);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Headers on an event sent to the dead-letter sink.
pub mod dead_letter {
    /// Why the sink refused it (the last error).
    pub const REASON: &str = "tributary-dlq-reason";
    /// Route that gave up.
    pub const ROUTE: &str = "tributary-dlq-route";
    /// The stream it was meant for.
    pub const SINK_STREAM: &str = "tributary-dlq-sink-stream";
    /// Attempts made.
    pub const ATTEMPTS: &str = "tributary-dlq-attempts";
}

/// Counters a route updates as it runs.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Events taken from the source (replicated or still in hand).
    pub received: AtomicU64,
    /// Events written to the sink and acked at the source (not counting dead-lettered ones).
    pub replicated: AtomicU64,
    /// Payload bytes replicated.
    pub bytes: AtomicU64,
    /// Sink sends that failed and were retried.
    pub retries: AtomicU64,
    /// Events sent to the dead-letter sink.
    pub dead_lettered: AtomicU64,
    /// Events the filter dropped (acked at the source, not replicated).
    pub filtered: AtomicU64,
    /// Events not copied because they had already been in the sink stream (loop prevention).
    pub looped: AtomicU64,
    /// The source's lag as last reported, plus one; 0 while unknown. Read it with
    /// [`RouteStats::lag`].
    lag_plus_one: AtomicU64,
}

impl RouteStats {
    /// Events at the source the route's group has not acked yet, where the source can tell
    /// (see [`tributary::Consumer::lag`]); refreshed every second, even while the sink stalls.
    pub fn lag(&self) -> Option<u64> {
        self.lag_plus_one.load(Ordering::Relaxed).checked_sub(1)
    }
}

/// The counters on one line, for logs and diagnostics:
/// `received 10 replicated 8 retries 0 dead-lettered 0 filtered 2 looped 0 lag 0`.
impl std::fmt::Display for RouteStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "received {} replicated {} retries {} dead-lettered {} filtered {} looped {} lag ",
            load(&self.received),
            load(&self.replicated),
            load(&self.retries),
            load(&self.dead_lettered),
            load(&self.filtered),
            load(&self.looped),
        )?;
        match self.lag() {
            Some(lag) => write!(f, "{lag}"),
            None => f.write_str("unknown"),
        }
    }
}

/// How often a route publishes its source's lag.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// How long a route waits for the previous batch's source commit before replicating on
/// without it. Healthy commits take milliseconds; a source that takes longer is reported.
const COMMIT_PATIENCE: Duration = Duration::from_secs(5);

/// Publishes the source's lag every [`LAG_EVERY`] until dropped, from its own task so that a
/// stalled sink (when the lag matters most) does not freeze the figure. The first figure goes
/// out as the route opens; see [`crate::source_lag`] for what it counts.
fn report_lag(
    spec: &RouteSpec,
    consumer: Arc<dyn tributary::Consumer>,
    stats: Arc<RouteStats>,
) -> tokio::task::JoinHandle<()> {
    let name = spec.name.clone();
    let (source, stream, group) = (
        spec.source.clone(),
        spec.source_stream.clone(),
        spec.group.clone(),
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LAG_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let lag =
                crate::source_lag::source_lag(&source, &stream, &group, consumer.as_ref()).await;
            if let Some(lag) = lag {
                stats
                    .lag_plus_one
                    .store(lag.saturating_add(1), Ordering::Relaxed);
                metrics::gauge!("tributary_bridge_source_lag_events", "route" => name.clone())
                    .set(lag as f64);
            }
        }
    })
}

/// Small cancellation flag shared by the CLI and routes (no extra dependency needed).
pub mod tokio_util_free {
    use std::sync::Arc;
    use tokio::sync::watch;

    /// Cancels everything that holds a clone when [`CancelToken::cancel`] is called.
    #[derive(Clone, Debug)]
    pub struct CancelToken(Arc<watch::Sender<bool>>);

    impl Default for CancelToken {
        fn default() -> Self {
            CancelToken(Arc::new(watch::channel(false).0))
        }
    }

    impl CancelToken {
        /// Requests cancellation.
        pub fn cancel(&self) {
            self.0.send_replace(true);
        }
        /// Whether cancellation was requested.
        pub fn is_cancelled(&self) -> bool {
            *self.0.borrow()
        }
        /// Completes once cancellation is requested.
        pub async fn cancelled(&self) {
            let mut rx = self.0.subscribe();
            let _ = rx.wait_for(|c| *c).await;
        }
    }
}

/// The lineage values that are the same for every event of a route, made once per route
/// rather than allocated again for every event.
struct RouteLineage {
    backend: bytes::Bytes,
    stream: bytes::Bytes,
    route: bytes::Bytes,
    source_identity: bytes::Bytes,
}

impl RouteLineage {
    fn new(spec: &RouteSpec) -> Self {
        RouteLineage {
            backend: bytes::Bytes::from_static(spec.source.scheme().as_bytes()),
            stream: bytes::Bytes::from(spec.source_stream.clone()),
            route: bytes::Bytes::from(spec.name.clone()),
            source_identity: bytes::Bytes::from(spec.source_identity.clone()),
        }
    }
}

fn with_lineage(keep_key: bool, fixed: &RouteLineage, d: &Delivery, mut event: Event) -> Event {
    if !keep_key {
        event.key = None;
    }
    let headers = &mut event.headers;
    headers.insert(lineage::BACKEND, fixed.backend.clone());
    headers.insert(lineage::STREAM, fixed.stream.clone());
    if let Some(p) = &d.partition {
        headers.insert(lineage::PARTITION, p.to_string());
    }
    if let Some(p) = &d.position {
        headers.insert(lineage::POSITION, p.to_string());
    }
    headers.insert(lineage::ROUTE, fixed.route.clone());
    let path = match d.event.headers.get(lineage::PATH) {
        Some(path) if !path.is_empty() => {
            let mut extended = Vec::with_capacity(path.len() + 1 + fixed.source_identity.len());
            extended.extend_from_slice(path);
            extended.push(b',');
            extended.extend_from_slice(&fixed.source_identity);
            bytes::Bytes::from(extended)
        }
        _ => fixed.source_identity.clone(),
    };
    headers.insert(lineage::PATH, path);
    event
}

/// A route whose consumer and producer are open: its start position is fixed.
pub struct OpenRoute {
    spec: RouteSpec,
    consumer: Box<dyn tributary::Consumer>,
    producer: Box<dyn tributary::Producer>,
}

/// Opens the route's consumer and producer.
pub async fn open(spec: RouteSpec) -> Result<OpenRoute> {
    check(&spec)?;
    let consumer = spec
        .source
        .consumer(
            &spec.source_stream,
            ConsumerOptions::new(spec.group.clone())
                .start(spec.start.clone())
                .max_in_flight(spec.in_flight.max(spec.max_batch)),
        )
        .await?;
    let producer = spec.sink.producer(&spec.sink_stream).await?;
    Ok(OpenRoute {
        spec,
        consumer,
        producer,
    })
}

/// Opens and runs a route until `cancel` fires.
pub async fn run_route(spec: RouteSpec, stats: Arc<RouteStats>, cancel: CancelToken) -> Result<()> {
    open(spec).await?.run(stats, cancel).await
}

impl OpenRoute {
    /// Runs until `cancel` fires; then finishes the batch in hand and returns.
    pub async fn run(self, stats: Arc<RouteStats>, cancel: CancelToken) -> Result<()> {
        let OpenRoute {
            spec,
            consumer,
            producer,
        } = self;
        let dead_letter = match &spec.dead_letter {
            Some((backend, stream)) => Some((backend.producer(stream).await?, stream.clone())),
            None => None,
        };
        let labels = [("route", spec.name.clone())];
        let consumer: Arc<dyn tributary::Consumer> = Arc::from(consumer);
        let lag_reporter = report_lag(&spec, consumer.clone(), stats.clone());
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
            metrics::counter!("tributary_bridge_events_in_total", &labels)
                .increment(batch.len() as u64);
            metrics::counter!("tributary_bridge_bytes_in_total", &labels).increment(bytes as u64);
            // Deliveries are not `Sync`: the batch is borrowed only by the synchronous pass.
            let transformed = transform_batch(&spec, &fixed_lineage, &batch, &stats);
            let groups =
                match prepare(&spec, transformed, dead_letter.as_ref(), &stats, &cancel).await {
                    Ok(groups) => groups,
                    Err(e) => {
                        metrics::counter!("tributary_bridge_errors_total", &labels).increment(1);
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
                        write(
                            &spec,
                            target,
                            dead_letter.as_ref(),
                            events,
                            stream_name,
                            &stats,
                            &cancel,
                        )
                        .await
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
                metrics::counter!("tributary_bridge_errors_total", &labels).increment(1);
                // Unacked deliveries are nacked on drop: the source keeps them.
                break Err(e);
            }
            let dead = stats.dead_lettered.load(Ordering::Relaxed) - dead_before;
            stats
                .replicated
                .fetch_add(written.saturating_sub(dead), Ordering::Relaxed);
            stats.bytes.fetch_add(written_bytes, Ordering::Relaxed);
            metrics::counter!("tributary_bridge_events_out_total", &labels)
                .increment(written.saturating_sub(dead));
            metrics::counter!("tributary_bridge_bytes_out_total", &labels).increment(written_bytes);
            metrics::histogram!("tributary_bridge_batch_seconds", &labels)
                .record(batch_started.elapsed().as_secs_f64());
            let now = tributary::Timestamp::now().as_millis();
            for d in batch.drain(..) {
                // From the event's own time to the sink's confirmation, where it has one.
                if let Some(t) = d.event.timestamp {
                    let latency = (now - t.as_millis()).max(0) as f64 / 1000.0;
                    metrics::histogram!("tributary_bridge_replication_latency_seconds", &labels)
                        .record(latency);
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

/// Sends with retries; `Err` carries the last error once attempts are used up, or at once for
/// a permanent error, or when cancelled between attempts.
async fn send_with_retries(
    spec: &RouteSpec,
    producer: &dyn tributary::Producer,
    events: &[Event],
    stats: &RouteStats,
    cancel: &CancelToken,
) -> std::result::Result<(), (Error, u32)> {
    let labels = [("route", spec.name.clone())];
    let mut attempt = 1;
    loop {
        match producer.send_batch(events.to_vec()).await {
            Ok(_) => return Ok(()),
            Err(e)
                if e.is_retryable() && attempt < spec.retry.attempts && !cancel.is_cancelled() =>
            {
                let delay = spec.retry.delay(attempt);
                stats.retries.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tributary_bridge_retries_total", &labels).increment(1);
                tracing::warn!(route = %spec.name, error = %e, attempt, ?delay, "sink write failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => return Err((e, attempt)),
                }
                attempt += 1;
            }
            Err(e) => return Err((e, attempt)),
        }
    }
}

/// Writes a batch to the sink stream `stream`. When the batch as a whole keeps failing, its
/// events are sent one by one, in order, so that one poison event cannot hold back the others:
/// an event the sink still refuses goes to the dead-letter sink with the reason, or, without
/// one, the write fails and the route stops with the batch unacked.
async fn write(
    spec: &RouteSpec,
    producer: &dyn tributary::Producer,
    dead_letter: Option<&(Box<dyn tributary::Producer>, String)>,
    events: Vec<Event>,
    stream: &str,
    stats: &RouteStats,
    cancel: &CancelToken,
) -> Result<()> {
    let (error, attempts) = match send_with_retries(spec, producer, &events, stats, cancel).await {
        Ok(()) => return Ok(()),
        Err(failure) => failure,
    };
    if cancel.is_cancelled() || events.len() == 1 && dead_letter.is_none() {
        return Err(error);
    }
    tracing::warn!(route = %spec.name, error = %error, attempts, events = events.len(), "batch refused; sending its events one by one");
    for event in events {
        let one = std::slice::from_ref(&event);
        let Err((error, attempts)) = send_with_retries(spec, producer, one, stats, cancel).await
        else {
            continue;
        };
        let Some(dlq) = dead_letter else {
            return Err(error);
        };
        if cancel.is_cancelled() {
            return Err(error);
        }
        send_to_dead_letter(spec, dlq, event, &error, attempts, stream, stats, cancel).await?;
    }
    Ok(())
}

/// Sends `event` to the dead-letter sink, with why, where it was going and how often it was
/// tried in headers.
#[allow(clippy::too_many_arguments)]
async fn send_to_dead_letter(
    spec: &RouteSpec,
    (dlq, dlq_stream): &(Box<dyn tributary::Producer>, String),
    mut dead: Event,
    error: &Error,
    attempts: u32,
    meant_for: &str,
    stats: &RouteStats,
    cancel: &CancelToken,
) -> Result<()> {
    dead.headers
        .insert(dead_letter::REASON, error.to_string().into_bytes());
    dead.headers
        .insert(dead_letter::ROUTE, spec.name.clone().into_bytes());
    dead.headers
        .insert(dead_letter::SINK_STREAM, meant_for.as_bytes().to_vec());
    dead.headers
        .insert(dead_letter::ATTEMPTS, attempts.to_string().into_bytes());
    tracing::error!(route = %spec.name, error = %error, dead_letter = %dlq_stream, "event refused; dead-lettered");
    send_with_retries(
        spec,
        dlq.as_ref(),
        std::slice::from_ref(&dead),
        stats,
        cancel,
    )
    .await
    .map_err(|(e, _)| {
        e.context(format!(
            "dead-letter stream `{dlq_stream}` refused an event too"
        ))
    })?;
    stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("tributary_bridge_dead_lettered_total", "route" => spec.name.clone())
        .increment(1);
    Ok(())
}

/// Events of a batch grouped by sink stream (`None`: the route's own).
type Groups = Vec<(Option<String>, Vec<Event>)>;

/// Dead-letters the events the transform failed on and passes the groups on; without a
/// dead-letter sink, the first failure stops the route (the source keeps the batch).
async fn prepare(
    spec: &RouteSpec,
    (groups, failed): (Groups, Vec<(Event, Error)>),
    dead_letter: Option<&(Box<dyn tributary::Producer>, String)>,
    stats: &RouteStats,
    cancel: &CancelToken,
) -> Result<Groups> {
    for (event, error) in failed {
        let Some(dlq) = dead_letter else {
            return Err(error);
        };
        send_to_dead_letter(
            spec,
            dlq,
            event,
            &error,
            0,
            &spec.sink_stream,
            stats,
            cancel,
        )
        .await?;
    }
    Ok(groups)
}

/// Applies loop prevention, the filter and the transform to a batch, and groups what is left
/// by sink stream, keeping the batch order inside each group (so per-key order holds in every
/// stream). Also returns the events the transform failed on, with the error.
fn transform_batch(
    spec: &RouteSpec,
    fixed: &RouteLineage,
    batch: &[Delivery],
    stats: &RouteStats,
) -> (Groups, Vec<(Event, Error)>) {
    let mut groups: Groups = Vec::new();
    let mut failed = Vec::new();
    for d in batch {
        if lineage::visited(&d.event, &spec.sink_identity) {
            stats.looped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("tributary_bridge_loop_dropped_total", "route" => spec.name.clone())
                .increment(1);
            continue;
        }
        let (stream, event) = match &spec.transform {
            None => (None, d.event.clone()),
            Some(transform) => {
                let partition = d.partition.as_ref().map(|p| p.to_string());
                let position = d.position.as_ref().map(|p| p.to_string());
                let origin = Origin {
                    backend: spec.source.scheme(),
                    stream: &spec.source_stream,
                    partition: partition.as_deref(),
                    position: position.as_deref(),
                };
                match transform.apply(&origin, d.event.clone()) {
                    Ok(Outcome::Keep { event, stream }) => {
                        (stream.filter(|s| *s != spec.sink_stream), event)
                    }
                    Ok(Outcome::Drop) => {
                        stats.filtered.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("tributary_bridge_filtered_total", "route" => spec.name.clone())
                            .increment(1);
                        continue;
                    }
                    Err(error) => {
                        failed.push((d.event.clone(), error));
                        continue;
                    }
                }
            }
        };
        let event = with_lineage(spec.keep_key, fixed, d, event);
        match groups.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, group)) => group.push(event),
            None => groups.push((stream, vec![event])),
        }
    }
    (groups, failed)
}

/// Producers for the sink streams a transform chose, beyond the route's own: opened on first
/// use, and bounded, because a `stream` expression could name any number of streams.
#[derive(Default)]
struct OtherSinks {
    /// Least recently used first.
    open: Vec<(String, Box<dyn tributary::Producer>)>,
}

impl OtherSinks {
    const MAX_OPEN: usize = 64;

    async fn get(
        &mut self,
        sink: &Arc<dyn Backend>,
        stream: &str,
    ) -> Result<&dyn tributary::Producer> {
        if let Some(i) = self.open.iter().position(|(s, _)| s == stream) {
            let entry = self.open.remove(i);
            self.open.push(entry);
        } else {
            if self.open.len() >= Self::MAX_OPEN {
                let (_, oldest) = self.open.remove(0);
                let _ = oldest.close().await;
            }
            let producer = sink.producer(stream).await?;
            self.open.push((stream.to_string(), producer));
        }
        match self.open.last() {
            Some((_, producer)) => Ok(producer.as_ref()),
            None => Err(Error::other("no producer was opened")),
        }
    }

    async fn close(self) {
        for (_, producer) in self.open {
            let _ = producer.close().await;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_print_on_one_line() {
        let stats = RouteStats::default();
        stats.received.store(10, Ordering::Relaxed);
        stats.replicated.store(8, Ordering::Relaxed);
        stats.filtered.store(2, Ordering::Relaxed);
        assert_eq!(
            stats.to_string(),
            "received 10 replicated 8 retries 0 dead-lettered 0 filtered 2 looped 0 lag unknown"
        );
        stats.lag_plus_one.store(5, Ordering::Relaxed);
        assert!(stats.to_string().ends_with("lag 4"), "{stats}");
    }
}
