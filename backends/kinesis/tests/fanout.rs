//! Enhanced fan-out against ferrokinesis: a group reads through `SubscribeToShard`, renewing
//! each subscription (here every 6 seconds instead of the default 4m30s, to see several
//! renewals) with nothing lost or repeated, keys in order; and two groups read the same stream
//! through consumers of their own.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tributary::{ConsumerOptions, Event, StartPosition, StreamSpec};
use tributary_testcontainers::{Peer, require_peer, unique_name};

const EVENTS: usize = 3_000;
const KEYS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fan_out_reads_across_subscription_renewals() {
    let kinesis = require_peer!(Peer::Kinesis);
    let backend = common::connect(kinesis.url(), "fanout=true&fanout_resubscribe=6s").await;
    let stream = unique_name("fanout");
    backend
        .create_stream(&stream, StreamSpec::with_partitions(2))
        .await
        .unwrap();
    let groups = [unique_name("a"), unique_name("b")];
    let mut consumers = Vec::new();
    for group in &groups {
        consumers.push(
            backend
                .consumer(
                    &stream,
                    ConsumerOptions::new(group).start(StartPosition::Earliest),
                )
                .await
                .unwrap(),
        );
    }
    let producer = std::sync::Arc::new(backend.producer(&stream).await.unwrap());
    // About 20 seconds of sending: three renewals per shard.
    let send = tokio::spawn({
        let producer = producer.clone();
        async move {
            let events: Vec<Event> = (0..EVENTS)
                .map(|i| {
                    Event::new(format!("k{:02}:{:06}", i % KEYS, i))
                        .with_key(format!("key-{:02}", i % KEYS))
                })
                .collect();
            for chunk in events.chunks(30) {
                producer.send_batch(chunk.to_vec()).await.expect("send");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let started = Instant::now();
    for (group, consumer) in groups.iter().zip(&consumers) {
        let mut seen = HashSet::new();
        let mut last: HashMap<String, usize> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while seen.len() < EVENTS {
            assert!(
                Instant::now() < deadline,
                "group {group}: {} of {EVENTS} before the deadline",
                seen.len()
            );
            for d in consumer
                .receive_batch(500, Duration::from_millis(20))
                .await
                .unwrap()
            {
                let payload = String::from_utf8(d.event.payload.to_vec()).unwrap();
                let (key, index) = payload.split_once(':').unwrap();
                let index: usize = index.parse().unwrap();
                assert!(
                    seen.insert(index),
                    "group {group}: event {index} delivered twice"
                );
                if let Some(prev) = last.insert(key.to_owned(), index) {
                    assert!(
                        prev < index,
                        "group {group}, key {key}: {prev} then {index}"
                    );
                }
                d.ack();
            }
        }
    }
    send.await.unwrap();
    assert!(
        started.elapsed() > Duration::from_secs(12),
        "the test must outlive two subscription renewals"
    );
    // Each group registered a consumer of its own on the stream.
    let raw = common::raw_client(kinesis.url());
    let arn = raw
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary()
        .unwrap()
        .stream_arn()
        .to_owned();
    let registered = raw
        .list_stream_consumers()
        .stream_arn(arn)
        .send()
        .await
        .unwrap();
    let mut names: Vec<&str> = registered
        .consumers()
        .iter()
        .map(|c| c.consumer_name())
        .collect();
    names.sort();
    let mut want: Vec<&str> = groups.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(names, want);
    for consumer in consumers {
        consumer.close().await.unwrap();
    }
}
