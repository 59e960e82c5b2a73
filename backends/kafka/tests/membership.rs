//! Group membership on a real broker: a static member (`instance_id`) killed without leaving
//! gets its partitions back at once when it returns, and the group's backlog is what
//! Kafka's own `kafka-consumer-groups` reports, dead member's partitions included.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tributary::{ConsumerExt, ConsumerOptions, Event, StartPosition, StreamSpec};
use tributary_testcontainers::{
    KillOnDrop, Peer, kafka::describe_group, require_peer, this_test_binary_running, unique_name,
};

const WAIT: Duration = Duration::from_secs(60);
const CHILD: &str = "TRIBUTARY_KAFKA_MEMBER_CHILD";
const EVENTS: usize = 2000;
const ACKED_BY_CHILD: usize = 600;

/// Run as a child process by [`a_static_member_killed_and_restarted_gets_its_partitions_at_once`]:
/// joins as a static member, acks 600 events, commits, says so, and waits to be killed.
#[test]
#[ignore = "helper: run as a child process"]
fn child_static_member_acks_then_waits() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let mut parts = spec.splitn(3, ' ');
    let (url, topic, group) = (
        parts.next().expect("url").to_string(),
        parts.next().expect("topic").to_string(),
        parts.next().expect("group").to_string(),
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        tributary_kafka::register();
        let backend = tributary::connect(&url).await.expect("connect");
        let consumer = backend
            .consumer(
                &topic,
                ConsumerOptions::new(group).start(StartPosition::Earliest),
            )
            .await
            .expect("consumer");
        for _ in 0..ACKED_BY_CHILD {
            consumer
                .receive_timeout(WAIT)
                .await
                .expect("receive")
                .expect("in time")
                .ack();
        }
        consumer.commit().await.expect("commit");
        // Hold more deliveries unacked: they must come back to whoever owns the partitions next.
        let mut held = Vec::new();
        for _ in 0..100 {
            held.push(consumer.receive().await.expect("receive"));
        }
        println!("ACKED {ACKED_BY_CHILD}");
        tokio::time::sleep(Duration::from_secs(600)).await;
        drop(held);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_killed_and_restarted_gets_its_partitions_at_once() {
    let server = require_peer!(Peer::Kafka);
    tributary_kafka::register();
    let backend = tributary::connect(server.url()).await.expect("connect");
    let topic = unique_name("static");
    let group = unique_name("g");
    backend
        .create_stream(&topic, StreamSpec::with_partitions(4))
        .await
        .expect("create");
    let producer = backend.producer(&topic).await.expect("producer");
    let events: Vec<Event> = (0..EVENTS)
        .map(|i| Event::new(format!("e{i}")).with_key(format!("k{}", i % 40)))
        .collect();
    producer.send_batch(events).await.expect("send");
    producer.close().await.expect("close");

    // Kafka's default session timeout (45 s): without static membership the returning
    // member would wait for its dead self to expire.
    let static_url = format!("{}?instance_id=proc-a", server.url());
    // Killed however this test ends: the child waits to be killed.
    let mut child = KillOnDrop(
        this_test_binary_running("child_static_member_acks_then_waits")
            .env(CHILD, format!("{static_url} {topic} {group}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child consumer"),
    );
    let stdout = child.stdout.take().expect("stdout");
    let acked = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("ACKED"))
    });
    let acked = tokio::time::timeout(WAIT, acked).await;
    // KillOnDrop ends the child if this fails.
    assert!(
        matches!(acked, Ok(Ok(true))),
        "the child never acked: {acked:?}"
    );
    // SIGKILL: no LeaveGroup (a static member never sends one anyway).
    child.kill().expect("kill");
    child.wait().expect("reap");

    // The backlog, from tributary and from Kafka's own tool: every partition is the dead
    // member's, and none is counted out.
    let ours = backend_group_lag(&backend, &topic, &group).await;
    assert_eq!(ours.total(), (EVENTS - ACKED_BY_CHILD) as u64);
    let address = server.address().to_string();
    let (g, t) = (group.clone(), topic.clone());
    let theirs = tokio::task::spawn_blocking(move || describe_group(&address, &g, &t))
        .await
        .expect("join")
        .expect("kafka-consumer-groups");
    assert_eq!(theirs.len(), 4, "{theirs:?}");
    for p in &ours.partitions {
        let row = &theirs[&p.partition];
        assert_eq!(
            (p.committed, p.end, Some(p.lag)),
            (row.committed, row.end, row.lag),
            "partition {}: tributary {p:?}, kafka-consumer-groups {row:?}",
            p.partition
        );
    }

    // The same instance comes back: its partitions at once, not after the session timeout.
    let returning = tributary::connect(&static_url).await.expect("connect");
    let started = Instant::now();
    let consumer = returning
        .consumer(
            &topic,
            ConsumerOptions::new(group.clone()).start(StartPosition::Earliest),
        )
        .await
        .expect("rejoin");
    let rejoined = started.elapsed();
    assert!(
        rejoined < Duration::from_secs(5),
        "the returning static member waited {rejoined:?} for its partitions"
    );
    assert_eq!(
        consumer.lag(),
        Some((EVENTS - ACKED_BY_CHILD) as u64),
        "lag right after rejoining"
    );
    // Everything the dead process had not acked, none of what it had.
    let mut seen = std::collections::HashSet::new();
    while seen.len() < EVENTS - ACKED_BY_CHILD {
        let d = consumer
            .receive_timeout(WAIT)
            .await
            .expect("receive")
            .unwrap_or_else(|| panic!("only {} events came back", seen.len()));
        assert!(
            seen.insert(d.event.payload.clone()),
            "delivered twice: {:?}",
            d.event.payload
        );
        d.ack();
    }
    assert!(
        consumer
            .receive_timeout(Duration::from_secs(2))
            .await
            .expect("receive")
            .is_none(),
        "an acked event came back"
    );
    consumer.commit().await.expect("commit");
    assert_eq!(backend_group_lag(&backend, &topic, &group).await.total(), 0);
    consumer.close().await.expect("close");
    println!("static member rejoined in {rejoined:?}");
}

