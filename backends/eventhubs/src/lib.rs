//! Azure Event Hubs for tributary, on Microsoft's `azure_messaging_eventhubs` crate, with
//! consumer groups balanced across processes through Azure Blob Storage in the layout
//! Microsoft's SDKs share.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> tributary::Result<()> {
//! use tributary::{ConsumerOptions, Event, StartPosition};
//! tributary_eventhubs::register();
//! // Microsoft Entra ID (az login, managed identity, …), checkpoints in a storage account:
//! let backend = tributary::connect(
//!     "eventhubs://myns.servicebus.windows.net?storage_account_url=https://myacct.blob.core.windows.net",
//! )
//! .await?;
//! let producer = backend.producer("orders").await?;
//! producer.send(Event::new("hello").with_key("customer-7")).await?;
//! let consumer = backend.consumer("orders", ConsumerOptions::new("$Default")).await?;
//! let delivery = consumer.receive().await?;
//! delivery.ack();
//! # Ok(()) }
//! ```
//!
//! # Model
//! - A stream is an event hub; its partitions are the stream's partitions. Hubs are made in
//!   Azure (portal, `az eventhubs eventhub create`, Bicep/Terraform): `create_stream` and
//!   `delete_stream` answer `Unsupported` saying so. `describe_stream` gives each partition's
//!   first and next sequence number. The data plane cannot enumerate a namespace's hubs, so
//!   `list_streams` reports those named by the `hubs` option and a connection string's
//!   `EntityPath` that exist.
//! - An event maps onto a message as `mapping.rs` documents: the key is the partition key, headers
//!   are application properties (binary values as AMQP binary), the timestamp is the property
//!   `tributary-ts`; the service's annotations (enqueued time, partition key, offset, sequence
//!   number) and IoT Hub's system properties are visible as headers of what is read.
//! - The position is the sequence number (decimal); the service's offset travels as the header
//!   `x-opt-offset` and into checkpoints. A send reports no position (the service gives none).
//! - A tributary group reads through the Event Hubs consumer group of the same name (so
//!   `ConsumerOptions::new("$Default")` is the default consumer group), or through the one the
//!   `consumer_group` option names. Consumer groups are made in Azure like hubs.
//! - Recovery: the SDK (0.16) recovers a receiver's link that the service detaches, or a lost
//!   connection, by itself, attaching again from the position the receiver was *opened* at;
//!   the consumer notices the repeated events and reopens the receiver after the last one it
//!   read, so nothing comes twice beyond what was in flight and each partition stays in order
//!   (`consumer.rs`). After a lost connection, SDK 0.16's concurrent recoveries of several
//!   partitions can attach one partition's link twice ("Link name is not unique") and leave
//!   that partition's session dead on the client ("Illegal session state" at every reopen),
//!   or leave a receiver's attach (or its recovery inside the stream) waiting for good. Two
//!   such attaches in a row, or a wait that outlasts the `timeout`, replace the hub and
//!   consumer group's client with a fresh connection, at most every 5 s; the other
//!   partitions move to it as their receivers next reopen, and the old connection closes
//!   when its last receiver lets go (`clients::ConsumerConnection`, `tests/recovery.rs`).
//!   A producer recovers the same way: the SDK reconnects on the next send after a lost
//!   connection; a send that finds the sender's session dead, or gets no answer within the
//!   `timeout`, fails (retryable) and replaces the producer's client for the sends after it
//!   (`clients::ProducerConnection`, `tests/producer_recovery.rs`). A send cut off by a lost
//!   connection fails within about a second (the vendored fe2o3-amqp's third patch); it may
//!   or may not have been stored, so an at-least-once sender sends it again.
//!
//! # Authentication
//! - **Microsoft Entra ID** (the default): `azure_identity`'s credentials in the order of the
//!   SDKs' default chain: workload identity, a service principal from `AZURE_TENANT_ID` /
//!   `AZURE_CLIENT_ID` / `AZURE_CLIENT_SECRET`, managed identity, then the Azure CLI / Azure
//!   Developer CLI login (`auth.rs`). Roles: *Azure Event Hubs Data Owner* (or *Sender* and
//!   *Receiver*) on the namespace, *Storage Blob Data Contributor* on the checkpoint container.
//!   In code, [`EventHubsConfig::credential`] takes any `TokenCredential`.
//! - **A connection string** (`Endpoint=sb://NS.servicebus.windows.net/;SharedAccessKeyName=…;
//!   SharedAccessKey=…[;EntityPath=HUB]`) from the environment variable
//!   `EVENTHUBS_CONNECTION_STRING` (or the one `connection_string_env` names), never from the
//!   URL; the URL may then be just `eventhubs://`. `UseDevelopmentEmulator=true` sends the
//!   connection in plain AMQP to the endpoint's host and port (5672 by default), as the other
//!   SDKs do for the official emulator.
//! - **IoT Hub**: read a hub's device telemetry through its Event Hub-compatible endpoint: the
//!   connection string the portal shows under *Built-in endpoints* (or `az iot hub
//!   connection-string show --default-eventhub`) is an Event Hubs connection string with
//!   `EntityPath`, and the consumer group is one of the IoT Hub's. The IoT Hub service
//!   connection string (`HostName=….azure-devices.net;…`) is recognised and refused with
//!   that advice. Device system properties become headers (`iothub.rs`).
//!
//! Keys, signatures and tokens never appear in messages, logs or `Debug` output.
//!
//! # URL options
//! | option | default | meaning |
//! |---|---|---|
//! | `endpoint` | the namespace | `amqp://host:port` (plain TCP, an emulator) or `amqps://host:port` where the connection really goes; with `amqp://` and no credential, the official emulator's key is used |
//! | `connection_string_env` | `EVENTHUBS_CONNECTION_STRING` | the environment variable holding a connection string |
//! | `shared_access_key_name`, `shared_access_key` | none | a shared access key given in the URL (masked in messages) |
//! | `credential` | `default` | Microsoft Entra ID chain when there is no key |
//! | `consumer_group` | the group's name | read every group through this consumer group |
//! | `hubs` | none | comma-separated hubs `list_streams` reports |
//! | `checkpoints` | `blob` with a storage account, else `memory` | where ownership and checkpoints live |
//! | `storage_account_url` | `$AZURE_STORAGE_CONNECTION_STRING`'s | `https://ACCOUNT.blob.core.windows.net`, or `http://127.0.0.1:10000/devstoreaccount1` for Azurite |
//! | `storage_account` | from the URL | the account name for the key |
//! | `storage_account_key`, `storage_sas_token` | Entra ID | the storage account's key or a SAS (masked) |
//! | `storage_connection_string_env` | `AZURE_STORAGE_CONNECTION_STRING` | the variable holding a storage connection string |
//! | `storage_container` | `eventhubs-checkpoints` | the container (created if missing) |
//! | `checkpoint_namespace` | the namespace (a connection string's endpoint `host[:port]`) | the namespace part of blob names: set it to what the other SDKs sharing the group use |
//! | `prefetch` | `300` | events each partition receiver asks for ahead |
//! | `owner_level` | `0` | the epoch of group receivers (`none`: non-exclusive) |
//! | `lease_ttl` | `30s` | how long an ownership lives without renewal |
//! | `balance_interval` | `10s` | how often ownership is renewed and balanced (must be below `lease_ttl`) |
//! | `commit_interval` | `1s` | how often acked progress is checkpointed |
//! | `timeout` | `30s` | connects, management calls, sends and Blob requests; a receiver whose attach (CBS authorization, then the link) takes longer is logged as a warning naming the hub and partition (the SDK gives that no deadline) |
//! | `max_event_bytes` | `1032192` | largest event (key, payload, header names and values): the service's 1 MiB message limit less 16 KiB for the AMQP encoding; on the Basic tier (256 KiB) set `245760`. An event that still does not fit the link's limit once encoded (thousands of headers) fails as too large before it is sent |
//! | `application_id` | none | the client's application id, sent to the service |
#![warn(missing_docs)]

