//! The producer against ferrokinesis: records as other clients see them, receipts, KPL
//! aggregation, limits, and per-key order while the emulator throttles writes as Kinesis does.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, Record};
use bytes::Bytes;
use common::{connect, raw_client, read_all};
use tributary::{ConsumerOptions, ErrorKind, Event, StartPosition, StreamSpec, Timestamp};
use tributary_testcontainers::{Peer, require_peer, unique_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_look_plain_to_other_clients_and_receipts_name_them() {
    let server = require_peer!(Peer::Kinesis);
    let backend = connect(server.url(), "").await;
    let stream = unique_name("plain");
    backend
        .create_stream(&stream, StreamSpec::with_partitions(3))
        .await
        .unwrap();
    let producer = backend.producer(&stream).await.unwrap();
    let events: Vec<Event> = (0..300)
        .map(|i| match i % 3 {
            0 => Event::new(format!("keyed-{i}")).with_key(format!("customer-{}", i % 17)),
            1 => Event::new(format!("keyless-{i}")),
            _ => Event::new(format!("rich-{i}"))
                .with_key(vec![0xff, i as u8])
                .with_header("trace", "abc")
                .with_timestamp(Timestamp::from_millis(1_700_000_000_000 + i)),
        })
        .collect();
    let receipts = producer.send_batch(events.clone()).await.unwrap();
    let raw = raw_client(server.url());
    let records = read_all(&raw, &stream, events.len()).await;
    assert_eq!(records.len(), events.len());
    let by_sequence: HashMap<&str, (&str, &aws_sdk_kinesis::types::Record)> = records
        .iter()
        .map(|(shard, r)| (r.sequence_number(), (shard.as_str(), r)))
        .collect();
    for (event, receipt) in events.iter().zip(&receipts) {
        let position = receipt.position.as_ref().expect("a position");
        let (shard, record) = by_sequence[position.as_str()];
        assert_eq!(receipt.partition.as_ref().map(|p| p.as_str()), Some(shard));
        let data = record.data().as_ref();
        let payload = String::from_utf8_lossy(&event.payload);
        if payload.starts_with("keyed") {
            assert_eq!(data, event.payload.as_ref(), "a plain event is plain data");
            assert_eq!(
                Some(record.partition_key().unwrap_or_default().as_bytes()),
                event.key.as_deref()
            );
        } else if payload.starts_with("keyless") {
            assert_eq!(data, event.payload.as_ref());
            assert!(
                record
                    .partition_key()
                    .unwrap_or_default()
                    .starts_with("~tributary:")
            );
        } else {
            assert!(data.starts_with(b"\xF5TRB\x01"), "an enveloped event");
            assert!(data.ends_with(event.payload.as_ref()));
        }
    }
    producer.close().await.unwrap();
    let err = producer.send(Event::new("late")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregation_packs_a_keys_records_with_sub_sequence_positions() {
    let server = require_peer!(Peer::Kinesis);
    let backend = connect(server.url(), "aggregate=true").await;
    let stream = unique_name("aggregated");
    backend
        .create_stream(&stream, StreamSpec::with_partitions(2))
        .await
        .unwrap();
    let producer = backend.producer(&stream).await.unwrap();
    // One hot key and a few cold ones, in one batch: the hot key's records share aggregates.
    let events: Vec<Event> = (0..2_000)
        .map(|i| {
            let key = if i % 4 == 0 {
                format!("cold-{i}")
            } else {
                "hot".to_owned()
            };
            Event::new(format!("{i:05}")).with_key(key)
        })
        .collect();
    let receipts = producer.send_batch(events.clone()).await.unwrap();
    let raw = raw_client(server.url());
    let stored: std::collections::HashSet<String> = receipts
        .iter()
        .map(|r| {
            let position = r.position.as_ref().unwrap().as_str();
            position.split(':').next().unwrap().to_owned()
        })
        .collect();
    let records = read_all(&raw, &stream, stored.len()).await;
    assert_eq!(records.len(), stored.len());
    assert!(
        records.len() < events.len() / 2,
        "{} records for {} events: the hot key was not aggregated",
        records.len(),
        events.len()
    );
    // Every receipt names the user record that holds the event, and each key's events are in
    // send order along its shard.
    let mut found: HashMap<String, (String, String)> = HashMap::new();
    let mut last_of_key: HashMap<String, String> = HashMap::new();
    for (shard, record) in &records {
        let data = Bytes::copy_from_slice(record.data().as_ref());
        let users = if tributary_kinesis::kpl::is_aggregated(&data) {
            tributary_kinesis::kpl::deaggregate(&data).unwrap()
        } else {
            vec![tributary_kinesis::kpl::UserRecord {
                partition_key: record.partition_key().unwrap_or_default().to_owned(),
                explicit_hash_key: None,
                data,
            }]
        };
        let aggregated = users.len() > 1;
        for (i, user) in users.into_iter().enumerate() {
            let payload = String::from_utf8(user.data.to_vec()).unwrap();
            let position = if aggregated {
                format!("{}:{i}", record.sequence_number())
            } else {
                record.sequence_number().to_owned()
            };
            if let Some(previous) = last_of_key.insert(user.partition_key.clone(), payload.clone())
            {
                assert!(
                    previous < payload,
                    "key {}: {previous} then {payload}",
                    user.partition_key
                );
            }
            found.insert(payload, (shard.clone(), position));
        }
    }
    for (event, receipt) in events.iter().zip(&receipts) {
        let payload = String::from_utf8(event.payload.to_vec()).unwrap();
        let (shard, position) = &found[&payload];
        assert_eq!(receipt.partition.as_ref().unwrap().as_str(), shard);
        assert_eq!(receipt.position.as_ref().unwrap().as_str(), position);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_record_limit_is_refused_and_the_producer_goes_on() {
    let server = require_peer!(Peer::Kinesis);
    let backend = connect(server.url(), "").await;
    let stream = unique_name("limit");
    backend
        .create_stream(&stream, StreamSpec::default())
        .await
        .unwrap();
    let producer = backend.producer(&stream).await.unwrap();
    let max = backend.capabilities().max_event_bytes.unwrap();
    producer.send(Event::new(vec![b'x'; max])).await.unwrap();
    let err = producer
        .send(Event::new(vec![b'y'; max + 1]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert!(err.to_string().contains("max_record_bytes"), "{err}");
    // A short key leaves more room than a spread key: the record (data and key) is the limit.
    producer
        .send(Event::new(vec![b'z'; (1 << 20) - 1]).with_key("k"))
        .await
        .expect("a record of exactly 1 MiB");
    let err = producer
        .send(Event::new(vec![b'z'; 1 << 20]).with_key("k"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    producer.send(Event::new("after")).await.unwrap();
}

/// With ferrokinesis's AWS-like write limits (1 MiB or 1,000 records per second per shard),
/// 20,000 events over 50 keys, sent by 10 tasks as fast as the producer takes them, are all
/// stored, each key's in send order, although many `PutRecords` entries are refused and
/// retried along the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_key_order_holds_under_throttling() {
    const EVENTS: usize = 20_000;
    const KEYS: usize = 50;
    let Some(server) = common::own_kinesis(&["--enforce-limits"]) else {
        return;
    };
    let raw = raw_client(server.url());
    let stream = unique_name("throttled");
    raw.create_stream()
        .stream_name(&stream)
        .shard_count(2)
        .send()
        .await
        .unwrap();
    let backend = connect(server.url(), "").await;
    backend.describe_stream(&stream).await.unwrap();

    // The emulator really throttles: a burst above the limit is partly refused.
    let burst: Vec<PutRecordsRequestEntry> = (0..500)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key("burst")
                .data(Blob::new(format!("burst-{i}")))
                .build()
                .unwrap()
        })
        .collect();
    let mut refused = 0;
    for _ in 0..3 {
        let out = raw
            .put_records()
            .stream_name(&stream)
            .set_records(Some(burst.clone()))
            .send()
            .await
            .unwrap();
        refused += out.failed_record_count().unwrap_or(0);
    }
    assert!(refused > 0, "ferrokinesis --enforce-limits refused nothing");

    let producer = std::sync::Arc::new(backend.producer(&stream).await.unwrap());
    let started = Instant::now();
    let tasks: Vec<_> = (0..10)
        .map(|t| {
            let producer = producer.clone();
            tokio::spawn(async move {
                // Task t owns keys t, t+10, …; it sends its events in batches, in order.
                let mine: Vec<Event> = (0..EVENTS)
                    .filter(|i| (i % KEYS) % 10 == t)
                    .map(|i| {
                        Event::new(format!("{:02}:{:06}", i % KEYS, i))
                            .with_key(format!("key-{:02}", i % KEYS))
                    })
                    .collect();
                for chunk in mine.chunks(250) {
                    producer
                        .send_batch(chunk.to_vec())
                        .await
                        .expect("send_batch");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "{EVENTS} events over {KEYS} keys on 2 throttled shards in {:.1}s ({:.0} events/s; the limit is 2,000/s)",
        elapsed.as_secs_f64(),
        EVENTS as f64 / elapsed.as_secs_f64()
    );
    let records = read_all(&raw, &stream, EVENTS + 1_500 - refused as usize).await;
    assert_stored_once_in_key_order(&records, EVENTS);

    // And they arrive so through a consumer group.
    let consumer = backend
        .consumer(
            &stream,
            ConsumerOptions::new(unique_name("g")).start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let mut delivered = std::collections::HashSet::new();
    let mut last: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + common::WAIT;
    while delivered.len() < EVENTS {
        assert!(
            Instant::now() < deadline,
            "{} of {EVENTS} delivered",
            delivered.len()
        );
        for d in consumer
            .receive_batch(1000, std::time::Duration::from_millis(20))
            .await
            .unwrap()
        {
            let text = String::from_utf8(d.event.payload.to_vec()).unwrap();
            if let Some((key, index)) = text.split_once(':') {
                let index: usize = index.parse().unwrap();
                assert!(delivered.insert(index), "event {index} delivered twice");
                if let Some(previous) = last.insert(key.to_owned(), index) {
                    assert!(
                        previous < index,
                        "key {key}: {previous} delivered after {index}"
                    );
                }
            }
            d.ack();
        }
    }
}

/// Batches of distinct free keys make their calls directly (in the sending task): records the
/// throttled emulator refuses there go to the driver for their retries, and no later record of
/// their key overtakes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_under_throttling_on_the_direct_path() {
    const TASKS: usize = 4;
    // Four calls of 500 at once: twice what two shards take in a second.
    const KEYS_PER_TASK: usize = 500;
    const BATCHES: usize = 6;
    const EVENTS: usize = TASKS * KEYS_PER_TASK * BATCHES;
    let Some(server) = common::own_kinesis(&["--enforce-limits"]) else {
        return;
    };
    let raw = raw_client(server.url());
    let stream = unique_name("direct");
    raw.create_stream()
        .stream_name(&stream)
        .shard_count(2)
        .send()
        .await
        .unwrap();
    let backend = connect(server.url(), "").await;
    backend.describe_stream(&stream).await.unwrap();
    let producer = std::sync::Arc::new(backend.producer(&stream).await.unwrap());
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let producer = producer.clone();
            tokio::spawn(async move {
                // Task t owns its keys; each batch holds one event of each, in order.
                for b in 0..BATCHES {
                    let batch = (0..KEYS_PER_TASK)
                        .map(|k| {
                            let key = t * KEYS_PER_TASK + k;
                            Event::new(format!("{key:04}:{:06}", b * 10_000 + key))
                                .with_key(format!("key-{key:04}"))
                        })
                        .collect();
                    producer.send_batch(batch).await.expect("send_batch");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let records = read_all(&raw, &stream, EVENTS).await;
    assert_stored_once_in_key_order(&records, EVENTS);
}

/// Every event `KEY:INDEX` stored exactly once (`events` of them), each key's in increasing
/// index order; the emulator's own `burst` records are left out.
fn assert_stored_once_in_key_order(records: &[(String, Record)], events: usize) {
    let mut last: HashMap<String, usize> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for (_, record) in records {
        if record.partition_key() == Some("burst") {
            continue;
        }
        let text = String::from_utf8(record.data().as_ref().to_vec()).unwrap();
        let (key, index) = text.split_once(':').unwrap();
        let index: usize = index.parse().unwrap();
        assert!(seen.insert(index), "event {index} stored twice");
        if let Some(previous) = last.insert(key.to_owned(), index) {
            assert!(
                previous < index,
                "key {key}: event {previous} stored after {index}"
            );
        }
    }
    assert_eq!(seen.len(), events, "every event stored");
}

/// A `send_batch` dropped while its call is out leaves its keys to the next send of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_send_batch_leaves_no_later_send_waiting() {
    let server = require_peer!(Peer::Kinesis);
    let raw = raw_client(server.url());
    let stream = unique_name("dropped");
    raw.create_stream()
        .stream_name(&stream)
        .shard_count(1)
        .send()
        .await
        .unwrap();
    let backend = connect(server.url(), "").await;
    let producer = backend.producer(&stream).await.unwrap();
    let batch = || {
        (0..100)
            .map(|k| Event::new(format!("{k}")).with_key(format!("k{k}")))
            .collect::<Vec<_>>()
    };
    for _ in 0..20 {
        // Dropped at once, or after its call has started: either way its keys come free.
        let _ = tokio::time::timeout(
            std::time::Duration::from_micros(200),
            producer.send_batch(batch()),
        )
        .await;
        tokio::time::timeout(common::WAIT, producer.send_batch(batch()))
            .await
            .expect("a send after a dropped one finishes")
            .unwrap();
    }
    tokio::time::timeout(common::WAIT, producer.flush())
        .await
        .expect("flush finishes")
        .unwrap();
    producer.close().await.unwrap();
}
