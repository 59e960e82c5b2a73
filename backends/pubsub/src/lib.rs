//! Google Cloud Pub/Sub for tributary, on Google's official `google-cloud-pubsub` crate.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> tributary::Result<()> {
//! use tributary::{ConsumerOptions, Event, StartPosition};
//! tributary_pubsub::register();
//! // Application Default Credentials; or ?endpoint=http://127.0.0.1:8085 (or
//! // PUBSUB_EMULATOR_HOST) for an emulator.
//! let backend = tributary::connect("pubsub://my-project").await?;
//! let producer = backend.producer("orders").await?;
//! producer.send(Event::new("hello").with_key("customer-7")).await?;
//! let consumer = backend.consumer("orders", ConsumerOptions::new("billing")).await?;
//! let delivery = consumer.receive().await?;
//! delivery.ack();
//! # Ok(()) }
//! ```
//!
//! # Model
//! - A stream is a topic (`projects/PROJECT/topics/STREAM`); a group is the subscription
//!   `projects/PROJECT/subscriptions/STREAM.GROUP`, created on first use unless
//!   `create_subscriptions=false`. With `ordering=true` the subscription is created with
//!   message ordering and the backend declares per-key order; the service then hands out the
//!   next event of a key only once the previous one is acked (so acknowledge in order).
//! - The key is the ordering key, headers are attributes and the timestamp an attribute; what
//!   attributes cannot carry (binary values, repeated names) travels in a small documented
//!   envelope, only then. See `envelope.rs` for the exact, versioned mapping.
//! - No partitions and no positions: receipts are empty, `StartPosition::Position` is refused.
//!   A new group receives what is published after it is created (`Latest`; `Earliest` means the
//!   same for a new subscription, since Pub/Sub keeps nothing for subscriptions that do not
//!   exist yet). Starting at a time needs topic retention and is not offered yet.
//! - Ack and nack are per message; a nack (or a dropped delivery) is redelivered at once.
//!
//! # URL options
//! | option | default | meaning |
//! |---|---|---|
//! | `endpoint` | Google Cloud, or `http://$PUBSUB_EMULATOR_HOST` | `http://host:port` for an emulator (plaintext, anonymous) |
//! | `timeout` | `30s` | admin calls and the connection check |
//! | `auto_create` | `false` | create missing topics |
//! | `create_subscriptions` | `true` | create a group's subscription on first use |
//! | `ordering` | `false` | create subscriptions with message ordering (per-key order; the next event of a key waits for the previous one's ack) |
//! | `ack_deadline` | `30s` | for subscriptions it creates, and the lease of each message a consumer streams (extended while a delivery is held; what a consumer that ends without nacking held comes back after it) |
//! | `batch_count`, `batch_bytes`, `batch_delay` | `100`, `1000000`, `10ms` | publisher batching thresholds (those of Google's Rust, Python and Go clients); an event sent alone waits `batch_delay` before it is published: `batch_delay=1ms` where events come one at a time and each is waited for (send to receive on pstest 10.7 ms at the median instead of 17.3) |
//! | `max_event_bytes` | `10000000` | largest message (data + attributes + ordering key) |
//!
//! # Configuration in code
//! [`PubSubConfig`] holds every option as a field: build one with [`PubSubConfig::new`] or
//! [`PubSubConfig::from_url`] and open it with [`PubSubBackend::connect`]. `tributary::connect`
//! with a URL is the short form of the same, after [`register`].
//!
//! Errors leave through core's stamping layer ([`tributary::backend::stamped`], applied by
//! `tributary::connect` and `tributary::Registry`), which names the backend, the operation and
//! the stream; wrap a backend built from a config in it to get the same errors.
#![warn(missing_docs)]

mod config;
mod consumer;
mod envelope;
mod error;
mod producer;

use std::any::Any;
use std::future::Future;

use async_trait::async_trait;
use google_cloud_auth::credentials::anonymous;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::Subscription;
use tributary::backend::CloseGate;
use tributary::{
    AckModel, Backend, Capabilities, Consumer, ConsumerOptions, Error, ErrorKind, Lifecycle,
    Ordering, Producer, ReceiptSupport, Result, StartPosition, StartSupport, StreamInfo,
    StreamSpec,
};

pub use crate::config::{EMULATOR_HOST_VAR, PubSubConfig, SERVICE_MAX_MESSAGE_BYTES};
use crate::error::map;

/// The URL scheme, and the backend name errors carry.
const SCHEME: &str = "pubsub";

/// Registers the `pubsub://` scheme with [`tributary::connect`] (which stamps every error with
/// the backend, operation and stream).
pub fn register() {
    tributary::register_backend(SCHEME, |url| async move {
        PubSubBackend::connect(PubSubConfig::from_url(&url)?).await
    });
}

