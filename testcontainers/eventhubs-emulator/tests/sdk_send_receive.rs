//! Producing, consuming and properties through the official Rust SDK (azure_messaging_eventhubs).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use azure_messaging_eventhubs::models::EventData;
use azure_messaging_eventhubs::{EventDataBatchOptions, SendEventOptions, StartLocation};
use common::*;
use tributary_eventhubs_emulator::{Config, HubConfig};

const QUIET: Duration = Duration::from_secs(3);

fn event(body: &str) -> EventData {
    EventData::builder().with_body(body.to_string()).build()
}

fn to_partition(id: &str) -> Option<SendEventOptions> {
    Some(SendEventOptions {
        partition_id: Some(id.into()),
    })
}

/// Reads every retained event of every partition: partition id -> bodies in order.
async fn read_all(
    emulator: &tributary_eventhubs_emulator::Emulator,
    hub: &str,
    partitions: u32,
) -> Vec<Vec<String>> {
    let consumer = consumer(emulator, hub, None).await;
    let mut out = Vec::new();
    for p in 0..partitions {
        let receiver = consumer
            .open_receiver_on_partition(p.to_string(), from(StartLocation::Earliest, false))
            .await
            .expect("receiver");
        out.push(bodies(
            &receive(&receiver, usize::MAX, Duration::from_millis(700)).await,
        ));
        receiver.close().await.expect("close receiver");
    }
    out
}

#[tokio::test]
async fn single_events_with_and_without_partition_id() {
    let emulator = start(Config::for_tests().with_hub(HubConfig::new("orders", 3))).await;
    let producer = producer(&emulator, "orders").await;
    for i in 0..3 {
        producer
            .send_event(event(&format!("p1-{i}")), to_partition("1"))
            .await
            .expect("send to partition 1");
    }
    // Without a partition the service spreads events (round robin here).
    for i in 0..6 {
        producer
            .send_event(event(&format!("rr-{i}")), None)
            .await
            .expect("send to hub");
    }
    let all = read_all(&emulator, "orders", 3).await;
    assert_eq!(all[1][..3], ["p1-0", "p1-1", "p1-2"]);
    let spread: Vec<usize> = all
        .iter()
        .map(|p| p.iter().filter(|b| b.starts_with("rr-")).count())
        .collect();
    assert_eq!(spread, [2, 2, 2], "round robin over 3 partitions: {all:?}");
    let received: BTreeSet<&String> = all.iter().flatten().collect();
    assert_eq!(received.len(), 9, "every event exactly once: {all:?}");
    producer.close().await.expect("close");
}

#[tokio::test]
async fn batches_with_partition_key_partition_id_and_neither() {
    let emulator = start(Config::for_tests().with_hub(HubConfig::new("batches", 4))).await;
    let producer = producer(&emulator, "batches").await;

    // Partition keys with published gateway hashes: "7" -> -15263 -> |-15263 % 4| = 3,
    // "131" -> 30562 -> 2.
    for (key, n) in [("7", 3), ("131", 4)] {
        let batch = producer
            .create_batch(Some(EventDataBatchOptions {
                partition_key: Some(key.into()),
                ..Default::default()
            }))
            .await
            .expect("batch");
        for i in 0..n {
            assert!(
                batch
                    .try_add_event_data(event(&format!("k{key}-{i}")), None)
                    .expect("add")
            );
        }
        producer
            .send_batch(batch, None)
            .await
            .expect("send keyed batch");
    }
    let batch = producer
        .create_batch(Some(EventDataBatchOptions {
            partition_id: Some("0".into()),
            ..Default::default()
        }))
        .await
        .expect("batch");
    for i in 0..5 {
        assert!(
            batch
                .try_add_event_data(event(&format!("p0-{i}")), None)
                .expect("add")
        );
    }
    producer
        .send_batch(batch, None)
        .await
        .expect("send batch to partition 0");
    let batch = producer.create_batch(None).await.expect("batch");
    for i in 0..2 {
        assert!(
            batch
                .try_add_event_data(event(&format!("any-{i}")), None)
                .expect("add")
        );
    }
    producer
        .send_batch(batch, None)
        .await
        .expect("send unkeyed batch");

    let all = read_all(&emulator, "batches", 4).await;
    assert_eq!(all[3], ["k7-0", "k7-1", "k7-2"], "{all:?}");
    assert_eq!(all[2], ["k131-0", "k131-1", "k131-2", "k131-3"], "{all:?}");
    assert_eq!(
        all[0][..5],
        ["p0-0", "p0-1", "p0-2", "p0-3", "p0-4"],
        "{all:?}"
    );
    // A batch is never split across partitions.
    let holders: Vec<usize> = (0..4)
        .filter(|&p| all[p].iter().any(|b| b.starts_with("any-")))
        .collect();
    assert_eq!(holders.len(), 1, "{all:?}");
    assert_eq!(all.iter().flatten().count(), 14);

    // Received events carry their partition key and the producer's properties survive.
    let consumer = consumer(&emulator, "batches", None).await;
    let receiver = consumer
        .open_receiver_on_partition("3".into(), from(StartLocation::Earliest, false))
        .await
        .expect("receiver");
    let events = receive(&receiver, 3, QUIET).await;
    assert!(
        events
            .iter()
            .all(|e| e.partition_key().as_deref() == Some("7"))
    );
    producer.close().await.expect("close");
}

