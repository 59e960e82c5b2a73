//! A partition moving to a joining member while its previous member is still connected: what
//! the previous member acknowledges in the moments after the broker handed the partition over
//! is not delivered again. The broker tells the old member only when it hands over, so such
//! acks are normal (the conformance `rebalance` case saw 9 acked events come back on a loaded
//! machine); the new member holds the partition for `handover_grace` and drops what was
//! acknowledged meanwhile.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use tributary::{ConsumerExt, ConsumerOptions, Delivery, Event, StartPosition, StreamSpec};
use tributary_pulsar::PulsarBackend;
use tributary_testcontainers::{Peer, require_peer, unique_name};

const WAIT: Duration = Duration::from_secs(60);
const EVENTS: usize = 200;

/// Until the broker has handed each partition of `topic` to its active member: that member
/// has been sent messages (the member that joined has none before the handover).
async fn wait_for_handover(admin: &str, topic: &str, group: &str) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    let handed_over = |stats: &Value| {
        let Some(sub) = stats["subscriptions"].get(group) else {
            return false;
        };
        let consumers = sub["consumers"].as_array().cloned().unwrap_or_default();
        consumers.len() == 2
            && consumers.iter().any(|c| {
                c["consumerName"] == sub["activeConsumerName"]
                    && c["msgOutCounter"].as_u64().unwrap_or(0) > 0
            })
    };
    loop {
        let mut all = true;
        for partition in 0..2 {
            let url = format!(
                "{admin}/admin/v2/persistent/public/default/{topic}-partition-{partition}/stats"
            );
            let stats: Value = http
                .get(&url)
                .send()
                .await
                .expect("admin API")
                .json()
                .await
                .expect("stats");
            all &= handed_over(&stats);
        }
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the broker did not hand a partition to the new member within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acks_sent_just_after_a_handover_are_honoured() {
    // RUST_LOG=tributary_pulsar=debug shows every active-member change, hold and drop.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_writer(std::io::stderr)
        .try_init();
    let server = require_peer!(Peer::Pulsar);
    tributary_pulsar::register();
    // Longer than the default, so the acks below surely fall inside it on a loaded machine.
    let grace = std::env::var("HANDOVER_GRACE").unwrap_or_else(|_| "10s".into());
    let backend = tributary::connect(&format!("{}&handover_grace={grace}", server.url()))
        .await
        .expect("connect");
    let admin = backend
        .as_any()
        .downcast_ref::<PulsarBackend>()
        .expect("a Pulsar backend")
        .config()
        .admin_url
        .clone();
    let topic = unique_name("handover");
    backend
        .create_stream(&topic, StreamSpec::with_partitions(2))
        .await
        .expect("create");
    let group = unique_name("g");
    let options = || ConsumerOptions::new(group.clone()).start(StartPosition::Earliest);
    let producer = backend.producer(&topic).await.expect("producer");
    let a = backend.consumer(&topic, options()).await.expect("a");
    let events: Vec<Event> = (0..EVENTS)
        .map(|i| Event::new(format!("h-{i}")).with_key(format!("k{i}")))
        .collect();
    producer.send_batch(events).await.expect("send");

    let mut deliveries: HashMap<String, usize> = HashMap::new();
    fn record(deliveries: &mut HashMap<String, usize>, d: &Delivery) {
        *deliveries
            .entry(String::from_utf8_lossy(&d.event.payload).into_owned())
            .or_default() += 1;
    }
    // A holds ten events of each partition unacknowledged while B joins.
    let mut held: Vec<Delivery> = Vec::new();
    let mut per_partition = [0usize; 2];
    while per_partition.iter().any(|&n| n < 10) {
        let d = a
            .receive_timeout(WAIT)
            .await
            .expect("receive")
            .expect("a receives");
        record(&mut deliveries, &d);
        let p: usize = d
            .partition
            .as_ref()
            .expect("partition")
            .as_str()
            .parse()
            .unwrap();
        if per_partition[p] < 10 {
            per_partition[p] += 1;
            held.push(d);
        } else {
            d.ack();
        }
    }
    let b = backend.consumer(&topic, options()).await.expect("b");
    wait_for_handover(&admin, &topic, &group).await;
    // The partition B took has been sent to B, these events among them; A acks them now.
    let acked_late: Vec<String> = held
        .iter()
        .map(|d| String::from_utf8_lossy(&d.event.payload).into_owned())
        .collect();
    for d in held {
        d.ack();
    }

    let mut from_b = 0usize;
    let deadline = Instant::now() + WAIT;
    while deliveries.len() < EVENTS {
        assert!(
            Instant::now() < deadline,
            "{} of {EVENTS} events received",
            deliveries.len()
        );
        for (name, consumer) in [("a", &a), ("b", &b)] {
            if let Some(d) = consumer
                .receive_timeout(Duration::from_millis(100))
                .await
                .expect("receive")
            {
                record(&mut deliveries, &d);
                from_b += usize::from(name == "b");
                d.ack();
            }
        }
    }
    // Anything delivered again would come within moments of the rest.
    for consumer in [&a, &b] {
        while let Some(d) = consumer
            .receive_timeout(Duration::from_secs(2))
            .await
            .expect("receive")
        {
            record(&mut deliveries, &d);
            d.ack();
        }
    }
    assert!(from_b > 0, "no partition moved to the member that joined");
    let again: Vec<&String> = acked_late
        .iter()
        .filter(|p| deliveries.get(*p).copied().unwrap_or(0) > 1)
        .collect();
    assert!(
        again.is_empty(),
        "events acked just after the handover were delivered again: {again:?}"
    );
    let twice: Vec<(&String, &usize)> = deliveries.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "events delivered twice: {twice:?}");
    println!(
        "{EVENTS} events, {} acked by the old member after the handover, {from_b} received by the new member, none twice",
        acked_late.len()
    );
    a.close().await.expect("close a");
    b.close().await.expect("close b");
}
