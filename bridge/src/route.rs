//! One replication route: source consumer → sink producer, acking the source only after the
//! sink confirmed (so a crash replays, never loses), batch by batch (so per-key order holds).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util_free::CancelToken;
use tributary::{
    Backend, ConsumerExt, ConsumerOptions, Delivery, Error, ErrorKind, Event, Result, StartPosition,
};

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
    /// How long to wait for more events before sending a partial batch.
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
}

impl RouteSpec {
    /// A route with default batching (500 events, 1 MiB, 5 ms), in-flight limit (1000),
    /// retries (5, from 100 ms to 10 s with 20% jitter) and no dead-letter sink.
    pub fn new(
        name: impl Into<String>,
        source: Arc<dyn Backend>,
        source_stream: impl Into<String>,
        sink: Arc<dyn Backend>,
        sink_stream: impl Into<String>,
    ) -> Self {
        RouteSpec {
            name: name.into(),
            source,
            source_stream: source_stream.into(),
            group: "tributary-bridge".into(),
            start: StartPosition::Earliest,
            sink,
            sink_stream: sink_stream.into(),
            max_batch: 500,
            max_bytes: 1 << 20,
            linger: Duration::from_millis(5),
            in_flight: 1000,
            retry: RetryPolicy::default(),
            dead_letter: None,
            keep_key: true,
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
    /// Events written to the sink and acked at the source.
    pub replicated: AtomicU64,
    /// Payload bytes replicated.
    pub bytes: AtomicU64,
    /// Sink sends that failed and were retried.
    pub retries: AtomicU64,
    /// Events sent to the dead-letter sink.
    pub dead_lettered: AtomicU64,
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

fn with_lineage(spec: &RouteSpec, d: &Delivery) -> Event {
    let mut event = d.event.clone();
    if !spec.keep_key {
        event.key = None;
    }
    event
        .headers
        .insert(lineage::BACKEND, spec.source.scheme().as_bytes().to_vec());
    event
        .headers
        .insert(lineage::STREAM, spec.source_stream.clone().into_bytes());
    if let Some(p) = &d.partition {
        event
            .headers
            .insert(lineage::PARTITION, p.to_string().into_bytes());
    }
    if let Some(p) = &d.position {
        event
            .headers
            .insert(lineage::POSITION, p.to_string().into_bytes());
    }
    event
        .headers
        .insert(lineage::ROUTE, spec.name.clone().into_bytes());
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
            while batch.len() < spec.max_batch && bytes < spec.max_bytes {
                match consumer.receive_timeout(spec.linger).await {
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
            let events: Vec<Event> = batch.iter().map(|d| with_lineage(&spec, d)).collect();
            if let Err(e) = write(
                &spec,
                producer.as_ref(),
                dead_letter.as_ref(),
                events,
                &stats,
                &cancel,
            )
            .await
            {
                metrics::counter!("tributary_bridge_errors_total", &labels).increment(1);
                // Unacked deliveries are nacked on drop: the source keeps them.
                break Err(e.context(format!(
                    "route `{}`: writing to stream `{}`",
                    spec.name, spec.sink_stream
                )));
            }
            stats
                .replicated
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            stats.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            metrics::counter!("tributary_bridge_events_out_total", &labels)
                .increment(batch.len() as u64);
            metrics::counter!("tributary_bridge_bytes_out_total", &labels).increment(bytes as u64);
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
            // Persist the source position now: a crash then replays at most what was in
            // flight, not everything since the backend's last periodic commit.
            if let Err(e) = consumer.commit().await {
                tracing::warn!(route = %spec.name, error = %e, "source commit failed; a crash may replay more");
            }
        };
        let closed_consumer = consumer.close().await;
        let closed_producer = producer.close().await;
        if let Some((dlq, _)) = dead_letter {
            let _ = dlq.close().await;
        }
        result.and(closed_consumer).and(closed_producer)
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

/// Writes a batch to the sink. When the batch as a whole keeps failing, its events are sent
/// one by one, in order, so that one poison event cannot hold back the others: an event the
/// sink still refuses goes to the dead-letter sink with the reason, or, without one, the write
/// fails and the route stops with the batch unacked.
async fn write(
    spec: &RouteSpec,
    producer: &dyn tributary::Producer,
    dead_letter: Option<&(Box<dyn tributary::Producer>, String)>,
    events: Vec<Event>,
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
        let Some((dlq, dlq_stream)) = dead_letter else {
            return Err(error);
        };
        if cancel.is_cancelled() {
            return Err(error);
        }
        let mut dead = event;
        dead.headers
            .insert(dead_letter::REASON, error.to_string().into_bytes());
        dead.headers
            .insert(dead_letter::ROUTE, spec.name.clone().into_bytes());
        dead.headers.insert(
            dead_letter::SINK_STREAM,
            spec.sink_stream.clone().into_bytes(),
        );
        dead.headers
            .insert(dead_letter::ATTEMPTS, attempts.to_string().into_bytes());
        tracing::error!(route = %spec.name, error = %error, dead_letter = %dlq_stream, "event refused by the sink; dead-lettered");
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
    }
    Ok(())
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
