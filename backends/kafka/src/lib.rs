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
//! | `auto_create` | `false` | create missing topics on `producer()`/`consumer()`, with `partitions` (the client never lets a broker auto-create a topic with its own `num.partitions`) |
//! | `partitions`, `replication` | `1`, broker default | for topics created by `auto_create` |
//! | `client_id` | `tributary` | `client.id` |
//! | `instance_id` | none | static group membership: see below |
//! | `rdkafka.NAME` | | any librdkafka option, for every client (e.g. `rdkafka.security.protocol=SSL`) |
//! | `producer.NAME`, `consumer.NAME` | | a librdkafka option for producers or consumers only |
//!
//! Secrets (`sasl.password`, `ssl.key.password`, …) never appear in logs or errors. Options can
//! also come from code instead of the URL: [`KafkaBackend::connect_with`].
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

mod config;
mod consumer;
mod error;
mod fetched;
mod lag;
mod probe;
mod producer;
mod record;

pub use lag::{GroupLag, PartitionLag};

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::metadata::Metadata;
use rdkafka::producer::FutureProducer;
use tributary::{
    AckModel, Backend, Capabilities, Consumer, ConsumerOptions, Error, Lifecycle, Ordering,
    PartitionId, PartitionInfo, Position, Producer, ReceiptSupport, Result, StartSupport,
    StreamInfo, StreamSpec, Url,
};

use crate::config::KafkaConfig;
use crate::error::map;

/// The default `message.max.bytes` of a Kafka broker, used when the broker does not say.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// Registers the `kafka://` scheme with [`tributary::connect`].
pub fn register() {
    tributary::register_scheme("kafka", |url| {
        Box::pin(async move {
            KafkaBackend::connect(&url)
                .await
                .map(|b| Arc::new(b) as Arc<dyn Backend>)
        })
    });
}

/// A Kafka cluster.
pub struct KafkaBackend {
    config: KafkaConfig,
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// The broker's `message.max.bytes`.
    max_message_bytes: usize,
    closed: AtomicBool,
    group_readers: Arc<lag::GroupReaders>,
}

impl std::fmt::Debug for KafkaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBackend")
            .field("url", &self.config.shown_url)
            .finish_non_exhaustive()
    }
}

impl KafkaBackend {
    /// Connects: checks that a broker answers within the URL's `timeout` and reads its limits.
    pub async fn connect(url: &Url) -> Result<KafkaBackend> {
        Self::connect_with(url, std::iter::empty::<(String, String)>()).await
    }

    /// Like [`connect`](Self::connect), with librdkafka options given in code (for every
    /// client, like `rdkafka.NAME` in the URL; these win over the URL's).
    ///
    /// ```no_run
    /// # async fn demo() -> tributary::Result<()> {
    /// let url = tributary::parse_url("kafka://broker:9093")?;
    /// let password = std::env::var("KAFKA_PASSWORD").unwrap_or_default();
    /// let backend = tributary_kafka::KafkaBackend::connect_with(
    ///     &url,
    ///     [
    ///         ("security.protocol".to_string(), "SASL_SSL".to_string()),
    ///         ("sasl.mechanisms".to_string(), "SCRAM-SHA-512".to_string()),
    ///         ("sasl.username".to_string(), "alice".to_string()),
    ///         ("sasl.password".to_string(), password),
    ///     ],
    /// )
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(
        url: &Url,
        librdkafka: impl IntoIterator<Item = (String, String)>,
    ) -> Result<KafkaBackend> {
        let mut config = KafkaConfig::from_url(url)?;
        for (name, value) in librdkafka {
            config.common.retain(|(n, _)| *n != name);
            config.common.push((name, value));
        }
        let admin: AdminClient<DefaultClientContext> = config
            .admin()
            .create()
            .map_err(|e| map(e, &format!("connect to {}", config.shown_url)))?;
        let admin = Arc::new(admin);
        let probe_config = config.clone();
        let metadata = tokio::task::spawn_blocking(move || probe::cluster_metadata(&probe_config))
            .await
            .map_err(|e| Error::other(format!("connecting panicked: {e}")))??;
        let broker = metadata.brokers().first().map(|b| b.id());
        let max_message_bytes = match broker {
            Some(id) => broker_limit(&admin, id, config.timeout)
                .await
                .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
            None => DEFAULT_MAX_MESSAGE_BYTES,
        };
        tracing::debug!(url = %config.shown_url, max_message_bytes, "kafka: connected");
        Ok(KafkaBackend {
            config,
            admin,
            max_message_bytes,
            closed: AtomicBool::new(false),
            group_readers: Arc::default(),
        })
    }

    /// The librdkafka configuration this backend gives its producers: the escape hatch for
    /// building a raw rdkafka client with the same settings.
    pub fn producer_config(&self) -> rdkafka::ClientConfig {
        self.config.producer()
    }

    /// The librdkafka configuration this backend gives its consumers, without `group.id`.
    pub fn consumer_config(&self) -> rdkafka::ClientConfig {
        self.config.consumer_base()
    }

