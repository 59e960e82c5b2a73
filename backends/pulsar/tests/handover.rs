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

/// The stats of partition `partition` of `topic`, from the admin API.
async fn partition_stats(
    http: &reqwest::Client,
    admin: &str,
    topic: &str,
    partition: u32,
) -> Value {
    let url =
        format!("{admin}/admin/v2/persistent/public/default/{topic}-partition-{partition}/stats");
    http.get(&url)
        .send()
        .await
        .expect("admin API")
        .json()
        .await
        .expect("stats")
}

/// The names of the consumers of `group` on each partition of `topic` (the members so far).
async fn consumer_names(admin: &str, topic: &str, group: &str) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut names = Vec::new();
    for partition in 0..2 {
        let stats = partition_stats(&http, admin, topic, partition).await;
        for consumer in stats["subscriptions"][group]["consumers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if let Some(name) = consumer["consumerName"].as_str() {
                names.push(name.to_string());
            }
        }
    }
    names
}

/// Until the broker has handed a partition of `topic` to the member that joined: both members
/// are connected to every partition, and on one of them the active consumer is not one of
/// `earlier` (the first member's) and has been sent messages. Waiting only for "the active
/// member has been sent messages" also held for the first member before any handover, so the
/// late acks below could come before it and leave the joining member nothing to receive.
async fn wait_for_handover(admin: &str, topic: &str, group: &str, earlier: &[String]) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut connected = true;
        let mut moved = false;
        for partition in 0..2 {
            let stats = partition_stats(&http, admin, topic, partition).await;
            let Some(sub) = stats["subscriptions"].get(group) else {
                connected = false;
                continue;
            };
            let consumers = sub["consumers"].as_array().cloned().unwrap_or_default();
            connected &= consumers.len() == 2;
            moved |= consumers.iter().any(|c| {
                c["consumerName"] == sub["activeConsumerName"]
                    && c["consumerName"]
                        .as_str()
                        .is_some_and(|name| !earlier.iter().any(|e| e == name))
                    && c["msgOutCounter"].as_u64().unwrap_or(0) > 0
            });
        }
        if connected && moved {
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
    let first_member = consumer_names(&admin, &topic, &group).await;
    assert!(!first_member.is_empty(), "the first member is connected");
    let b = backend.consumer(&topic, options()).await.expect("b");
    wait_for_handover(&admin, &topic, &group, &first_member).await;
    // The partition B took has been sent to B, these events among them; A acks them now.
    let acked_late: Vec<String> = held
        .iter()
        .map(|d| String::from_utf8_lossy(&d.event.payload).into_owned())
        .collect();
    for d in held {
        d.ack();
    }
    // Events sent after the handover: the partition that moved has some for the new member
    // whatever the old one had already taken in before it (with its prefetch, the old member
    // may have delivered every earlier event of that partition, leaving the new one nothing).
    let later: Vec<Event> = (0..EVENTS)
        .map(|i| Event::new(format!("h2-{i}")).with_key(format!("k{i}")))
        .collect();
    producer
        .send_batch(later)
        .await
        .expect("send after the handover");

    let mut from_b = 0usize;
    let deadline = Instant::now() + WAIT;
    while deliveries.len() < 2 * EVENTS {
        assert!(
            Instant::now() < deadline,
            "{} of {} events received",
            deliveries.len(),
            2 * EVENTS
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
        "{} events, {} acked by the old member after the handover, {from_b} received by the new member, none twice",
        2 * EVENTS,
        acked_late.len()
    );
    a.close().await.expect("close a");
    b.close().await.expect("close b");
}
