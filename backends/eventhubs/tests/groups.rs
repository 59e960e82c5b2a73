//! Groups on the emulator with checkpoints on Azurite: round trip, resume, sharing.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use tributary::{ConsumerOptions, Event, StartPosition, Timestamp};
use tributary_testcontainers::unique_name;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_reads_everything_once_and_resumes_after_its_checkpoint() {
    let Some((eventhubs, azurite)) = common::servers() else {
        return;
    };
    let url = common::url(&eventhubs, &azurite, "");
    let backend = common::connect(&url).await;
    let hub = unique_name("groups");
    let producer = backend.producer(&hub).await.expect("producer");
    let events: Vec<Event> = (0..1000)
        .map(|i| {
            Event::new(format!("event-{i}"))
                .with_key(format!("key-{}", i % 17))
                .with_header("n", i.to_string())
                .with_header("bin", vec![0u8, 0xff, (i % 256) as u8])
                .with_timestamp(Timestamp::from_millis(1_700_000_000_000 + i))
        })
        .collect();
    for chunk in events.chunks(250) {
        producer
            .send_batch(chunk.to_vec())
            .await
            .expect("send batch");
    }
    let group = unique_name("g");
    let consumer = backend
        .consumer(
            &hub,
            ConsumerOptions::new(&group).start(StartPosition::Earliest),
        )
        .await
        .expect("consumer");
    let got = common::receive_n(&*consumer, 1000, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1000);
    let mut by_payload = BTreeMap::new();
    let mut last_per_key: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for delivery in got {
        let event = &delivery.event;
        let i: i64 = std::str::from_utf8(&event.payload).unwrap()["event-".len()..]
            .parse()
            .unwrap();
        let expected = &events[i as usize];
        assert_eq!(event.key, expected.key);
        assert_eq!(event.timestamp, expected.timestamp);
        // Exactly the sent headers: the service's annotations are shown only on events
        // other clients wrote.
        assert_eq!(event.headers, expected.headers);
        let key = event.key.clone().unwrap().to_vec();
        let previous = last_per_key.insert(key, i);
        assert!(previous.is_none_or(|p| p < i), "per-key order");
        assert!(
            by_payload.insert(i, delivery.position.clone()).is_none(),
            "duplicate {i}"
        );
        delivery.ack();
    }
    consumer.commit().await.expect("commit");
    consumer.close().await.expect("close");

    // Ten more; a new consumer of the same group gets only those.
    producer
        .send_batch(
            (0..10)
                .map(|i| Event::new(format!("late-{i}")).with_key("late"))
                .collect(),
        )
        .await
        .expect("send late");
    let again = backend
        .consumer(
            &hub,
            ConsumerOptions::new(&group).start(StartPosition::Earliest),
        )
        .await
        .expect("consumer again");
    let late = common::receive_n(&*again, 11, Duration::from_secs(5)).await;
    let payloads: Vec<String> = late
        .iter()
        .map(|d| String::from_utf8(d.event.payload.to_vec()).unwrap())
        .collect();
    assert_eq!(
        payloads,
        (0..10).map(|i| format!("late-{i}")).collect::<Vec<_>>()
    );
    for delivery in late {
        delivery.ack();
    }
    again.close().await.expect("close");
    producer.close().await.expect("close producer");
    backend.close().await.expect("close backend");
}

