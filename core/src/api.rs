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
///
/// Only `Send` is required: [`AckHandle`] never lends the acknowledger out by reference, so a
/// [`Delivery`] is `Sync` whatever the backend's acknowledger is.
pub trait Acknowledge: Send + 'static {
    /// Records the outcome. Must not block: backends hand the outcome to their own machinery.
    fn settle(self: Box<Self>, outcome: Outcome);
}

/// The backend side of many deliveries' acknowledgements: one value (per consumer, partition or
/// group) that each delivery's [`AckHandle`] points to with an [`AckToken`] naming the delivery.
/// A handle made with [`AckHandle::shared`] costs no allocation, where [`AckHandle::new`] costs
/// one per delivery.
pub trait SharedAcknowledge: Send + Sync + 'static {
    /// Records the outcome of the delivery `token` names; called at most once per handle. Must
    /// not block: backends hand the outcome to their own machinery.
    fn settle_delivery(&self, token: AckToken, outcome: Outcome);
}

/// Which delivery a [`SharedAcknowledge`] settles: three numbers whose meaning is the
/// backend's (a partition's generation, a ticket, a delivery id, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AckToken(pub [u64; 3]);

enum Acknowledger {
    Boxed(Box<dyn Acknowledge>),
    Shared(Arc<dyn SharedAcknowledge>, AckToken),
}

impl Acknowledger {
    fn settle(self, outcome: Outcome) {
        match self {
            Acknowledger::Boxed(inner) => inner.settle(outcome),
            Acknowledger::Shared(target, token) => target.settle_delivery(token, outcome),
        }
    }
}

/// Settles one delivery. Dropping it without [`ack`](AckHandle::ack) counts as a nack, so a
/// bug that loses a delivery causes a redelivery, never a silent loss.
#[must_use = "dropping an AckHandle nacks the delivery"]
// `SyncWrapper` makes the handle `Sync` without asking backends for `Sync` acknowledgers: the
// acknowledger is only ever reached through `self` by value, never through `&self`.
pub struct AckHandle(sync_wrapper::SyncWrapper<Option<Acknowledger>>);

impl AckHandle {
    /// Wraps a backend's acknowledger.
    pub fn new(inner: Box<dyn Acknowledge>) -> Self {
        AckHandle(sync_wrapper::SyncWrapper::new(Some(Acknowledger::Boxed(
            inner,
        ))))
    }
    /// A handle that settles through `target` with `token`: no allocation per delivery.
    pub fn shared(target: Arc<dyn SharedAcknowledge>, token: AckToken) -> Self {
        AckHandle(sync_wrapper::SyncWrapper::new(Some(Acknowledger::Shared(
            target, token,
        ))))
    }
    /// Marks the delivery processed.
    pub fn ack(self) {
        self.settle_now(Outcome::Ack);
    }
    /// Asks for redelivery.
    pub fn nack(self) {
        self.settle_now(Outcome::Nack);
    }
    /// Settles and forgets the handle: once its acknowledger is taken out nothing is left to
    /// drop, and skipping `Drop` (a call that finds it empty) is about 25 instructions per ack.
    fn settle_now(self, outcome: Outcome) {
        let mut this = std::mem::ManuallyDrop::new(self);
        if let Some(inner) = this.0.get_mut().take() {
            inner.settle(outcome);
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
        if let Some(inner) = self.0.get_mut().take() {
            inner.settle(Outcome::Nack);
        }
    }
}

impl fmt::Debug for AckHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Settling consumes the handle, so one that can still be seen is pending.
        f.write_str("AckHandle(pending)")
    }
}

