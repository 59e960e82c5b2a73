//! # tributary
//!
//! One API for producing and consuming event streams on Apache Kafka, Apache Pulsar, AWS
//! Kinesis, Google Cloud Pub/Sub, Azure Event Hubs and a built-in local backend.
//!
//! Pick a backend with a URL; the rest of the program does not change:
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
//! delivery.ack(); // dropping it instead would redeliver it
//! # Ok(()) }
//! ```
//!
//! The model (streams, partitions, positions, groups, at-least-once delivery with ack/nack) is
//! described in `ARCHITECTURE.md`; each backend declares what it guarantees in
//! [`Capabilities`], and the `tributary-conformance` crate checks the declaration.
#![warn(missing_docs)]

mod ack;
mod api;
pub mod backend;
mod capabilities;
mod error;
mod event;
pub mod local;
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
pub use registry::{
    BackendFactory, KNOWN_SCHEMES, UrlOptions, is_secret_option, parse_duration, parse_size,
    parse_url, redact,
};

/// Re-exported so backends and users name the same versions.
pub use bytes::Bytes;
/// Re-exported for [`deliveries`] and `StreamExt`, so users need not pick a version.
pub use futures;
pub use url::Url;
