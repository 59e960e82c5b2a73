//! The traits every backend implements: [`Backend`], [`Producer`] and [`Consumer`].
//!
//! All three are object-safe and used as `Box<dyn …>` / `Arc<dyn …>`, so an application picks
//! its backend at run time from a URL. Every method is required: wrappers (metrics, retry) must
//! forward each one deliberately.

use crate::{Capabilities, Event, PartitionId, Position, Receipt, Result, StartPosition};
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How a delivery was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Processed; never deliver again to this group.
    Ack,
    /// Not processed; deliver again soon to this group.
    Nack,
}

/// The backend side of one delivery's acknowledgement. Called at most once.
pub trait Acknowledge: Send + 'static {
    /// Records the outcome. Must not block: backends hand the outcome to their own machinery.
    fn settle(self: Box<Self>, outcome: Outcome);
}

/// Settles one delivery. Dropping it without [`ack`](AckHandle::ack) counts as a nack, so a
/// bug that loses a delivery causes a redelivery, never a silent loss.
#[must_use = "dropping an AckHandle nacks the delivery"]
pub struct AckHandle(Option<Box<dyn Acknowledge>>);

impl AckHandle {
    /// Wraps a backend's acknowledger.
    pub fn new(inner: Box<dyn Acknowledge>) -> Self {
        AckHandle(Some(inner))
    }
    /// Marks the delivery processed.
    pub fn ack(mut self) {
        if let Some(inner) = self.0.take() {
            inner.settle(Outcome::Ack);
        }
    }
    /// Asks for redelivery.
    pub fn nack(mut self) {
        if let Some(inner) = self.0.take() {
            inner.settle(Outcome::Nack);
        }
    }
    /// Settles with `outcome`.
    pub fn settle(self, outcome: Outcome) {
        match outcome {
            Outcome::Ack => self.ack(),
            Outcome::Nack => self.nack(),
        }
    }
}

impl Drop for AckHandle {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.settle(Outcome::Nack);
        }
    }
}

impl fmt::Debug for AckHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "AckHandle(pending)"
        } else {
            "AckHandle(settled)"
        })
    }
}

/// One received event with where it came from and how to settle it.
#[derive(Debug)]
pub struct Delivery {
    /// The event.
    pub event: Event,
    /// The partition it was read from, where the backend has partitions.
    pub partition: Option<PartitionId>,
    /// Its position in that partition, where the backend has positions.
    pub position: Option<Position>,
    /// How many times it has been delivered to this group, counting this one, where known.
    pub attempt: Option<u32>,
    /// Settles the delivery; dropped = nacked.
    pub handle: AckHandle,
}

impl Delivery {
    /// Marks the delivery processed.
    pub fn ack(self) {
        self.handle.ack()
    }
    /// Asks for redelivery.
    pub fn nack(self) {
        self.handle.nack()
    }
}

/// Sends events to one stream.
///
/// # Behavior
/// - `send` returns once the backend has stored the event (per its durability settings) and
///   reports where, when it can. Concurrent sends are allowed and are batched by the backend.
/// - Events with the same key keep their send order when sent one after another (each send
///   awaited, or within one [`send_batch`](Producer::send_batch)).
/// - After [`close`](Producer::close) every call fails with [`crate::ErrorKind::Closed`];
///   closing twice is harmless.
#[async_trait]
pub trait Producer: Send + Sync {
    /// Sends one event.
    async fn send(&self, event: Event) -> Result<Receipt>;
    /// Sends events in order; on success returns one receipt per event. On error, some prefix of
    /// the batch may have been stored.
    async fn send_batch(&self, events: Vec<Event>) -> Result<Vec<Receipt>>;
    /// Waits until every event handed to this producer so far is stored.
    async fn flush(&self) -> Result<()>;
    /// Flushes, then releases resources.
    async fn close(&self) -> Result<()>;
}

/// Receives events of one stream for one group.
///
/// # Behavior
/// - [`receive`](Consumer::receive) is cancel-safe: dropping the future loses no event.
/// - Each delivery must be acked or nacked; drop means nack. Unacked deliveries are redelivered
///   to the group after the consumer closes or its process dies.
/// - After [`close`](Consumer::close) `receive` fails with [`crate::ErrorKind::Closed`];
///   closing twice is harmless.
#[async_trait]
pub trait Consumer: Send + Sync {
    /// The next delivery; waits until one is available.
    async fn receive(&self) -> Result<Delivery>;
    /// Stops receiving, commits acked progress, and makes unsettled deliveries available to the
    /// rest of the group.
    async fn close(&self) -> Result<()>;

    /// Persists the progress of every delivery acked so far, now, rather than at the backend's
    /// next periodic commit, so that a crash replays only what was not acked. Backends whose
    /// acks are individually durable (Pub/Sub) need nothing and keep this default.
    async fn commit(&self) -> Result<()> {
        Ok(())
    }