/// One received event with where it came from and how to settle it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tributary::Result<()> {
/// use tributary::{ConsumerOptions, Event, StartPosition};
///
/// let backend = tributary::connect("memory://").await?;
/// backend.producer("orders").await?.send(Event::new("hello").with_key("c-7")).await?;
/// let consumer = backend
///     .consumer("orders", ConsumerOptions::new("billing").start(StartPosition::Earliest))
///     .await?;
///
/// let delivery = consumer.receive().await?;
/// println!("{:?} from partition {:?} at {:?}", delivery.event.payload, delivery.partition, delivery.position);
/// assert_eq!(delivery.attempt, Some(1));
/// delivery.nack(); // not processed: it comes back, before the partition's later events
///
/// let again = consumer.receive().await?;
/// assert_eq!(again.attempt, Some(2));
/// again.ack(); // done: never delivered to this group again
/// consumer.close().await?;
/// # Ok(()) }
/// ```
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
///
/// One awaited `send` at a time pays a full round trip per event (on Kafka about 170 events/s
/// against ~237,000/s for `send_batch`); send batches, or many sends concurrently, for volume:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tributary::Result<()> {
/// use tributary::Event;
/// let backend = tributary::connect("memory://").await?;
/// let producer = backend.producer("orders").await?;
/// let events = (0..1000).map(|i| Event::new(format!("order {i}")).with_key(format!("c{}", i % 10)));
/// let receipts = producer.send_batch(events.collect()).await?;
/// assert_eq!(receipts.len(), 1000);
/// producer.close().await?;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Producer: Send + Sync {
    /// Sends one event.
    async fn send(&self, event: Event) -> Result<Receipt>;
    /// Sends events; on success returns one receipt per event, in order.
    ///
    /// On error, any subset of the batch may have been stored (backends send a batch's events
    /// concurrently), with one promise: for each key, what was stored is a prefix of that key's
    /// events in the batch, so retrying the failed batch can duplicate events but never
    /// reorders a key. A caller that must not duplicate can check the stream before retrying.
    async fn send_batch(&self, events: Vec<Event>) -> Result<Vec<Receipt>>;
    /// Waits until every event handed to this producer so far is stored.
    async fn flush(&self) -> Result<()>;
    /// Flushes, then releases resources.
    async fn close(&self) -> Result<()>;
}

