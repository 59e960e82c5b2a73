//! Opening the SDK's clients the way the configuration says (credential, custom endpoint).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use azure_core::credentials::TokenCredential;
use azure_messaging_eventhubs::{ConsumerClient, ProducerClient};

use crate::config::{Credential, EventHubsConfig};
use crate::error::deadline;

/// How the SDK's clients sign in, resolved once per backend from [`Credential`], so the
/// default chain is set up once and shared by every client the backend opens.
#[derive(Clone)]
pub(crate) enum ClientAuth {
    /// A connection string with its shared access key or signature.
    ConnectionString(String),
    /// A Microsoft Entra ID credential.
    Token(Arc<dyn TokenCredential>),
}

impl ClientAuth {
    pub(crate) fn from_config(config: &EventHubsConfig) -> tributary::Result<ClientAuth> {
        Ok(match &config.credential {
            Credential::ConnectionString(text) => ClientAuth::ConnectionString(text.clone()),
            Credential::Token(credential) => ClientAuth::Token(credential.clone()),
            Credential::DefaultChain => {
                ClientAuth::Token(Arc::new(crate::auth::DefaultChain::new().map_err(|e| {
                    tributary::Error::config(format!("cannot set up Microsoft Entra ID: {e}"))
                })?))
            }
        })
    }
}

pub(crate) async fn producer(
    config: &EventHubsConfig,
    auth: &ClientAuth,
    hub: &str,
) -> tributary::Result<ProducerClient> {
    let mut builder = ProducerClient::builder();
    if let Some(endpoint) = &config.endpoint {
        builder = builder.with_custom_endpoint(endpoint.clone());
    }
    if let Some(id) = &config.application_id {
        builder = builder.with_application_id(id.clone());
    }
    let what = || {
        format!(
            "connect to Event Hubs namespace {} for `{hub}`",
            config.namespace
        )
    };
    match auth {
        ClientAuth::ConnectionString(text) => {
            let opening = builder.open_with_connection_string(text, Some(hub));
            deadline(config.timeout, what, opening).await
        }
        ClientAuth::Token(credential) => {
            let opening = builder.open(&config.namespace, hub, credential.clone());
            deadline(config.timeout, what, opening).await
        }
    }
}

pub(crate) async fn consumer(
    config: &EventHubsConfig,
    auth: &ClientAuth,
    hub: &str,
    consumer_group: &str,
) -> tributary::Result<ConsumerClient> {
    let mut builder = ConsumerClient::builder().with_consumer_group(consumer_group.to_string());
    if let Some(endpoint) = &config.endpoint {
        builder = builder.with_custom_endpoint(endpoint.clone());
    }
    if let Some(id) = &config.application_id {
        builder = builder.with_application_id(id.clone());
    }
    let what = || {
        format!(
            "connect to Event Hubs namespace {} for `{hub}`, consumer group `{consumer_group}`",
            config.namespace
        )
    };
    match auth {
        ClientAuth::ConnectionString(text) => {
            let opening = builder.open_with_connection_string(text, Some(hub));
            deadline(config.timeout, what, opening).await
        }
        ClientAuth::Token(credential) => {
            let opening = builder.open(&config.namespace, hub.to_string(), credential.clone());
            deadline(config.timeout, what, opening).await
        }
    }
}

/// The least time between two attempts to replace a connection's client: however many users
/// find it dead at once, one fresh connection is made, and a namespace that refuses
/// connections is asked again only this often.
const REPLACE_INTERVAL: Duration = Duration::from_secs(5);

/// An SDK client a [`Connection`] can close when it lets go of it.
pub(crate) trait SdkClient: Send + Sync + 'static {
    /// Closes the client's AMQP connection (the SDK's clients do not when dropped).
    fn close_client(self) -> BoxFuture<'static, ()>;
}

impl SdkClient for ConsumerClient {
    fn close_client(self) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = self.close().await;
        })
    }
}

impl SdkClient for ProducerClient {
    fn close_client(self) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = self.close().await;
        })
    }
}

type Opener<C> = Box<dyn Fn() -> BoxFuture<'static, tributary::Result<C>> + Send + Sync>;

/// A hub's connection (an SDK client) shared by its users, which a user replaces when it shows
/// the connection's state is dead: the readers of a hub and consumer group
/// ([`ConsumerConnection`]), or the sends of a producer ([`ProducerConnection`]).
///
/// SDK 0.16 keeps one session per partition (or per sender) on a client's connection and
/// reuses it. After a lost connection its concurrent recoveries can attach one link twice
/// ("Link name is not unique") and leave that session dead: every later attach on this client
/// fails with "Illegal session state", and nothing inside the client mends it. A fresh client
/// has fresh sessions.
pub(crate) struct Connection<C: SdkClient> {
    open: Opener<C>,
    /// Names the connection in logs and errors ("event hub `orders`, consumer group `$Default`").
    name: String,
    timeout: Duration,
    /// `None` once closed.
    current: parking_lot::Mutex<Option<Arc<Client<C>>>>,
    /// One replacement at a time, and when the last one was tried.
    replacing: tokio::sync::Mutex<Option<Instant>>,
    /// The current client's generation, for users waiting on an older one.
    generation: tokio::sync::watch::Sender<u64>,
}

