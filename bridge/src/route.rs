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

/// Where a route reads and writes.
#[derive(Clone)]
pub struct RouteSpec {
    /// Route name, written into the lineage header.
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
    /// Largest batch sent to the sink.
    pub max_batch: usize,
    /// How long to wait for more events before sending a partial batch.
    pub linger: Duration,
}

/// Counters a route updates as it runs.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Events written to the sink and acked at the source.
    pub replicated: AtomicU64,
    /// Payload bytes replicated.
    pub bytes: AtomicU64,
    /// Sink sends that failed and were retried.
    pub retries: AtomicU64,
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
                .max_in_flight(spec.max_batch * 2),
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
        let mut batch: Vec<Delivery> = Vec::with_capacity(spec.max_batch);
        let result = loop {
            // The first event of a batch waits for as long as it takes (or until cancelled).
            let first = tokio::select! {
                biased;
                _ = cancel.cancelled() => break Ok(()),
                d = consumer.receive() => d,
            };
            match first {
                Ok(d) => batch.push(d),
                Err(e) if e.kind() == ErrorKind::Closed => break Ok(()),
                Err(e) => break Err(e),
            }
            while batch.len() < spec.max_batch {
                match consumer.receive_timeout(spec.linger).await {
                    Ok(Some(d)) => batch.push(d),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(route = %spec.name, error = %e, "receive failed mid-batch");
                        break;
                    }
                }
            }
            let events: Vec<Event> = batch.iter().map(|d| with_lineage(&spec, d)).collect();
            let bytes: u64 = events.iter().map(|e| e.payload.len() as u64).sum();
            let mut backoff = Duration::from_millis(100);
            loop {
                match producer.send_batch(events.clone()).await {
                    Ok(_) => break,
                    Err(e) if e.is_retryable() && !cancel.is_cancelled() => {
                        stats.retries.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(route = %spec.name, error = %e, ?backoff, "sink send failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                    Err(e) => {
                        // Unacked deliveries are nacked on drop: the source keeps them.
                        return Err(e.context(format!(
                            "route `{}`: writing to stream `{}`",
                            spec.name, spec.sink_stream
                        )));
                    }
                }
            }
            stats
                .replicated
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            stats.bytes.fetch_add(bytes, Ordering::Relaxed);
            for d in batch.drain(..) {
                d.ack();
            }
        };
        let closed_consumer = consumer.close().await;
        let closed_producer = producer.close().await;
        result.and(closed_consumer).and(closed_producer)
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
    Ok(())
}
