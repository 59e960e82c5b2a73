//! # tributary
//!
//! One API for producing and consuming event streams on Apache Kafka, Apache Pulsar, AWS
//! Kinesis, Google Cloud Pub/Sub, Azure Event Hubs and a built-in local backend. Pick a backend
//! with a URL; the rest of the program does not change:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> tributary::Result<()> {
//! use tributary::{ConsumerOptions, Event, StartPosition};
//!
//! let backend = tributary::connect("memory://").await?; // or "file:///var/lib/app", "kafka://…"
//! let producer = backend.producer("orders").await?;
//! let receipt = producer.send(Event::new(r#"{"total": 42}"#).with_key("customer-7")).await?;
//! println!("stored in partition {:?} at {:?}", receipt.partition, receipt.position);
//!
//! let consumer = backend
//!     .consumer("orders", ConsumerOptions::new("billing").start(StartPosition::Earliest))
//!     .await?;
//! let delivery = consumer.receive().await?;
//! assert_eq!(delivery.event.key.as_deref(), Some(&b"customer-7"[..]));
//! delivery.ack(); // nack() or dropping it redelivers it to the group
//!
//! consumer.close().await?; // commits what was acked and hands the group on at once
//! producer.close().await?;
//! backend.close().await?;
//! # Ok(()) }
//! ```
//!
//! One awaited `send` at a time pays a round trip per event (about 170 events/s against a Kafka
//! broker). For volume, hand the backend many events at once: [`Producer::send_batch`] (about
//! 237,000 events/s on the same broker, order kept) or many concurrent sends (about 150,000/s;
//! concurrent sends of one key may be stored in any order). The repository's `examples/`
//! directory has runnable programs: bulk produce, consume and resume after a restart, nack
//! and retry with a dead-letter stream, and one program on every backend.
//!
//! # Backends and URLs
//!
//! | URL | backend | available as |
//! |---|---|---|
//! | `memory://`, `memory://NAME` | in the process; `NAME` shares one instance within it | built in |
//! | `file:///absolute/dir` | a durable log on disk: segments, CRC framing, fsync policy, crash recovery | built in |
//! | `kafka://host:port[,host:port…]` | Apache Kafka, through librdkafka | crate `tributary-kafka`; its options are in its crate docs |
//! | `pubsub://PROJECT` | Google Cloud Pub/Sub (Application Default Credentials, or `?endpoint=` for an emulator) | crate `tributary-pubsub`; options in its crate docs |
//! | `pulsar://host:6650`, `pulsar+ssl://…` | Apache Pulsar, through the `pulsar` crate and the REST admin API | crate `tributary-pulsar`; options in its crate docs |
//! | `kinesis://REGION` | AWS Kinesis Data Streams (groups keep KCL-compatible leases in DynamoDB, or in memory or a directory) | crate `tributary-kinesis`; options in its crate docs |
//! | `eventhubs://NAMESPACE` | Azure Event Hubs (groups keep ownership and checkpoints in Blob Storage, or in memory) | crate `tributary-eventhubs`; options in its crate docs |
//!
//! Backends other than the local one live in crates of their own, so a program compiles only
//! the clients it uses. Add the crate and call its `register()` once, before the first
//! [`connect`]; a URL whose backend is not registered fails with an error saying which crate
//! it needs.
//!
//! ```ignore
//! tributary_kafka::register(); // cargo add tributary-kafka
//! let backend = tributary::connect("kafka://127.0.0.1:9092?auto_create=true").await?;
//! ```
//!
//! Options go in the query string (`file:///var/lib/app?fsync=interval&partitions=8`); an
//! unknown option or a bad value is a [`ErrorKind::Config`] error that names it. The local
//! backend's options (the fields of [`local::LocalConfig`] carry the same ones for code):
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `partitions` | `4` | partitions of streams created on first use |
//! | `auto_create` | `true` | create streams on first use (`false`: [`ErrorKind::NotFound`]) |
//! | `max_event_bytes` | `1MiB` | largest event (key + payload + headers) |
//! | `segment_bytes` | `64MiB` (file), `8MiB` (memory) | segment size (memory segments also hold at most 1,024 records) |
//! | `retention_bytes` | unlimited | per-partition size limit; the oldest segments go first |
//! | `retention` | unlimited | age limit, e.g. `7d` |
//! | `fsync` | `always` | `always`: every write is on disk before its send returns (concurrent sends share one fdatasync of the stream's journal, however many partitions they wrote); `interval` (with `fsync_interval=100ms`): a power loss can lose that window; `never`: the OS decides. A process crash loses nothing in any mode |
//! | `group_lease` | `15s` | `file://` only: how long the consumer groups of a crashed process stay claimed before another process can take them over |
//! | `skip_damaged` | `false` | `file://` only: readers step over lost or damaged records with a warning instead of a `Corrupt` error |
//! | `preallocate` | `false` | `file://` with `fsync=always` only: each partition's active segment is written with zeros to `segment_bytes` before it takes records and overwritten in place, so its syncs (at the journal's checkpoints and rolls) have no size change to commit, at the cost of those zeros written up front and up to 1.5 segments of disk per partition beyond its records |
//! | `journal_bytes` | `64MiB` | `file://` with `fsync=always` only (at least `64KiB`): the size of each stream's write-ahead journal, which each write round is appended to and synced once; the stream's partitions are synced each time it fills |
//!
//! One process at a time writes a `file://` directory; other processes open it read-only and
//! can consume and tail it.
//!
//! # The model in brief
//!
//! - **At-least-once.** Every stored event reaches each group until one of its consumers acks
//!   it. [`Delivery::ack`] means done; [`Delivery::nack`], or dropping the delivery, means
//!   deliver again. Deliveries not acked when a consumer closes or its process dies go to the
//!   rest of the group.
//! - **Per-key order**, where [`Capabilities::ordering`] says so: a group sees one key's events
//!   in the order they were stored, and a nacked event comes back before the key's later ones.
//! - **Progress.** A log backend commits the end of the contiguous run of acked events per
//!   partition, so a crash replays only what was not acked. [`StartPosition`] applies only
//!   where the group has no commit yet.
//! - **Declared differences.** What varies between backends (receipts, start positions, lag,
//!   size limits…) is declared in [`Capabilities`] and checked by the `tributary-conformance`
//!   suite, which anyone can run against their own servers: `tributary conformance URL`.
//! - **One error type.** [`Error`] with an [`ErrorKind`] to match on; messages name the stream,
//!   option or limit, and never contain secrets.
//!
//! # Reading and stopping
//!
//! [`Consumer::receive`] waits for the next delivery and is cancel-safe;
//! [`Consumer::receive_batch`] takes up to a number at once; [`ConsumerExt`] (bring it into
//! scope) adds `receive_timeout`; [`deliveries`] turns what [`Backend::consumer`] returns into
//! a `futures::Stream` ([`futures`] is re-exported, so `use tributary::futures::StreamExt`).
//! To stop, close the consumer (the stream then ends), or drop the stream and then call
//! [`Consumer::close`]: it commits the acks and hands the consumer's partitions to the rest of
//! the group at once.
//!
//! # Writing a backend
//!
//! The plumbing backends share (URL option parsing, the ack tracker, checkpoint stores, the
//! close gate, error stamping) is in [`backend`]; applications need none of it. A new backend
//! proves itself with the `tributary-conformance` suite.
//!
//! # Further reading
//!
//! The full model, with how each platform maps onto it, and the conformance suite's cases with
//! their contracts are in the repository:
#![doc = concat!("[docs/semantics.md](", env!("CARGO_PKG_REPOSITORY"), "/blob/main/docs/semantics.md),")]
#![doc = concat!("[docs/conformance.md](", env!("CARGO_PKG_REPOSITORY"), "/blob/main/docs/conformance.md).")]
#![warn(missing_docs)]

