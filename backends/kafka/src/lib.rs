//! Apache Kafka for tributary, on rdkafka (librdkafka).
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> tributary::Result<()> {
//! use tributary::{ConsumerOptions, Event, StartPosition};
//! tributary_kafka::register();
//! let backend = tributary::connect("kafka://127.0.0.1:9092?auto_create=true").await?;
//! let producer = backend.producer("orders").await?;
//! let receipt = producer.send(Event::new("hello").with_key("customer-7")).await?;
//! println!("stored at partition {:?} offset {:?}", receipt.partition, receipt.position);
//! let consumer = backend
//!     .consumer("orders", ConsumerOptions::new("billing").start(StartPosition::Earliest))
//!     .await?;
//! let delivery = consumer.receive().await?;
//! delivery.ack();
//! # Ok(()) }
//! ```
//!
//! # URL
//! `kafka://host:port[,host:port…][?option=value&…]`, with `user:password@` for SASL/PLAIN over
//! TLS (build with the `ssl` feature). Options:
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `timeout` | `30s` | connect, metadata and admin calls |
//! | `send_timeout` | `60s` | how long one event may be retried before its send fails (`message.timeout.ms`) |
//! | `commit_interval` | `500ms` | how often acked positions are committed (also on revoke and close) |
//! | `join_timeout` | `60s` | how long `consumer()` waits for the group to assign partitions |
//! | `revoke_grace` | `5s` | how long a rebalance taking partitions from a consumer waits for their deliveries still out to be settled, so their acks are committed instead of read again by the next owner (`0s`: no wait) |
//! | `auto_create` | `false` | create missing topics on `producer()`/`consumer()`, with `partitions` (the client never lets a broker auto-create a topic with its own `num.partitions`) |
//! | `partitions`, `replication` | `1`, broker default | for topics created by `auto_create` |
//! | `client_id` | `tributary` | `client.id` |
//! | `instance_id` | none | static group membership: see below |
//! | `rdkafka.NAME` | | any librdkafka option, for every client (e.g. `rdkafka.security.protocol=SSL`) |
//! | `producer.NAME`, `consumer.NAME` | | a librdkafka option for producers or consumers only |
//!
//! # Latency
//! Producers wait up to `linger.ms=5` (librdkafka's own default, and the Java client's since
//! Kafka 4.0) to fill a batch, so an event sent alone reaches a consumer about 5 ms later: one
//! event at a time sent, received and acked took 5.6 ms at the median here, and 0.2 ms with
//! `producer.linger.ms=0`, raw rdkafka alike (the bench's `latency` mode). Set
//! `producer.linger.ms=0` where events come one at a time and each is waited for; keep the
//! default where many are in flight, which it batches. Consumers need nothing: a fetch returns
//! as soon as the broker has a record (`fetch.min.bytes=1`), however long `fetch.wait.max.ms`.
//!
//! Secrets (`sasl.password`, `ssl.key.password`, …) never appear in logs or errors. Every
//! option is also a field of [`KafkaConfig`], so a program can build the configuration in
//! code (secrets from its own store, not from a URL) and call [`KafkaBackend::connect`];
//! `tributary::connect("kafka://…")` is the same through [`KafkaConfig::from_url`].
//!
//! # Restarts and takeovers
//! A consumer process that dies without leaving its group (a crash, SIGKILL, a lost host)
//! keeps its partitions until the broker's session timeout expires: `session.timeout.ms`,
//! 45 s by default. Two options shorten the wait:
//!
//! - `instance_id=NAME` makes consumers *static members*: they join with `group.instance.id`
//!   `NAME.<topic>` (`NAME.<topic>.2`, `.3`… for further consumers of the same group and topic
//!   in one process, in the order they are opened). A process that comes back with the same
//!   `instance_id` gets its partitions back at once, without a rebalance, however it stopped
//!   (measured here: 0.4 s instead of 39 s). Give every process its own stable name, such as
//!   a StatefulSet pod name or a host name, e.g. `instance_id=${HOSTNAME}` in a bridge
//!   configuration; two live processes with the same name fence each other (the consumer
//!   reports a `Config` error saying so). The price: a static member does not leave the
//!   group when it closes either, so its partitions wait for it for the session timeout.
//! - `consumer.session.timeout.ms=10000` (with `consumer.heartbeat.interval.ms=3000`, at most
//!   a third of it) makes the group notice a dead member sooner, so another process takes its
//!   partitions over after about that long. The broker bounds it below by
//!   `group.min.session.timeout.ms` (6 s by default); too short, and a long garbage-collection
//!   pause or a network hiccup costs a rebalance.
//!
//! [`KafkaBackend::group_lag`] reports the group's backlog on every partition, including a
//! dead member's while it waits for its session to expire.
//!
//! # TLS and SASL
//! Build with the `ssl` feature (system OpenSSL; `ssl-vendored` builds it) for TLS, and with
//! `gssapi` (`gssapi-vendored`) for Kerberos. Then, for example:
//!
//! ```text
//! kafka://broker:9093?rdkafka.security.protocol=SSL&rdkafka.ssl.ca.location=/etc/kafka/ca.pem
//! kafka://alice:secret@broker:9093                         (SASL/PLAIN over TLS: SASL_SSL)
//! kafka://broker:9093?rdkafka.security.protocol=SASL_SSL&rdkafka.sasl.mechanisms=SCRAM-SHA-512
//!        &rdkafka.sasl.username=alice&rdkafka.sasl.password=…
//! kafka://broker:9093?rdkafka.security.protocol=SASL_PLAINTEXT&rdkafka.sasl.mechanisms=GSSAPI
//!        &rdkafka.sasl.kerberos.service.name=kafka
//! ```
//!
//! A broker that refuses the credentials makes `connect` fail at once (in about a second,
//! not after `timeout`) with [`ErrorKind::Unauthorized`](tributary::ErrorKind::Unauthorized);
//! a TLS handshake that fails (an untrusted certificate) with
//! [`ErrorKind::Config`](tributary::ErrorKind::Config). Neither message shows a password.
//! The tests run every form above except Kerberos against a broker with TLS and SASL_SSL
//! (SCRAM-SHA-512 and PLAIN) listeners and a throwaway certificate authority
//! (`tests/secure.rs`).
//!
//! # Semantics
//! - Producers are idempotent (`enable.idempotence=true`): retries neither duplicate nor
//!   reorder events within a partition.
//! - The producers of one backend share one librdkafka producer client, as Kafka's own
//!   clients are meant to be shared: every client runs its own threads and broker connections.
//!   Each tributary producer keeps its own `flush` and `close`, which wait for its own events
//!   only. A topic whose `max.message.bytes` differs from the others' gets a client of its own
//!   (librdkafka's `message.max.bytes` is per client), and so do producers opened after a
//!   client hit a fatal error. Producers opened from different backends never share one.
//!   The backend keeps its clients until it closes, even with no producer open, and connects
//!   a new one before `producer()` returns: a new idempotent client's first send otherwise
//!   waits 0.5–1 s for its producer id (a process's first client still does).
//! - Keys pick partitions as Java's default partitioner does (`murmur2(key) % partitions`,
//!   librdkafka's `murmur2_random`), not with librdkafka's own default (CRC32): an event keyed
//!   `k` lands on the same partition whether tributary, a Java client, kafka-python or the
//!   local backend sends it (tested against `kafka-console-producer` for 1,200 keys, non-ASCII
//!   and up to 4 KiB long). Keyless events are spread by librdkafka's sticky partitioner.
//!   `producer.partitioner=consistent_random` restores librdkafka's default.
//! - Consumers join the group named in [`tributary::ConsumerOptions`]; commits are the end of
//!   the acked prefix per partition, never auto-commits. A revoked partition commits what is
//!   acked and its in-flight deliveries are redelivered by its next owner. A nack (or a
//!   dropped delivery) redelivers the event to this consumer (attempt + 1) before any later
//!   event of its partition; several nacked events of a partition come back in offset order.
//! - The start position applies to partitions without a commit and is resolved when the
//!   partition is assigned (latest = the end at that moment; a timestamp uses
//!   `offsets_for_times`). The resolved offset is committed at once, so a member that takes
//!   the partition over later starts at the same place rather than resolving "latest" again.
//! - `Consumer::lag` answers from the moment `consumer()` returns: per assigned partition,
//!   its end (read at assignment, then from every fetch response) minus the acked prefix.
#![warn(missing_docs)]

mod backend;
mod config;
mod consumer;
mod delivery;
mod error;
mod fetched;
mod group_offsets;
mod lag;
mod probe;
mod producer;
mod record;
mod topics;

pub use backend::KafkaBackend;
pub use config::KafkaConfig;
pub use lag::{GroupLag, PartitionLag};

use tributary::{Result, Url};

/// Registers the `kafka://` scheme with [`tributary::connect`].
pub fn register() {
    tributary::register_backend("kafka", |url| async move {
        KafkaBackend::connect_url(&url).await
    });
}

/// Checks a `kafka://` URL as [`KafkaBackend::connect_url`] would, without connecting:
/// tributary's options, then every librdkafka setting of the producer and the consumer, names
/// and values, as librdkafka itself checks them. For configuration checkers (`bridge
/// validate`); messages name the option, never a secret.
pub fn check_url(url: &Url) -> Result<()> {
    let config = KafkaConfig::from_url(url)?;
    config.validate()?;
    let clients = [
        ("producer", config.producer_config()),
        ("consumer", config.consumer_config("tributary-check", true)),
    ];
    for (client, settings) in clients {
        settings
            .create_native_config()
            .map_err(|e| error::map(e, &format!("{client} settings of {}", config.shown())))?;
    }
    Ok(())
}
