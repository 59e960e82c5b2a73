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
//! warning. An idle partition (no backlog) flows at once. Taking a partition over so costs
//! one or two admin calls and, rarely, a second resend; nothing delivered is delivered twice
//! because of it. Without the admin API (an error reading the cursor) the member warns and
//! delivers as the broker sends: order across that handover is then not guaranteed.
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
mod config;
mod consumer;
mod error;
mod mapping;
mod position;
mod producer;

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::time::Duration;

use async_trait::async_trait;
use pulsar::consumer::InitialPosition;
use pulsar::{
    ConnectionRetryOptions, OperationRetryOptions, Pulsar, SubType, TokioExecutor,
    producer::ProducerOptions,
};
use tokio::sync::{Mutex, Notify, mpsc};
use tributary::backend::CloseGate;
use tributary::{
    AckModel, Backend, Capabilities, Consumer, ConsumerOptions, Error, Lifecycle, Ordering,
    PartitionId, PartitionInfo, Position, Producer, ReceiptSupport, Result, StartPosition,
    StartSupport, StreamInfo, StreamSpec,
};

pub use crate::admin::SubscriptionBacklog;
pub use crate::config::{PulsarConfig, SubscriptionType};

use crate::admin::Admin;
use crate::config::TopicName;
use crate::consumer::{Command, Driver, PartitionQueue, PulsarConsumer, Shared, State};
use crate::error::{BACKEND, map, timed_out};
use crate::position::MessagePosition;

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

/// A Pulsar cluster (one tenant/namespace for unqualified stream names).
pub struct PulsarBackend {
    config: PulsarConfig,
    client: Pulsar<TokioExecutor>,
    admin: Admin,
    /// The broker's `maxMessageSize`.
    broker_limit: usize,
    /// The largest event accepted (encoded).
    max_event_bytes: usize,
    closed: AtomicBool,
}

impl std::fmt::Debug for PulsarBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PulsarBackend")
            .field("service_urls", &self.config.service_urls)
            .field(
                "namespace",
                &format!("{}/{}", self.config.tenant, self.config.namespace),
            )
            .finish_non_exhaustive()
    }
}

impl PulsarBackend {
    /// Connects to the first broker that answers within `connect_timeout`, and reads the
    /// broker's message size limit from the admin API (Pulsar's default when it cannot).
    ///
    /// The errors of this call name the backend; the returned backend's own errors are named
    /// by [`tributary::backend::stamped`] (which `tributary::connect` applies).
    pub async fn connect(config: PulsarConfig) -> Result<PulsarBackend> {
        // One of the two places this crate names itself (with `backlogs`): calls that do not
        // go through the traits come before, or beside, any stamping layer.
        Self::open(config)
            .await
            .map_err(|e| e.with_backend(BACKEND))
    }

