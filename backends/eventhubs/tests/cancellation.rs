//! Sends dropped mid-flight: the SDK's sends are not cancel-safe, so the producer must not
//! let a caller's dropped future cut one short.

mod common;

use std::time::Duration;

use tributary::Event;
use tributary_testcontainers::unique_name;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_dropped_mid_flight_leave_the_producer_usable() {
    let Some((eventhubs, azurite)) = common::servers() else {
        return;
    };
    let hub = unique_name("cancel");
    let backend = common::connect(&common::url(&eventhubs, &azurite, "&timeout=10s")).await;
    let mut confirmed = 0;
    // The first send of a fresh producer attaches the sender link: dropped during the attach
    // (after a varying head start), the SDK leaves the link's name taken, and every later
    // send of that producer failed with "Link name is not unique".
    for round in 0..30u64 {
        let producer = backend.producer(&hub).await.expect("producer");
        let head_start = Duration::from_micros(1 + 300 * (round % 10));
        if tokio::time::timeout(
            head_start,
            producer.send(Event::new(format!("maybe-{round}"))),
        )
        .await
        .is_ok()
        {
            confirmed += 1;
        }
        let batch: Vec<Event> = (0..20)
            .map(|i| Event::new(format!("r{round}-{i}")).with_key(format!("k{}", i % 3)))
            .collect();
        producer
            .send_batch(batch)
            .await
            .unwrap_or_else(|e| panic!("send after a dropped send, round {round}: {e}"));
        confirmed += 20;
        producer.close().await.expect("close");
    }
    // Every confirmed event is stored (dropped ones may be stored too).
    let consumer = common::read_from_earliest(&backend, &hub).await;
    let got = common::receive_n(consumer.as_ref(), confirmed, Duration::from_secs(10)).await;
    assert!(
        got.len() >= confirmed,
        "{} of {confirmed} confirmed events read",
        got.len()
    );
    consumer.close().await.expect("close consumer");
    backend.close().await.expect("close backend");
}
