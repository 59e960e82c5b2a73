//! Errors name the backend, the operation and the stream, through core's one stamping layer
//! (the crate sets none of it itself), whether the backend comes from `tributary::connect` or
//! from a `PubSubConfig` built in code.

use std::sync::Arc;

use tributary::{
    Backend, ConsumerOptions, Error, ErrorKind, Event, Position, StartPosition, StreamSpec,
};
use tributary_pubsub::{PubSubBackend, PubSubConfig};
use tributary_testcontainers::{Peer, require_peer, unique_name};

fn assert_names(err: &Error, kind: ErrorKind, operation: &str, stream: &str) {
    assert_eq!(err.kind(), kind, "{err}");
    assert_eq!(err.backend(), Some("pubsub"), "{err}");
    assert_eq!(err.operation(), Some(operation), "{err}");
    assert_eq!(err.stream(), Some(stream), "{err}");
    let shown = err.to_string();
    assert!(shown.starts_with("pubsub: "), "{shown}");
    assert!(shown.contains(stream), "{shown}");
}

async fn errors_are_stamped(backend: Arc<dyn Backend>) {
    let missing = unique_name("missing");
    let Err(err) = backend.producer(&missing).await else {
        panic!("a producer for a missing topic opened")
    };
    assert_names(&err, ErrorKind::NotFound, "open producer", &missing);

    let Err(err) = backend
        .create_stream("bad name/with slash", StreamSpec::default())
        .await
    else {
        panic!("a bad topic name was accepted")
    };
    assert_names(
        &err,
        ErrorKind::Config,
        "create stream",
        "bad name/with slash",
    );

    let topic = unique_name("errors");
    backend
        .create_stream(&topic, StreamSpec::default())
        .await
        .expect("create");
    let options = ConsumerOptions::new("g").start(StartPosition::Position(Position::new("1")));
    let Err(err) = backend.consumer(&topic, options).await else {
        panic!("a Pub/Sub consumer started at a position")
    };
    assert_names(&err, ErrorKind::Unsupported, "open consumer", &topic);
    let Err(err) = backend.consumer(&topic, ConsumerOptions::new("")).await else {
        panic!("an empty group was accepted")
    };
    assert_names(&err, ErrorKind::Config, "open consumer", &topic);

    let producer = backend.producer(&topic).await.expect("producer");
    let too_large = Event::new(vec![0u8; 4_000_001]);
    let err = producer.send(too_large).await.expect_err("too large");
    assert_names(&err, ErrorKind::TooLarge, "send", &topic);
    producer.close().await.expect("close");
    let err = producer.send(Event::new("late")).await.expect_err("closed");
    assert_names(&err, ErrorKind::Closed, "send", &topic);
    let err = producer
        .send_batch(vec![Event::new("late")])
        .await
        .expect_err("closed");
    assert_names(&err, ErrorKind::Closed, "send batch", &topic);
    producer.close().await.expect("closing twice is harmless");

    backend.delete_stream(&topic).await.expect("delete");
    backend.close().await.expect("close backend");
    let Err(err) = backend.producer(&topic).await else {
        panic!("a closed backend opened a producer")
    };
    assert_names(&err, ErrorKind::Closed, "open producer", &topic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_through_connect_name_backend_operation_and_stream() {
    let server = require_peer!(Peer::PubSub);
    tributary_pubsub::register();
    let url = format!("{}&max_event_bytes=4000000", server.url());
    errors_are_stamped(tributary::connect(&url).await.expect("connect")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_built_in_code_connects_and_is_stamped_the_same() {
    let server = require_peer!(Peer::PubSub);
    let url = tributary::parse_url(server.url()).expect("url");
    let endpoint = url
        .query_pairs()
        .find(|(k, _)| k == "endpoint")
        .map(|(_, v)| v.into_owned())
        .expect("the fixture names its endpoint");
    let mut config = PubSubConfig::new(url.host_str().expect("project"));
    config.endpoint = Some(endpoint);
    config.max_event_bytes = 4_000_000;
    let backend = PubSubBackend::connect(config).await.expect("connect");
    errors_are_stamped(tributary::backend::stamped(backend)).await;
}

#[tokio::test]
async fn connect_errors_name_the_backend() {
    tributary_pubsub::register();
    let err = tributary::connect("pubsub://p?endpoint=http://127.0.0.1:9&timeout=2s")
        .await
        .expect_err("nothing listens on port 9");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(err.backend(), Some("pubsub"), "{err}");
    assert_eq!(err.operation(), Some("connect"), "{err}");

    let mut config = PubSubConfig::new("p");
    config.ack_deadline = std::time::Duration::from_secs(1);
    let err = PubSubBackend::connect(config)
        .await
        .expect_err("an ack deadline below 10s");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert_eq!(err.backend(), Some("pubsub"), "{err}");
    assert!(err.to_string().contains("ack_deadline"), "{err}");
}
