//! TLS and SASL against a real broker with a TLS listener and a SASL_SSL listener (SCRAM-SHA-512
//! and PLAIN), its certificates from a throwaway CA: every way the crate documents to connect
//! does, events go both ways, and wrong credentials give an `Unauthorized` error that names
//! no secret.

use std::sync::Arc;
use std::time::Duration;

use tributary::{
    Backend, ConsumerExt, ConsumerOptions, ErrorKind, Event, StartPosition, StreamSpec,
};
use tributary_testcontainers::kafka::{SecureKafka, require_secure};
use tributary_testcontainers::unique_name;

const EVENTS: usize = 2000;

/// Sends and receives through `backend`: enough events to pass librdkafka's batching several
/// times over, each once, in order per key.
async fn round_trip(backend: &Arc<dyn Backend>, how: &str) {
    let topic = unique_name("secure");
    backend
        .create_stream(&topic, StreamSpec::with_partitions(2))
        .await
        .unwrap_or_else(|e| panic!("{how}: create: {e}"));
    let producer = backend.producer(&topic).await.expect("producer");
    let events: Vec<Event> = (0..EVENTS)
        .map(|i| Event::new(format!("{how}-{i}")).with_key(format!("k{}", i % 10)))
        .collect();
    producer
        .send_batch(events)
        .await
        .unwrap_or_else(|e| panic!("{how}: send: {e}"));
    producer.close().await.expect("close");
    let consumer = backend
        .consumer(
            &topic,
            ConsumerOptions::new(unique_name("g")).start(StartPosition::Earliest),
        )
        .await
        .unwrap_or_else(|e| panic!("{how}: consumer: {e}"));
    let mut last = std::collections::HashMap::new();
    for _ in 0..EVENTS {
        let d = consumer
            .receive_timeout(Duration::from_secs(60))
            .await
            .expect("receive")
            .unwrap_or_else(|| panic!("{how}: events stopped coming"));
        let payload = String::from_utf8_lossy(&d.event.payload).into_owned();
        let n: usize = payload.rsplit('-').next().unwrap().parse().unwrap();
        let key = d.event.key.clone().unwrap();
        if let Some(&before) = last.get(&key) {
            assert!(n > before, "{how}: {payload} after {before}");
        }
        last.insert(key, n);
        d.ack();
    }
    consumer.close().await.expect("close");
}

fn base(kafka: &SecureKafka, address: &str) -> String {
    format!(
        "kafka://{address}?timeout=20s&rdkafka.ssl.ca.location={}",
        kafka.ca_file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_sasl_connect_the_documented_ways_and_wrong_credentials_are_unauthorized() {
    let Some(kafka) = tokio::task::spawn_blocking(require_secure)
        .await
        .expect("join")
    else {
        return;
    };
    tributary_kafka::register();

    // TLS: `rdkafka.security.protocol=SSL` and the CA.
    let tls = format!(
        "{}&rdkafka.security.protocol=SSL",
        base(&kafka, &kafka.ssl_address)
    );
    let backend = tributary::connect(&tls).await.expect("connect over TLS");
    round_trip(&backend, "tls").await;

    // SASL/SCRAM-SHA-512 over TLS, options in the URL.
    let scram = format!(
        "{}&rdkafka.security.protocol=SASL_SSL&rdkafka.sasl.mechanisms=SCRAM-SHA-512&rdkafka.sasl.username={}&rdkafka.sasl.password={}",
        base(&kafka, &kafka.sasl_ssl_address),
        kafka.user,
        kafka.password
    );
    let backend = tributary::connect(&scram)
        .await
        .expect("connect with SCRAM");
    round_trip(&backend, "scram").await;

    // SASL/SCRAM-SHA-512 configured in code (the password never in a URL).
    let mut config = tributary_kafka::KafkaConfig::new(kafka.sasl_ssl_address.clone());
    config.timeout = Duration::from_secs(20);
    config.librdkafka.extend([
        ("security.protocol".to_string(), "SASL_SSL".to_string()),
        ("sasl.mechanisms".to_string(), "SCRAM-SHA-512".to_string()),
        ("sasl.username".to_string(), kafka.user.clone()),
        ("sasl.password".to_string(), kafka.password.clone()),
        (
            "ssl.ca.location".to_string(),
            kafka.ca_file.display().to_string(),
        ),
    ]);
    let in_code = tributary_kafka::KafkaBackend::connect(config)
        .await
        .expect("connect with SCRAM from code");
    round_trip(&tributary::backend::stamped(in_code), "scram-code").await;

    // `user:password@` in the URL: SASL/PLAIN over TLS.
    let plain = base(&kafka, &kafka.sasl_ssl_address).replacen(
        "kafka://",
        &format!("kafka://{}:{}@", kafka.user, kafka.password),
        1,
    );
    let backend = tributary::connect(&plain)
        .await
        .expect("connect with PLAIN");
    round_trip(&backend, "plain").await;

    // A broker whose certificate is not trusted (no CA given): a configuration error, soon.
    let untrusted = format!(
        "kafka://{}?timeout=20s&rdkafka.security.protocol=SSL",
        kafka.ssl_address
    );
    let started = std::time::Instant::now();
    let error = tributary::connect(&untrusted)
        .await
        .expect_err("an untrusted certificate was accepted");
    println!(
        "untrusted certificate after {:?}: {error}",
        started.elapsed()
    );
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    assert!(error.to_string().contains("ssl.ca.location"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // Wrong credentials, both ways: Unauthorized, soon, and no secret in the message.
    let wrong_password = "not-the-password-4242";
    let wrong = [
        scram.replace(&kafka.password, wrong_password),
        plain.replace(&kafka.password, wrong_password),
    ];
    for url in wrong {
        let started = std::time::Instant::now();
        let error = match tributary::connect(&url).await {
            Ok(backend) => match backend.producer("anything").await {
                Ok(_) => panic!("a wrong password was accepted"),
                Err(e) => e,
            },
            Err(e) => e,
        };
        let shown = format!("{error} {error:?}");
        println!("wrong credentials after {:?}: {error}", started.elapsed());
        assert_eq!(error.kind(), ErrorKind::Unauthorized, "{shown}");
        assert!(!error.is_retryable(), "{shown}");
        for secret in [wrong_password, kafka.password.as_str()] {
            assert!(!shown.contains(secret), "the error shows a secret: {shown}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "a wrong password took {:?} to report (the timeout is 20 s)",
            started.elapsed()
        );
    }
}
