//! A poison event the sink refuses goes to the dead-letter sink with the reason; the events
//! around it are replicated, in order, and the source is acked past all of them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use tributary::{ConsumerExt, ConsumerOptions, Event, StartPosition};
use tributary_bridge::route::{
    self, CancellationToken, RouteSpec, RouteStats, dead_letter, lineage,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_and_does_not_block_its_partition() {
    let source = tributary::connect("memory://dlq-source?partitions=1")
        .await
        .unwrap();
    // The sink refuses events over 1000 bytes: "too large" is not retryable.
    let sink = tributary::connect("memory://dlq-sink?max_event_bytes=1000")
        .await
        .unwrap();
    let dead = tributary::connect("memory://dlq-dead").await.unwrap();

    let producer = source.producer("orders").await.unwrap();
    let mut sent = Vec::new();
    for i in 0..20 {
        let payload = if i == 7 {
            vec![b'x'; 5000]
        } else {
            format!("order-{i}").into_bytes()
        };
        sent.push(Event::new(payload).with_key("customer-1"));
    }
    producer.send_batch(sent.clone()).await.unwrap();

    let mut spec = RouteSpec::new(
        "orders-out",
        source.clone(),
        "orders",
        sink.clone(),
        "orders",
    );
    spec.group = "bridge".into();
    spec.start = StartPosition::Earliest;
    spec.retry.attempts = 2;
    spec.retry.backoff = Duration::from_millis(10);
    spec.dead_letter = Some((dead.clone(), "orders-dlq".into()));
    let stats = Arc::new(RouteStats::default());
    let cancel = CancellationToken::default();
    let task = tokio::spawn(route::run_route(spec, stats.clone(), cancel.clone()));

    // The sink receives the 19 good events, in order, with lineage.
    let got: Vec<String> = common::read_n(&sink, "orders", 19, Duration::from_secs(20))
        .await
        .into_iter()
        .map(|event| {
            assert_eq!(
                lineage::Origin::of(&event).map(|o| o.route).as_deref(),
                Some("orders-out")
            );
            String::from_utf8(event.payload.to_vec()).unwrap()
        })
        .collect();
    let expected: Vec<String> = (0..20)
        .filter(|&i| i != 7)
        .map(|i| format!("order-{i}"))
        .collect();
    assert_eq!(got, expected);

    // The poison event is in the dead-letter stream with the reason.
    let d = common::read_n(&dead, "orders-dlq", 1, Duration::from_secs(20))
        .await
        .remove(0);
    assert_eq!(d.payload.len(), 5000);
    let reason = String::from_utf8(d.headers.get(dead_letter::REASON).unwrap().to_vec()).unwrap();
    assert!(reason.contains("too large"), "{reason}");
    assert_eq!(
        d.headers.get(dead_letter::ROUTE).map(|v| v.as_ref()),
        Some(&b"orders-out"[..])
    );
    assert_eq!(
        d.headers.get(dead_letter::SINK_STREAM).map(|v| v.as_ref()),
        Some(&b"orders"[..])
    );

    // Everything was acked at the source: a new member of the group has nothing to read.
    let settled = |s: &RouteStats| {
        use std::sync::atomic::Ordering::Relaxed;
        s.replicated.load(Relaxed) + s.dead_lettered.load(Relaxed)
    };
    common::wait_until(
        "the route finished the batch",
        Duration::from_secs(10),
        || settled(&stats) >= 20,
        || format!("route: {stats}"),
    )
    .await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(
        stats
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let again = source
        .consumer(
            "orders",
            ConsumerOptions::new("bridge").start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    assert!(
        again
            .receive_timeout(Duration::from_millis(500))
            .await
            .unwrap()
            .is_none(),
        "the source was not acked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_dead_letter_sink_the_route_stops_and_the_source_keeps_the_events() {
    let source = tributary::connect("memory://nodlq-source?partitions=1")
        .await
        .unwrap();
    let sink = tributary::connect("memory://nodlq-sink?max_event_bytes=1000")
        .await
        .unwrap();
    let producer = source.producer("orders").await.unwrap();
    producer.send(Event::new(vec![b'x'; 5000])).await.unwrap();
    let mut spec = RouteSpec::new("r", source.clone(), "orders", sink, "orders");
    spec.group = "bridge".into();
    spec.retry.attempts = 1;
    let error = tokio::time::timeout(
        Duration::from_secs(30),
        route::run_route(
            spec,
            Arc::new(RouteStats::default()),
            CancellationToken::default(),
        ),
    )
    .await
    .expect("the route stops on the poison event")
    .unwrap_err();
    assert_eq!(error.kind(), tributary::ErrorKind::TooLarge, "{error}");
    assert!(error.to_string().contains("route `r`"), "{error}");
    let again = source
        .consumer(
            "orders",
            ConsumerOptions::new("bridge").start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    assert!(
        again
            .receive_timeout(Duration::from_secs(5))
            .await
            .unwrap()
            .is_some(),
        "the event must still be there"
    );
}