/// A hub and consumer group's connection, shared by that group's readers.
pub(crate) type ConsumerConnection = Connection<ConsumerClient>;
/// A producer's connection.
pub(crate) type ProducerConnection = Connection<ProducerClient>;

/// One generation of a [`Connection`]'s client. Its connection is closed when the last user
/// lets go of it: readers still reading well on a replaced client keep it until their next
/// reopen, sends in progress until they end.
pub(crate) struct Client<C: SdkClient = ConsumerClient> {
    client: Option<C>,
    /// Which client of its connection this is (0 for the first).
    pub(crate) generation: u64,
    timeout: Duration,
}

impl<C: SdkClient> std::ops::Deref for Client<C> {
    type Target = C;

    fn deref(&self) -> &C {
        self.client
            .as_ref()
            .expect("the client is taken out only by `close` and `drop`, which consume it")
    }
}

impl<C: SdkClient> Drop for Client<C> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        // Outside a runtime (a test's runtime already gone) there is nothing to close it on.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let timeout = self.timeout;
            runtime.spawn(async move {
                let _ = tokio::time::timeout(timeout, client.close_client()).await;
            });
        }
    }
}

impl ConsumerConnection {
    /// Opens the first client.
    pub(crate) async fn open(
        config: &EventHubsConfig,
        auth: &ClientAuth,
        hub: &str,
        consumer_group: &str,
    ) -> tributary::Result<Arc<ConsumerConnection>> {
        let (config, auth) = (config.clone(), auth.clone());
        let (hub, consumer_group) = (hub.to_string(), consumer_group.to_string());
        let name = format!("event hub `{hub}`, consumer group `{consumer_group}`");
        let timeout = config.timeout;
        Connection::start(
            name,
            timeout,
            Box::new(move || {
                let (config, auth) = (config.clone(), auth.clone());
                let (hub, consumer_group) = (hub.clone(), consumer_group.clone());
                Box::pin(async move { consumer(&config, &auth, &hub, &consumer_group).await })
            }),
        )
        .await
    }
}

impl ProducerConnection {
    /// Opens the first client.
    pub(crate) async fn open(
        config: &EventHubsConfig,
        auth: &ClientAuth,
        hub: &str,
    ) -> tributary::Result<Arc<ProducerConnection>> {
        let (config, auth, hub) = (config.clone(), auth.clone(), hub.to_string());
        let name = format!("event hub `{hub}`, producer");
        let timeout = config.timeout;
        Connection::start(
            name,
            timeout,
            Box::new(move || {
                let (config, auth, hub) = (config.clone(), auth.clone(), hub.clone());
                Box::pin(async move { producer(&config, &auth, &hub).await })
            }),
        )
        .await
    }
}

impl<C: SdkClient> Connection<C> {
    async fn start(
        name: String,
        timeout: Duration,
        open: Opener<C>,
    ) -> tributary::Result<Arc<Self>> {
        let client = open().await?;
        Ok(Arc::new(Connection {
            open,
            name,
            timeout,
            current: parking_lot::Mutex::new(Some(Arc::new(Client {
                client: Some(client),
                generation: 0,
                timeout,
            }))),
            replacing: tokio::sync::Mutex::new(None),
            generation: tokio::sync::watch::Sender::new(0),
        }))
    }

    /// The client to use now.
    pub(crate) fn current(&self) -> tributary::Result<Arc<Client<C>>> {
        self.current.lock().clone().ok_or_else(|| {
            tributary::Error::closed(format!(
                "the connection to {} is closed (its backend or producer was closed)",
                self.name
            ))
        })
    }

    /// Tells when the client was replaced: the current generation, updated with each new one.
    pub(crate) fn generations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Replaces client `dead` (a generation) with a fresh one, unless it was replaced already
    /// or a replacement was tried less than [`REPLACE_INTERVAL`] ago; returns the client to
    /// use (an error once the connection is closed). `why` is logged.
    pub(crate) async fn replace(&self, dead: u64, why: &str) -> tributary::Result<Arc<Client<C>>> {
        let mut last = self.replacing.lock().await;
        let current = self.current()?;
        if current.generation != dead || last.is_some_and(|at| at.elapsed() < REPLACE_INTERVAL) {
            return Ok(current);
        }
        *last = Some(Instant::now());
        match (self.open)().await {
            Ok(client) => {
                let fresh = Arc::new(Client {
                    client: Some(client),
                    generation: dead + 1,
                    timeout: self.timeout,
                });
                {
                    let mut slot = self.current.lock();
                    if slot.is_none() {
                        // Closed meanwhile: the fresh client goes as it is dropped. The slot's
                        // lock is let go first: `current()` takes it, and a second take by
                        // this thread never returns.
                        drop(slot);
                        return self.current();
                    }
                    *slot = Some(fresh.clone());
                    self.generation.send_replace(fresh.generation);
                }
                tracing::warn!(connection = %self.name, generation = fresh.generation, reason = %why,
                    "replaced a dead connection to Event Hubs: its users move to the new one (a consumer's partitions as their receivers reopen)");
                Ok(fresh)
            }
            Err(error) => {
                tracing::warn!(connection = %self.name, error = %error, reason = %why,
                    retry_in = ?REPLACE_INTERVAL, "could not replace a dead connection to Event Hubs");
                Ok(current)
            }
        }
    }