    /// Events on this consumer's partitions that its group has not yet acked, as last seen
    /// (for a log: the end offset minus the committed position). Cheap: it reads what the
    /// consumer already knows and never calls the server. `None` where the backend cannot tell,
    /// such as Pub/Sub, whose backlog is known only to the server's monitoring.
    fn lag(&self) -> Option<u64> {
        None
    }
}

/// Extra conveniences on every consumer.
#[async_trait]
pub trait ConsumerExt: Consumer {
    /// Like [`Consumer::receive`] but gives up after `timeout` with `Ok(None)`.
    async fn receive_timeout(&self, timeout: Duration) -> Result<Option<Delivery>> {
        match tokio::time::timeout(timeout, self.receive()).await {
            Ok(result) => result.map(Some),
            Err(_) => Ok(None),
        }
    }
}

impl<T: Consumer + ?Sized> ConsumerExt for T {}

/// Turns a consumer into a `futures::Stream` of deliveries that ends when the consumer closes.
///
/// ```no_run
/// # async fn demo(consumer: std::sync::Arc<dyn tributary::Consumer>) {
/// use futures::StreamExt;
/// let mut deliveries = tributary::deliveries(consumer);
/// while let Some(delivery) = deliveries.next().await {
///     let delivery = delivery.expect("receive failed");
///     println!("{:?}", delivery.event.payload);
///     delivery.ack();
/// }
/// # }
/// ```
pub fn deliveries(consumer: Arc<dyn Consumer>) -> BoxStream<'static, Result<Delivery>> {
    Box::pin(futures::stream::unfold(consumer, |consumer| async move {
        match consumer.receive().await {
            Err(e) if e.kind() == crate::ErrorKind::Closed => None,
            result => Some((result, consumer)),
        }
    }))
}

/// Options for a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerOptions {
    /// The group under which consumers share work and progress.
    pub group: String,
    /// Where to start when the group has no checkpoint.
    pub start: StartPosition,
    /// Most deliveries handed out and not yet settled; `receive` waits beyond it (backpressure).
    pub max_in_flight: usize,
}

impl ConsumerOptions {
    /// A consumer of `group` starting at [`StartPosition::Latest`].
    pub fn new(group: impl Into<String>) -> Self {
        ConsumerOptions {
            group: group.into(),
            start: StartPosition::Latest,
            max_in_flight: 10_000,
        }
    }
    /// Sets where a group without a checkpoint starts.
    pub fn start(mut self, start: StartPosition) -> Self {
        self.start = start;
        self
    }
    /// Sets the in-flight limit (at least 1).
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }
}

/// How to create a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamSpec {
    /// Number of partitions (at least 1).
    pub partitions: u32,
}

impl StreamSpec {
    /// A stream with `partitions` partitions.
    pub fn with_partitions(partitions: u32) -> Self {
        StreamSpec { partitions }
    }
}

impl Default for StreamSpec {
    fn default() -> Self {
        StreamSpec { partitions: 1 }
    }
}

/// One partition of a described stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Its id.
    pub id: PartitionId,
    /// Position of the oldest retained event, if any.
    pub earliest: Option<Position>,
    /// Position the next event will get, where the backend knows it.
    pub next: Option<Position>,
}

/// What [`Backend::describe_stream`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Stream name.
    pub name: String,
    /// Partitions in id order (empty for backends without partitions).
    pub partitions: Vec<PartitionInfo>,
}

/// A connection to one backend: opens producers and consumers and administers streams.
///
/// # Behavior
/// - Stream names are validated by the backend; an invalid name is a [`crate::ErrorKind::Config`]
///   error naming the rule it breaks.
/// - A missing stream gives [`crate::ErrorKind::NotFound`] unless the backend declares
///   [`crate::Lifecycle::auto_create`].
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// The URL scheme this backend answers to (`"memory"`, `"file"`, `"kafka"`…).
    fn scheme(&self) -> &'static str;
    /// What this backend, as configured, guarantees.
    fn capabilities(&self) -> Capabilities;
    /// Opens a producer for `stream`.
    async fn producer(&self, stream: &str) -> Result<Box<dyn Producer>>;
    /// Opens a consumer of `stream`. Returns once the group's start position is fixed: an event
    /// sent after this returns is seen by a `Latest` consumer (the conformance suite relies on it).
    async fn consumer(&self, stream: &str, options: ConsumerOptions) -> Result<Box<dyn Consumer>>;
    /// Creates a stream; [`crate::ErrorKind::AlreadyExists`] if it exists.
    async fn create_stream(&self, stream: &str, spec: StreamSpec) -> Result<()>;
    /// Deletes a stream and its data.
    async fn delete_stream(&self, stream: &str) -> Result<()>;
    /// Names of all streams, sorted.
    async fn list_streams(&self) -> Result<Vec<String>>;
    /// Partitions and positions of a stream.
    async fn describe_stream(&self, stream: &str) -> Result<StreamInfo>;
    /// Closes the connection; later calls fail with [`crate::ErrorKind::Closed`].
    async fn close(&self) -> Result<()>;
    /// The native client, for what the model does not cover (downcast to the backend's type).
    fn as_any(&self) -> &dyn Any;
}
