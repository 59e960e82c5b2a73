//! Helpers shared by the SDK tests: an in-process emulator and SDK clients pointed at it.
#![allow(dead_code)]

use std::time::Duration;

use azure_messaging_eventhubs::models::ReceivedEventData;
use azure_messaging_eventhubs::{
    ConsumerClient, EventReceiver, OpenReceiverOptions, ProducerClient, RetryOptions,
    StartLocation, StartPosition,
};
use futures::StreamExt;
use tributary_eventhubs_emulator::{Config, Emulator};

pub const KEY_NAME: &str = "RootManageSharedAccessKey";
pub const KEY: &str = "SAS_KEY_VALUE";

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub async fn start(config: Config) -> Emulator {
    init_logging();
    Emulator::start(config).await.expect("emulator starts")
}

/// Few, fast retries: an emulator on loopback either answers or is broken.
pub fn quick_retries() -> RetryOptions {
    RetryOptions {
        initial_delay: azure_core::time::Duration::milliseconds(50),
        max_delay: azure_core::time::Duration::milliseconds(200),
        max_total_elapsed: azure_core::time::Duration::seconds(5),
        max_retries: 2,
    }
}

pub fn connection_string(emulator: &Emulator, key: &str) -> String {
    // The SDK's own connection string; the host only names the namespace in audiences.
    let _ = emulator;
    format!(
        "Endpoint=sb://emulator.localhost/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={key}"
    )
}

pub async fn producer(emulator: &Emulator, hub: &str) -> ProducerClient {
    producer_with_key(emulator, hub, KEY)
        .await
        .expect("producer opens")
}

pub async fn producer_with_key(
    emulator: &Emulator,
    hub: &str,
    key: &str,
) -> azure_messaging_eventhubs::Result<ProducerClient> {
    ProducerClient::builder()
        .with_custom_endpoint(emulator.endpoint())
        .with_retry_options(quick_retries())
        .open_with_connection_string(&connection_string(emulator, key), Some(hub))
        .await
}

pub async fn consumer(emulator: &Emulator, hub: &str, group: Option<&str>) -> ConsumerClient {
    let mut builder = ConsumerClient::builder()
        .with_custom_endpoint(emulator.endpoint())
        .with_retry_options(quick_retries());
    if let Some(group) = group {
        builder = builder.with_consumer_group(group.to_string());
    }
    builder
        .open_with_connection_string(&connection_string(emulator, KEY), Some(hub))
        .await
        .expect("consumer opens")
}

pub fn from(location: StartLocation, inclusive: bool) -> Option<OpenReceiverOptions> {
    Some(OpenReceiverOptions {
        start_position: Some(StartPosition {
            location,
            inclusive,
        }),
        ..Default::default()
    })
}

/// Receives events until `n` arrived or `quiet` passes without one.
pub async fn receive(
    receiver: &EventReceiver,
    n: usize,
    quiet: Duration,
) -> Vec<ReceivedEventData> {
    let mut out = Vec::new();
    let stream = receiver.stream_events();
    futures::pin_mut!(stream);
    while out.len() < n {
        match tokio::time::timeout(quiet, stream.next()).await {
            Ok(Some(Ok(event))) => out.push(event),
            Ok(Some(Err(e))) => panic!("receive failed: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    out
}

pub fn body(event: &ReceivedEventData) -> String {
    String::from_utf8_lossy(event.event_data().body().unwrap_or_default()).into_owned()
}

pub fn bodies(events: &[ReceivedEventData]) -> Vec<String> {
    events.iter().map(body).collect()
}
