//! For backend authors: the plumbing every backend shares.
//!
//! Applications need none of this; they use [`crate::connect`], [`crate::Backend`],
//! [`crate::Producer`], [`crate::Consumer`] and the event types at the crate root.
//!
//! A backend crate (see `ARCHITECTURE.md`, "Where to add a backend") typically:
//! - parses its URL with [`UrlOptions`] and refuses unknown options with
//!   [`UrlOptions::finish`];
//! - guards its producers with a [`CloseGate`];
//! - calls [`ConsumerOptions::validate`](crate::ConsumerOptions::validate) first in
//!   `Backend::consumer`;
//! - turns out-of-order acks into commits with an [`AckTracker`] (log backends), or runs its
//!   groups on a [`CheckpointStore`] where the platform has no server-side groups;
//! - registers its scheme with [`register_backend`](crate::register_backend), which applies
//!   [`stamped`] so every error names the backend, operation and stream.

mod gate;
mod header_names;
mod stamp;

pub mod checkpoint;
pub mod group;

pub use crate::ack::{AckTracker, Ticket};
pub use crate::api::{AckToken, Acknowledge, SharedAcknowledge};
pub use crate::names::{closest_name, within_edits};
pub use crate::redact::{MASK, SHOWN_OPTIONS, is_secret_option, redact, redact_text, shown_value};
pub use crate::registry::{
    BackendFactory, KNOWN_SCHEMES, Registry, UrlOptions, parse_duration, parse_size, parse_url,
};
pub use checkpoint::{
    Checkpoint, CheckpointKey, CheckpointStore, FileCheckpointStore, Lease, LeaseVersion,
    MemoryCheckpointStore, PartitionTopology,
};
pub use gate::{CloseGate, GatePass};
pub use header_names::HeaderNames;
pub(crate) use stamp::mark;
pub use stamp::{stamp_arc, stamped};
