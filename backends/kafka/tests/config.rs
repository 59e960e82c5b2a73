//! Option errors name the option and hide secrets, before any network traffic.

use tributary::ErrorKind;
use tributary_kafka::{KafkaBackend, KafkaConfig};

#[tokio::test]
async fn an_unknown_librdkafka_option_is_named() {
    let url = tributary::parse_url("kafka://127.0.0.1:9?rdkafka.no.such.option=1").unwrap();
    let e = KafkaBackend::connect_url(&url).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("no.such.option"), "{e}");

    // The same from a configuration built in code.
    let mut config = KafkaConfig::new("127.0.0.1:9");
    config.librdkafka.extend([
        ("sasl.password".to_string(), "hunter2".to_string()),
        ("bad.one".to_string(), "x".to_string()),
    ]);
    assert!(!format!("{config:?}").contains("hunter2"));
    let e = KafkaBackend::connect(config).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("bad.one"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[tokio::test]
async fn a_bad_value_for_a_secret_option_is_masked() {
    let url = tributary::parse_url(
        "kafka://127.0.0.1:9?rdkafka.ssl.key.password=hunter2&rdkafka.security.protocol=bogus",
    )
    .unwrap();
    let e = KafkaBackend::connect_url(&url).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("security.protocol"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}
