//! Apache Pulsar for tributary, on the pure-Rust `pulsar` crate (binary protocol) and
//! Pulsar's REST admin API.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> tributary::Result<()> {
//! use tributary::{ConsumerOptions, Event, StartPosition};
//! tributary_pulsar::register();
//! let backend = tributary::connect("pulsar://127.0.0.1:6650").await?;
//! backend.create_stream("orders", tributary::StreamSpec::with_partitions(4)).await?;
//! let producer = backend.producer("orders").await?;
//! let receipt = producer.send(Event::new("hello").with_key("customer-7")).await?;
//! println!("partition {:?}, message id {:?}", receipt.partition, receipt.position);
//! let consumer = backend
//!     .consumer("orders", ConsumerOptions::new("billing").start(StartPosition::Earliest))
//!     .await?;
//! let delivery = consumer.receive().await?;
//! delivery.ack();
//! # Ok(()) }
//! ```
//!
//! Or from code, without a URL: [`PulsarConfig::new`] and [`PulsarBackend::connect`].
//!
//! # URL
//! `pulsar://host:6650[,host:port…][/tenant/namespace][?option=value&…]`, or
//! `pulsar+ssl://host:6651…` for TLS. Streams live in `tenant/namespace` (default
//! `public/default`); a stream may also be named in full, `persistent://tenant/namespace/topic`.
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `admin` | `http://HOST:8080` (`https://HOST:8443` with `pulsar+ssl`) | the REST admin API: stream administration, existence checks, starting a group at a time or position, the broker's size limit |
//! | `token` | | JWT for token authentication (binary protocol and admin API); never logged |
//! | `tls_trust_certs` | the public web roots | PEM file of the CA certificates to trust |
//! | `tls_allow_insecure` | `false` | accept any server certificate (tests only) |
//! | `tls_hostname_verification` | `true` | check the certificate's host name |
//! | `connect_timeout` | `10s` | connecting (and each reconnection) to a broker |
//! | `operation_timeout` | `30s` | every other wait: a send's receipt, subscribing, lookups, admin calls, a silent consumer's replacement |
//! | `auto_create` | `false` | let the broker create missing streams (by its `allowAutoTopicCreation` policy) instead of answering "not found"; skips the admin API existence check |
//! | `subscription` | `failover` | how a group's members share a stream: `failover` (per-key order) or `shared` (no order) |
//! | `batch_size` | `0` (off) | events per producer batch; see "Batching" |
//! | `batch_delay`, `batch_bytes` | `5ms`, `128KiB` | when a batch goes out |
//! | `receiver_queue` | `1000` | messages prefetched per partition |
//! | `nack_delay`, `nack_max_delay` | `100ms`, `10s` | a nacked event's wait before redelivery, doubled per attempt |
//! | `handover_grace` | `1s` | how long a member taking over a partition from another, still connected, member holds it so that member's last acks land first (see "Groups"); `0s` turns that wait off (not the wait for the broker's resend, which per-key order needs) |
//! | `max_event_bytes` | the broker's `maxMessageSize` | a lower limit of your own |
//!
//! OAuth2 is not built in (the `pulsar` crate's `auth-oauth2` feature pulls OpenSSL); use a
//! token.
//!
//! # Mapping
//! A stream is a persistent topic; `create_stream` with more than one partition makes a
//! partitioned topic, with one a non-partitioned topic, which reads as partition `0`.
//! - The payload is the message payload; a UTF-8 key is the partition key; any other key is
//!   the partition key in base64 with `partition_key_b64_encoded` (what Java's `keyBytes`
//!   writes) and the raw bytes as the ordering key.
//! - The timestamp is `event_time` (a timestamp at or before 1970 travels in the property
//!   `tributary-ts`, since `event_time` 0 means "unset"); an event without one reads back with
//!   the broker's publish time.
//! - Headers are properties when they are unique UTF-8 strings (with a `tributary-order`
//!   property when there are two or more); binary or repeated headers travel in the payload in
//!   `tributary::envelope`'s header block, marked `tributary-envelope` = `1` (the same codec
//!   as Pub/Sub). Messages from other clients read as plain events. Exact rules in `mapping.rs`.
//! - Keys pick partitions with murmur3-32 as Java's `HashingScheme.Murmur3_32Hash` does;
//!   keyless events go round robin.
//! - A receipt's and a delivery's position is the message id, `ledger:entry:partition[:batch]`
//!   (Java's text form; partition -1 on a non-partitioned topic).
//!
//! # Groups: a Failover subscription per group, and why
//! A group is a durable subscription named after the group. Per-key order has to hold while
//! members join and leave, and of Pulsar's subscription types only two give per-key order to
//! a group with several members:
//! - **Failover** (the default): each partition has one active member; the others stand by.
//!   When a member joins or leaves, the broker moves partitions and the new owner starts from
//!   the first unacknowledged message: like a Kafka rebalance, order per partition (and so per
//!   key) holds, and only unacknowledged events are delivered twice. Parallelism is one member
//!   per partition.
//! - **Key_Shared** spreads keys over members, but needs key-based batching, which the `pulsar`
//!   crate does not have (its batches mix keys, and a batch goes to one member), offers no
//!   hash-range settings, and reorders keys when members join unless the broker holds new
//!   members back (apache/pulsar#7455). Not offered.
//!
//! When a partition moves to a joining member, the broker tells the old member only at the
//! moment it hands over, so that member's acks of its last prefetched events can reach the
//! broker after the new member was sent them. The new member therefore holds a partition it
//! takes from a member still connected for `handover_grace` (1 s), then reads the
//! subscription's cursor through the admin API and drops what was acknowledged meanwhile
//! (`consumer/handover.rs`; proven by `tests/handover.rs`, where the old member acks 20
//! events just after the handover). A partition taken from a member that closed or crashed
//! skips that wait.
//!
//! **Per-key order across a member change.** The broker picks a partition's new owner before
//! it tells anyone: when a read for the previous owner is under way at that moment (on a
//! partition written to all the time, nearly always), it can send the new owner the
//! partition's newest entries during the `activeConsumerFailoverDelayTimeMillis` (1 s) before
//! it announces the change and rewinds the cursor (seen in traces: a member queued entries
//! 1784 onwards of a partition a second before it was told it was active, while the previous
//! owner had been sent up to 1745 and still held 1752 to 1783 undelivered; delivered, they
//! put an event of a key after the 20 later ones). A read the broker started for the new
//! owner before the announcement can also survive the rewind, delivering newer entries ahead
//! of the resend, or, waiting at the end of the partition, nothing until something new is
//! written. So a member drops what it receives for a partition before it is told it is
//! active, and then, on every takeover, holds the partition until the broker's
//! resend from the first unacknowledged entry, which it reads from the subscription's cursor
//! through the admin API, has arrived, dropping whatever came before it; when the resend does
//! not show up it asks the broker to rewind (a redelivery request, which on Failover rewinds
//! the whole partition) at most every 0.9 s, and after 10 s delivers what it has, with a
//! warning. An idle partition (no backlog) flows at once. Such a request can cross a resend
//! already on its way (a broker or client stalled for half a second): the broker then sends
//! the unacknowledged entries once more per request, and each copy would have been delivered
//! (a batch of ten delivered twice, once under load; with a proxy holding the resend back
//! 3 s, three requests and four copies: `tests/takeover.rs`). So from the resend on, the
//! member drops what arrives at or before the furthest entry it has queued of the partition:
//! the broker sends its active member a partition's entries in order and sends any again only
//! from the first unacknowledged one (after such a request, a repeated announcement, or the
//! crate re-subscribing after a reconnect), so such an entry is one the member has queued,
//! delivered or seen acknowledged already (a connection cut under a member holding a batch:
//! the batch sent again, each event delivered once, where every event came twice before).
//! Taking a partition over so costs one or two admin calls and, rarely, extra resends that
//! are dropped on arrival; nothing is delivered twice because of it. Without the admin API (an error reading the cursor), or when the resend
//! never shows up, the member warns and delivers as the broker sends: order across that
//! handover is then not guaranteed, and copies of what it holds may be delivered again.
//!
//! `subscription=shared` gives up order for parallelism beyond the partition count. The test
//! `per_key_order_holds_while_members_join_and_leave` (in `tests/semantics.rs`) proves the
//! Failover promise against a real broker; the conformance run covers the rest.
//!
//! # Acks, nacks and batching
//! Acks are individual. A nack is handled in this process: after a backoff the event comes
//! back before its partition's later events, nacked events of a partition in the order they
//! were first delivered (the crate's nack would ask the broker for an immediate redelivery, which on Failover rewinds
//! the partition). Attempts are counted by the consumer (the broker counts none on Failover).
//!
//! Producers send each event as its own message by default, so an ack covers exactly one
//! event. With `batch_size` > 1 the crate batches events into one message; Pulsar acknowledges
//! a batch as a whole (the broker's batch-index acks need a client that reads them back, which
//! the crate cannot), so a batch is acked once all its events are, and after a crash a
//! partially acked batch is delivered again whole. The same holds for batches other clients
//! write.
//!
//! # Start positions
//! `Earliest` and `Latest` are the subscription's initial position. `Timestamp(t)` creates the
//! subscription through the admin API and moves it to the first message *published* at or
//! after `t` (Pulsar indexes publish time, not event time). `Position(p)` creates it at `p`
//! (inclusive, to the message's whole batch) on `p`'s partition and at the earliest message on
//! the others. All of them apply only when the group's subscription does not exist yet: an
//! existing subscription keeps its position.
//!
//! # Limits and failures
//! The crate does not split large messages (no chunking), and a message over the broker's
//! `maxMessageSize` (read from the admin API, else Pulsar's default of 5 MiB) would break the
//! connection: an event whose message would not fit, less 1 KiB kept for the message's
//! metadata, is refused before sending with a `TooLarge` error naming the limit. Every wait has a deadline (`connect_timeout`, `operation_timeout`); the crate
//! re-creates producers after a broker restart and resends what was pending, and a consumer
//! member that stops or stays silent for `operation_timeout` is replaced.
#![warn(missing_docs)]

mod admin;
mod backend;
mod config;
mod consumer;
mod error;
mod mapping;
mod position;
mod producer;

pub use crate::admin::SubscriptionBacklog;
pub use crate::backend::PulsarBackend;
pub use crate::config::{PulsarConfig, SubscriptionType};

/// Pulsar's default `maxMessageSize`, used when the admin API does not tell the broker's.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 5 * 1024 * 1024;

/// Bytes of a message's limit kept for its metadata (producer name, sequence id, times, the
/// framing of properties): like the Java client, tributary counts metadata against the limit,
/// and a bookie's frame limit (`nettyMaxFrameSizeBytes`, 5 MiB unless raised) must still take
/// the entry.
pub const METADATA_RESERVE: usize = 1024;

/// Registers the `pulsar://` and `pulsar+ssl://` schemes with [`tributary::connect`] (which
/// stamps every error with the backend, operation and stream).
pub fn register() {
    for scheme in ["pulsar", "pulsar+ssl"] {
        tributary::register_backend(scheme, |url| async move {
            PulsarBackend::connect(PulsarConfig::from_url(&url)?).await
        });
    }
}
