//! The error-context layer: every error that leaves a backend through the traits names the
//! backend, the operation and the stream, set here once instead of at each error site.

use crate::{
    Backend, Capabilities, Consumer, ConsumerOptions, Delivery, Error, Event, Producer, Receipt,
    Result, StreamInfo, StreamSpec,
};
use async_trait::async_trait;
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

/// Wraps `backend` so that every error from it, its producers and its consumers carries the
/// backend's scheme, the operation and the stream ([`Error::backend`], [`Error::operation`],
/// [`Error::stream`]). [`crate::connect`] and [`crate::Registry`] apply it to every backend;
/// call it yourself when you build a backend from its typed config.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tributary::Result<()> {
/// use tributary::local::{LocalBackend, LocalConfig, Storage};
/// let mut config = LocalConfig::new(Storage::Memory);
/// config.auto_create = false;
/// let backend = tributary::backend::stamped(LocalBackend::open(config).await?);
/// let Err(err) = backend.producer("missing").await else { panic!("the stream is missing") };
/// assert_eq!(err.backend(), Some("memory"));
/// assert_eq!(err.operation(), Some("open producer"));
/// assert_eq!(err.stream(), Some("missing"));
/// # Ok(()) }
/// ```
pub fn stamped(backend: impl Backend + 'static) -> Arc<dyn Backend> {
    stamp_arc(Arc::new(backend))
}

/// [`stamped`] for a backend already behind an `Arc`. Stamping twice is harmless: the
/// innermost layer's context wins.
pub fn stamp_arc(backend: Arc<dyn Backend>) -> Arc<dyn Backend> {
    Arc::new(Stamped { inner: backend })
}

/// Stamps an error with `scheme` as its backend (unless it names one already), the operation
/// and the stream.
pub(crate) fn mark<'a>(
    scheme: &'static str,
    operation: &'static str,
    stream: Option<&'a str>,
) -> impl Fn(Error) -> Error + 'a {
    move |e: Error| {
        let e = if e.backend().is_none() {
            e.with_backend(scheme)
        } else {
            e
        };
        e.with_operation(operation, stream)
    }
}

struct Stamped {
    inner: Arc<dyn Backend>,
}

impl std::fmt::Debug for Stamped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait]
impl Backend for Stamped {
    fn scheme(&self) -> &'static str {
        self.inner.scheme()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn producer(&self, stream: &str) -> Result<Box<dyn Producer>> {
        let scheme = self.inner.scheme();
        let inner = self.inner.producer(stream).await.map_err(mark(
            scheme,
            "open producer",
            Some(stream),
        ))?;
        Ok(Box::new(StampedProducer {
            inner,
            scheme,
            stream: stream.to_owned(),
        }))
    }
    async fn consumer(&self, stream: &str, options: ConsumerOptions) -> Result<Box<dyn Consumer>> {
        let scheme = self.inner.scheme();
        let inner = self.inner.consumer(stream, options).await.map_err(mark(
            scheme,
            "open consumer",
            Some(stream),
        ))?;
        Ok(Box::new(StampedConsumer {
            inner,
            scheme,
            stream: stream.to_owned(),
        }))
    }
    async fn create_stream(&self, stream: &str, spec: StreamSpec) -> Result<()> {
        let m = mark(self.inner.scheme(), "create stream", Some(stream));
        self.inner.create_stream(stream, spec).await.map_err(m)
    }
    async fn delete_stream(&self, stream: &str) -> Result<()> {
        let m = mark(self.inner.scheme(), "delete stream", Some(stream));
        self.inner.delete_stream(stream).await.map_err(m)
    }
    async fn list_streams(&self) -> Result<Vec<String>> {
        let m = mark(self.inner.scheme(), "list streams", None);
        self.inner.list_streams().await.map_err(m)
    }
    async fn describe_stream(&self, stream: &str) -> Result<StreamInfo> {
        let m = mark(self.inner.scheme(), "describe stream", Some(stream));
        self.inner.describe_stream(stream).await.map_err(m)
    }
    async fn close(&self) -> Result<()> {
        let m = mark(self.inner.scheme(), "close backend", None);
        self.inner.close().await.map_err(m)
    }
    fn as_any(&self) -> &dyn Any {
        // Downcasting reaches the backend's own type (`as_any().downcast_ref::<KafkaBackend>()`).
        self.inner.as_any()
    }
}

struct StampedProducer {
    inner: Box<dyn Producer>,
    scheme: &'static str,
    stream: String,
}

#[async_trait]
impl Producer for StampedProducer {
    #[allow(unused_mut)] // mutated only with the `otel` feature
    async fn send(&self, mut event: Event) -> Result<Receipt> {
        let m = mark(self.scheme, "send", Some(&self.stream));
        #[cfg(feature = "otel")]
        if let Some(trace) = crate::otel::SendTrace::start(
            self.scheme,
            &self.stream,
            std::slice::from_mut(&mut event),
        ) {
            let send = async { self.inner.send(event).await.map(|r| vec![r]) };
            let mut receipts = crate::otel::traced_send(Some(trace), send)
                .await
                .map_err(m)?;
            return receipts
                .pop()
                .ok_or_else(|| Error::other("the backend returned no receipt"));
        }
        self.inner.send(event).await.map_err(m)
    }
    #[allow(unused_mut)] // mutated only with the `otel` feature
    async fn send_batch(&self, mut events: Vec<Event>) -> Result<Vec<Receipt>> {
        let m = mark(self.scheme, "send batch", Some(&self.stream));
        #[cfg(feature = "otel")]
        if let Some(trace) = crate::otel::SendTrace::start(self.scheme, &self.stream, &mut events) {
            let send = self.inner.send_batch(events);
            return crate::otel::traced_send(Some(trace), send).await.map_err(m);
        }
        self.inner.send_batch(events).await.map_err(m)
    }
    async fn flush(&self) -> Result<()> {
        let m = mark(self.scheme, "flush", Some(&self.stream));
        self.inner.flush().await.map_err(m)
    }
    async fn close(&self) -> Result<()> {
        let m = mark(self.scheme, "close producer", Some(&self.stream));
        self.inner.close().await.map_err(m)
    }
}

struct StampedConsumer {
    inner: Box<dyn Consumer>,
    scheme: &'static str,
    stream: String,
}

#[async_trait]
impl Consumer for StampedConsumer {
    async fn receive(&self) -> Result<Delivery> {
        let m = mark(self.scheme, "receive", Some(&self.stream));
        // A ready delivery without the inner call's boxed future: one allocation per event
        // fewer for a `receive()` loop that keeps up.
        if let Some(ready) = self.inner.try_receive() {
            return ready.map_err(m);
        }
        self.inner.receive().await.map_err(m)
    }
    fn try_receive(&self) -> Option<Result<Delivery>> {
        let m = mark(self.scheme, "receive", Some(&self.stream));
        self.inner.try_receive().map(|ready| ready.map_err(m))
    }
    async fn receive_batch(&self, max: usize, linger: Duration) -> Result<Vec<Delivery>> {
        let m = mark(self.scheme, "receive", Some(&self.stream));
        self.inner.receive_batch(max, linger).await.map_err(m)
    }
    async fn close(&self) -> Result<()> {
        let m = mark(self.scheme, "close consumer", Some(&self.stream));
        self.inner.close().await.map_err(m)
    }
    async fn commit(&self) -> Result<()> {
        let m = mark(self.scheme, "commit", Some(&self.stream));
        self.inner.commit().await.map_err(m)
    }
    fn lag(&self) -> Option<u64> {
        self.inner.lag()
    }
}
