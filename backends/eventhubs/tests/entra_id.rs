//! The Microsoft Entra ID path: clients that sign in with a token credential (CBS tokens of
//! type `jwt`) instead of a connection string. The in-process emulator has no shared access
//! keys, so it takes any token, as Event Hubs takes a valid Entra ID one.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::time::OffsetDateTime;
use tributary::{Backend, ConsumerOptions, Event, StartPosition};
use tributary_eventhubs::{Credential, EventHubsBackend, EventHubsConfig};

/// Hands out one made-up token and counts how often it was asked.
#[derive(Debug, Default)]
struct CountingToken {
    asked: AtomicUsize,
}

#[async_trait]
impl TokenCredential for CountingToken {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        Ok(AccessToken::new(
            "made-up-entra-id-token",
            OffsetDateTime::now_utc() + Duration::from_secs(3600),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_credential_signs_in_the_producer_and_the_consumer() {
    let (_emulator, base, hub) = common::in_process_emulator("entra", 2).await;
    let url = url::Url::parse(&format!("{base}&timeout=10s")).expect("url");
    let mut config = EventHubsConfig::from_url(&url).expect("config");
    let token = Arc::new(CountingToken::default());
    config.credential = Credential::Token(token.clone());
    let backend = EventHubsBackend::connect(config).await.expect("connect");

    let producer = backend.producer(&hub).await.expect("producer");
    let sent: Vec<Event> = (0..20)
        .map(|i| Event::new(format!("e{i}")).with_key(format!("k{}", i % 4)))
        .collect();
    producer.send_batch(sent).await.expect("send with a token");
    let asked_by_producer = token.asked.load(Ordering::Relaxed);
    assert!(
        asked_by_producer > 0,
        "the producer signed in without asking the credential"
    );

    let consumer = backend
        .consumer(
            &hub,
            ConsumerOptions::new("entra").start(StartPosition::Earliest),
        )
        .await
        .expect("consumer");
    let got = common::receive_n(consumer.as_ref(), 20, Duration::from_secs(10)).await;
    let mut payloads: Vec<String> = got
        .iter()
        .map(|d| String::from_utf8_lossy(&d.event.payload).into_owned())
        .collect();
    payloads.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("e{i}")).collect();
    expected.sort();
    assert_eq!(payloads, expected, "what the consumer read with a token");
    assert!(
        token.asked.load(Ordering::Relaxed) > asked_by_producer,
        "the consumer's connection signed in without asking the credential"
    );
    for delivery in got {
        delivery.ack();
    }
    consumer.close().await.expect("close consumer");
    producer.close().await.expect("close producer");
    backend.close().await.expect("close backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_an_unauthorized_error_that_names_the_hub() {
    use tributary_eventhubs_emulator::{Config, Emulator, HubConfig};
    // With a shared access key configured the emulator verifies SAS tokens only, so it refuses
    // the credential's token as Event Hubs refuses an expired or foreign one.
    let hub = tributary_testcontainers::unique_name("entra-refused");
    let emulator = Emulator::start(
        Config::for_tests()
            .with_hub(HubConfig::new(&hub, 1))
            .with_shared_access_key("RootManageSharedAccessKey", "SAS_KEY_VALUE"),
    )
    .await
    .expect("emulator starts");
    let url = url::Url::parse(&format!(
        "eventhubs://emulator.localhost?endpoint={}&timeout=5s",
        emulator.endpoint()
    ))
    .expect("url");
    let mut config = EventHubsConfig::from_url(&url).expect("config");
    let token = Arc::new(CountingToken::default());
    config.credential = Credential::Token(token.clone());
    let backend = EventHubsBackend::connect(config).await.expect("connect");

    let refused = match backend.producer(&hub).await {
        Ok(producer) => producer
            .send(Event::new("refused"))
            .await
            .expect_err("a send signed with a refused token"),
        Err(error) => error,
    };
    eprintln!("refused as expected: {refused}");
    assert!(
        token.asked.load(Ordering::Relaxed) > 0,
        "the credential was never asked"
    );
    assert_eq!(
        refused.kind(),
        tributary::ErrorKind::Unauthorized,
        "kind of {refused}"
    );
    assert!(
        refused.to_string().contains(&hub),
        "the error names the hub: {refused}"
    );
    assert!(
        !refused.to_string().contains("AMQP Error: AMQP Error"),
        "the SDK's repeated layer label is said once: {refused}"
    );
    backend.close().await.expect("close backend");
}