#[tokio::test]
async fn start_positions_select_exact_events() {
    let emulator = start(Config::for_tests().with_hub(HubConfig::new("positions", 1))).await;
    let producer = producer(&emulator, "positions").await;
    for i in 0..5 {
        producer
            .send_event(event(&format!("a{i}")), to_partition("0"))
            .await
            .expect("send");
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let between = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(30)).await;
    for i in 0..3 {
        producer
            .send_event(event(&format!("b{i}")), to_partition("0"))
            .await
            .expect("send");
    }
    let consumer = consumer(&emulator, "positions", None).await;
    let read = |location: StartLocation, inclusive: bool| {
        let consumer = &consumer;
        async move {
            let receiver = consumer
                .open_receiver_on_partition("0".into(), from(location, inclusive))
                .await
                .expect("receiver");
            let events = receive(&receiver, usize::MAX, Duration::from_millis(700)).await;
            receiver.close().await.expect("close");
            events
        }
    };

    let earliest = read(StartLocation::Earliest, false).await;
    assert_eq!(
        bodies(&earliest),
        ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"]
    );
    let sequence: Vec<i64> = earliest
        .iter()
        .filter_map(|e| e.sequence_number())
        .collect();
    assert_eq!(sequence, [0, 1, 2, 3, 4, 5, 6, 7]);
    let offsets: Vec<String> = earliest
        .iter()
        .map(|e| e.offset().clone().expect("offset"))
        .collect();
    assert!(earliest.iter().all(|e| e.enqueued_time().is_some()));

    assert_eq!(
        bodies(&read(StartLocation::SequenceNumber(2), false).await),
        ["a3", "a4", "b0", "b1", "b2"]
    );
    assert_eq!(
        bodies(&read(StartLocation::SequenceNumber(2), true).await),
        ["a2", "a3", "a4", "b0", "b1", "b2"]
    );
    assert_eq!(
        bodies(&read(StartLocation::Offset(offsets[4].clone()), false).await),
        ["b0", "b1", "b2"]
    );
    assert_eq!(
        bodies(&read(StartLocation::Offset(offsets[4].clone()), true).await),
        ["a4", "b0", "b1", "b2"]
    );
    assert_eq!(
        bodies(&read(StartLocation::EnqueuedTime(between), false).await),
        ["b0", "b1", "b2"]
    );

    // Latest: only what is sent after the receiver attached.
    let receiver = consumer
        .open_receiver_on_partition("0".into(), from(StartLocation::Latest, false))
        .await
        .expect("receiver");
    // The SDK attaches the link when the stream is first polled, and "latest" means events
    // enqueued after the attach, so send only once the stream is being read.
    let (events, sent) = tokio::join!(
        receive(&receiver, usize::MAX, Duration::from_millis(1500)),
        async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            producer.send_event(event("c0"), to_partition("0")).await
        }
    );
    sent.expect("send");
    assert_eq!(bodies(&events), ["c0"]);
    producer.close().await.expect("close");
}

