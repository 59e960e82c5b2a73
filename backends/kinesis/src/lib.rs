//! AWS Kinesis Data Streams for tributary, on AWS's official `aws-sdk-kinesis`, with consumer
//! groups whose leases and checkpoints live in a DynamoDB table a KCL application can read.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> tributary::Result<()> {
//! use tributary::{ConsumerOptions, Event, StartPosition};
//! tributary_kinesis::register();
//! // Region and credentials from the AWS default chain; ?endpoint=http://127.0.0.1:4567 for an
//! // emulator.
//! let backend = tributary::connect("kinesis://eu-west-1").await?;
//! let producer = backend.producer("orders").await?;
//! producer.send(Event::new("hello").with_key("customer-7")).await?;
//! let consumer = backend
//!     .consumer("orders", ConsumerOptions::new("billing").start(StartPosition::Earliest))
//!     .await?;
//! let delivery = consumer.receive().await?;
//! delivery.ack();
//! # Ok(()) }
//! ```
//!
//! # Model
//! - A stream is a Kinesis stream, a partition a shard (`shardId-000000000000`), a position a
//!   sequence number; user record `i` of a KPL aggregated record has position `SEQUENCE:i`.
//! - The key is the partition key when it is UTF-8 of 1 to 256 bytes; keyless events get a
//!   spread partition key of their own; headers, the timestamp and other keys travel in a small
//!   versioned envelope inside the data, only when present (`envelope.rs`). Records from any
//!   other producer read as plain events: the partition key as key, the approximate arrival
//!   time as timestamp.
//! - Records in the KPL's aggregated format are split into their user records, each with its
//!   own partition key; one whose MD5 digest does not match is an error naming the record,
//!   never skipped. `aggregate=true` aggregates on produce (`kpl.rs`).
//! - Producing batches `PutRecords` calls within the service's limits (500 records, 5 MiB),
//!   retries refused records with backoff, and never has two records of one partition key in
//!   flight, so a retried record can never land after a later record of its key
//!   (`producer.rs`). A record held back that way holds back only its key: a call is filled
//!   with the waiting records of other keys, oldest first, so keys spread over a batch fill
//!   whole calls while a single hot key sends one record per round trip (unless
//!   `aggregate=true`). A `send_batch` of free, distinct keys that fits one call makes its
//!   call in the caller's task, without a hand-off to the producer's driver task.
//! - A group is a set of leases, one per shard, in a DynamoDB table in the KCL 2.x schema
//!   (`dynamodb/`), shared by every consumer of the group in any process; shards move between
//!   consumers as they come and go, and a child shard (after a split or merge) is read only
//!   after its parents were read to their end and that end was checkpointed. `checkpoints=file:`
//!   or `memory` keep them locally instead.
//! - Reads poll `GetRecords` within the per-shard limits (a call per `poll_interval`, at least
//!   200 ms apart; backing off when throttled; expired iterators renewed after the last record
//!   read), or, with `fanout=true`, use enhanced fan-out (a registered consumer per group,
//!   `SubscribeToShard` renewed before its five minutes).
//! - Start positions: `Earliest` is the trim horizon; `Latest` is pinned, when the group first
//!   takes a shard, to the shard's last record (found by reading from a few seconds back), so a
//!   later owner never skips what arrived in between; `Timestamp` reads from the first record
//!   that arrived at or after the time; `Position` from that sequence number (`S` or `S:i`), in
//!   its shard, and from the same moment in the others.
//! - `Consumer::lag` counts the events read and not yet acked; it is exact while the consumer
//!   keeps up (Kinesis reports how far behind a reader is in time, not in events).
//! - Against a local emulator (an `http://` endpoint) exact time starts are not declared:
//!   kinesalite and ferrokinesis keep arrival times to the second.
//!
//! # CloudEvents
//! CloudEvents has no Kinesis binding, and Kinesis records have no headers: the generic
//! binding of `tributary::cloudevents` applies (`Binding::for_scheme("kinesis")`), with
//! structured mode as its default. In binary mode the attributes are Kafka-style `ce_` headers
//! and `datacontenttype` is `content-type`; in structured mode the payload is the event's JSON
//! and `content-type` is `application/cloudevents+json`. Either way the headers ride in the
//! envelope above, so the data of such a record starts with the envelope's magic for other
//! Kinesis readers, and a tributary consumer gets payload and every header back byte for byte
//! (the bridge's `cloudevents` test checks both modes against ferrokinesis). Give the event the
//! `partitionkey` extension as its key to have it become the record's partition key.
//!
//! # URL options
//! | option | default | meaning |
//! |---|---|---|
//! | `endpoint` | AWS | `http://host:port` for an emulator (any credentials do), or an `https://` VPC endpoint |
//! | `profile` | default chain | the shared-config profile credentials and region come from |
//! | `timeout` | `30s` | each administrative call, the connection check, each `PutRecords` call |
//! | `auto_create` | `false` | create a missing stream (with `shards` shards) |
//! | `shards` | `1` | shards of auto-created streams |
//! | `max_record_bytes` | `1048576` | the stream's record limit (data + partition key; up to 10 MiB for streams raised with `UpdateMaxRecordSize`) |
//! | `aggregate` | `false` | pack queued records of one partition key into KPL aggregated records |
//! | `aggregate_max_bytes` | `51200` | largest aggregated record (the KPL's default) |
//! | `linger` | `5ms` | how long a busy producer waits to fill a `PutRecords` call |
//! | `max_requests_in_flight` | `8` | `PutRecords` calls a producer has open at once |
//! | `send_timeout` | `120s` | how long a record is retried before its send fails |
//! | `checkpoints` | `dynamodb` | `dynamodb`, `memory`, or `file:/DIR` |
//! | `dynamodb_endpoint` | AWS | `http://host:port` for a local DynamoDB (dynalite) |
//! | `lease_table` | `{group}.{stream}` | the lease table; `{group}` and `{stream}` are replaced (a KCL application's table name adopts its checkpoints) |
//! | `create_lease_table` | `true` | create a missing lease table (on demand capacity) |
//! | `lease_ttl` | `10s` | a lease lapses when its owner has not renewed it for this long (the KCL's failover time) |
//! | `commit_interval` | `1s` | how often acked progress is checkpointed |
//! | `poll_interval` | `250ms` | pause between `GetRecords` calls on a shard with nothing new (at least 200 ms); what bounds an event's latency when the stream is quiet: half of it on average, all of it at worst (the KCL waits 1 s, 1.5 s in its newer versions; `fanout=true` pushes records instead) |
//! | `records_per_call` | `10000` | `GetRecords` limit |
//! | `fanout` | `false` | read through enhanced fan-out |
//! | `fanout_consumer` | the group | name of the registered stream consumer |
//! | `fanout_resubscribe` | `4m30s` | how long a subscription is kept before it is renewed (6s to 5m) |
#![warn(missing_docs)]

