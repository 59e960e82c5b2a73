//! CloudEvents on every landed backend (local, Kafka, Pub/Sub, Pulsar, Event Hubs, Kinesis), in
//! both content modes: what is sent in a binding's representation comes back byte for byte
//! (payload and every header) and reads back as the same CloudEvent; the CLI's
//! `--format cloudevents` both ways; a route converting bindings.

mod cli_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tributary::cloudevents::{Binding, CloudEvent, Mode, mode_of};
use tributary::{Backend, ConsumerOptions, StartPosition, StreamSpec};
use tributary_bridge::cloudevents::Conversion;
use tributary_bridge::route::{self, CancellationToken, RouteSpec, RouteStats};
use tributary_testcontainers::{Peer, require_peer, unique_name};

const DEADLINE: Duration = Duration::from_secs(60);
/// Events per mode: several times any client's batch and prefetch.
const PER_MODE: usize = 600;

/// The `index`th sample: JSON, text, binary and no data in turn, typed extensions included.
fn sample(mode: Mode, index: usize) -> CloudEvent {
    let ce = CloudEvent::new(
        format!("{mode}-{index}"),
        "/mycontext/subcontext",
        "com.example.someevent",
    )
    .with_time("2018-04-05T03:56:24Z")
    .with_subject(format!("orders/{index}"))
    .with_attribute("partitionkey", format!("customer-{}", index % 8))
    .with_attribute("priority", (index % 5) as i64);
    match index % 4 {
        0 => ce.with_data("application/json", format!("{{\"total\" : {index}.50}}")),
        1 => ce.with_data("text/plain; charset=utf-8", format!("héllo {index}")),
        2 => ce.with_data(
            "application/octet-stream",
            (0..=255u8)
                .cycle()
                .skip(index % 256)
                .take(300)
                .collect::<Vec<_>>(),
        ),
        _ => ce,
    }
}

/// The header names a binding's binary mode must use for `id`.
fn id_header(binding: Binding) -> &'static str {
    match binding {
        Binding::Kafka | Binding::Generic => "ce_id",
        Binding::Amqp => "cloudEvents:id",
        Binding::PubSub | Binding::Http => "ce-id",
    }
}

