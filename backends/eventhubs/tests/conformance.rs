//! The conformance suite against the project's Event Hubs emulator, with group ownership and
//! checkpoints in Azurite.
//!
//! The emulator runs in this process, configured as the service behaves: an unknown hub is
//! `amqp:not-found` (no auto-creation), so the backend's `create_stream` stays unsupported and
//! the suite's provisioning hook makes each case's hubs through the emulator's admin API (what
//! Azure Resource Manager does), with the partition counts the case asks for. Consumer groups
//! are created on first use, standing in for the `az eventhubs eventhub consumer-group create`
//! an operator would run. The restart hook stops the emulator and starts it again on the same
//! port and data directory, so the server-restart case runs too.

mod common;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tributary::{Backend, Error};
use tributary_conformance::{Harness, StreamRequest, run};
use tributary_eventhubs_emulator::{Config, Emulator};
use tributary_testcontainers::{Peer, require_peer};

/// The emulator in this process, restartable on its address and data.
struct Namespace {
    config: Config,
    emulator: Mutex<Option<Emulator>>,
    admin_url: String,
}

impl Namespace {
    async fn start(data: &std::path::Path) -> Arc<Namespace> {
        let mut config = Config::for_tests();
        config.auto_create = false;
        config.auto_create_consumer_groups = Some(true);
        config.admin = true;
        config.data_dir = Some(data.to_path_buf());
        let emulator = Emulator::start(config.clone())
            .await
            .expect("emulator starts");
        // A restart must come back where the clients were pointed.
        config.bind = emulator.local_addr();
        Arc::new(Namespace {
            admin_url: emulator.admin_url().expect("admin is on"),
            config,
            emulator: Mutex::new(Some(emulator)),
        })
    }

    async fn restart(&self) -> tributary::Result<()> {
        let mut slot = self.emulator.lock().await;
        if let Some(emulator) = slot.take() {
            emulator.shutdown().await;
        }
        let emulator = Emulator::start(self.config.clone())
            .await
            .map_err(|e| Error::unavailable(format!("emulator restart: {e}")))?;
        *slot = Some(emulator);
        Ok(())
    }

    /// Makes a hub as an operator would in Azure, with the partitions the case asks for.
    async fn provision(&self, request: StreamRequest) -> tributary::Result<String> {
        let url = format!(
            "{}/hubs/{}?partitions={}",
            self.admin_url, request.name, request.partitions
        );
        let response = reqwest::Client::new()
            .put(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| Error::unavailable(format!("provision {}: {e}", request.name)))?;
        let status = response.status();
        if status != reqwest::StatusCode::CREATED {
            let body = response.text().await.unwrap_or_default();
            return Err(Error::other(format!(
                "provision {}: the admin API answered {status}: {body}",
                request.name
            )));
        }
        Ok(request.name)
    }
}

fn harness(namespace: &Arc<Namespace>, url: &str) -> Harness {
    let for_restart = namespace.clone();
    let for_provision = namespace.clone();
    let reconnect_url = url.to_string();
    Harness::new("eventhubs", url)
        .with_unreachable_url(
            "eventhubs://emulator.localhost?endpoint=amqp://127.0.0.1:9&timeout=3s",
        )
        .with_restart(Arc::new(move |old: Arc<dyn Backend>| {
            let namespace = for_restart.clone();
            let url = reconnect_url.clone();
            Box::pin(async move {
                old.close().await?;
                namespace.restart().await?;
                tributary::connect(&url).await
            })
        }))
        .with_provision(Arc::new(move |request: StreamRequest| {
            let namespace = for_provision.clone();
            Box::pin(async move { namespace.provision(request).await })
        }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eventhubs_conformance() {
    // RUST_LOG=tributary=debug shows, on the test's stderr, what the group engine owned and
    // when each partition's reader opened: what a case that times out needs to be explained.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_writer(std::io::stderr)
        .try_init();
    let azurite = require_peer!(Peer::Azurite);
    tributary_eventhubs::register();
    let data = tempfile::tempdir().expect("data directory");
    let namespace = Namespace::start(data.path()).await;
    let base = format!(
        "eventhubs://emulator.localhost?endpoint=amqp://{}",
        namespace.config.bind
    );
    // Checkpoints and ownership in a container of this run's own on Azurite.
    let url = common::url_for(&base, &azurite, "");
    // The emulator runs in this test's own process on a shared two-core host, so the
    // throughput case sends 20,000 events rather than the standard 100,000.
    let report = run(&harness(&namespace, &url).with_scale(20_000)).await;
    println!("{}", report.table());
    // Every case applies: hubs come from the provisioning hook, the harness can restart the
    // emulator and names an unreachable endpoint, and the capabilities declare all the rest
    // except receipts (a send gets no partition or sequence number back from the service).
    report.assert_conforms(&["receipts"]);
    if let Some(emulator) = namespace.emulator.lock().await.take() {
        emulator.shutdown().await;
    }
}