#[tokio::test]
async fn properties_match_what_was_sent() {
    let emulator = start(Config::for_tests().with_hub(HubConfig::new("props", 3))).await;
    let producer = producer(&emulator, "props").await;
    let hub = producer
        .get_eventhub_properties()
        .await
        .expect("hub properties");
    assert_eq!(hub.name, "props");
    assert_eq!(hub.partition_ids, ["0", "1", "2"]);
    assert!(hub.created_on.is_some());

    let empty = producer
        .get_partition_properties("2")
        .await
        .expect("partition properties");
    assert!(empty.is_empty);
    assert_eq!(empty.id, "2");
    assert_eq!(empty.eventhub, "props");
    assert_eq!(empty.last_enqueued_sequence_number, -1);

    for i in 0..4 {
        producer
            .send_event(event(&format!("x{i}")), to_partition("2"))
            .await
            .expect("send");
    }
    let full = producer
        .get_partition_properties("2")
        .await
        .expect("partition properties");
    assert!(!full.is_empty);
    assert_eq!(full.beginning_sequence_number, 0);
    assert_eq!(full.last_enqueued_sequence_number, 3);
    assert!(full.last_enqueued_time_utc.is_some());

    // The last offset is the offset of the last event delivered.
    let consumer = consumer(&emulator, "props", None).await;
    let receiver = consumer
        .open_receiver_on_partition("2".into(), from(StartLocation::Earliest, false))
        .await
        .expect("receiver");
    let events = receive(&receiver, 4, QUIET).await;
    assert_eq!(
        events.last().and_then(|e| e.offset().clone()),
        Some(full.last_enqueued_offset.clone())
    );
    let c = consumer
        .get_eventhub_properties()
        .await
        .expect("via consumer");
    assert_eq!(c.partition_ids.len(), 3);
    producer.close().await.expect("close");
}

#[tokio::test]
async fn auto_created_hubs_and_groups_work_without_setup() {
    let emulator = start(Config::for_tests()).await;
    let producer = producer(&emulator, "made-on-the-fly").await;
    producer
        .send_event(event("hello"), to_partition("3"))
        .await
        .expect("send");
    let hub = producer
        .get_eventhub_properties()
        .await
        .expect("properties");
    assert_eq!(hub.partition_ids.len(), 4, "default partition count");
    let consumer = consumer(&emulator, "made-on-the-fly", Some("analytics")).await;
    let receiver = consumer
        .open_receiver_on_partition("3".into(), from(StartLocation::Earliest, false))
        .await
        .expect("receiver");
    assert_eq!(bodies(&receive(&receiver, 1, QUIET).await), ["hello"]);
}

#[tokio::test]
async fn application_properties_survive() {
    let emulator = start(Config::for_tests()).await;
    let producer = producer(&emulator, "with-props").await;
    let data = EventData::builder()
        .with_body(b"payload".to_vec())
        .with_content_type("application/json".into())
        .add_property("tenant".into(), "acme")
        .add_property("attempt".into(), 3i32)
        .build();
    producer
        .send_event(data, to_partition("0"))
        .await
        .expect("send");
    let consumer = consumer(&emulator, "with-props", None).await;
    let receiver = consumer
        .open_receiver_on_partition("0".into(), from(StartLocation::Earliest, false))
        .await
        .expect("receiver");
    let events = receive(&receiver, 1, QUIET).await;
    let data = events[0].event_data();
    assert_eq!(data.body(), Some(&b"payload"[..]));
    assert_eq!(data.content_type(), Some("application/json"));
    let props = data.properties().expect("properties");
    assert_eq!(props.len(), 2, "{props:?}");
    assert!(format!("{:?}", props.get("tenant")).contains("acme"));
}