/// Checks a `pubsub://` URL's options as [`PubSubBackend::connect`] would, without
/// connecting. For configuration checkers (`bridge validate`).
pub fn check_url(url: &tributary::Url) -> Result<()> {
    PubSubConfig::from_url(url).map(drop)
}

/// Builds a Google client, pointed at the emulator with anonymous credentials when the URL
/// names an endpoint, else at Google Cloud with Application Default Credentials.
macro_rules! build_client {
    ($builder:expr, $config:expr, $what:expr) => {{
        let builder = $builder;
        let built = match &$config.endpoint {
            Some(endpoint) => {
                builder
                    .with_endpoint(endpoint.clone())
                    .with_credentials(anonymous::Builder::new().build())
                    .build()
                    .await
            }
            None => builder.build().await,
        };
        built.map_err(|e| Error::config(format!("cannot create the Pub/Sub {} client: {e}", $what)))
    }};
}

/// A Google Cloud Pub/Sub project.
pub struct PubSubBackend {
    config: PubSubConfig,
    topics: TopicAdmin,
    subscriptions: SubscriptionAdmin,
    /// One streaming-pull client (a connection pool) shared by every consumer.
    subscriber: Subscriber,
    gate: CloseGate,
}

impl std::fmt::Debug for PubSubBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSubBackend")
            .field("project", &self.config.project)
            .field("emulator", &self.config.endpoint.is_some())
            .finish_non_exhaustive()
    }
}

impl PubSubBackend {
    /// Connects and checks, within the config's `timeout`, that the service answers.
    ///
    /// The errors of this call (a bad config, a service that does not answer) name the
    /// backend; the returned backend's own errors are named by [`tributary::backend::stamped`].
    pub async fn connect(config: PubSubConfig) -> Result<PubSubBackend> {
        // The one place this crate names itself: connecting happens before any stamping layer
        // wraps the backend.
        Self::open(config).await.map_err(|e| e.with_backend(SCHEME))
    }

    async fn open(config: PubSubConfig) -> Result<PubSubBackend> {
        config.check()?;
        let topics = build_client!(TopicAdmin::builder(), config, "topic admin")?;
        let subscriptions =
            build_client!(SubscriptionAdmin::builder(), config, "subscription admin")?;
        let subscriber = build_client!(Subscriber::builder(), config, "subscriber")?;
        let backend = PubSubBackend {
            config,
            topics,
            subscriptions,
            subscriber,
            gate: CloseGate::new("the Pub/Sub backend"),
        };
        let probe = backend
            .topics
            .list_topics()
            .set_project(backend.project())
            .set_page_size(1)
            .send();
        backend.timed("reach Pub/Sub", probe).await.map_err(|e| {
            let where_ = backend
                .config
                .endpoint
                .clone()
                .unwrap_or_else(|| "Google Cloud".into());
            Error::unavailable(format!(
                "Pub/Sub at {where_} did not answer: {}",
                e.message()
            ))
            .with_retryable(true)
        })?;
        Ok(backend)
    }

    fn project(&self) -> String {
        format!("projects/{}", self.config.project)
    }