    /// The backlog of consumer group `group` on every partition of `topic`, from the broker:
    /// each partition's end offset minus the group's committed offset (every retained event
    /// where the group has no commit), as `kafka-consumer-groups --describe` shows it. Unlike
    /// [`Consumer::lag`](tributary::Consumer::lag), which covers the partitions one member
    /// holds, this counts partitions no live member holds too (those of a member that died
    /// and whose session has not expired yet). Two requests to the broker; the client that
    /// reads the group's commits never joins the group.
    pub async fn group_lag(&self, topic: &str, group: &str) -> Result<GroupLag> {
        self.check_open()?;
        let partitions = self.topic_partitions(topic).await?.ok_or_else(|| {
            Error::not_found(format!("Kafka topic `{topic}` does not exist")).with_backend("kafka")
        })?;
        let partitions = i32::try_from(partitions).map_err(|_| {
            Error::other(format!("`{topic}` has more partitions than Kafka allows"))
        })?;
        let (readers, config) = (self.group_readers.clone(), self.config.clone());
        let (topic, group) = (topic.to_string(), group.to_string());
        let timeout = self.config.timeout;
        tokio::task::spawn_blocking(move || {
            readers.group_lag(&config, &topic, partitions, &group, timeout)
        })
        .await
        .map_err(|e| Error::other(format!("group lag lookup panicked: {e}")))?
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(AtomicOrdering::Acquire) {
            return Err(Error::closed("the Kafka backend is closed").with_backend("kafka"));
        }
        Ok(())
    }