mod admin;
mod config;
pub mod dynamodb;
pub mod envelope;
mod error;
mod fanout;
pub mod kpl;
mod producer;
mod source;

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_sdk_kinesis::config::{Credentials, Region};
use tributary::backend::group::{GroupConfig, GroupEngine};
use tributary::backend::{CheckpointStore, FileCheckpointStore, MemoryCheckpointStore};
use tributary::{
    AckModel, Backend, Capabilities, Consumer, ConsumerOptions, Error, Lifecycle, Ordering,
    Producer, ReceiptSupport, Result, StartSupport, StreamInfo, StreamSpec,
};

pub use config::{CheckpointsAt, KinesisConfig};

use crate::admin::{Admin, not_found_named};
use crate::config::{check_consumer_name, check_stream_name};
use crate::dynamodb::{DynamoDbCheckpointStore, DynamoDbSettings};
use crate::fanout::Subscriptions;
use crate::producer::{KinesisProducer, ProducerSettings};
use crate::source::{KinesisSource, ReadSettings};
use tributary::backend::CloseGate;

/// What a backend with `config` guarantees.
fn capabilities_of(config: &KinesisConfig) -> Capabilities {
    let mut caps = Capabilities::minimal();
    caps.native_headers = false;
    caps.timestamps = true;
    caps.ordering = Ordering::PerKey;
    caps.ack = AckModel::Cumulative;
    caps.nack = true;
    caps.delivery_attempts = true;
    caps.start = StartSupport {
        earliest: true,
        latest: true,
        // Emulators keep arrival times to the second (kinesalite, ferrokinesis), so a start
        // at a time is exact only against the service.
        timestamp: !config.emulated(),
        position: true,
    };
    caps.receipts = ReceiptSupport {
        partition: true,
        position: true,
    };
    caps.max_event_bytes = Some(ProducerSettings::from_config(config).max_event_bytes());
    caps.lifecycle = Lifecycle {
        auto_create: config.auto_create,
        networked: true,
        competing_consumers: true,
    };
    // Exact while the consumer keeps up (a shard reports MillisBehindLatest = 0); the
    // events of a shard still being caught up on are not counted.
    caps.lag = true;
    // CreateStream and DeleteStream are data-plane calls of the same client.
    caps.admin = true;
    caps
}

/// Registers the `kinesis://` scheme with [`tributary::connect`] (which stamps every error with
/// the backend, operation and stream).
pub fn register() {
    tributary::register_backend("kinesis", |url| async move {
        KinesisBackend::connect(KinesisConfig::from_url(&url)?).await
    });
}