/// Receives events of one stream for one group.
///
/// # Behavior
/// - [`receive`](Consumer::receive) and [`receive_batch`](Consumer::receive_batch) are
///   cancel-safe: dropping the future loses no event.
/// - Each delivery must be acked or nacked; drop means nack. A nacked delivery comes back before
///   any later event of its partition (backends that declare per-key order), with its
///   [`attempt`](Delivery::attempt) raised. Unacked deliveries are redelivered to the group
///   after the consumer closes or its process dies.
/// - After [`close`](Consumer::close) `receive` fails with [`crate::ErrorKind::Closed`];
///   closing twice is harmless.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tributary::Result<()> {
/// use std::time::Duration;
/// use tributary::{ConsumerOptions, Event, StartPosition};
/// let backend = tributary::connect("memory://").await?;
/// backend.producer("orders").await?.send(Event::new("hello")).await?;
/// let consumer = backend
///     .consumer("orders", ConsumerOptions::new("billing").start(StartPosition::Earliest))
///     .await?;
/// for delivery in consumer.receive_batch(100, Duration::from_millis(5)).await? {
///     println!("{:?}", delivery.event.payload);
///     delivery.ack();
/// }
/// consumer.close().await?; // commits what was acked and hands the partitions back at once
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Consumer: Send + Sync {
    /// The next delivery; waits until one is available.
    async fn receive(&self) -> Result<Delivery>;

    /// The next delivery if one is ready now, without waiting: `Some` with what
    /// [`receive`](Consumer::receive) would have returned at once (a delivery or an error),
    /// `None` when it would have to wait or the backend cannot tell without waiting (the
    /// default). A wrapper around another consumer calls it before that consumer's `receive`,
    /// which spares the boxed future of that call when a delivery is ready.
    fn try_receive(&self) -> Option<Result<Delivery>> {
        None
    }

    /// Up to `max` deliveries: waits for the first, then takes whatever else arrives within
    /// `linger` of it (never more than `max`, never waiting longer once `max` is reached).
    /// Backends with a ready queue override it to drain that queue in one step; the default is
    /// built from [`receive`](Consumer::receive).
    ///
    /// Cancel-safe like `receive`: deliveries gathered before the future is dropped are not
    /// lost, they are nacked (and come back) when the dropped batch is.
    async fn receive_batch(&self, max: usize, linger: Duration) -> Result<Vec<Delivery>> {
        let max = max.max(1);
        let mut batch = vec![self.receive().await?];
        if max == 1 {
            return Ok(batch);
        }
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, self.receive()).await {
                Ok(Ok(delivery)) => batch.push(delivery),
                // The first delivery is already in hand: hand it out and report the error
                // on the next call.
                Ok(Err(_)) | Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Stops receiving, commits acked progress, and makes unsettled deliveries available to the
    /// rest of the group.
    async fn close(&self) -> Result<()>;

    /// Persists the progress of every delivery acked so far, now, rather than at the backend's
    /// next periodic commit, so that a crash replays only what was not acked. Backends whose
    /// acks are individually durable (Pub/Sub) return `Ok(())` at once.
    async fn commit(&self) -> Result<()>;

    /// Events on this consumer's partitions that its group has not yet acked, as last seen
    /// (for a log: the end offset minus the committed position). Cheap: it reads what the
    /// consumer already knows and never waits on the server. `None` where the backend cannot
    /// tell (then its [`crate::Capabilities::lag`] is false), such as Pub/Sub, whose backlog
    /// is known only to the server's monitoring.
    fn lag(&self) -> Option<u64>;
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
/// Takes what [`Backend::consumer`] returns (a `Box`) or an `Arc`. To stop, close the
/// consumer (from anywhere: the stream then ends), or stop polling and close it:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tributary::Result<()> {
/// use std::sync::Arc;
/// use tributary::futures::StreamExt;
/// use tributary::{ConsumerOptions, Event, StartPosition};
///
/// let backend = tributary::connect("memory://").await?;
/// let producer = backend.producer("orders").await?;
/// for i in 0..3 {
///     producer.send(Event::new(format!("order {i}"))).await?;
/// }
/// let consumer: Arc<dyn tributary::Consumer> = backend
///     .consumer("orders", ConsumerOptions::new("billing").start(StartPosition::Earliest))
///     .await?
///     .into();
/// let mut deliveries = tributary::deliveries(consumer.clone()).take(3);
/// while let Some(delivery) = deliveries.next().await {
///     let delivery = delivery?;
///     println!("{:?}", delivery.event.payload);
///     delivery.ack();
/// }
/// consumer.close().await?;
/// # Ok(()) }
/// ```
pub fn deliveries(consumer: impl Into<Arc<dyn Consumer>>) -> BoxStream<'static, Result<Delivery>> {
    let consumer: Arc<dyn Consumer> = consumer.into();
    Box::pin(futures::stream::unfold(consumer, |consumer| async move {
        match consumer.receive().await {
            Err(e) if e.kind() == crate::ErrorKind::Closed => None,
            result => Some((result, consumer)),
        }
    }))
}

/// Options for a consumer.
///
/// ```
/// use tributary::{ConsumerOptions, StartPosition};
///
/// let options = ConsumerOptions::new("billing") // the group: consumers share work and progress
///     .start(StartPosition::Earliest) // used only while the group has no commit
///     .max_in_flight(500); // receive waits while 500 deliveries are unsettled
/// assert_eq!(options.group, "billing");
/// assert!(options.validate().is_ok());
/// assert!(ConsumerOptions::new("").validate().is_err()); // a group needs a name
/// ```
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

    /// Checks what every backend requires: a group name that is not empty, has no control
    /// characters and is at most 255 bytes (the tightest platform limit, Kafka's), and an
    /// in-flight limit of at least 1. Backends call it first in [`Backend::consumer`].
    ///
    /// ```
    /// use tributary::{ConsumerOptions, ErrorKind};
    /// assert!(ConsumerOptions::new("billing").validate().is_ok());
    /// assert_eq!(ConsumerOptions::new("").validate().unwrap_err().kind(), ErrorKind::Config);
    /// ```
    pub fn validate(&self) -> Result<()> {
        let group = &self.group;
        if group.is_empty() {
            return Err(crate::Error::config(
                "consumer group name must not be empty (ConsumerOptions::new(\"my-group\"))",
            ));
        }
        if group.len() > 255 {
            return Err(crate::Error::config(format!(
                "consumer group name of {} bytes is longer than the limit of 255",
                group.len()
            )));
        }
        if group.chars().any(char::is_control) {
            return Err(crate::Error::config(format!(
                "consumer group name {group:?} contains a control character"
            )));
        }
        if self.max_in_flight == 0 {
            return Err(crate::Error::config("max_in_flight must be at least 1"));
        }
        Ok(())
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
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tributary::Result<()> {
/// use tributary::{ErrorKind, Event, StreamSpec};
///
/// let backend = tributary::connect("memory://?auto_create=false").await?;
/// if backend.capabilities().admin {
///     backend.create_stream("orders", StreamSpec::with_partitions(4)).await?;
/// }
/// assert_eq!(backend.list_streams().await?, ["orders"]);
/// assert_eq!(backend.describe_stream("orders").await?.partitions.len(), 4);
///
/// let again = backend.create_stream("orders", StreamSpec::default()).await;
/// assert_eq!(again.unwrap_err().kind(), ErrorKind::AlreadyExists);
/// // Without auto_create, a missing stream is an error, at open or at the first send.
/// let missing = async { backend.producer("refunds").await?.send(Event::new("r")).await };
/// assert_eq!(missing.await.unwrap_err().kind(), ErrorKind::NotFound);
/// backend.close().await?;
/// # Ok(()) }
/// ```
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
