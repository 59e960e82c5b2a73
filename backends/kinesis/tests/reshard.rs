//! Resharding while a group consumes: a shard is split, then two shards are merged, while
//! events keep coming. Every event is delivered, each key's events in order across the
//! reshard, and no child shard is read before its parents were read to their end and that end
//! was checkpointed.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tributary::backend::{Checkpoint, CheckpointStore};
use tributary::{ConsumerOptions, Event, StartPosition, StreamSpec};
use tributary_testcontainers::{Peer, require_peer, unique_name};

const EVENTS: usize = 4_000;
const KEYS: usize = 30;

async fn open_shards(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<(String, u128, u128)> {
    let out = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    let mut open: Vec<(String, u128, u128)> = out
        .shards()
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_none()
        })
        .map(|s| {
            let range = s.hash_key_range().unwrap();
            (
                s.shard_id().to_owned(),
                range.starting_hash_key().parse().unwrap(),
                range.ending_hash_key().parse().unwrap(),
            )
        })
        .collect();
    open.sort_by_key(|s| s.1);
    open
}

async fn wait_active(client: &aws_sdk_kinesis::Client, stream: &str) {
    let deadline = Instant::now() + common::WAIT;
    loop {
        let status = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .unwrap()
            .stream_description_summary()
            .map(|s| s.stream_status().clone());
        if status == Some(aws_sdk_kinesis::types::StreamStatus::Active) {
            return;
        }
        assert!(Instant::now() < deadline, "stream never ACTIVE again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_and_a_merge_during_polling() {
    split_and_merge("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_and_a_merge_during_enhanced_fan_out() {
    split_and_merge("&fanout=true").await;
}

async fn split_and_merge(options: &str) {
    let kinesis = require_peer!(Peer::Kinesis);
    let dynamodb = require_peer!(Peer::DynamoDb);
    let url = format!(
        "{}&dynamodb_endpoint={}&lease_ttl=3s&commit_interval=100ms{options}",
        kinesis.url(),
        dynamodb.url()
    );
    tributary_kinesis::register();
    let backend = tributary::connect(&url).await.unwrap();
    let raw = common::raw_client(kinesis.url());
    let stream = unique_name("reshard");
    let group = unique_name("g");
    backend
        .create_stream(&stream, StreamSpec::with_partitions(2))
        .await
        .unwrap();
    let consumer = backend
        .consumer(
            &stream,
            ConsumerOptions::new(&group).start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let producer = backend.producer(&stream).await.unwrap();

    // The producer keeps sending in batches while the shards change under it.
    let send = {
        let producer = std::sync::Arc::new(producer);
        tokio::spawn(async move {
            let events: Vec<Event> = (0..EVENTS)
                .map(|i| {
                    Event::new(format!("k{:02}:{:06}", i % KEYS, i))
                        .with_key(format!("key-{:02}", i % KEYS))
                })
                .collect();
            for chunk in events.chunks(100) {
                producer.send_batch(chunk.to_vec()).await.expect("send");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let mut delivered: Vec<(String, String)> = Vec::new();
    let mut resharded = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut payloads = HashSet::new();
    while payloads.len() < EVENTS {
        assert!(
            Instant::now() < deadline,
            "{} of {EVENTS} delivered before the deadline",
            payloads.len()
        );
        let batch = consumer
            .receive_batch(200, Duration::from_millis(20))
            .await
            .unwrap();
        for d in batch {
            let payload = String::from_utf8(d.event.payload.to_vec()).unwrap();
            delivered.push((d.partition.as_ref().unwrap().to_string(), payload.clone()));
            payloads.insert(payload);
            d.ack();
        }
        // Split the first shard after a quarter, merge the two lowest open shards after half.
        if resharded == 0 && payloads.len() >= EVENTS / 4 {
            let open = open_shards(&raw, &stream).await;
            let (id, start, end) = &open[0];
            raw.split_shard()
                .stream_name(&stream)
                .shard_to_split(id)
                .new_starting_hash_key((start + (end - start) / 2).to_string())
                .send()
                .await
                .expect("split");
            wait_active(&raw, &stream).await;
            resharded = 1;
        } else if resharded == 1 && payloads.len() >= EVENTS / 2 {
            let open = open_shards(&raw, &stream).await;
            raw.merge_shards()
                .stream_name(&stream)
                .shard_to_merge(&open[0].0)
                .adjacent_shard_to_merge(&open[1].0)
                .send()
                .await
                .expect("merge");
            wait_active(&raw, &stream).await;
            resharded = 2;
        }
    }
    send.await.unwrap();
    assert_eq!(resharded, 2, "the shards were split and merged");

    // Per key, in order, across parents and children.
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (_, payload) in &delivered {
        let (key, index) = payload.split_once(':').unwrap();
        let index: usize = index.parse().unwrap();
        if let Some(prev) = last.insert(key, index) {
            assert!(prev < index, "key {key}: {prev} delivered before {index}");
        }
    }
    // A child's first delivery comes after the last delivery of each of its parents.
    let shards = raw.list_shards().stream_name(&stream).send().await.unwrap();
    let position_of = |shard: &str, first: bool| {
        let mut it = delivered
            .iter()
            .enumerate()
            .filter(|(_, (s, _))| s == shard)
            .map(|(i, _)| i);
        if first { it.next() } else { it.next_back() }
    };
    let mut children = 0;
    for shard in shards.shards() {
        let parents: Vec<&str> = shard
            .parent_shard_id()
            .into_iter()
            .chain(shard.adjacent_parent_shard_id())
            .collect();
        if parents.is_empty() {
            continue;
        }
        children += 1;
        let Some(first) = position_of(shard.shard_id(), true) else {
            continue;
        };
        for parent in parents {
            if let Some(last) = position_of(parent, false) {
                assert!(
                    last < first,
                    "child {} delivered (#{first}) before parent {parent} ended (#{last})",
                    shard.shard_id()
                );
            }
        }
    }
    assert_eq!(children, 3, "two children of the split, one of the merge");
    consumer.commit().await.unwrap();

    // The parents' ends are in the lease table, as SHARD_END.
    let store = common::lease_store(dynamodb.url());
    let checkpoints = store.checkpoints(&group, &stream).await.unwrap();
    let ended = checkpoints
        .values()
        .filter(|c| **c == Checkpoint::Ended)
        .count();
    assert_eq!(
        ended, 3,
        "three parents checkpointed SHARD_END: {checkpoints:?}"
    );
    consumer.close().await.unwrap();
}
