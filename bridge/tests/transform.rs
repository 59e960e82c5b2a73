//! Filters, transforms and loop prevention, through the daemon as a configuration file
//! drives it: every event is accounted for on the sink side, in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;

use tributary::{Backend, Event};
use tributary_bridge::{config, daemon, route::lineage};

/// Every expected event, and not one more.
async fn read(backend: &Arc<dyn Backend>, stream: &str, n: usize) -> Vec<Event> {
    common::read_exactly(backend, stream, n, Duration::from_secs(20)).await
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_routes_by_expression_rewrites_keys_and_headers_and_dead_letters_failures() {
    let source = tributary::connect("memory://tf-source").await.unwrap();
    let sink = tributary::connect("memory://tf-sink").await.unwrap();
    let plan = config::parse(
        r#"
        [daemon]
        listen = "off"
        [[route]]
        name = "orders"
        source = { url = "memory://tf-source", stream = "orders" }
        sink = { url = "memory://tf-sink", stream = "orders-unrouted" }
        dead_letter = { url = "memory://tf-sink", stream = "orders-dlq" }
        batch = { max_events = 7 }
        filter = "payload.amount >= 100"
        transform = { stream = "'orders-' + payload.region", key = "payload.customer", set_headers = { tier = "payload.amount > 1000 ? 'gold' : 'standard'" }, remove_headers = ["debug"] }
        "#,
        &|_| None,
    )
    .unwrap();

    let producer = source.producer("orders").await.unwrap();
    let mut expected_eu = Vec::new();
    let mut expected_us = Vec::new();
    let mut small = 0;
    for i in 0..60u32 {
        let amount = (i * 37) % 2000;
        let region = if i % 3 == 0 { "us" } else { "eu" };
        let customer = format!("c-{}", i % 5);
        let payload = format!(
            r#"{{"n": {i}, "amount": {amount}, "region": "{region}", "customer": "{customer}"}}"#
        );
        producer
            .send(
                Event::new(payload.clone())
                    .with_key("old-key")
                    .with_header("debug", "1")
                    .with_header("trace", format!("t{i}")),
            )
            .await
            .unwrap();
        if amount < 100 {
            small += 1;
        } else {
            let tier = if amount > 1000 { "gold" } else { "standard" };
            let expected = (payload, customer, format!("t{i}"), tier);
            if region == "eu" {
                expected_eu.push(expected);
            } else {
                expected_us.push(expected);
            }
        }
    }
    // Not JSON: the filter cannot be evaluated, so the event is dead-lettered with the reason.
    producer
        .send(Event::new("not json").with_key("k"))
        .await
        .unwrap();
    producer.close().await.unwrap();

    let running = daemon::start(plan).await.unwrap();
    for (stream, expected) in [("orders-eu", &expected_eu), ("orders-us", &expected_us)] {
        let got = read(&sink, stream, expected.len()).await;
        // The new key spreads events over partitions: order holds per key, as promised.
        let mut got_by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for event in &got {
            let payload = text(&event.payload).to_string();
            let Some((_, customer, trace, tier)) = expected.iter().find(|e| e.0 == payload) else {
                panic!("{stream}: unexpected event {payload}");
            };
            assert_eq!(text(event.key.as_ref().unwrap()), customer);
            assert_eq!(text(event.headers.get("trace").unwrap()), trace);
            assert_eq!(text(event.headers.get("tier").unwrap()), *tier);
            assert!(event.headers.get("debug").is_none());
            assert_eq!(lineage::Origin::of(event).unwrap().route, "orders");
            got_by_key
                .entry(customer.clone())
                .or_default()
                .push(payload);
        }
        let mut expected_by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (payload, customer, _, _) in expected.iter() {
            expected_by_key
                .entry(customer.clone())
                .or_default()
                .push(payload.clone());
        }
        assert_eq!(got_by_key, expected_by_key, "{stream}");
    }
    let dead = read(&sink, "orders-dlq", 1).await;
    assert_eq!(text(&dead[0].payload), "not json");
    let reason = text(dead[0].headers.get("tributary-dlq-reason").unwrap()).to_string();
    assert!(
        reason.contains("filter `payload.amount >= 100` failed"),
        "{reason}"
    );
    let stats = running.stats[0].1.clone();
    // The counters move after the sink confirmed; the shutdown waits for the batch in hand.
    running.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(stats.filtered.load(Ordering::Relaxed), small);
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 1);
    assert_eq!(
        stats.replicated.load(Ordering::Relaxed),
        (expected_eu.len() + expected_us.len()) as u64
    );
    println!(
        "61 events: {} to orders-eu, {} to orders-us, {small} filtered, 1 dead-lettered",
        expected_eu.len(),
        expected_us.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_routes_copy_each_event_once_and_never_loop() {
    let east = tributary::connect("memory://loop-east").await.unwrap();
    let west = tributary::connect("memory://loop-west").await.unwrap();
    let plan = config::parse(
        r#"
        [daemon]
        listen = "off"
        [[route]]
        name = "east-to-west"
        source = { url = "memory://loop-east", stream = "events" }
        sink = { url = "memory://loop-west", stream = "events" }
        batch = { linger = "1ms" }
        [[route]]
        name = "west-to-east"
        source = { url = "memory://loop-west", stream = "events" }
        sink = { url = "memory://loop-east", stream = "events" }
        batch = { linger = "1ms" }
        "#,
        &|_| None,
    )
    .unwrap();
    let running = daemon::start(plan).await.unwrap();
    for (backend, side) in [(&east, "east"), (&west, "west")] {
        let producer = backend.producer("events").await.unwrap();
        for i in 0..50 {
            producer
                .send(Event::new(format!("{side}-{i}")).with_key(side))
                .await
                .unwrap();
        }
        producer.close().await.unwrap();
    }
    // Both routes have seen every event (the other side's 50 originals, copied, and the copies
    // of their own 50, dropped) before the streams are compared.
    let stats = running.stats.clone();
    let settled = |s: &tributary_bridge::route::RouteStats| {
        s.replicated.load(Ordering::Relaxed) + s.looped.load(Ordering::Relaxed)
    };
    common::wait_until(
        "routes settled",
        Duration::from_secs(20),
        || stats.iter().all(|(_, s)| settled(s) >= 100),
        || {
            let counters: Vec<String> = stats.iter().map(|(n, s)| format!("{n}: {s}")).collect();
            counters.join("; ")
        },
    )
    .await;
    // Each side ends with its own 50 and the other's 50, and nothing more: `read` fails if a
    // 101st event shows up, as it would with the copies bouncing back.
    for (backend, side, other) in [(&east, "east", "west"), (&west, "west", "east")] {
        let got = read(backend, "events", 100).await;
        let own: Vec<&str> = got
            .iter()
            .filter(|e| e.headers.get(lineage::PATH).is_none())
            .map(|e| text(&e.payload))
            .collect();
        let copied: Vec<&Event> = got
            .iter()
            .filter(|e| e.headers.get(lineage::PATH).is_some())
            .collect();
        let expected_own: Vec<String> = (0..50).map(|i| format!("{side}-{i}")).collect();
        assert_eq!(own, expected_own);
        let copied_payloads: Vec<&str> = copied.iter().map(|e| text(&e.payload)).collect();
        let expected_copied: Vec<String> = (0..50).map(|i| format!("{other}-{i}")).collect();
        assert_eq!(
            copied_payloads, expected_copied,
            "per-key order across the copy"
        );
        assert_eq!(
            text(copied[0].headers.get(lineage::PATH).unwrap()),
            format!("memory://loop-{other}/events")
        );
    }
    running.shutdown(Duration::from_secs(5)).await.unwrap();
    let looped: Vec<u64> = stats
        .iter()
        .map(|(_, s)| s.looped.load(Ordering::Relaxed))
        .collect();
    assert_eq!(
        looped,
        [50, 50],
        "each route saw the other's 50 copies and dropped them"
    );
}
