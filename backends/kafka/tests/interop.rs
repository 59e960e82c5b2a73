//! Interop with Kafka's own command-line tools (from the installed Kafka jars): what tributary
//! writes, `kafka-console-consumer` reads with the same key, headers and timestamp; what
//! `kafka-console-producer` writes, tributary reads as a plain event.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

use tributary::{Backend, ConsumerOptions, Event, StartPosition, StreamSpec, Timestamp};
use tributary_testcontainers::kafka::{self, tool};
use tributary_testcontainers::{Peer, Server, require_peer, unique_name};

/// Feeds `input` to `kafka-console-producer` with these `--reader-property` settings, and
/// waits (at most two minutes) until it has sent every line.
async fn console_produce(server: &Server, topic: &str, reader_properties: &[&str], input: &[u8]) {
    let mut command = tokio::process::Command::new(tool("kafka-console-producer"));
    command
        .args(["--bootstrap-server", server.address(), "--topic", topic])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for property in reader_properties {
        command.args(["--reader-property", property]);
    }
    let mut child = command.spawn().expect("run kafka-console-producer");
    let mut stdin = child.stdin.take().expect("stdin");
    let run = async {
        stdin.write_all(input).await.expect("write");
        drop(stdin);
        child.wait_with_output().await.expect("wait")
    };
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("kafka-console-producer finishes within 120 s");
    assert!(
        output.status.success(),
        "console producer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A backend on the fixture's broker and a fresh one-partition topic (one partition: the
/// console tools' lines keep their order).
async fn one_partition_topic(server: &Server, prefix: &str) -> (Arc<dyn Backend>, String) {
    tributary_kafka::register();
    let backend = tributary::connect(server.url()).await.expect("connect");
    let topic = unique_name(prefix);
    backend
        .create_stream(&topic, StreamSpec::with_partitions(1))
        .await
        .expect("create");
    (backend, topic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_consumer_reads_what_tributary_wrote() {
    let server = require_peer!(Peer::Kafka);
    let (backend, topic) = one_partition_topic(&server, "interop-out").await;
    let producer = backend.producer(&topic).await.expect("producer");
    let sent = [
        Event::new("v1")
            .with_key("k1")
            .with_header("h1", "a")
            .with_header("h2", "b")
            .with_timestamp(Timestamp::from_millis(1_700_000_000_123)),
        Event::new("hello world")
            .with_key("k2")
            .with_header("trace", "xyz")
            .with_timestamp(Timestamp::from_millis(1_700_000_000_456)),
        Event::new("no key, no headers").with_timestamp(Timestamp::from_millis(1_700_000_000_789)),
    ];
    producer.send_batch(sent.to_vec()).await.expect("send");
    producer.close().await.expect("close");

    let lines = kafka::console_consume(
        server.address(),
        &topic,
        3,
        &[
            "print.timestamp=true",
            "print.headers=true",
            "print.key=true",
            "key.separator=|",
        ],
        Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        lines,
        [
            "CreateTime:1700000000123|h1:a,h2:b|k1|v1",
            "CreateTime:1700000000456|trace:xyz|k2|hello world",
            "CreateTime:1700000000789|NO_HEADERS|null|no key, no headers",
        ],
        "kafka-console-consumer output"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tributary_reads_what_console_producer_wrote() {
    let server = require_peer!(Peer::Kafka);
    let (backend, topic) = one_partition_topic(&server, "interop-in").await;
    let consumer = backend
        .consumer(
            &topic,
            ConsumerOptions::new(unique_name("g")).start(StartPosition::Earliest),
        )
        .await
        .expect("consumer");

    let before = Timestamp::now().as_millis();
    console_produce(
        &server,
        &topic,
        &[
            "parse.key=true",
            "key.separator=|",
            "parse.headers=true",
            "headers.delimiter=;",
        ],
        b"origin:console,trace:t-1;order-7|first line\norigin:console;order-8|second line\n",
    )
    .await;
    let after = Timestamp::now().as_millis();

    let mut got = Vec::new();
    while got.len() < 2 {
        let delivery = tokio::time::timeout(Duration::from_secs(60), consumer.receive())
            .await
            .expect("in time")
            .expect("receive");
        got.push(delivery.event.clone());
        delivery.ack();
    }
    let first = &got[0];
    assert_eq!(first.key.as_deref(), Some(&b"order-7"[..]));
    assert_eq!(first.payload.as_ref(), b"first line");
    let headers: Vec<(&str, &[u8])> = first.headers.iter().map(|(n, v)| (n, v.as_ref())).collect();
    assert_eq!(
        headers,
        [("origin", &b"console"[..]), ("trace", &b"t-1"[..])]
    );
    let stamp = first
        .timestamp
        .expect("Kafka records carry a timestamp")
        .as_millis();
    assert!(
        (before - 1000..=after + 1000).contains(&stamp),
        "timestamp {stamp} outside [{before}, {after}]"
    );
    assert_eq!(got[1].key.as_deref(), Some(&b"order-8"[..]));
    assert_eq!(got[1].payload.as_ref(), b"second line");
    assert_eq!(
        got[1].headers.get("origin").map(|v| v.as_ref()),
        Some(&b"console"[..])
    );
    consumer.close().await.expect("close");
}

/// Keys for the partitioning test: plain, non-ASCII (Cyrillic, CJK, emoji, combining marks,
/// right-to-left) and long ones (up to 4 KiB), none holding a tab or a line break.
fn parity_keys() -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..400 {
        keys.push(format!("customer-{i}"));
    }
    let scripts = [
        "ключ",
        "キー",
        "钥匙",
        "🔑🗝️",
        "e\u{301}té",
        "מפתח",
        "Straße",
        "ǅ",
    ];
    for i in 0..400 {
        keys.push(format!("{}-{i}", scripts[i % scripts.len()]));
    }
    for i in 0..200 {
        // 100 to 4,100 bytes, varied so that every tail length of murmur2 occurs.
        let unit = format!("long-{i}-ä-");
        keys.push(
            unit.repeat(1 + (i * 37) % 400)
                .chars()
                .take(100 + i * 20)
                .collect(),
        );
    }
    for i in 0..100 {
        keys.push(i.to_string());
        keys.push(format!(" {i} spaced "));
    }
    keys
}

/// The same key goes to the same partition whether tributary or Kafka's own Java producer
/// (`kafka-console-producer`, Java's default murmur2 partitioner) sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_on_the_partitions_the_java_producer_picks() {
    let server = require_peer!(Peer::Kafka);
    tributary_kafka::register();
    let backend = tributary::connect(server.url()).await.expect("connect");
    // Seven partitions: a partition count that is not a power of two tells hashes apart better.
    let by_java = unique_name("parity-java");
    let by_tributary = unique_name("parity-tributary");
    for topic in [&by_java, &by_tributary] {
        backend
            .create_stream(topic, StreamSpec::with_partitions(7))
            .await
            .expect("create");
    }
    let keys = parity_keys();
    assert!(keys.len() >= 1000);

    let input: String = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k}\t{i}\n"))
        .collect();
    console_produce(
        &server,
        &by_java,
        &["parse.key=true", "key.separator=\t"],
        input.as_bytes(),
    )
    .await;

    // Where Java put each key, read back with the key bytes as the console producer sent them.
    let consumer = backend
        .consumer(
            &by_java,
            ConsumerOptions::new(unique_name("g")).start(StartPosition::Earliest),
        )
        .await
        .expect("consumer");
    let mut java = std::collections::HashMap::new();
    while java.len() < keys.len() {
        let delivery = tokio::time::timeout(Duration::from_secs(60), consumer.receive())
            .await
            .unwrap_or_else(|_| panic!("only {} of {} events arrived", java.len(), keys.len()))
            .expect("receive");
        let index: usize = std::str::from_utf8(&delivery.event.payload)
            .expect("utf-8 payload")
            .parse()
            .expect("numbered payload");
        assert_eq!(
            delivery.event.key.as_deref(),
            Some(keys[index].as_bytes()),
            "the console producer sent key {index} as other bytes"
        );
        java.insert(index, delivery.partition.clone().expect("partition"));
        delivery.ack();
    }
    consumer.close().await.expect("close");

    let producer = backend.producer(&by_tributary).await.expect("producer");
    let events: Vec<Event> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Event::new(i.to_string()).with_key(k.clone()))
        .collect();
    let receipts = producer.send_batch(events).await.expect("send");
    producer.close().await.expect("close");
    let differing: Vec<String> = receipts
        .iter()
        .enumerate()
        .filter(|(i, r)| r.partition.as_ref() != java.get(i))
        .map(|(i, r)| {
            format!(
                "{:?}: tributary {:?}, Java {:?}",
                keys[i].chars().take(24).collect::<String>(),
                r.partition,
                java.get(&i)
            )
        })
        .collect();
    assert!(
        differing.is_empty(),
        "{} of {} keys land elsewhere than with Java's partitioner, e.g. {:?}",
        differing.len(),
        keys.len(),
        &differing[..differing.len().min(5)]
    );
}