async fn round_trip(backend: Arc<dyn Backend>) {
    let binding = Binding::for_scheme(backend.scheme());
    let stream = unique_name("ce");
    if !["memory", "file", "eventhubs"].contains(&backend.scheme()) {
        backend
            .create_stream(&stream, StreamSpec::with_partitions(4))
            .await
            .unwrap();
    }
    // The group exists before the events (Pub/Sub keeps nothing for later subscriptions).
    let consumer = backend
        .consumer(
            &stream,
            ConsumerOptions::new(unique_name("g")).start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let producer = backend.producer(&stream).await.unwrap();
    let mut sent = HashMap::new();
    for mode in [Mode::Binary, Mode::Structured] {
        let mut batch = Vec::new();
        for i in 0..PER_MODE {
            let ce = sample(mode, i);
            let event = ce
                .to_event(binding, mode)
                .unwrap()
                .with_key(ce.partition_key().unwrap().to_owned());
            match mode {
                Mode::Binary => assert!(event.headers.get(id_header(binding)).is_some()),
                // The AMQP binding's example writes `charset=utf-8`, the others `UTF-8`.
                Mode::Structured => assert!(
                    event.headers.get("content-type").is_some_and(|v| v
                        .to_ascii_lowercase()
                        .starts_with(b"application/cloudevents+json")),
                    "{:?}",
                    event.headers.get("content-type")
                ),
            }
            sent.insert(ce.id().unwrap().to_owned(), (ce, mode, event.clone()));
            batch.push(event);
        }
        producer.send_batch(batch).await.unwrap();
    }
    producer.close().await.unwrap();
    let mut seen = 0;
    while seen < sent.len() {
        let d = tokio::time::timeout(DEADLINE, consumer.receive())
            .await
            .unwrap_or_else(|_| panic!("{}: {seen} of {} events", backend.scheme(), sent.len()))
            .unwrap();
        let back = CloudEvent::from_event(&d.event, binding).unwrap();
        let (ce, mode, event) = sent
            .get(back.id().unwrap())
            .unwrap_or_else(|| panic!("unknown event {:?}", back.id()));
        let what = format!("{} {mode} {}", backend.scheme(), back.id().unwrap());
        assert_eq!(d.event.payload, event.payload, "{what}");
        // Every header sent comes back byte for byte; a platform may add its own (Event Hubs:
        // `message-id` and `x-opt-` annotations), never a CloudEvents one.
        let got: Vec<_> = d.event.headers.iter().collect();
        let want: Vec<_> = event.headers.iter().collect();
        for header in &want {
            assert!(got.contains(header), "{what}: {header:?} not in {got:?}");
        }
        for (name, _) in got.iter().filter(|h| !want.contains(h)) {
            assert!(
                !name.to_ascii_lowercase().starts_with("ce")
                    && !name.eq_ignore_ascii_case("content-type"),
                "{what}: extra header {name}"
            );
        }
        assert_eq!(mode_of(&d.event, binding), Some(*mode), "{what}");
        let mut expected = ce.clone();
        if *mode == Mode::Binary {
            // Headers carry strings: a typed extension comes back as its canonical string.
            let priority = ce.attribute("priority").unwrap().to_canonical_string();
            expected.set_attribute("priority", priority);
        }
        assert_eq!(back, expected, "{what}");
        d.ack();
        seen += 1;
    }
    consumer.close().await.unwrap();
    backend.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_on_the_local_backend() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(
        tributary::connect(&format!("file://{}", dir.path().display()))
            .await
            .unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_on_kafka() {
    let server = require_peer!(Peer::Kafka);
    tributary_kafka::register();
    round_trip(tributary::connect(server.url()).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_on_pubsub() {
    let server = require_peer!(Peer::PubSub);
    tributary_pubsub::register();
    round_trip(tributary::connect(server.url()).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_on_pulsar() {
    let server = require_peer!(Peer::Pulsar);
    tributary_pulsar::register();
    round_trip(tributary::connect(server.url()).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_on_eventhubs() {
    let server = require_peer!(Peer::EventHubs);
    tributary_eventhubs::register();
    round_trip(tributary::connect(server.url()).await.unwrap()).await;
}

/// Kinesis has no CloudEvents binding and its records no headers: the generic binding applies
/// (Kafka's `ce_` names in binary mode, `content-type` beside the JSON in structured mode), and
/// the headers travel in the Kinesis backend's versioned envelope inside the record's data,
/// the partition key being the `partitionkey` extension. The round trip is the same as on the
/// platforms with headers: payload and every header byte for byte, the same CloudEvent back.
/// The group's leases live in dynalite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_on_kinesis() {
    let kinesis = require_peer!(Peer::Kinesis);
    let dynamodb = require_peer!(Peer::DynamoDb);
    tributary_kinesis::register();
    let url = format!("{}&dynamodb_endpoint={}", kinesis.url(), dynamodb.url());
    round_trip(tributary::connect(&url).await.unwrap()).await;
}

/// `produce --format cloudevents` then `consume --format cloudevents`: the same JSON lines.
#[test]
fn the_cli_writes_and_reads_cloudevents_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    for mode in ["binary", "structured"] {
        let stream = format!("ce-{mode}");
        let lines: Vec<Vec<u8>> = (0..500)
            .map(|i| sample(Mode::Binary, i).to_json().unwrap())
            .collect();
        let input: Vec<u8> = lines
            .iter()
            .flat_map(|l| [&l[..], &b"\n"[..]].concat())
            .collect();
        let (code, _, err) = cli_support::run(
            &[
                "produce",
                &url,
                &stream,
                "--format",
                "cloudevents",
                "--ce-mode",
                mode,
            ],
            &input,
        );
        assert_eq!(code, 0, "{err}");
        let (code, out, err) = cli_support::run_bytes(
            &[
                "consume",
                &url,
                &stream,
                "--format",
                "cloudevents",
                "-n",
                "500",
            ],
            b"",
        );
        assert_eq!(code, 0, "{err}");
        let mut got: Vec<&[u8]> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let mut want: Vec<&[u8]> = lines.iter().map(|l| &l[..]).collect();
        // Keys (partitionkey) spread events over partitions: compare as sets of lines.
        got.sort();
        want.sort();
        assert_eq!(got.len(), 500, "{mode}");
        if mode == "binary" {
            // Headers carry strings: the typed `priority` comes back as a string.
            let back: Vec<CloudEvent> = got
                .iter()
                .map(|l| CloudEvent::from_json(l).unwrap())
                .collect();
            for ce in back {
                let index: usize = ce
                    .id()
                    .unwrap()
                    .rsplit('-')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                let mut expected = sample(Mode::Binary, index);
                let priority = expected
                    .attribute("priority")
                    .unwrap()
                    .to_canonical_string();
                expected.set_attribute("priority", priority);
                assert_eq!(ce, expected);
            }
        } else {
            assert_eq!(got, want, "structured mode keeps the JSON as it was");
        }
    }
    // A line that is no CloudEvent names its line.
    let (code, _, err) = cli_support::run(
        &["produce", &url, "ce-bad", "--format", "cloudevents"],
        b"{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\"}\n{\"id\":\"2\"}\n",
    );
    assert_ne!(code, 0);
    assert!(err.contains("line 2"), "{err}");
}

/// A route converting Kafka's binding (binary mode) to Pub/Sub's, in each mode.
#[tokio::test(flavor = "current_thread")]
async fn a_route_converts_between_bindings() {
    for mode in [Some(Mode::Binary), Some(Mode::Structured), None] {
        let source = tributary::connect("memory://").await.unwrap();
        let sink = tributary::connect("memory://").await.unwrap();
        let producer = source.producer("in").await.unwrap();
        let originals: Vec<CloudEvent> = (0..50).map(|i| sample(Mode::Binary, i)).collect();
        producer
            .send_batch(
                originals
                    .iter()
                    .map(|ce| ce.to_event(Binding::Kafka, Mode::Binary).unwrap())
                    .collect(),
            )
            .await
            .unwrap();
        let mut spec = RouteSpec::new("ce", source.clone(), "in", sink.clone(), "out");
        spec.start = "earliest".parse().unwrap();
        spec.cloudevents = Some(Conversion {
            from: Binding::Kafka,
            to: Binding::PubSub,
            mode,
        });
        let cancel = CancellationToken::default();
        let route = tokio::spawn(route::run_route(
            spec,
            Arc::new(RouteStats::default()),
            cancel.clone(),
        ));
        let consumer = sink
            .consumer(
                "out",
                ConsumerOptions::new("g").start(StartPosition::Earliest),
            )
            .await
            .unwrap();
        for _ in 0..originals.len() {
            let d = tokio::time::timeout(DEADLINE, consumer.receive())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                mode_of(&d.event, Binding::PubSub),
                Some(mode.unwrap_or(Mode::Binary)),
                "{mode:?}"
            );
            assert!(
                d.event.headers.get("ce_id").is_none(),
                "no Kafka headers left"
            );
            if mode != Some(Mode::Structured) {
                assert!(d.event.headers.get("ce-id").is_some());
            }
            let back = CloudEvent::from_event(&d.event, Binding::PubSub).unwrap();
            let index: usize = back
                .id()
                .unwrap()
                .rsplit('-')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let original = &originals[index];
            assert_eq!(back.data(), original.data());
            assert_eq!(back.ty(), original.ty());
            assert_eq!(back.time(), original.time());
            d.ack();
        }
        consumer.close().await.unwrap();
        cancel.cancel();
        route.await.unwrap().unwrap();
    }
}
