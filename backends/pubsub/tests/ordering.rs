//! Per-key order with `ordering=true`: subscriptions get message ordering, the backend declares
//! per-key order, and a consumer that acks as it goes sees each key's events in send order.

use std::collections::BTreeMap;
use std::time::Duration;

use tributary::{ConsumerOptions, Event, Ordering, StreamSpec};
use tributary_testcontainers::{Peer, require_peer, unique_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_keys_keep_per_key_order() {
    let server = require_peer!(Peer::PubSub);
    tributary_pubsub::register();
    let backend = tributary::connect(&format!("{}&ordering=true", server.url()))
        .await
        .expect("connect");
    assert_eq!(backend.capabilities().ordering, Ordering::PerKey);
    let topic = unique_name("ordered");
    backend
        .create_stream(&topic, StreamSpec::default())
        .await
        .expect("create");
    let consumer = backend
        .consumer(&topic, ConsumerOptions::new("ordered"))
        .await
        .expect("consumer");
    let producer = backend.producer(&topic).await.expect("producer");
    let events: Vec<Event> = (0..200)
        .map(|i| Event::new(format!("{i}")).with_key(format!("key-{}", i % 8)))
        .collect();
    producer.send_batch(events).await.expect("send");

    let mut by_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for _ in 0..200 {
        let delivery = tokio::time::timeout(Duration::from_secs(60), consumer.receive())
            .await
            .expect("in time")
            .expect("receive");
        let key = String::from_utf8(delivery.event.key.clone().expect("keyed").to_vec()).unwrap();
        let n: u32 = std::str::from_utf8(&delivery.event.payload)
            .unwrap()
            .parse()
            .unwrap();
        by_key.entry(key).or_default().push(n);
        // With ordering, the next event of a key is handed out once this one is acked.
        delivery.ack();
    }
    assert_eq!(by_key.len(), 8);
    for (key, seen) in &by_key {
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        assert_eq!(seen, &sorted, "{key} out of order");
        assert_eq!(seen.len(), 25, "{key}");
    }
    consumer.close().await.expect("close");
}
