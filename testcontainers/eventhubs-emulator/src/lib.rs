//! A Docker-free Azure Event Hubs emulator speaking AMQP 1.0, for tests.
//!
//! It serves what the official SDKs use: CBS `put-token` (SAS tokens verified when keys are
//! configured), `$management` READ of hub and partition properties, producers (single events,
//! batches, partition keys, partition ids), consumers with the selector filter (offset,
//! sequence number, enqueued time), owner-level (epoch) receivers, in-memory retention with a
//! per-partition cap and optional append-only persistence. For tests of a client's recovery it
//! can force-detach receivers ([`Emulator::detach_receivers`]) and cut connections
//! ([`Emulator::drop_connections`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tributary_eventhubs_emulator::{Config, Emulator, HubConfig};
//!
//! let emulator = Emulator::start(Config::for_tests().with_hub(HubConfig::new("orders", 2))).await?;
//! // Point the Rust SDK at emulator.endpoint() with `.with_custom_endpoint(..)`.
//! println!("{}", emulator.endpoint());
//! emulator.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Hubs not in the configuration are created on first use with
//! [`Config::default_partitions`] partitions when [`Config::auto_create`] is on (the default
//! without a configuration file), so a test needs no setup; with it off they are
//! `amqp:not-found`, as in the service. With [`Config::admin`] a small HTTP API on the same
//! port makes and removes hubs and consumer groups, as Azure Resource Manager does (see
//! [`Emulator::admin_url`]).
#![warn(missing_docs)]

mod admin;
mod auth;
mod config;
mod filter;
mod hash;
mod server;
mod store;
mod wire_compat;

use std::net::SocketAddr;
use std::sync::Arc;

pub use auth::sign_sas;
pub use config::{
    Config, ConfigError, ConfigFile, ConsumerGroupConfig, Count, DEFAULT_CONSUMER_GROUP,
    EntityConfig, HubConfig, NamespaceConfig, SharedAccessKeyConfig, UserConfig,
};

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory could not be read or written.
    #[error("data directory: {0}")]
    Data(std::io::Error),
}

/// A running emulator; dropping it stops it (use [`Emulator::shutdown`] to wait for that).
pub struct Emulator {
    local_addr: SocketAddr,
    admin: bool,
    shared: Arc<server::Shared>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Emulator {
    /// Binds the listening socket, loads persisted data and starts serving on the current
    /// tokio runtime.
    pub async fn start(config: Config) -> Result<Emulator, StartError> {
        let namespace = store::Namespace::open(&config).map_err(StartError::Data)?;
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let shared = Arc::new(server::Shared::new(
            namespace,
            config.shared_access_keys.clone(),
            config.max_message_size.max(1024),
            format!("tributary-eventhubs-emulator-{}", config.namespace),
            config.admin.then_some(config.default_partitions),
        ));
        let (shutdown, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(server::serve(listener, shared.clone(), watch));
        tracing::info!(%local_addr, namespace = %config.namespace, "Event Hubs emulator listening");
        Ok(Emulator {
            local_addr,
            admin: config.admin,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    /// The address the emulator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `amqp://HOST:PORT`, for the Rust SDK's `with_custom_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("amqp://{}", self.local_addr)
    }

    /// `http://HOST:PORT` of the admin API when [`Config::admin`] is on: `PUT
    /// /hubs/NAME?partitions=N` makes a hub, `DELETE /hubs/NAME` removes it, `GET /hubs` lists
    /// them, `PUT /hubs/NAME/consumergroups/GROUP` adds a consumer group (the crate's README
    /// has the details).
    pub fn admin_url(&self) -> Option<String> {
        self.admin.then(|| format!("http://{}", self.local_addr))
    }

    /// A connection string for SDKs that take one (the Python client needs
    /// `UseDevelopmentEmulator=true` to skip TLS). `key_name`/`key` must match a configured
    /// shared access key if any are configured.
    pub fn connection_string(&self, key_name: &str, key: &str) -> String {
        format!(
            "Endpoint=sb://{};SharedAccessKeyName={key_name};SharedAccessKey={key};UseDevelopmentEmulator=true",
            self.local_addr
        )
    }

    /// Ends the links of every receiver reading `hub` (only `partition`'s, if named) with
    /// `amqp:link:detach-forced`, as the service does when it moves a partition between its
    /// nodes or after a link was idle; returns how many links were told. Clients are expected
    /// to attach again, so a test can watch what a client's recovery reads next. An unknown
    /// hub or partition has none.
    pub fn detach_receivers(&self, hub: &str, partition: Option<&str>) -> usize {
        self.shared.detach_receivers(hub, partition)
    }

    /// Cuts every open AMQP connection: its socket is shut down in both directions, without
    /// an AMQP `close`, as a network failure or a gateway restart does. Returns how many.
    /// The emulator keeps listening, so clients can connect again.
    pub fn drop_connections(&self) -> usize {
        self.shared.drop_connections()
    }

    /// Stops accepting connections, closes the open ones and waits until that is done.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("local_addr", &self.local_addr)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
