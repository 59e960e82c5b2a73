//! Shard iterators expire (after 5 minutes on the service; after 2 seconds on this emulator):
//! a consumer that pauses longer than that, with its reader holding an iterator, goes on after
//! the last record it read, losing and repeating nothing.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tributary::{ConsumerOptions, Event, StartPosition, StreamSpec};
use tributary_testcontainers::unique_name;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_iterator_is_renewed_after_the_last_record() {
    const EVENTS: usize = 3_000;
    let Some(server) = common::own_kinesis(&["--iterator-ttl-seconds", "2"]) else {
        return;
    };
    // Small reads, so the reader holds an iterator while the group's buffer is full.
    let backend = common::connect(server.url(), "records_per_call=100").await;
    let stream = unique_name("expiry");
    backend
        .create_stream(&stream, StreamSpec::default())
        .await
        .unwrap();
    let producer = backend.producer(&stream).await.unwrap();
    let events: Vec<Event> = (0..EVENTS)
        .map(|i| Event::new(format!("{i:06}")).with_key(format!("k{}", i % 50)))
        .collect();
    for chunk in events.chunks(500) {
        producer.send_batch(chunk.to_vec()).await.unwrap();
    }
    let consumer = backend
        .consumer(
            &stream,
            ConsumerOptions::new(unique_name("g")).start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let mut seen = HashSet::new();
    let mut last = std::collections::HashMap::new();
    let mut paused = 0;
    let deadline = Instant::now() + common::WAIT;
    while seen.len() < EVENTS {
        assert!(
            Instant::now() < deadline,
            "{} of {EVENTS} before the deadline",
            seen.len()
        );
        let batch = consumer
            .receive_batch(200, Duration::from_millis(20))
            .await
            .unwrap();
        for d in batch {
            let i: usize = std::str::from_utf8(&d.event.payload)
                .unwrap()
                .parse()
                .unwrap();
            assert!(seen.insert(i), "event {i} delivered twice");
            if let Some(previous) = last.insert(i % 50, i) {
                assert!(previous < i, "key {}: event {i} after {previous}", i % 50);
            }
            d.ack();
        }
        // A slow handler, twice: longer than the emulator's iterator lifetime.
        if (seen.len() >= 1_000 && paused == 0) || (seen.len() >= 2_000 && paused == 1) {
            tokio::time::sleep(Duration::from_millis(4_500)).await;
            paused += 1;
        }
    }
    assert_eq!(paused, 2);
}
