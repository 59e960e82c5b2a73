//! Two `EventProcessor`s sharing an in-memory checkpoint store split the partitions and
//! together receive every event exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_core::time::Duration as SdkDuration;
use azure_messaging_eventhubs::models::{EventData, StartPositions};
use azure_messaging_eventhubs::{
    EventProcessor, InMemoryCheckpointStore, ProcessorStrategy, StartLocation, StartPosition,
};
use common::*;
use futures::StreamExt;
use tributary_eventhubs_emulator::{Config, HubConfig};

#[derive(Default)]
struct Seen {
    /// (processor, partition, body) of every event delivered.
    events: Mutex<Vec<(usize, String, String)>>,
    /// Partitions each processor is currently streaming.
    active: Mutex<[BTreeSet<String>; 2]>,
}

async fn run_processor(index: usize, processor: Arc<EventProcessor>, seen: Arc<Seen>) {
    let runner = processor.clone();
    tokio::spawn(async move {
        let _ = runner.run().await;
    });
    while let Ok(client) = processor.next_partition_client().await {
        let seen = seen.clone();
        // The SDK's event stream is not Send, so partition clients run on the test's LocalSet.
        tokio::task::spawn_local(async move {
            let partition = client.get_partition_id().to_string();
            seen.active.lock().unwrap()[index].insert(partition.clone());
            {
                let stream = client.stream_events();
                futures::pin_mut!(stream);
                while let Some(Ok(event)) = stream.next().await {
                    seen.events
                        .lock()
                        .unwrap()
                        .push((index, partition.clone(), body(&event)));
                    if client.update_checkpoint(&event).await.is_err() {
                        break;
                    }
                }
            }
            seen.active.lock().unwrap()[index].remove(&partition);
        });
    }
}

#[tokio::test]
async fn two_processors_share_partitions_and_see_every_event_once() {
    tokio::task::LocalSet::new()
        .run_until(two_processors())
        .await;
}

async fn two_processors() {
    let emulator = start(Config::for_tests().with_hub(HubConfig::new("processed", 4))).await;
    let store = Arc::new(InMemoryCheckpointStore::new());
    let seen = Arc::new(Seen::default());
    let mut processors = Vec::new();
    for index in 0..2 {
        let consumer = consumer(&emulator, "processed", None).await;
        let processor = EventProcessor::builder()
            .with_load_balancing_strategy(ProcessorStrategy::Balanced)
            .with_update_interval(SdkDuration::milliseconds(300))
            .with_partition_expiration_duration(SdkDuration::seconds(3))
            .with_start_positions(StartPositions {
                per_partition: Default::default(),
                default: StartPosition {
                    location: StartLocation::Earliest,
                    inclusive: false,
                },
            })
            .build(consumer, store.clone())
            .await
            .expect("processor");
        processors.push(processor.clone());
        tokio::task::spawn_local(run_processor(index, processor, seen.clone()));
    }

    // Steady state: each processor streams two partitions, for a few balancing rounds.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stable_since = None;
    loop {
        let balanced = {
            let active = seen.active.lock().unwrap();
            active[0].len() == 2 && active[1].len() == 2 && active[0].is_disjoint(&active[1])
        };
        match (balanced, stable_since) {
            (true, None) => stable_since = Some(Instant::now()),
            (true, Some(since)) if since.elapsed() > Duration::from_secs(2) => break,
            (false, _) => stable_since = None,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "no 2+2 split: {:?}",
            seen.active.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let producer = producer(&emulator, "processed").await;
    let total = 200;
    for chunk in 0..(total / 20) {
        let batch = producer.create_batch(None).await.expect("batch");
        for i in 0..20 {
            let body = format!("ev-{}", chunk * 20 + i);
            assert!(
                batch
                    .try_add_event_data(EventData::builder().with_body(body).build(), None)
                    .expect("add")
            );
        }
        producer.send_batch(batch, None).await.expect("send");
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.events.lock().unwrap().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Linger to catch duplicates arriving late.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let events = seen.events.lock().unwrap().clone();
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, body) in &events {
        *count.entry(body).or_default() += 1;
    }
    let missing: Vec<String> = (0..total)
        .map(|i| format!("ev-{i}"))
        .filter(|b| !count.contains_key(b.as_str()))
        .collect();
    let duplicated: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(missing.is_empty(), "missing {missing:?}");
    assert!(duplicated.is_empty(), "duplicated {duplicated:?}");
    assert_eq!(events.len(), total);
    let per_processor: Vec<usize> = (0..2)
        .map(|p| events.iter().filter(|(i, _, _)| *i == p).count())
        .collect();
    // Ten batches go round robin over four partitions, two partitions per processor.
    assert!(per_processor.iter().all(|n| *n > 0), "{per_processor:?}");
    for processor in processors {
        let _ = processor.shutdown().await;
    }
}
