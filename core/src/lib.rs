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
mod capabilities;
mod checkpoint;
mod error;
mod event;
pub mod local;
mod registry;
pub mod time;

pub use ack::{AckTracker, Ticket};
pub use api::{
    AckHandle, Acknowledge, Backend, Consumer, ConsumerExt, ConsumerOptions, Delivery, Outcome,
    PartitionInfo, Producer, StreamInfo, StreamSpec, deliveries,
};
pub use capabilities::{AckModel, Capabilities, Lifecycle, Ordering, ReceiptSupport, StartSupport};
pub use checkpoint::{
    CheckpointKey, CheckpointStore, FileCheckpointStore, Lease, MemoryCheckpointStore,
};
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, Headers, PartitionId, Position, Receipt, StartPosition, Timestamp};
pub use registry::{
    BackendFactory, KNOWN_SCHEMES, Registry, UrlOptions, connect, is_secret_option, parse_duration,
    parse_size, parse_url, redact, register_scheme,
};

/// Re-exported so backends and users name the same versions.
pub use bytes::Bytes;
pub use url::Url;