async fn backend_group_lag(
    backend: &std::sync::Arc<dyn tributary::Backend>,
    topic: &str,
    group: &str,
) -> tributary_kafka::GroupLag {
    backend
        .as_any()
        .downcast_ref::<tributary_kafka::KafkaBackend>()
        .expect("a Kafka backend")
        .group_lag(topic, group)
        .await
        .expect("group lag")
}

/// Two consumers of one group and topic opened by one process with the same `instance_id`
/// are two members (`proc-b.<topic>` and `proc-b.<topic>.2`), not one fencing the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_sharing_an_instance_id_in_one_process_are_distinct_members() {
    let server = require_peer!(Peer::Kafka);
    tributary_kafka::register();
    let backend = tributary::connect(&format!("{}?instance_id=proc-b", server.url()))
        .await
        .expect("connect");
    let topic = unique_name("static-two");
    backend
        .create_stream(&topic, StreamSpec::with_partitions(2))
        .await
        .expect("create");
    let group = unique_name("g");
    let options = ConsumerOptions::new(group).start(StartPosition::Earliest);
    let first = backend
        .consumer(&topic, options.clone())
        .await
        .expect("first");
    let second = backend.consumer(&topic, options).await.expect("second");
    let producer = backend.producer(&topic).await.expect("producer");
    producer
        .send_batch(
            (0..200)
                .map(|i| Event::new(format!("e{i}")).with_key(format!("k{i}")))
                .collect(),
        )
        .await
        .expect("send");
    // Both members stay in the group (a fenced one would fail its receive) and share the work.
    let mut got = [0usize; 2];
    let deadline = Instant::now() + WAIT;
    while got.iter().sum::<usize>() < 200 {
        assert!(Instant::now() < deadline, "only {got:?} of 200 arrived");
        for (i, consumer) in [&first, &second].into_iter().enumerate() {
            if let Some(d) = consumer
                .receive_timeout(Duration::from_millis(50))
                .await
                .expect("receive (a fenced member fails here)")
            {
                got[i] += 1;
                d.ack();
            }
        }
    }
    assert!(
        got[0] > 0 && got[1] > 0,
        "one member got everything: {got:?}"
    );
    first.close().await.expect("close");
    second.close().await.expect("close");
    producer.close().await.expect("close");
}

/// Two live processes given the same static id fence each other; the fenced consumer says
/// what happened instead of failing with librdkafka's bare fatal error. (Within one process
/// tributary never hands out an id twice, so the test sets the id explicitly.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_static_member_says_its_instance_id_is_taken() {
    let server = require_peer!(Peer::Kafka);
    tributary_kafka::register();
    let url = format!("{}?consumer.group.instance.id=same-id", server.url());
    let topic = unique_name("fenced");
    let group = unique_name("g");
    let first_backend = tributary::connect(&url).await.expect("connect");
    first_backend
        .create_stream(&topic, StreamSpec::with_partitions(1))
        .await
        .expect("create");
    let options = ConsumerOptions::new(group).start(StartPosition::Earliest);
    let first = first_backend
        .consumer(&topic, options.clone())
        .await
        .expect("first");
    let second_backend = tributary::connect(&url).await.expect("connect");
    let second = second_backend.consumer(&topic, options).await;
    // The older member is the one fenced: it learns at its next heartbeat.
    let deadline = Instant::now() + WAIT;
    let error = loop {
        assert!(Instant::now() < deadline, "nobody was fenced");
        match first.receive_timeout(Duration::from_millis(200)).await {
            Err(e) => break e,
            Ok(Some(_)) => panic!("the topic is empty"),
            Ok(None) => {}
        }
    };
    assert_eq!(error.kind(), tributary::ErrorKind::Config, "{error}");
    assert!(error.to_string().contains("instance_id"), "{error}");
    drop(second);
}