    async fn open(config: PulsarConfig) -> Result<PulsarBackend> {
        config.check()?;
        let admin = Admin::new(&config)?;
        let client = Self::client(&config).await?;
        let broker_limit = match tokio::time::timeout(
            config.operation_timeout,
            admin.max_message_size(),
        )
        .await
        {
            Ok(Ok(limit)) => limit,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "pulsar: the broker's maxMessageSize is unknown; assuming Pulsar's default");
                None
            }
            Err(_) => None,
        };
        let known = broker_limit.is_some();
        let broker_limit = broker_limit.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        let ceiling = broker_limit.saturating_sub(METADATA_RESERVE);
        let max_event_bytes = match config.max_event_bytes {
            Some(mine) if known && mine > ceiling => {
                return Err(Error::config(format!(
                    "option `max_event_bytes`: {mine} is above {ceiling}, the broker's maxMessageSize of {broker_limit} bytes less {METADATA_RESERVE} for metadata"
                )));
            }
            Some(mine) => mine,
            None => ceiling,
        };
        Ok(PulsarBackend {
            config,
            client,
            admin,
            broker_limit,
            max_event_bytes,
            closed: AtomicBool::new(false),
        })
    }

    async fn client(config: &PulsarConfig) -> Result<Pulsar<TokioExecutor>> {
        let mut last = None;
        for url in &config.service_urls {
            let mut builder = Pulsar::builder(url.clone(), TokioExecutor)
                .with_connection_retry_options(ConnectionRetryOptions {
                    min_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    // About a minute of reconnecting after a broker goes away.
                    max_retries: 30,
                    connection_timeout: config.connect_timeout,
                    keep_alive: Duration::from_secs(30),
                    ..ConnectionRetryOptions::default()
                })
                .with_operation_retry_options(OperationRetryOptions {
                    operation_timeout: config.operation_timeout,
                    retry_delay: Duration::from_millis(500),
                    max_retries: None,
                })
                .with_outbound_channel_size(1000)
                .with_allow_insecure_connection(config.tls_allow_insecure)
                .with_tls_hostname_verification_enabled(config.tls_hostname_verification);
            if let Some(token) = &config.token {
                builder = builder.with_auth(pulsar::Authentication {
                    name: "token".into(),
                    data: token.clone().into_bytes(),
                });
            }
            if let Some(path) = &config.tls_trust_certs {
                builder = builder.with_certificate_chain_file(path).map_err(|e| {
                    Error::config(format!(
                        "option `tls_trust_certs`: cannot read {}: {e}",
                        path.display()
                    ))
                })?;
            }
            match tokio::time::timeout(config.connect_timeout, builder.build()).await {
                Ok(Ok(client)) => return Ok(client),
                Ok(Err(e)) => last = Some(map(e, &format!("connect to {url}"))),
                Err(_) => last = Some(
                    Error::unavailable(format!(
                        "no Pulsar broker answered at {url} within {:?} (option `connect_timeout`)",
                        config.connect_timeout
                    ))
                    .with_retryable(true),
                ),
            }
        }
        Err(last.unwrap_or_else(|| Error::config("no broker address")))
    }

    /// The native client, for what tributary does not cover.
    pub fn native(&self) -> &Pulsar<TokioExecutor> {
        &self.client
    }

    /// The configuration this backend runs with.
    pub fn config(&self) -> &PulsarConfig {
        &self.config
    }

    /// The largest event accepted, in bytes (encoded: payload, properties and keys).
    pub fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
    }

    /// Backlog per subscription (group) of a stream, summed over its partitions.
    pub async fn backlogs(&self, stream: &str) -> Result<BTreeMap<String, SubscriptionBacklog>> {
        let backlogs = async {
            self.check_open()?;
            let topic = self.config.topic(stream)?;
            let partitions = self.require(&topic).await?;
            self.admin.backlogs(&topic, partitions > 0).await
        };
        backlogs.await.map_err(|e| e.with_backend(BACKEND))
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(AtomicOrdering::Acquire) {
            return Err(Error::closed("the Pulsar backend is closed"));
        }
        Ok(())
    }

    /// The topic's partition count (0: not partitioned); "not found" when it does not exist.
    async fn require(&self, topic: &TopicName) -> Result<u32> {
        self.admin.partitions(topic).await?.ok_or_else(|| {
            Error::not_found(format!(
                "Pulsar topic `{}` does not exist (create it, or add auto_create=true to the URL)",
                topic.full()
            ))
        })
    }

    /// Partition count for producing or consuming: checked through the admin API, or, with
    /// `auto_create`, asked of the broker (which creates the topic by its own policy).
    async fn partitions_for_use(&self, topic: &TopicName) -> Result<u32> {
        if !self.config.auto_create {
            return self.require(topic).await;
        }
        let lookup = self.client.lookup_partitioned_topic_number(topic.full());
        match tokio::time::timeout(self.config.operation_timeout, lookup).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(map(e, &format!("look up `{}`", topic.full()))),
            Err(_) => Err(timed_out(
                &format!("look up `{}`", topic.full()),
                self.config.operation_timeout,
                "operation_timeout",
            )),
        }
    }

    /// Full topic names and Pulsar partition indexes of a topic's partitions.
    fn slots(topic: &TopicName, partitions: u32) -> (Vec<String>, Vec<i32>) {
        if partitions == 0 {
            (vec![topic.full()], vec![-1])
        } else {
            (
                (0..partitions).map(|i| topic.partition(i)).collect(),
                (0..partitions as i32).collect(),
            )
        }
    }

    /// Creates the group's subscription at a time or position, if it does not exist yet.
    async fn place_subscription(
        &self,
        topic: &TopicName,
        partitions: u32,
        group: &str,
        start: &StartPosition,
    ) -> Result<()> {
        let locals: Vec<(String, i32)> = if partitions == 0 {
            vec![(topic.local.clone(), -1)]
        } else {
            (0..partitions as i32)
                .map(|i| (format!("{}-partition-{i}", topic.local), i))
                .collect()
        };
        match start {
            StartPosition::Timestamp(t) => {
                for (local, _) in &locals {
                    if self
                        .admin
                        .create_subscription(topic, local, group, -1, -1)
                        .await?
                    {
                        self.admin
                            .reset_cursor(topic, local, group, t.as_millis())
                            .await?;
                    }
                }
            }
            StartPosition::Position(p) => {
                let at = MessagePosition::parse(p)?;
                if !locals.iter().any(|(_, index)| *index == at.partition) {
                    return Err(Error::config(format!(
                        "position `{p}` names partition {}, which `{}` does not have",
                        at.partition,
                        topic.full()
                    )));
                }
                for (local, index) in &locals {
                    let (ledger, entry) = if *index == at.partition {
                        (at.ledger as i64, at.entry as i64)
                    } else {
                        (-1, -1)
                    };
                    self.admin
                        .create_subscription(topic, local, group, ledger, entry)
                        .await?;
                }
            }
            StartPosition::Earliest | StartPosition::Latest => {}
        }
        Ok(())
    }
}

