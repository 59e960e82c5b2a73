//! Errors name the backend, the operation and the stream through core's one stamping layer
//! (the crate names itself only in `KinesisBackend::connect`), whether the backend comes from
//! `tributary::connect` or from a `KinesisConfig` connected in code and stamped; errors met by
//! a shard's reader inside the group engine reach `receive` stamped the same.

mod common;

use std::sync::Arc;
use std::time::Duration;

use tributary::{Backend, ConsumerOptions, Error, ErrorKind, Event, StartPosition, StreamSpec};
use tributary_kinesis::{KinesisBackend, KinesisConfig};
use tributary_testcontainers::{Peer, require_peer, unique_name};

use common::{connect, raw_client, url};

fn assert_names(err: &Error, kind: ErrorKind, operation: &str, stream: &str) {
    assert_eq!(err.kind(), kind, "{err}");
    assert_eq!(err.backend(), Some("kinesis"), "{err}");
    assert_eq!(err.operation(), Some(operation), "{err}");
    assert_eq!(err.stream(), Some(stream), "{err}");
    let shown = err.to_string();
    assert!(shown.starts_with("kinesis: "), "{shown}");
    assert!(shown.contains(stream), "{shown}");
}

async fn errors_are_stamped(backend: Arc<dyn Backend>, server_url: &str) {
    let missing = unique_name("missing");
    let Err(err) = backend.producer(&missing).await else {
        panic!("a producer for a missing stream opened without auto_create")
    };
    assert_names(&err, ErrorKind::NotFound, "open producer", &missing);
    let err = backend.describe_stream(&missing).await.unwrap_err();
    assert_names(&err, ErrorKind::NotFound, "describe stream", &missing);

    let bad = "bad name/with slash";
    let err = backend
        .create_stream(bad, StreamSpec::default())
        .await
        .unwrap_err();
    assert_names(&err, ErrorKind::Config, "create stream", bad);

    let stream = unique_name("errors");
    backend
        .create_stream(&stream, StreamSpec::with_partitions(1))
        .await
        .expect("create");
    let Err(err) = backend.consumer(&stream, ConsumerOptions::new("")).await else {
        panic!("an empty group was accepted")
    };
    assert_names(&err, ErrorKind::Config, "open consumer", &stream);

    let producer = backend.producer(&stream).await.expect("producer");
    let err = producer
        .send(Event::new(vec![0u8; 1 << 20]).with_key("k"))
        .await
        .expect_err("over the record limit");
    assert_names(&err, ErrorKind::TooLarge, "send", &stream);

    // A record only another client could write: the KPL's magic with a digest that does not
    // match. The shard's reader fails on it inside the group engine; `receive` says so.
    let mut data = vec![0xF3, 0x89, 0x9A, 0xC2];
    data.extend_from_slice(&[0u8; 20]);
    raw_client(server_url)
        .put_record()
        .stream_name(&stream)
        .partition_key("k")
        .data(aws_sdk_kinesis::primitives::Blob::new(data))
        .send()
        .await
        .expect("raw put");
    let consumer = backend
        .consumer(
            &stream,
            ConsumerOptions::new("g").start(StartPosition::Earliest),
        )
        .await
        .expect("consumer");
    let received = tokio::time::timeout(Duration::from_secs(60), consumer.receive())
        .await
        .expect("receive answers within 60 s");
    let Err(err) = received else {
        panic!("a record with a bad KPL digest was delivered")
    };
    assert_names(&err, ErrorKind::Corrupt, "receive", &stream);
    assert!(err.message().contains("MD5"), "{err}");
    consumer.close().await.expect("close consumer");

    producer.close().await.expect("close");
    let err = producer.send(Event::new("late")).await.expect_err("closed");
    assert_names(&err, ErrorKind::Closed, "send", &stream);
    let err = producer
        .send_batch(vec![Event::new("late")])
        .await
        .expect_err("closed");
    assert_names(&err, ErrorKind::Closed, "send batch", &stream);

    backend.delete_stream(&stream).await.expect("delete");
    backend.close().await.expect("close backend");
    let Err(err) = backend.producer(&stream).await else {
        panic!("a closed backend opened a producer")
    };
    assert_names(&err, ErrorKind::Closed, "open producer", &stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_through_connect_name_backend_operation_and_stream() {
    let server = require_peer!(Peer::Kinesis);
    errors_are_stamped(connect(server.url(), "").await, server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_connected_in_code_is_stamped_the_same() {
    let server = require_peer!(Peer::Kinesis);
    let parsed = tributary::parse_url(&url(server.url(), "")).expect("url");
    let config = KinesisConfig::from_url(&parsed).expect("config");
    let backend = KinesisBackend::connect(config).await.expect("connect");
    errors_are_stamped(tributary::backend::stamped(backend), server.url()).await;
}

/// Connecting happens before any stamping layer exists: through a URL the registry names the
/// backend and the operation; a typed connect names itself.
#[tokio::test]
async fn connect_errors_name_the_backend() {
    tributary_kinesis::register();
    let unreachable =
        "kinesis://us-east-1?endpoint=http://127.0.0.1:9&timeout=2s&checkpoints=memory";
    let err = tributary::connect(unreachable)
        .await
        .expect_err("nothing listens on port 9");
    assert_eq!(err.backend(), Some("kinesis"), "{err}");
    assert_eq!(err.operation(), Some("connect"), "{err}");
    assert!(err.to_string().starts_with("kinesis: "), "{err}");

    let err = tributary::connect("kinesis://us-east-1?shards=0")
        .await
        .expect_err("no stream has 0 shards");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert_eq!(err.backend(), Some("kinesis"), "{err}");
    assert_eq!(err.operation(), Some("connect"), "{err}");

    let config = KinesisConfig::from_url(&tributary::parse_url(unreachable).unwrap()).unwrap();
    let err = KinesisBackend::connect(config)
        .await
        .expect_err("nothing listens on port 9");
    assert_eq!(err.backend(), Some("kinesis"), "{err}");
    assert!(err.to_string().contains("did not answer"), "{err}");
}