/// A receiver of a higher owner level (another processor taking the partition) detaches the
/// group's receiver at once: the group delivers nothing more of that partition and no error
/// reaches the application, while the other partitions flow on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stolen_partition_stops_at_once_without_errors() {
    use azure_messaging_eventhubs::{ConsumerClient, OpenReceiverOptions, StartLocation};
    use futures::StreamExt;

    let Some((eventhubs, azurite)) = common::servers() else {
        return;
    };
    let backend = common::connect(&common::url(&eventhubs, &azurite, "")).await;
    let hub = unique_name("stolen");
    let group = unique_name("g");
    let producer = backend.producer(&hub).await.expect("producer");
    let consumer = backend
        .consumer(
            &hub,
            ConsumerOptions::new(&group).start(StartPosition::Earliest),
        )
        .await
        .expect("consumer");
    let keyed = |tag: &str, n: usize| -> Vec<Event> {
        (0..n)
            .map(|i| Event::new(format!("{tag}-{i}")).with_key(format!("k{i}")))
            .collect()
    };
    producer
        .send_batch(keyed("before", 40))
        .await
        .expect("send");
    let before = common::receive_n(&*consumer, 40, Duration::from_secs(20)).await;
    assert_eq!(before.len(), 40);
    assert!(
        before
            .iter()
            .any(|d| d.partition.as_ref().unwrap().as_str() == "0")
    );
    before.into_iter().for_each(|d| d.ack());

    // Another processor takes partition 0 with a higher owner level.
    let (namespace, endpoint) = (
        "emulator.localhost",
        format!("amqp://{}", eventhubs.address()),
    );
    let thief = ConsumerClient::builder()
        .with_consumer_group(group.clone())
        .with_custom_endpoint(endpoint)
        .open_with_connection_string(
            &format!("Endpoint=sb://{namespace}/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE"),
            Some(&hub),
        )
        .await
        .expect("thief client");
    let receiver = thief
        .open_receiver_on_partition(
            "0".into(),
            Some(OpenReceiverOptions {
                owner_level: Some(5),
                start_position: Some(azure_messaging_eventhubs::StartPosition {
                    location: StartLocation::Latest,
                    inclusive: false,
                }),
                ..Default::default()
            }),
        )
        .await
        .expect("thief receiver");
    let (taken_tx, mut taken) = tokio::sync::mpsc::unbounded_channel();
    let thief_task = tokio::spawn(async move {
        let stream = receiver.stream_events();
        futures::pin_mut!(stream);
        while let Some(Ok(event)) = stream.next().await {
            let _ = taken_tx.send(event.event_data().body().map(<[u8]>::to_vec));
        }
    });
    // The thief's link attaches on its first poll: wait until it holds the partition.
    tokio::time::sleep(Duration::from_secs(2)).await;

    producer.send_batch(keyed("after", 80)).await.expect("send");
    let after = common::receive_n(&*consumer, 80, Duration::from_secs(5)).await;
    let mut thief_got = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(2), taken.recv()).await {
        thief_got += 1;
    }
    assert!(thief_got > 0, "the thief reads partition 0");
    assert!(
        after
            .iter()
            .all(|d| d.partition.as_ref().unwrap().as_str() != "0"),
        "nothing of the stolen partition is delivered"
    );
    assert_eq!(
        after.len() + thief_got,
        80,
        "the other partitions flow on; nothing lost"
    );
    after.into_iter().for_each(|d| d.ack());
    thief_task.abort();
    consumer.close().await.expect("close");
    backend.close().await.expect("close backend");
}

/// A prefetch smaller than the receive task's batches: the engine reads fewer events than a
/// batch holds, and the rest of the batch comes first at its next read. Every event arrives
/// once, whole, in key order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_prefetch_reads_batches_in_parts_in_order() {
    let Some((eventhubs, azurite)) = common::servers() else {
        return;
    };
    let url = common::url(&eventhubs, &azurite, "&prefetch=5");
    let backend = common::connect(&url).await;
    let hub = unique_name("prefetch");
    let producer = backend.producer(&hub).await.expect("producer");
    let events: Vec<Event> = (0..600)
        .map(|i| {
            Event::new(format!("event-{i}"))
                .with_key(format!("key-{}", i % 7))
                .with_header("n", i.to_string())
        })
        .collect();
    producer.send_batch(events.clone()).await.expect("send");
    let consumer = common::read_from_earliest(&backend, &hub).await;
    let got = common::receive_n(&*consumer, 600, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 600);
    let mut seen = BTreeMap::new();
    let mut last_per_key: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for delivery in got {
        let i: usize = std::str::from_utf8(&delivery.event.payload).unwrap()["event-".len()..]
            .parse()
            .unwrap();
        assert_eq!(delivery.event, events[i]);
        let previous = last_per_key.insert(delivery.event.key.clone().unwrap().to_vec(), i);
        assert!(previous.is_none_or(|p| p < i), "per-key order");
        assert!(seen.insert(i, ()).is_none(), "duplicate {i}");
        delivery.ack();
    }
    consumer.close().await.expect("close");
}
