//! The admin API over the wire: HTTP and AMQP share one port, hubs made at run time have the
//! partitions asked for and serve the Rust SDK at once, removed hubs are `amqp:not-found`.

mod common;

use std::time::Duration;

use azure_messaging_eventhubs::models::EventData;
use azure_messaging_eventhubs::{SendEventOptions, StartLocation};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tributary_eventhubs_emulator::{Config, Emulator};

/// One HTTP/1.1 request on a fresh connection; the status and the body.
async fn http(emulator: &Emulator, method: &str, path: &str) -> (u16, String) {
    let admin = emulator.admin_url().expect("admin is on");
    let address = admin.trim_start_matches("http://");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(
                format!("{method} {path} HTTP/1.1\r\nhost: {address}\r\ncontent-length: 0\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        std::io::Result::Ok(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the admin API answers within 10 s")
        .expect("HTTP exchange");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn admin_config() -> Config {
    let mut config = Config::for_tests();
    config.auto_create = false;
    config.auto_create_consumer_groups = Some(true);
    config.admin = true;
    config
}

#[tokio::test]
async fn hubs_made_over_http_serve_amqp_on_the_same_port() {
    let emulator = start(admin_config()).await;

    let producer = producer(&emulator, "made").await;
    let error = producer
        .get_eventhub_properties()
        .await
        .expect_err("not made yet, and auto-creation is off");
    assert!(format!("{error:?}").contains("made"), "{error:?}");

    let (status, body) = http(&emulator, "PUT", "/hubs/made?partitions=3").await;
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("\"partition_count\":3"), "{body}");
    assert_eq!(http(&emulator, "PUT", "/hubs/made").await.0, 409);
    assert_eq!(
        http(&emulator, "PUT", "/hubs/made?partitions=0").await.0,
        400
    );

    // A new client: the SDK caches nothing about a hub it failed to find, but be plain.
    let producer = common::producer(&emulator, "made").await;
    let properties = producer
        .get_eventhub_properties()
        .await
        .expect("properties");
    assert_eq!(properties.partition_ids, ["0", "1", "2"]);
    producer
        .send_event(
            EventData::builder().with_body("over amqp").build(),
            Some(SendEventOptions {
                partition_id: Some("2".into()),
            }),
        )
        .await
        .expect("send");

    // Consumer groups are named on the fly here (auto-create of groups is on).
    let consumer = consumer(&emulator, "made", Some("readers")).await;
    let receiver = consumer
        .open_receiver_on_partition("2".into(), from(StartLocation::Earliest, true))
        .await
        .expect("receiver");
    let events = receive(&receiver, 1, Duration::from_secs(10)).await;
    assert_eq!(bodies(&events), ["over amqp"]);

    let (status, body) = http(&emulator, "GET", "/hubs").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("\"consumer_groups\":[\"$Default\",\"readers\"]"),
        "{body}"
    );

    drop(receiver);
    consumer.close().await.expect("consumer closes");
    producer.close().await.expect("producer closes");

    assert_eq!(http(&emulator, "DELETE", "/hubs/made").await.0, 204);
    let producer = common::producer(&emulator, "made").await;
    let error = producer
        .get_eventhub_properties()
        .await
        .expect_err("deleted");
    assert!(format!("{error:?}").contains("made"), "{error:?}");
    producer.close().await.expect("producer closes");
    emulator.shutdown().await;
}

#[tokio::test]
async fn without_admin_http_is_not_served() {
    let emulator = start(Config::for_tests()).await;
    assert!(emulator.admin_url().is_none());
    let mut stream = tokio::net::TcpStream::connect(emulator.local_addr())
        .await
        .expect("connect");
    stream
        .write_all(b"GET /hubs HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the emulator closes a connection that is not AMQP");
    assert!(
        !String::from_utf8_lossy(&answer).starts_with("HTTP/"),
        "{read:?}: {answer:?}"
    );
    emulator.shutdown().await;
}