mod admin;
mod auth;
mod blob;
mod clients;
mod config;
mod consumer;
mod error;
mod mapping;
mod producer;

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use async_trait::async_trait;
use tributary::{
    AckModel, Backend, Capabilities, Consumer, ConsumerOptions, Error, ErrorKind, Lifecycle,
    Ordering, Producer, ReceiptSupport, Result, StartSupport, StreamInfo, StreamSpec,
};

pub use blob::{BlobCheckpointStore, BlobStoreConfig, StorageAuth};
pub use config::{
    CONNECTION_STRING_VARIABLE, Checkpoints, Credential, EventHubsConfig,
    STORAGE_CONNECTION_STRING_VARIABLE,
};

use tributary::backend::group::{GroupConfig, GroupEngine};
use tributary::backend::{CheckpointStore, MemoryCheckpointStore};

use crate::admin::Management;
use crate::blob::OffsetBook;
use crate::error::BACKEND;

/// Registers the `eventhubs://` scheme with [`tributary::connect`].
pub fn register() {
    tributary::register_backend("eventhubs", |url| async move {
        EventHubsBackend::connect(EventHubsConfig::from_url(&url)?).await
    });
}

/// An Event Hubs namespace.
pub struct EventHubsBackend {
    config: EventHubsConfig,
    auth: clients::ClientAuth,
    management: Management,
    engine: GroupEngine,
    offsets: OffsetBook,
    /// One AMQP connection per hub and consumer group, shared by that group's readers, with
    /// the partitions' turns on it (the client keeps one receiver link per partition).
    consumers: tokio::sync::Mutex<std::collections::HashMap<(String, String), SharedConsumer>>,
    closed: AtomicBool,
}