    async fn topic_partitions(&self, topic: &str) -> Result<Option<usize>> {
        let metadata = blocking_metadata(&self.admin, Some(topic), self.config.timeout).await?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .and_then(|t| match t.error() {
                None => Some(t.partitions().len()),
                Some(_) => None,
            }))
    }

    /// Makes sure the topic exists (creating it where `auto_create` allows).
    async fn ensure_topic(&self, topic: &str) -> Result<()> {
        if self.topic_partitions(topic).await?.is_some() {
            return Ok(());
        }
        if !self.config.auto_create {
            return Err(Error::not_found(format!(
                "Kafka topic `{topic}` does not exist (create it, or add auto_create=true to the URL)"
            ))
            .with_backend("kafka"));
        }
        match self
            .create_stream(topic, StreamSpec::with_partitions(self.config.partitions))
            .await
        {
            Err(e) if e.kind() == tributary::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    async fn topic_limit(&self, topic: &str) -> usize {
        let options = AdminOptions::new().request_timeout(Some(self.config.timeout));
        let specifier = ResourceSpecifier::Topic(topic);
        match self.admin.describe_configs([&specifier], &options).await {
            Ok(results) => results
                .into_iter()
                .flatten()
                .find_map(|r| {
                    r.get("max.message.bytes")
                        .and_then(|e| e.value.as_ref()?.parse().ok())
                })
                .unwrap_or(self.max_message_bytes),
            Err(_) => self.max_message_bytes,
        }
    }

    /// Waits until metadata agrees with `present` for `topic` (creation and deletion propagate
    /// asynchronously through the cluster).
    async fn await_topic(&self, topic: &str, present: bool) -> Result<()> {
        let deadline = Instant::now() + self.config.timeout;
        loop {
            if self.topic_partitions(topic).await?.is_some() == present {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::timeout(format!(
                    "topic `{topic}` still {} after {:?}",
                    if present { "missing" } else { "present" },
                    self.config.timeout
                ))
                .with_backend("kafka"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn blocking_metadata(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    topic: Option<&str>,
    timeout: Duration,
) -> Result<Metadata> {
    let admin = admin.clone();
    let topic = topic.map(str::to_owned);
    tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(topic.as_deref(), timeout))
        .await
        .map_err(|e| Error::other(format!("metadata lookup panicked: {e}")))?
        .map_err(|e| map(e, "fetch Kafka metadata"))
}

async fn broker_limit(
    admin: &AdminClient<DefaultClientContext>,
    broker: i32,
    timeout: Duration,
) -> Option<usize> {
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let specifier = ResourceSpecifier::Broker(broker);
    let results = admin.describe_configs([&specifier], &options).await.ok()?;
    results.into_iter().flatten().find_map(|r| {
        r.get("message.max.bytes")
            .and_then(|e| e.value.as_ref()?.parse().ok())
    })
}

#[async_trait]
impl Backend for KafkaBackend {
    fn scheme(&self) -> &'static str {
        "kafka"
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::minimal();
        caps.native_headers = true;
        caps.timestamps = true;
        caps.ordering = Ordering::PerKey;
        caps.ack = AckModel::Cumulative;
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
        caps.max_event_bytes = Some(record::max_payload(self.max_message_bytes));
        caps.lifecycle = Lifecycle {
            auto_create: self.config.auto_create,
            networked: true,
            competing_consumers: true,
        };
        caps.lag = true;
        caps.admin = true;
        caps
    }

    async fn producer(&self, stream: &str) -> Result<Box<dyn Producer>> {
        self.check_open()?;
        self.ensure_topic(stream).await?;
        let limit = self.topic_limit(stream).await;
        let mut config = self.config.producer();
        // librdkafka's own check (default 1000000) would otherwise refuse events the topic accepts.
        if !self
            .config
            .producer
            .iter()
            .chain(&self.config.common)
            .any(|(n, _)| n == "message.max.bytes")
        {
            config.set("message.max.bytes", limit.to_string());
        }
        let inner: FutureProducer = config
            .create()
            .map_err(|e| map(e, &format!("create a producer for `{stream}`")))?;
        Ok(Box::new(producer::KafkaProducer {
            topic: stream.to_string(),
            inner,
            limit,
            send_timeout: self.config.send_timeout,
            closed: AtomicBool::new(false),
            in_progress: Arc::new(tokio::sync::RwLock::new(())),
        }))
    }

    async fn consumer(&self, stream: &str, options: ConsumerOptions) -> Result<Box<dyn Consumer>> {
        self.check_open()?;
        if options.group.is_empty() {
            return Err(Error::config("a Kafka consumer needs a group name").with_backend("kafka"));
        }
        self.ensure_topic(stream).await?;
        let explicit_id = self
            .config
            .consumer
            .iter()
            .chain(&self.config.common)
            .any(|(n, _)| n == "group.instance.id");
        let member = match &self.config.instance_id {
            Some(instance) if !explicit_id => Some(consumer::StaticMember::claim(
                instance,
                &options.group,
                stream,
            )),
            _ => None,
        };
        Ok(Box::new(
            consumer::KafkaConsumer::start(&self.config, stream, options, member).await?,
        ))
    }

    async fn create_stream(&self, stream: &str, spec: StreamSpec) -> Result<()> {
        self.check_open()?;
        let partitions = i32::try_from(spec.partitions.max(1)).map_err(|_| {
            Error::config(format!(
                "{} partitions is too many for Kafka",
                spec.partitions
            ))
        })?;
        let topic = NewTopic::new(
            stream,
            partitions,
            TopicReplication::Fixed(self.config.replication),
        );
        let options = AdminOptions::new().operation_timeout(Some(self.config.timeout));
        let results = self
            .admin
            .create_topics([&topic], &options)
            .await
            .map_err(|e| map(e, &format!("create topic `{stream}`")))?;
        for result in results {
            if let Err((name, code)) = result {
                return Err(match code {
                    RDKafkaErrorCode::TopicAlreadyExists => {
                        Error::already_exists(format!("Kafka topic `{name}` already exists"))
                    }
                    other => error::by_code(other, &format!("create topic `{name}`: {other}")),
                }
                .with_backend("kafka"));
            }
        }
        self.await_topic(stream, true).await
    }

    async fn delete_stream(&self, stream: &str) -> Result<()> {
        self.check_open()?;
        let options = AdminOptions::new().operation_timeout(Some(self.config.timeout));
        let results = self
            .admin
            .delete_topics(&[stream], &options)
            .await
            .map_err(|e| map(e, &format!("delete topic `{stream}`")))?;
        for result in results {
            if let Err((name, code)) = result {
                return Err(match code {
                    RDKafkaErrorCode::UnknownTopicOrPartition => {
                        Error::not_found(format!("Kafka topic `{name}` does not exist"))
                    }
                    other => error::by_code(other, &format!("delete topic `{name}`: {other}")),
                }
                .with_backend("kafka"));
            }
        }
        self.await_topic(stream, false).await
    }

    async fn list_streams(&self) -> Result<Vec<String>> {
        self.check_open()?;
        let metadata = blocking_metadata(&self.admin, None, self.config.timeout).await?;
        let mut names: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .filter(|n| !n.starts_with("__"))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn describe_stream(&self, stream: &str) -> Result<StreamInfo> {
        self.check_open()?;
        let admin = self.admin.clone();
        let topic = stream.to_string();
        let timeout = self.config.timeout;
        tokio::task::spawn_blocking(move || -> Result<StreamInfo> {
            let metadata = admin
                .inner()
                .fetch_metadata(Some(&topic), timeout)
                .map_err(|e| map(e, &format!("describe `{topic}`")))?;
            let found = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .ok_or_else(|| {
                    Error::not_found(format!("Kafka topic `{topic}` does not exist"))
                        .with_backend("kafka")
                })?;
            let mut ids: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
            ids.sort_unstable();
            let mut partitions = Vec::with_capacity(ids.len());
            for id in ids {
                let (low, high) = admin
                    .inner()
                    .fetch_watermarks(&topic, id, timeout)
                    .map_err(|e| {
                        map(e, &format!("read the offsets of `{topic}` partition {id}"))
                    })?;
                partitions.push(PartitionInfo {
                    id: PartitionId::from(id as u32),
                    earliest: Some(Position::from_offset(low.max(0) as u64)),
                    next: Some(Position::from_offset(high.max(0) as u64)),
                });
            }
            Ok(StreamInfo {
                name: topic,
                partitions,
            })
        })
        .await
        .map_err(|e| Error::other(format!("describe panicked: {e}")))?
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, AtomicOrdering::Release);
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
