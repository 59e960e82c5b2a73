//! The backend: connecting, and opening producers and consumers.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use async_trait::async_trait;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use tributary::backend::CloseGate;
use tributary::{
    AckModel, Backend, Capabilities, Consumer, ConsumerOptions, Error, Lifecycle, Ordering,
    Producer, ReceiptSupport, Result, StartSupport, StreamInfo, StreamSpec, Url,
};

use crate::config::KafkaConfig;
use crate::error::map;
use crate::lag::{GroupLag, LagReader};
use crate::{consumer, probe, producer, record, topics};

/// The default `message.max.bytes` of a Kafka broker, used when the broker does not say.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// A Kafka cluster.
///
/// Errors name the operation and stream in their message; the backend (`kafka`) is stamped on
/// them by [`tributary::connect`], or by [`tributary::backend::stamped`] for a backend made
/// with [`KafkaBackend::connect`].
pub struct KafkaBackend {
    pub(crate) config: KafkaConfig,
    pub(crate) admin: ClosedAside<AdminClient<DefaultClientContext>>,
    /// The broker's `message.max.bytes`.
    pub(crate) max_message_bytes: usize,
    closed: AtomicBool,
    lag_reader: ClosedAside<LagReader>,
    producer_clients: producer::Clients,
}

/// A client the backend shares, whose last reference is dropped on a thread of its own.
///
/// librdkafka's clients close by waiting: rdkafka joins the admin client's poller (which polls
/// every 100 ms) and closes a consumer with a group by polling until librdkafka has closed it.
/// A backend is often dropped on an async worker, which must not wait for either.
pub(crate) struct ClosedAside<T: Send + Sync + 'static>(Option<Arc<T>>);

impl<T: Send + Sync + 'static> ClosedAside<T> {
    fn new(client: T) -> Self {
        ClosedAside(Some(Arc::new(client)))
    }
}

impl<T: Send + Sync + 'static> std::ops::Deref for ClosedAside<T> {
    type Target = Arc<T>;

    fn deref(&self) -> &Arc<T> {
        self.0.as_ref().expect("present until dropped")
    }
}

impl<T: Send + Sync + 'static> Drop for ClosedAside<T> {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop_aside(client);
        }
    }
}

/// Drops `client` on a thread of its own: librdkafka's clients close by waiting. Should the
/// thread not start, the client is dropped here, as it would have been.
pub(crate) fn drop_aside<T: Send + 'static>(client: T) {
    let _ = std::thread::Builder::new()
        .name("tributary-kafka-close".into())
        .spawn(move || drop(client));
}

impl std::fmt::Debug for KafkaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBackend")
            .field("cluster", &self.config.shown())
            .finish_non_exhaustive()
    }
}

impl KafkaBackend {
    /// Connects with `config`: checks that a broker answers within `config.timeout` (a broker
    /// that refuses the credentials is reported at once) and reads its limits.
    pub async fn connect(config: KafkaConfig) -> Result<KafkaBackend> {
        // The one place a Kafka error is stamped by the backend itself: connecting happens
        // before any stamping layer exists. Everything later is stamped by that layer.
        Self::open(config)
            .await
            .map_err(|e| e.with_backend("kafka"))
    }

    async fn open(config: KafkaConfig) -> Result<KafkaBackend> {
        config.validate()?;
        let admin: AdminClient<DefaultClientContext> = config
            .admin()
            .create()
            .map_err(|e| map(e, &format!("connect to {}", config.shown())))?;
        let admin = ClosedAside::new(admin);
        let probe_config = config.clone();
        let metadata = tokio::task::spawn_blocking(move || probe::cluster_metadata(&probe_config))
            .await
            .map_err(|e| Error::other(format!("connecting panicked: {e}")))??;
        let broker = metadata.brokers().first().map(|b| b.id());
        let max_message_bytes = match broker {
            Some(id) => topics::broker_limit(&admin, id, config.timeout)
                .await
                .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
            None => DEFAULT_MAX_MESSAGE_BYTES,
        };
        tracing::debug!(cluster = %config.shown(), max_message_bytes, "kafka: connected");
        Ok(KafkaBackend {
            config,
            admin,
            max_message_bytes,
            closed: AtomicBool::new(false),
            lag_reader: ClosedAside::new(LagReader::default()),
            producer_clients: producer::Clients::default(),
        })
    }

    /// [`connect`](Self::connect) with the configuration a `kafka://` URL gives
    /// ([`KafkaConfig::from_url`]).
    pub async fn connect_url(url: &Url) -> Result<KafkaBackend> {
        Self::connect(KafkaConfig::from_url(url)?).await
    }