/// A hub and consumer group's client and the turns of its partitions' receivers.
type SharedConsumer = (Arc<clients::ConsumerConnection>, consumer::PartitionTurns);

impl std::fmt::Debug for EventHubsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHubsBackend")
            .field("url", &self.config.shown_url)
            .field("namespace", &self.config.namespace)
            .finish_non_exhaustive()
    }
}

impl EventHubsBackend {
    /// Sets the backend up. Event Hubs connections are per hub, so nothing is contacted until
    /// a producer, consumer or admin call names one.
    ///
    /// The errors of this call name the backend; the returned backend's own errors are named
    /// by [`tributary::backend::stamped`] (which `tributary::connect` applies).
    pub async fn connect(config: EventHubsConfig) -> Result<EventHubsBackend> {
        // The one place this crate names itself: a typed connect comes before any stamping
        // layer wraps the backend.
        Self::open(config)
            .await
            .map_err(|e| e.with_backend(BACKEND))
    }

    async fn open(config: EventHubsConfig) -> Result<EventHubsBackend> {
        let auth = clients::ClientAuth::from_config(&config)?;
        let (store, offsets): (Arc<dyn CheckpointStore>, OffsetBook) = match &config.checkpoints {
            Checkpoints::Blob(blob) => {
                let mut blob = blob.clone();
                blob.ownership_ttl = config.lease_ttl;
                let store = BlobCheckpointStore::new(blob)?;
                let offsets = store.offsets.clone();
                (Arc::new(store), offsets)
            }
            Checkpoints::Memory => (Arc::new(MemoryCheckpointStore::new()), OffsetBook::off()),
        };
        let engine = GroupEngine::new(
            store,
            GroupConfig::new(config.lease_ttl)
                .backend("eventhubs")
                .balance_interval(config.balance_interval)
                .commit_interval(config.commit_interval)
                .prefetch(config.prefetch as usize),
        );
        Ok(EventHubsBackend {
            config,
            auth,
            management: Management::default(),
            engine,
            offsets,
            consumers: Default::default(),
            closed: AtomicBool::new(false),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &EventHubsConfig {
        &self.config
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(AtomicOrdering::Acquire) {
            return Err(Error::closed("the Event Hubs backend is closed"));
        }
        Ok(())
    }

    fn check_name(hub: &str) -> Result<()> {
        // The service's rule for event hub names.
        let valid = !hub.is_empty()
            && hub.len() <= 256
            && hub
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            && hub.starts_with(|c: char| c.is_ascii_alphanumeric())
            && hub.ends_with(|c: char| c.is_ascii_alphanumeric());
        if valid {
            Ok(())
        } else {
            Err(Error::config(format!(
                "`{hub}` is not a valid event hub name (1 to 256 letters, digits, periods, hyphens and underscores, starting and ending with a letter or digit)"
            )))
        }
    }
}

#[async_trait]
impl Backend for EventHubsBackend {
    fn scheme(&self) -> &'static str {
        "eventhubs"
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
            partition: false,
            position: false,
        };
        caps.max_event_bytes = Some(self.config.max_event_bytes);
        caps.lifecycle = Lifecycle {
            auto_create: false,
            networked: true,
            competing_consumers: true,
        };
        caps.lag = true;
        // Hubs are made in Azure Resource Manager, not on the data plane.
        caps.admin = false;
        caps
    }

    async fn producer(&self, stream: &str) -> Result<Box<dyn Producer>> {
        self.check_open()?;
        Self::check_name(stream)?;
        // Fails with "not found" now rather than at the first send.
        self.management
            .hub(&self.config, &self.auth, stream)
            .await?;
        let connection =
            clients::ProducerConnection::open(&self.config, &self.auth, stream).await?;
        Ok(Box::new(producer::EventHubsProducer::new(
            stream,
            connection,
            self.config.max_event_bytes,
            self.config.timeout,
        )))
    }

    async fn consumer(&self, stream: &str, options: ConsumerOptions) -> Result<Box<dyn Consumer>> {
        self.check_open()?;
        options.validate()?;
        Self::check_name(stream)?;
        // A missing hub is "not found" now, naming it, not a group that stops later.
        self.management
            .hub(&self.config, &self.auth, stream)
            .await?;
        let consumer_group = self
            .config
            .consumer_group
            .clone()
            .unwrap_or_else(|| options.group.clone());
        let (connection, turns) = {
            let mut consumers = self.consumers.lock().await;
            let key = (stream.to_string(), consumer_group.clone());
            match consumers.get(&key) {
                Some(shared) => shared.clone(),
                None => {
                    let connection = clients::ConsumerConnection::open(
                        &self.config,
                        &self.auth,
                        stream,
                        &consumer_group,
                    )
                    .await?;
                    let shared = (connection, consumer::PartitionTurns::default());
                    consumers.insert(key, shared.clone());
                    shared
                }
            }
        };
        let source = Arc::new(consumer::EventHubsSource {
            hub: stream.to_string(),
            group: options.group.clone(),
            connection,
            prefetch: self.config.prefetch,
            owner_level: self.config.owner_level,
            timeout: self.config.timeout,
            book: self.offsets.clone(),
            turns,
        });
        let consumer = self.engine.join(stream, source, options).await?;
        Ok(Box::new(consumer))
    }

    async fn create_stream(&self, stream: &str, _spec: StreamSpec) -> Result<()> {
        self.check_open()?;
        Self::check_name(stream)?;
        Err(admin::unsupported("create", stream))
    }

    async fn delete_stream(&self, stream: &str) -> Result<()> {
        self.check_open()?;
        Self::check_name(stream)?;
        Err(admin::unsupported("delete", stream))
    }

    async fn list_streams(&self) -> Result<Vec<String>> {
        self.check_open()?;
        let mut names: Vec<String> = self.config.hubs.clone();
        names.extend(self.config.entity_path.clone());
        names.sort();
        names.dedup();
        let mut existing = Vec::with_capacity(names.len());
        for name in names {
            match self.management.hub(&self.config, &self.auth, &name).await {
                Ok(_) => existing.push(name),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(existing)
    }

    async fn describe_stream(&self, stream: &str) -> Result<StreamInfo> {
        self.check_open()?;
        Self::check_name(stream)?;
        self.management
            .describe(&self.config, &self.auth, stream)
            .await
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, AtomicOrdering::AcqRel) {
            return Ok(());
        }
        let result = self.engine.close().await;
        self.management.close().await;
        let connections: Vec<_> = self
            .consumers
            .lock()
            .await
            .drain()
            .map(|(_, (connection, _))| connection)
            .collect();
        for connection in connections {
            connection.close().await;
        }
        result
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checkpoints_in_memory_keep_no_offsets_of_events_read() {
        // The memory store never takes an offset, so a book that kept them would grow by one
        // entry per event read for as long as a reader lives.
        let url = url::Url::parse("eventhubs://").unwrap();
        let config = EventHubsConfig::from_url_with_env(&url, &|name| {
            (name == config::CONNECTION_STRING_VARIABLE).then(|| {
                "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0".to_string()
            })
        })
        .unwrap();
        assert!(matches!(config.checkpoints, Checkpoints::Memory));
        let backend = EventHubsBackend::connect(config).await.unwrap();
        for sequence in 0..3 {
            backend
                .offsets
                .record("g", "hub", "0", sequence, format!("o{sequence}"));
        }
        assert_eq!(backend.offsets.take("g", "hub", "0", 2), None);
    }
}
