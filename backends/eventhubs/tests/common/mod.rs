//! Shared by the Event Hubs tests: the emulator and Azurite from the fixtures, as one URL.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tributary::{Backend, ConsumerExt, ConsumerOptions, Delivery, StartPosition};
use tributary_testcontainers::{AZURITE_ACCOUNT_KEY, Peer, Server, require, unique_name};

/// The emulator and Azurite, or `None` (after the fixtures' skip notice) when not installed.
pub fn servers() -> Option<(Arc<Server>, Arc<Server>)> {
    Some((require(Peer::EventHubs)?, require(Peer::Azurite)?))
}

/// An emulator in this test's process (so the test can fail its links or cut its connections)
/// with one hub of `partitions` named from `prefix`: the emulator, its URL base and the hub.
pub async fn in_process_emulator(
    prefix: &str,
    partitions: u32,
) -> (tributary_eventhubs_emulator::Emulator, String, String) {
    use tributary_eventhubs_emulator::{Config, Emulator, HubConfig};
    let hub = unique_name(prefix);
    let emulator = Emulator::start(Config::for_tests().with_hub(HubConfig::new(&hub, partitions)))
        .await
        .expect("emulator starts");
    let base = format!(
        "eventhubs://emulator.localhost?endpoint={}",
        emulator.endpoint()
    );
    (emulator, base, hub)
}

/// A URL for the emulator with checkpoints in a container of its own on Azurite.
pub fn url(eventhubs: &Server, azurite: &Server, extra: &str) -> String {
    url_for(eventhubs.url(), azurite, extra)
}

/// [`url`] for an emulator at `base` (`eventhubs://…?endpoint=…`), one not from the fixture.
pub fn url_for(base: &str, azurite: &Server, extra: &str) -> String {
    let key: String =
        url::form_urlencoded::byte_serialize(AZURITE_ACCOUNT_KEY.as_bytes()).collect();
    format!(
        "{base}&storage_account_url={}&storage_account_key={key}&storage_container={}&lease_ttl=6s&balance_interval=1s&commit_interval=200ms{extra}",
        azurite.url(),
        unique_name("cp")
    )
}

pub async fn connect(url: &str) -> Arc<dyn Backend> {
    tributary_eventhubs::register();
    tributary::connect(url).await.expect("connect")
}

/// A consumer in a group of its own that reads `hub` from its first event.
pub async fn read_from_earliest(
    backend: &Arc<dyn Backend>,
    hub: &str,
) -> Box<dyn tributary::Consumer> {
    backend
        .consumer(
            hub,
            ConsumerOptions::new(unique_name("g")).start(StartPosition::Earliest),
        )
        .await
        .expect("consumer")
}

/// Receives until `n` deliveries arrived or `limit` passed with nothing new.
pub async fn receive_n(
    consumer: &dyn tributary::Consumer,
    n: usize,
    limit: Duration,
) -> Vec<Delivery> {
    let mut got = Vec::new();
    while got.len() < n {
        match consumer.receive_timeout(limit).await.expect("receive") {
            Some(delivery) => got.push(delivery),
            None => break,
        }
    }
    got
}
