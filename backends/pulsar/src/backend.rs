//! The backend: connecting (a broker that answers, the broker's size limit), its accessors,
//! and the `Backend` trait (capabilities, stream administration through the admin API;
//! producers and consumers are opened in `open.rs`).

mod open;

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::Duration;

use async_trait::async_trait;
use pulsar::{ConnectionRetryOptions, OperationRetryOptions, Pulsar, TokioExecutor};
use tributary::{
    AckModel, Backend, Capabilities, Consumer, ConsumerOptions, Error, Lifecycle, Ordering,
    PartitionId, PartitionInfo, Position, Producer, ReceiptSupport, Result, StartSupport,
    StreamInfo, StreamSpec,
};

use crate::admin::{Admin, SubscriptionBacklog};
use crate::config::{PulsarConfig, SubscriptionType, TopicName};
use crate::error::{BACKEND, map};
use crate::position::MessagePosition;
use crate::{DEFAULT_MAX_MESSAGE_BYTES, METADATA_RESERVE};

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
        self.open_producer(stream).await
    }

    async fn consumer(&self, stream: &str, options: ConsumerOptions) -> Result<Box<dyn Consumer>> {
        self.check_open()?;
        self.open_consumer(stream, options).await
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