/// Kinesis Data Streams in one region (and, for consumer groups, their lease tables).
pub struct KinesisBackend {
    config: KinesisConfig,
    kinesis: aws_sdk_kinesis::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    admin: Admin,
    gate: CloseGate,
    /// The consumer groups of this backend, over the configured checkpoint store.
    groups: tokio::sync::OnceCell<GroupEngine>,
    /// Enhanced fan-out consumers, by name.
    subscriptions: parking_lot::Mutex<HashMap<String, Arc<Subscriptions>>>,
}

impl std::fmt::Debug for KinesisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KinesisBackend")
            .field("url", &self.config.shown_url)
            .finish_non_exhaustive()
    }
}

impl KinesisBackend {
    /// Loads region and credentials (the AWS default chain; static test credentials for an
    /// `http://` emulator endpoint when the environment has none), then checks within the
    /// `timeout` that Kinesis answers.
    ///
    /// The errors of this call name the backend; the returned backend's own errors are named
    /// by [`tributary::backend::stamped`] (which `tributary::connect` applies).
    pub async fn connect(config: KinesisConfig) -> Result<KinesisBackend> {
        // The one place this crate names itself: a typed connect comes before any stamping
        // layer wraps the backend.
        Self::open(config)
            .await
            .map_err(|e| e.with_backend("kinesis"))
    }

    async fn open(config: KinesisConfig) -> Result<KinesisBackend> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &config.profile {
            loader = loader.profile_name(profile);
        }
        if config.emulated() {
            // Emulators accept any credentials; never wait for an instance role that is not
            // there.
            let chain = CredentialsProviderChain::first_try(
                "Environment",
                aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
            )
            .or_else(
                "Emulator",
                Credentials::new("tributary", "emulator", None, None, "tributary-emulator"),
            );
            loader = loader.credentials_provider(chain);
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(Error::config(format!(
                "no AWS region for `{}`: give it in the URL (kinesis://us-east-1) or set AWS_REGION",
                config.shown_url
            )));
        }
        let mut kinesis = aws_sdk_kinesis::config::Builder::from(&sdk);
        if let Some(endpoint) = &config.endpoint {
            kinesis = kinesis.endpoint_url(endpoint);
        }
        let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(&sdk);
        if let Some(endpoint) = &config.dynamodb_endpoint {
            dynamodb = dynamodb.endpoint_url(endpoint);
        }
        let kinesis = aws_sdk_kinesis::Client::from_conf(kinesis.build());
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(dynamodb.build());
        let admin = Admin {
            client: kinesis.clone(),
            timeout: config.timeout,
        };
        let backend = KinesisBackend {
            gate: CloseGate::new(format!("Kinesis backend `{}`", config.shown_url)),
            config,
            kinesis,
            dynamodb,
            admin,
            groups: tokio::sync::OnceCell::new(),
            subscriptions: parking_lot::Mutex::new(HashMap::new()),
        };
        backend.admin.list().await.map_err(|e| {
            let at = backend
                .config
                .endpoint
                .clone()
                .unwrap_or_else(|| "AWS".to_owned());
            Error::new(
                e.kind(),
                format!("Kinesis at {at} did not answer: {}", e.message()),
            )
            .with_retryable(e.is_retryable())
        })?;
        Ok(backend)
    }

    /// The Kinesis client, for what the model does not cover.
    pub fn kinesis_client(&self) -> &aws_sdk_kinesis::Client {
        &self.kinesis
    }

    /// The DynamoDB client the lease tables are reached with.
    pub fn dynamodb_client(&self) -> &aws_sdk_dynamodb::Client {
        &self.dynamodb
    }

    /// The configuration this backend was opened with.
    pub fn config(&self) -> &KinesisConfig {
        &self.config
    }

    /// The group engine, over the store the URL names (created on first use).
    async fn groups(&self) -> Result<&GroupEngine> {
        self.groups
            .get_or_try_init(|| async {
                let store: Arc<dyn CheckpointStore> = match &self.config.checkpoints {
                    CheckpointsAt::DynamoDb => DynamoDbCheckpointStore::new(
                        self.dynamodb.clone(),
                        DynamoDbSettings {
                            table: self.config.lease_table.clone(),
                            create_table: self.config.create_lease_table,
                            lease_ttl: self.config.lease_ttl,
                            timeout: self.config.timeout,
                        },
                    ),
                    CheckpointsAt::Memory => Arc::new(MemoryCheckpointStore::new()),
                    CheckpointsAt::Files(dir) => Arc::new(FileCheckpointStore::open(dir)?),
                };
                let config = GroupConfig::new(self.config.lease_ttl)
                    .backend("kinesis")
                    .commit_interval(self.config.commit_interval);
                Ok(GroupEngine::new(store, config))
            })
            .await
    }

    fn subscriptions(&self, name: &str) -> Arc<Subscriptions> {
        self.subscriptions
            .lock()
            .entry(name.to_owned())
            .or_insert_with(|| {
                Subscriptions::new(
                    self.kinesis.clone(),
                    name,
                    self.config.timeout,
                    self.config.fanout_resubscribe,
                    self.config.poll_interval,
                )
            })
            .clone()
    }

    fn check_open(&self) -> Result<()> {
        self.gate.check()
    }

    /// Makes sure `stream` exists and is active, creating it when `auto_create` allows.
    async fn ensure_stream(&self, stream: &str) -> Result<()> {
        check_stream_name(stream)?;
        match self.admin.status(stream).await? {
            Some(aws_sdk_kinesis::types::StreamStatus::Active)
            | Some(aws_sdk_kinesis::types::StreamStatus::Updating) => Ok(()),
            Some(_) => self.admin.wait_active(stream).await,
            None if self.config.auto_create => {
                match self.admin.create(stream, self.config.shards).await {
                    Err(e) if e.kind() == tributary::ErrorKind::AlreadyExists => {
                        self.admin.wait_active(stream).await
                    }
                    other => other,
                }
            }
            None => Err(Error::not_found(format!(
                "Kinesis stream `{stream}` does not exist (create it, or add auto_create=true to the URL)"
            ))),
        }
    }
}