mod ack;
mod api;
pub mod backend;
mod capabilities;
#[cfg(feature = "cloudevents")]
pub mod cloudevents;
pub mod envelope;
mod error;
mod event;
pub mod local;
mod names;
#[cfg(feature = "otel")]
pub mod otel;
mod redact;
mod registry;
pub mod time;

pub use api::{
    AckHandle, Backend, Consumer, ConsumerExt, ConsumerOptions, Delivery, Outcome, PartitionInfo,
    Producer, StreamInfo, StreamSpec, deliveries,
};
pub use capabilities::{AckModel, Capabilities, Lifecycle, Ordering, ReceiptSupport, StartSupport};
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, Headers, PartitionId, Position, Receipt, StartPosition, Timestamp};
pub use registry::{
    Registry, connect, global as global_registry, register_backend, register_scheme,
};

// Backend-author plumbing lives in `tributary::backend`; these root names stay for code written
// before it moved and will go in a later release.
#[doc(hidden)]
pub use ack::{AckTracker, Ticket};
#[doc(hidden)]
pub use api::Acknowledge;
#[doc(hidden)]
pub use backend::checkpoint::{
    CheckpointKey, CheckpointStore, FileCheckpointStore, Lease, MemoryCheckpointStore,
};
#[doc(hidden)]
pub use redact::{is_secret_option, redact};
#[doc(hidden)]
pub use registry::{
    BackendFactory, KNOWN_SCHEMES, UrlOptions, parse_duration, parse_size, parse_url,
};

/// Re-exported so backends and users name the same versions.
pub use bytes::Bytes;
/// Re-exported for [`deliveries`] and `StreamExt`, so users need not pick a version.
pub use futures;
pub use url::Url;