/// Every `send_event` returns although the emulator settles each delivery at once. fe2o3-amqp
/// 0.16.2, under the SDK, registered a delivery as unsettled only after handing its transfer to
/// the session; a disposition processed in between was dropped and the send waited forever
/// (vendor/README.md). Two producers on two worker threads make that window likely: on the
/// unpatched library this hung within the first few hundred sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_send_returns_when_the_emulator_settles_at_once() {
    const SENDS: usize = 400;
    let emulator = start(Config::for_tests().with_hub(HubConfig::new("settled-at-once", 2)));
    let emulator = emulator.await;
    let mut producers = tokio::task::JoinSet::new();
    for partition in ["0", "1"] {
        let producer = producer(&emulator, "settled-at-once").await;
        producers.spawn(async move {
            for i in 0..SENDS {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    producer
                        .send_event(event(&format!("{partition}-{i}")), to_partition(partition)),
                )
                .await
                .unwrap_or_else(|_| panic!("send {i} to partition {partition} never returned"))
                .expect("send");
            }
            producer.close().await.expect("close producer");
        });
    }
    while let Some(done) = producers.join_next().await {
        done.expect("producer task");
    }
    let stored = read_all(&emulator, "settled-at-once", 2).await;
    assert_eq!(
        stored.iter().map(Vec::len).collect::<Vec<_>>(),
        [SENDS, SENDS]
    );
}

/// Producer and consumer clients one after the other on a multi-threaded runtime, as the
/// fixture smoke test does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_clients_on_a_multi_threaded_runtime() {
    let emulator = start(Config::for_tests()).await;
    for round in 0..5 {
        let hub = format!("mt-{round}");
        let producer = producer(&emulator, &hub).await;
        producer
            .send_event(event("hello"), to_partition("0"))
            .await
            .expect("send");
        producer.close().await.expect("close producer");
        let consumer = consumer(&emulator, &hub, None).await;
        let receiver = consumer
            .open_receiver_on_partition("0".into(), from(StartLocation::Earliest, false))
            .await
            .expect("receiver");
        assert_eq!(
            bodies(&receive(&receiver, 1, QUIET).await),
            ["hello"],
            "round {round}"
        );
    }
}

#[tokio::test]
async fn events_survive_a_restart_with_a_data_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::for_tests();
    config.data_dir = Some(dir.path().to_path_buf());
    let emulator = start(config.clone()).await;
    let producer = producer(&emulator, "kept").await;
    for i in 0..3 {
        producer
            .send_event(event(&format!("k{i}")), to_partition("1"))
            .await
            .expect("send");
    }
    producer.close().await.expect("close");
    emulator.shutdown().await;

    let emulator = start(config).await;
    let producer = common::producer(&emulator, "kept").await;
    producer
        .send_event(event("k3"), to_partition("1"))
        .await
        .expect("send after restart");
    let consumer = consumer(&emulator, "kept", None).await;
    let receiver = consumer
        .open_receiver_on_partition("1".into(), from(StartLocation::Earliest, false))
        .await
        .expect("receiver");
    let events = receive(&receiver, 4, QUIET).await;
    assert_eq!(bodies(&events), ["k0", "k1", "k2", "k3"]);
    let sequence: Vec<i64> = events.iter().filter_map(|e| e.sequence_number()).collect();
    assert_eq!(sequence, [0, 1, 2, 3]);
    let offsets: Vec<i64> = events
        .iter()
        .filter_map(|e| e.offset().as_ref().and_then(|o| o.parse().ok()))
        .collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "offsets grow: {offsets:?}"
    );
}

#[tokio::test]
async fn retention_keeps_the_newest_events() {
    let mut config = Config::for_tests().with_hub(HubConfig::new("short", 1));
    config.max_events_per_partition = 3;
    let emulator = start(config).await;
    let producer = producer(&emulator, "short").await;
    for i in 0..5 {
        producer
            .send_event(event(&format!("r{i}")), to_partition("0"))
            .await
            .expect("send");
    }
    let props = producer
        .get_partition_properties("0")
        .await
        .expect("properties");
    assert_eq!(props.beginning_sequence_number, 2);
    assert_eq!(props.last_enqueued_sequence_number, 4);
    let consumer = consumer(&emulator, "short", None).await;
    let receiver = consumer
        .open_receiver_on_partition("0".into(), from(StartLocation::SequenceNumber(0), true))
        .await
        .expect("receiver");
    assert_eq!(
        bodies(&receive(&receiver, 3, QUIET).await),
        ["r2", "r3", "r4"]
    );
}