    /// Runs an admin call with the URL's timeout, mapping its error.
    async fn timed<T>(
        &self,
        what: &str,
        call: impl Future<Output = std::result::Result<T, google_cloud_pubsub::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.config.timeout, call).await {
            Ok(result) => result.map_err(|e| map(&e, what)),
            Err(_) => Err(Error::timeout(format!(
                "{what}: no answer within {:?} (option `timeout`)",
                self.config.timeout
            ))
            .with_retryable(true)),
        }
    }

    async fn ensure_topic(&self, stream: &str) -> Result<()> {
        PubSubConfig::check_name("topic", stream)?;
        let name = self.config.topic(stream);
        match self
            .timed(
                &format!("look up topic `{stream}`"),
                self.topics.get_topic().set_topic(&name).send(),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound && self.config.auto_create => {
                match self.create_stream(stream, StreamSpec::default()).await {
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
                    other => other,
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::not_found(format!(
                "Pub/Sub topic `{stream}` does not exist in project `{}` (create it, or add auto_create=true to the URL)",
                self.config.project
            ))),
            Err(e) => Err(e),
        }
    }

    async fn ensure_subscription(&self, stream: &str, group: &str) -> Result<String> {
        PubSubConfig::check_name("subscription", &format!("{stream}.{group}"))?;
        let name = self.config.subscription(stream, group);
        let lookup = self
            .subscriptions
            .get_subscription()
            .set_subscription(&name)
            .send();
        match self
            .timed(&format!("look up subscription `{name}`"), lookup)
            .await
        {
            Ok(_) => Ok(name),
            Err(e) if e.kind() == ErrorKind::NotFound && self.config.create_subscriptions => {
                let subscription = Subscription::new()
                    .set_name(&name)
                    .set_topic(self.config.topic(stream))
                    .set_ack_deadline_seconds(self.config.ack_deadline.as_secs() as i32)
                    .set_enable_message_ordering(self.config.ordering);
                let create = self
                    .subscriptions
                    .create_subscription()
                    .with_request(subscription)
                    .send();
                match self
                    .timed(&format!("create subscription `{name}`"), create)
                    .await
                {
                    Ok(_) => Ok(name),
                    // Another member of the group created it first.
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(name),
                    Err(e) => Err(e),
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::not_found(format!(
                "subscription `{name}` for group `{group}` does not exist (create it, or drop create_subscriptions=false)"
            ))),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Backend for PubSubBackend {
    fn scheme(&self) -> &'static str {
        SCHEME
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::minimal();
        caps.native_headers = true;
        caps.timestamps = true;
        caps.ordering = if self.config.ordering {
            Ordering::PerKey
        } else {
            Ordering::None
        };
        caps.ack = AckModel::Individual;
        caps.nack = true;
        caps.delivery_attempts = false;
        caps.start = StartSupport {
            earliest: false,
            latest: true,
            timestamp: false,
            position: false,
        };
        caps.receipts = ReceiptSupport {
            partition: false,
            position: false,
        };
        caps.max_event_bytes = Some(self.config.max_event_bytes);
        caps.lifecycle = Lifecycle {
            auto_create: self.config.auto_create,
            networked: true,
            competing_consumers: true,
        };
        // The backlog of a subscription is known only to Cloud Monitoring, not to clients.
        caps.lag = false;
        caps.admin = true;
        caps
    }

    async fn producer(&self, stream: &str) -> Result<Box<dyn Producer>> {
        self.gate.check()?;
        self.ensure_topic(stream).await?;
        let topic = self.config.topic(stream);
        let builder = Publisher::builder(topic)
            .set_message_count_threshold(self.config.batch_count)
            .set_byte_threshold(self.config.batch_bytes)
            .set_delay_threshold(self.config.batch_delay);
        let publisher = build_client!(builder, self.config, "publisher")?;
        Ok(Box::new(producer::PubSubProducer::new(
            stream,
            publisher,
            self.config.max_event_bytes,
        )))
    }

    async fn consumer(&self, stream: &str, options: ConsumerOptions) -> Result<Box<dyn Consumer>> {
        self.gate.check()?;
        options.validate()?;
        match &options.start {
            StartPosition::Earliest | StartPosition::Latest => {}
            StartPosition::Position(_) => {
                return Err(Error::unsupported("Pub/Sub has no positions to start from"));
            }
            StartPosition::Timestamp(_) => {
                return Err(Error::unsupported(
                    "starting a Pub/Sub group at a time needs topic message retention and a seek; not offered yet",
                ));
            }
        }
        self.ensure_topic(stream).await?;
        let subscription = self.ensure_subscription(stream, &options.group).await?;
        Ok(Box::new(consumer::PubSubConsumer::start(
            &self.subscriber,
            stream,
            &subscription,
            options.max_in_flight,
            self.config.ack_deadline,
        )))
    }

    async fn create_stream(&self, stream: &str, _spec: StreamSpec) -> Result<()> {
        self.gate.check()?;
        PubSubConfig::check_name("topic", stream)?;
        let create = self
            .topics
            .create_topic()
            .set_name(self.config.topic(stream))
            .send();
        self.timed(&format!("create topic `{stream}`"), create)
            .await
            .map(|_| ())
    }

    async fn delete_stream(&self, stream: &str) -> Result<()> {
        self.gate.check()?;
        PubSubConfig::check_name("topic", stream)?;
        let delete = self
            .topics
            .delete_topic()
            .set_topic(self.config.topic(stream))
            .send();
        self.timed(&format!("delete topic `{stream}`"), delete)
            .await
    }

    async fn list_streams(&self) -> Result<Vec<String>> {
        self.gate.check()?;
        let prefix = format!("{}/topics/", self.project());
        let mut names = Vec::new();
        let mut page_token = String::new();
        loop {
            let list = self
                .topics
                .list_topics()
                .set_project(self.project())
                .set_page_token(&page_token)
                .send();
            let page = self.timed("list topics", list).await?;
            names.extend(
                page.topics
                    .iter()
                    .map(|t| t.name.strip_prefix(&prefix).unwrap_or(&t.name).to_string()),
            );
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        names.sort();
        Ok(names)
    }

    async fn describe_stream(&self, stream: &str) -> Result<StreamInfo> {
        self.gate.check()?;
        PubSubConfig::check_name("topic", stream)?;
        let get = self
            .topics
            .get_topic()
            .set_topic(self.config.topic(stream))
            .send();
        self.timed(&format!("describe topic `{stream}`"), get)
            .await?;
        // Pub/Sub topics have no partitions and no offsets to report.
        Ok(StreamInfo {
            name: stream.to_string(),
            partitions: Vec::new(),
        })
    }

    async fn close(&self) -> Result<()> {
        self.gate.close().await;
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