    /// The configuration this backend was connected with.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// The librdkafka configuration this backend gives its producers: the escape hatch for
    /// building a raw rdkafka client with the same settings.
    pub fn producer_config(&self) -> rdkafka::ClientConfig {
        self.config.producer_config()
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
    /// and whose session has not expired yet). Four requests to the broker (the topic's
    /// partitions, their ends, their starts, the group's commits), through clients the backend
    /// shares between every group it is asked about: its admin client and its lag reader, a
    /// consumer that never joins a group. The backend's `timeout` bounds the whole lookup;
    /// [`group_lag_within`](Self::group_lag_within) takes another bound.
    pub async fn group_lag(&self, topic: &str, group: &str) -> Result<GroupLag> {
        self.group_lag_within(topic, group, self.config.timeout)
            .await
    }

    /// [`group_lag`](Self::group_lag), failing as [`ErrorKind::Timeout`](tributary::ErrorKind)
    /// (or `Unavailable`, when librdkafka knows the broker is unreachable) once `within` has
    /// passed, whichever of its requests is waiting then. A gauge that asks every second wants
    /// to know in seconds that the broker stopped answering, not after each request has waited
    /// the backend's whole `timeout` in turn.
    ///
    /// ```no_run
    /// # async fn lag(kafka: &tributary_kafka::KafkaBackend) -> tributary::Result<()> {
    /// let lag = kafka
    ///     .group_lag_within("orders", "billing", std::time::Duration::from_secs(5))
    ///     .await?;
    /// println!("billing is {} events behind on orders", lag.total());
    /// # Ok(()) }
    /// ```
    pub async fn group_lag_within(
        &self,
        topic: &str,
        group: &str,
        within: std::time::Duration,
    ) -> Result<GroupLag> {
        self.check_open()?;
        let (reader, config) = (self.lag_reader.clone(), self.config.clone());
        let admin = self.admin.clone();
        let (topic, group) = (topic.to_string(), group.to_string());
        let deadline = crate::lag::Deadline::after(within);
        tokio::task::spawn_blocking(move || {
            reader.group_lag(&config, &admin, &topic, &group, deadline)
        })
        .await
        .map_err(|e| Error::other(format!("group lag lookup panicked: {e}")))?
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(AtomicOrdering::Acquire) {
            return Err(Error::closed("the Kafka backend is closed"));
        }
        Ok(())
    }
}

/// How long a new producer client may spend connecting before `producer()` returns
/// ([`producer::connect_now`]).
const CONNECT_AHEAD: std::time::Duration = std::time::Duration::from_secs(1);

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
        // librdkafka's own check (default 1000000) would otherwise refuse events the topic accepts.
        let max_bytes =
            (!self.config.sets(&self.config.producer, "message.max.bytes")).then_some(limit);
        let (inner, fresh) = self.producer_clients.get(&self.config, max_bytes, stream)?;
        if fresh {
            // At most what the first send would otherwise wait, so a broker that is away does
            // not hold `producer()` for the backend's whole timeout.
            let timeout = CONNECT_AHEAD.min(self.config.timeout);
            let (client, topic) = (inner.clone(), stream.to_string());
            // Dropped with this call's future, the request finishes on its own thread.
            let _ = tokio::task::spawn_blocking(move || {
                producer::connect_now(&client, &topic, timeout)
            })
            .await;
        }
        Ok(Box::new(producer::KafkaProducer {
            topic: stream.to_string(),
            inner,
            in_flight: Arc::default(),
            limit,
            send_timeout: self.config.send_timeout,
            gate: CloseGate::new(format!("producer for `{stream}`")),
        }))
    }

    async fn consumer(&self, stream: &str, options: ConsumerOptions) -> Result<Box<dyn Consumer>> {
        self.check_open()?;
        options.validate()?;
        self.ensure_topic(stream).await?;
        let member = match &self.config.instance_id {
            Some(instance) if !self.config.sets(&self.config.consumer, "group.instance.id") => {
                Some(consumer::StaticMember::claim(
                    instance,
                    &options.group,
                    stream,
                ))
            }
            _ => None,
        };
        Ok(Box::new(
            consumer::KafkaConsumer::start(&self.config, stream, options, member).await?,
        ))
    }

    async fn create_stream(&self, stream: &str, spec: StreamSpec) -> Result<()> {
        self.check_open()?;
        self.create_topic(stream, spec).await
    }

    async fn delete_stream(&self, stream: &str) -> Result<()> {
        self.check_open()?;
        self.delete_topic(stream).await
    }

    async fn list_streams(&self) -> Result<Vec<String>> {
        self.check_open()?;
        self.list_topics().await
    }

    async fn describe_stream(&self, stream: &str) -> Result<StreamInfo> {
        self.check_open()?;
        self.describe_topic(stream).await
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, AtomicOrdering::Release);
        // Producers still open keep their client; the backend no longer does.
        self.producer_clients.clear();
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