#[async_trait]
impl Backend for KinesisBackend {
    fn scheme(&self) -> &'static str {
        "kinesis"
    }

    fn capabilities(&self) -> Capabilities {
        capabilities_of(&self.config)
    }

    async fn producer(&self, stream: &str) -> Result<Box<dyn Producer>> {
        self.check_open()?;
        self.ensure_stream(stream).await?;
        Ok(Box::new(KinesisProducer::start(
            self.kinesis.clone(),
            stream,
            ProducerSettings::from_config(&self.config),
        )))
    }

    async fn consumer(&self, stream: &str, options: ConsumerOptions) -> Result<Box<dyn Consumer>> {
        self.check_open()?;
        options.validate()?;
        self.ensure_stream(stream).await?;
        let fanout = if self.config.fanout {
            let name = self
                .config
                .fanout_consumer
                .clone()
                .unwrap_or_else(|| options.group.clone());
            check_consumer_name(&name)?;
            Some(self.subscriptions(&name))
        } else {
            None
        };
        let source = Arc::new(KinesisSource::new(
            stream,
            self.kinesis.clone(),
            self.admin.clone(),
            ReadSettings {
                poll_interval: self.config.poll_interval,
                records_per_call: self.config.records_per_call,
                call_timeout: self.config.timeout,
            },
            fanout,
        ));
        let consumer = self.groups().await?.join(stream, source, options).await?;
        Ok(Box::new(consumer))
    }

    async fn create_stream(&self, stream: &str, spec: StreamSpec) -> Result<()> {
        self.check_open()?;
        check_stream_name(stream)?;
        self.admin.create(stream, spec.partitions.max(1)).await
    }

    async fn delete_stream(&self, stream: &str) -> Result<()> {
        self.check_open()?;
        check_stream_name(stream)?;
        self.admin.delete(stream).await
    }

    async fn list_streams(&self) -> Result<Vec<String>> {
        self.check_open()?;
        self.admin.list().await
    }

    async fn describe_stream(&self, stream: &str) -> Result<StreamInfo> {
        self.check_open()?;
        check_stream_name(stream)?;
        self.admin
            .describe(stream)
            .await
            .map_err(|e| not_found_named(e, stream))
    }

    async fn close(&self) -> Result<()> {
        if !self.gate.close().await {
            return Ok(());
        }
        // Consumers commit what was acked and give their shards up at once.
        match self.groups.get() {
            Some(groups) => groups.close().await,
            None => Ok(()),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_time_starts_are_declared_against_the_service_only() {
        let aws =
            KinesisConfig::from_url(&tributary::parse_url("kinesis://eu-west-1").unwrap()).unwrap();
        assert!(capabilities_of(&aws).start.timestamp);
        let emulator = KinesisConfig::from_url(
            &tributary::parse_url(
                "kinesis://us-east-1?endpoint=http://127.0.0.1:4567&checkpoints=memory",
            )
            .unwrap(),
        )
        .unwrap();
        assert!(!capabilities_of(&emulator).start.timestamp);
        assert_eq!(capabilities_of(&aws).max_event_bytes, Some((1 << 20) - 27));
    }
}