/// A name no other member of any group uses: Failover orders members by name.
fn consumer_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "tributary-{}-{}-{nanos:08x}",
        std::process::id(),
        NEXT.fetch_add(1, AtomicOrdering::Relaxed)
    )
}

#[async_trait]
impl Backend for PulsarBackend {
    fn scheme(&self) -> &'static str {
        "pulsar"
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::minimal();
        // Properties are strings: binary or repeated headers need the envelope.
        caps.native_headers = false;
        caps.timestamps = true;
        caps.ordering = match self.config.subscription {
            SubscriptionType::Failover => Ordering::PerKey,
            SubscriptionType::Shared => Ordering::None,
        };
        caps.ack = AckModel::Individual;
        caps.nack = true;
        caps.delivery_attempts = true;
        caps.start = StartSupport {
            earliest: true,
            latest: true,
            timestamp: true,
            position: true,
        };
        caps.receipts = ReceiptSupport {
            partition: true,
            position: true,
        };
        caps.max_event_bytes = Some(self.max_event_bytes);
        caps.lifecycle = Lifecycle {
            auto_create: self.config.auto_create,
            networked: true,
            competing_consumers: true,
        };
        caps.lag = true;
        // Topics are created and deleted through the REST admin API.
        caps.admin = true;
        caps
    }

    async fn producer(&self, stream: &str) -> Result<Box<dyn Producer>> {
        self.check_open()?;
        let topic = self.config.topic(stream)?;
        let partitions = self.partitions_for_use(&topic).await?;
        let (topics, indexes) = Self::slots(&topic, partitions);
        let options = if self.config.batching() {
            ProducerOptions {
                batch_size: Some(self.config.batch_size),
                batch_byte_size: Some(self.config.batch_bytes),
                batch_timeout: Some(self.config.batch_delay),
                block_queue_if_full: true,
                ..ProducerOptions::default()
            }
        } else {
            ProducerOptions {
                block_queue_if_full: true,
                ..ProducerOptions::default()
            }
        };
        let builds = topics.iter().zip(&indexes).map(|(name, &index)| {
            let build = self
                .client
                .producer()
                .with_topic(name)
                .with_options(options.clone())
                .build();
            async move {
                let what = format!("create a producer for `{name}`");
                match tokio::time::timeout(self.config.operation_timeout, build).await {
                    Ok(Ok(inner)) => Ok(producer::PartitionProducer {
                        inner: Mutex::new(inner),
                        topic: name.clone(),
                        suspect: AtomicBool::new(false),
                        index,
                    }),
                    Ok(Err(e)) => Err(map(e, &what)),
                    Err(_) => Err(timed_out(
                        &what,
                        self.config.operation_timeout,
                        "operation_timeout",
                    )),
                }
            }
        });
        let partitions = futures::future::try_join_all(builds).await?;
        Ok(Box::new(producer::PulsarProducer {
            stream: stream.to_owned(),
            client: self.client.clone(),
            options,
            partitions,
            max_event_bytes: self.max_event_bytes,
            broker_limit: self.broker_limit,
            operation_timeout: self.config.operation_timeout,
            batch_bytes: self.config.batching().then_some(self.config.batch_bytes),
            next: AtomicUsize::new(0),
            gate: CloseGate::new(format!("producer for `{stream}`")),
        }))
    }

    async fn consumer(&self, stream: &str, options: ConsumerOptions) -> Result<Box<dyn Consumer>> {
        self.check_open()?;
        if options.group.is_empty() {
            return Err(Error::config(
                "a Pulsar consumer needs a group name (its subscription)",
            ));
        }
        let topic = self.config.topic(stream)?;
        let partitions = self.partitions_for_use(&topic).await?;
        self.place_subscription(&topic, partitions, &options.group, &options.start)
            .await?;
        let (topics, indexes) = Self::slots(&topic, partitions);
        let subscribe = Arc::new(consumer::driver::Subscribe {
            client: self.client.clone(),
            stream: stream.to_owned(),
            topics,
            indexes,
            subscription: options.group.clone(),
            sub_type: match self.config.subscription {
                SubscriptionType::Failover => SubType::Failover,
                SubscriptionType::Shared => SubType::Shared,
            },
            consumer_name: consumer_name(),
            initial: match options.start {
                StartPosition::Latest => InitialPosition::Latest,
                _ => InitialPosition::Earliest,
            },
            receiver_queue: self.config.receiver_queue,
            timeout: self.config.operation_timeout,
            admin: self.admin.clone(),
            handover_grace: match self.config.subscription {
                SubscriptionType::Failover => self.config.handover_grace,
                SubscriptionType::Shared => Duration::ZERO,
            },
        });
        let n = subscribe.topics.len();
        let members =
            futures::future::try_join_all((0..n).map(|slot| subscribe.member(slot))).await?;
        let shared = Arc::new(Shared {
            state: parking_lot::Mutex::new(State {
                partitions: (0..n).map(|_| PartitionQueue::default()).collect(),
                cursor: 0,
                queued: 0,
                ready_cap: self.config.receiver_queue.max(1) as usize,
                in_flight: 0,
                max_in_flight: options.max_in_flight.max(1),
                failure: None,
                stopped: false,
                lag: None,
            }),
            wake: Notify::new(),
            room: Notify::new(),
            nack_delay: self.config.nack_delay,
            nack_max_delay: self.config.nack_max_delay,
        });
        let (to_driver, commands) = mpsc::unbounded_channel::<Command>();
        let driver = Driver::new(
            shared.clone(),
            commands,
            to_driver.downgrade(),
            members,
            subscribe,
        );
        tokio::spawn(driver.run());
        Ok(Box::new(PulsarConsumer {
            stream: stream.to_owned(),
            shared,
            to_driver,
            closed: AtomicBool::new(false),
            partitioned: partitions > 0,
        }))
    }

    async fn create_stream(&self, stream: &str, spec: StreamSpec) -> Result<()> {
        self.check_open()?;
        let topic = self.config.topic(stream)?;
        self.admin.create(&topic, spec.partitions.max(1)).await
    }

    async fn delete_stream(&self, stream: &str) -> Result<()> {
        self.check_open()?;
        let topic = self.config.topic(stream)?;
        self.admin.delete(&topic).await
    }

    async fn list_streams(&self) -> Result<Vec<String>> {
        self.check_open()?;
        self.admin
            .list(&self.config.tenant, &self.config.namespace)
            .await
    }

    async fn describe_stream(&self, stream: &str) -> Result<StreamInfo> {
        self.check_open()?;
        let topic = self.config.topic(stream)?;
        let partitions = self.require(&topic).await?;
        let slots: Vec<(Option<u32>, i32)> = if partitions == 0 {
            vec![(None, -1)]
        } else {
            (0..partitions).map(|i| (Some(i), i as i32)).collect()
        };
        let mut infos = Vec::with_capacity(slots.len());
        for (partition, index) in slots {
            let stats = self.admin.internal_stats(&topic, partition).await?;
            let earliest = stats.first_ledger_with_entries().map(|ledger| {
                MessagePosition {
                    ledger,
                    entry: 0,
                    partition: index,
                    batch: None,
                }
                .to_position()
            });
            infos.push(PartitionInfo {
                id: PartitionId::from(partition.unwrap_or(0)),
                earliest,
                // Pulsar assigns ids as entries are written; the next one is not known ahead.
                next: None::<Position>,
            });
        }
        Ok(StreamInfo {
            name: stream.to_owned(),
            partitions: infos,
        })
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, AtomicOrdering::Release);
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