    /// Closes the current client now if nothing else holds it; otherwise it closes when its
    /// last user lets go. Nothing opens on this connection afterwards.
    pub(crate) async fn close(&self) {
        let Some(current) = self.current.lock().take() else {
            return;
        };
        if let Some(client) = Arc::try_unwrap(current)
            .ok()
            .and_then(|mut client| client.client.take())
        {
            let _ = tokio::time::timeout(self.timeout, client.close_client()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_testcontainers::{Peer, require_peer, unique_name};

    /// Readers reporting the same dead client at once get one fresh client between them; the
    /// fresh one is not replaced again within the interval; a replaced client still answers
    /// while a reader holds it; nothing is handed out after the close.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_client_is_replaced_once_and_not_again_within_the_interval() {
        let eventhubs = require_peer!(Peer::EventHubs);
        crate::register();
        let hub = unique_name("replace");
        let backend = tributary::connect(eventhubs.url()).await.expect("connect");
        backend.producer(&hub).await.expect("producer");
        let config = EventHubsConfig::from_url(&url::Url::parse(eventhubs.url()).unwrap()).unwrap();
        let auth = ClientAuth::from_config(&config).unwrap();
        let connection = ConsumerConnection::open(&config, &auth, &hub, "$Default")
            .await
            .expect("open");
        let first = connection.current().unwrap();
        let mut generations = connection.generations();

        let (a, b) = tokio::join!(
            connection.replace(0, "test: reader a"),
            connection.replace(0, "test: reader b")
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!((a.generation, b.generation), (1, 1), "one fresh client");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(*generations.borrow_and_update(), 1);

        let again = connection.replace(1, "test: at once").await.unwrap();
        assert_eq!(
            again.generation, 1,
            "no second client within {REPLACE_INTERVAL:?}"
        );

        first
            .get_eventhub_properties()
            .await
            .expect("the old client");
        again
            .get_eventhub_properties()
            .await
            .expect("the new client");
        drop((first, a, b, again));
        connection.close().await;
        assert!(connection.current().is_err(), "closed");
        backend.close().await.expect("close backend");
    }

    /// A close while a replacement client is being opened ends the replacement as closed (the
    /// fresh client goes) instead of hanging its caller: that path once took the slot's lock a
    /// second time, which never returns, and left the runtime worker it ran on stuck for good.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_close_during_a_replacement_ends_it_as_closed() {
        let eventhubs = require_peer!(Peer::EventHubs);
        crate::register();
        let hub = unique_name("replace-close");
        let backend = tributary::connect(eventhubs.url()).await.expect("connect");
        backend.producer(&hub).await.expect("producer");
        let config = EventHubsConfig::from_url(&url::Url::parse(eventhubs.url()).unwrap()).unwrap();
        let auth = ClientAuth::from_config(&config).unwrap();
        // The first open (the connection's start) goes through; the next one, the
        // replacement, waits until the test has closed the connection.
        let opens = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let entered = Arc::new(tokio::sync::Notify::new());
        let release = Arc::new(tokio::sync::Notify::new());
        let opener: Opener<ConsumerClient> = Box::new({
            let (opens, entered, release) = (opens.clone(), entered.clone(), release.clone());
            move || {
                let (config, auth, hub) = (config.clone(), auth.clone(), hub.clone());
                let (opens, entered, release) = (opens.clone(), entered.clone(), release.clone());
                Box::pin(async move {
                    if opens.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                        entered.notify_one();
                        release.notified().await;
                    }
                    consumer(&config, &auth, &hub, "$Default").await
                })
            }
        });
        let connection =
            Connection::start("test connection".into(), Duration::from_secs(30), opener)
                .await
                .expect("open");
        let replacing = tokio::spawn({
            let connection = connection.clone();
            async move {
                connection
                    .replace(0, "test: replaced while closing")
                    .await
                    .map(|c| c.generation)
            }
        });
        tokio::time::timeout(Duration::from_secs(30), entered.notified())
            .await
            .expect("the replacement began opening a client");
        connection.close().await;
        release.notify_one();
        let replaced = tokio::time::timeout(Duration::from_secs(30), replacing)
            .await
            .expect("the replacement ended")
            .expect("its task");
        let error = replaced.expect_err("the connection was closed during the replacement");
        assert_eq!(error.kind(), tributary::ErrorKind::Closed, "{error}");
        assert_eq!(opens.load(std::sync::atomic::Ordering::SeqCst), 2);
        backend.close().await.expect("close backend");
    }
}
