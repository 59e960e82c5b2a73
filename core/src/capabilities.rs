//! What a backend guarantees, declared in code and checked by the conformance suite.
//!
//! Capabilities are grouped and small on purpose. A case the backend does not declare is
//! reported "not applicable"; each backend also pins its declaration with a snapshot test so a
//! forgotten flag cannot silently skip a group of cases.

/// How events are ordered for consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ordering {
    /// Events with the same key arrive in send order (through partitions or ordering keys).
    PerKey,
    /// No ordering promise.
    None,
}

/// How acknowledgements turn into stored progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckModel {
    /// A log: the highest contiguous acked position per partition is committed
    /// ([`crate::AckTracker`]); a later ack never moves the commit past an unacked event.
    Cumulative,
    /// Each delivery is settled on its own by the server (Pub/Sub ack ids, Pulsar shared subscriptions).
    Individual,
}

/// Where consumers of a new group may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StartSupport {
    /// Start at the oldest retained event.
    pub earliest: bool,
    /// Start after the newest event.
    pub latest: bool,
    /// Start at the first event at or after a time.
    pub timestamp: bool,
    /// Start at a position returned by a receipt or delivery.
    pub position: bool,
}

/// What a successful send reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReceiptSupport {
    /// The receipt names the partition.
    pub partition: bool,
    /// The receipt names the position, equal to the one the consumer later sees.
    pub position: bool,
}

/// Operational behaviour that some conformance cases depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lifecycle {
    /// Sending to or consuming a missing stream creates it instead of failing with "not found".
    pub auto_create: bool,
    /// The backend talks to a server over the network (so "unreachable server" applies).
    pub networked: bool,
    /// Consumers in one group on the same stream share partitions between them.
    pub competing_consumers: bool,
}

/// A backend's declared guarantees.
///
/// Check them before relying on something that varies between backends:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tributary::Result<()> {
/// use tributary::{AckModel, Capabilities, Ordering};
///
/// let backend = tributary::connect("memory://").await?;
/// let caps = backend.capabilities();
/// if caps.ordering != Ordering::PerKey {
///     // Pub/Sub without ordering keys: do not count on a key's events arriving in order.
/// }
/// if caps.receipts.position {
///     // Receipts say where each event landed; worth storing for StartPosition::Position.
/// }
/// assert_eq!(caps.ack, AckModel::Cumulative); // a log: commits never pass an unacked event
/// assert!(caps.nack && caps.lag && caps.admin);
///
/// // A backend author starts from nothing and declares each field deliberately:
/// let mut mine = Capabilities::minimal();
/// mine.nack = true;
/// assert!(!mine.lag);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Capabilities {
    /// Headers (binary values, duplicates, order) round-trip natively rather than in an envelope.
    pub native_headers: bool,
    /// Producer-set timestamps round-trip exactly (natively or through the envelope).
    pub timestamps: bool,
    /// Ordering promise.
    pub ordering: Ordering,
    /// How acks become progress.
    pub ack: AckModel,
    /// A nacked delivery comes back to the same group.
    pub nack: bool,
    /// Deliveries report how many times the event was delivered.
    pub delivery_attempts: bool,
    /// Start positions a new group may use.
    pub start: StartSupport,
    /// What a receipt carries.
    pub receipts: ReceiptSupport,
    /// Largest event (key + payload + headers, in bytes) the backend accepts, if bounded.
    pub max_event_bytes: Option<usize>,
    /// Lifecycle behaviour.
    pub lifecycle: Lifecycle,
    /// [`crate::Consumer::lag`] reports the group's backlog on the consumer's partitions.
    pub lag: bool,
    /// Streams can be created and deleted through this connection
    /// ([`crate::Backend::create_stream`], [`crate::Backend::delete_stream`]). False where
    /// streams are provisioned outside the data plane (Event Hubs: hubs are made in Azure
    /// Resource Manager); the conformance suite then takes fresh streams from its harness's
    /// provisioning hook.
    pub admin: bool,
}

impl Capabilities {
    /// A starting point for backend authors: nothing declared beyond at-least-once delivery.
    /// Fill in every field deliberately; the snapshot test catches omissions.
    pub const fn minimal() -> Self {
        Capabilities {
            native_headers: false,
            timestamps: false,
            ordering: Ordering::None,
            ack: AckModel::Individual,
            nack: false,
            delivery_attempts: false,
            start: StartSupport {
                earliest: false,
                latest: false,
                timestamp: false,
                position: false,
            },
            receipts: ReceiptSupport {
                partition: false,
                position: false,
            },
            max_event_bytes: None,
            lifecycle: Lifecycle {
                auto_create: false,
                networked: false,
                competing_consumers: false,
            },
            lag: false,
            admin: false,
        }
    }
}
