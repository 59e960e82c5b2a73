//! What the Pulsar backend promises beyond the conformance suite, against a real standalone:
//! per-key order while members join and leave (the reason for Failover), nack order and
//! backoff, batched messages acked safely, a consumer process killed mid-stream, starting at a
//! position, the size limit's message, and the admin API's view of a stream.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tributary::{
    Backend, ConsumerExt, ConsumerOptions, ErrorKind, Event, StartPosition, StreamSpec,
};
use tributary_testcontainers::{
    KillOnDrop, Peer, require_peer, this_test_binary_running, unique_name,
};

const WAIT: Duration = Duration::from_secs(60);

async fn connect(url: &str) -> Arc<dyn Backend> {
    tributary_pulsar::register();
    tributary::connect(url).await.expect("connect")
}

async fn stream(backend: &Arc<dyn Backend>, partitions: u32) -> String {
    let name = unique_name("sem");
    backend
        .create_stream(&name, StreamSpec::with_partitions(partitions))
        .await
        .expect("create stream");
    name
}

fn earliest(group: &str) -> ConsumerOptions {
    ConsumerOptions::new(group).start(StartPosition::Earliest)
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Members join and leave while keyed events flow; acks follow each receipt. Per key, the
/// order in which events are first received anywhere in the group is their send order, and
/// nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_key_order_holds_while_members_join_and_leave() {
    // RUST_LOG=tributary_pulsar=trace shows every active-member change and every message a
    // member queued or dropped.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_writer(std::io::stderr)
        .try_init();
    let server = require_peer!(Peer::Pulsar);
    let backend = connect(server.url()).await;
    let topic = stream(&backend, 4).await;
    let group = unique_name("g");
    const KEYS: usize = 16;
    const PER_KEY: usize = 250;
    const TOTAL: usize = KEYS * PER_KEY;

    #[derive(Default)]
    struct Record {
        /// Per key, sequence numbers in the order first received anywhere.
        first: BTreeMap<String, Vec<usize>>,
        seen: std::collections::HashSet<(String, usize)>,
        deliveries: usize,
        /// Every delivery: when, to which member, key, sequence number, partition, position.
        log: Vec<(Duration, &'static str, String, usize, String, String)>,
    }
    let started = Instant::now();
    let record = Arc::new(parking_lot::Mutex::new(Record::default()));
    let spawn_member = |name: &'static str| {
        let backend = backend.clone();
        let topic = topic.clone();
        let group = group.clone();
        let record = record.clone();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<bool>();
        let task = tokio::spawn(async move {
            let consumer = backend
                .consumer(&topic, earliest(&group))
                .await
                .expect(name);
            loop {
                let next = tokio::select! {
                    close = &mut stop_rx => {
                        if close.unwrap_or(true) {
                            consumer.close().await.expect("close");
                        }
                        return;
                    }
                    next = consumer.receive_timeout(Duration::from_millis(200)) => next.expect("receive"),
                };
                let Some(delivery) = next else { continue };
                let payload = text(&delivery.event.payload);
                let (key, seq) = payload.split_once(':').expect("key:seq");
                let seq: usize = seq.parse().expect("seq");
                {
                    let mut r = record.lock();
                    r.deliveries += 1;
                    r.log.push((
                        started.elapsed(),
                        name,
                        key.to_owned(),
                        seq,
                        format!("{:?}", delivery.partition),
                        format!("{:?}", delivery.position),
                    ));
                    if r.seen.insert((key.to_owned(), seq)) {
                        r.first.entry(key.to_owned()).or_default().push(seq);
                    }
                }
                delivery.ack();
            }
        });
        (stop_tx, task)
    };
    let received = || record.lock().seen.len();
    let wait_for = |n: usize| async move {
        let deadline = Instant::now() + WAIT;
        while received() < n {
            assert!(
                Instant::now() < deadline,
                "stalled at {} of {n}",
                received()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    let producer = backend.producer(&topic).await.expect("producer");
    let send_task = tokio::spawn(async move {
        for seq in 0..PER_KEY {
            let events = (0..KEYS)
                .map(|k| Event::new(format!("key-{k}:{seq}")).with_key(format!("key-{k}")))
                .collect();
            producer.send_batch(events).await.expect("send");
            tokio::time::sleep(Duration::from_millis(8)).await;
        }
    });
    let a = spawn_member("a");
    wait_for(TOTAL / 8).await;
    let b = spawn_member("b");
    wait_for(TOTAL * 3 / 8).await;
    let c = spawn_member("c");
    wait_for(TOTAL / 2).await;
    // A leaves cleanly, B as if it crashed (dropped without close).
    let _ = a.0.send(true);
    a.1.await.unwrap();
    wait_for(TOTAL * 5 / 8).await;
    let _ = b.0.send(false);
    b.1.await.unwrap();
    send_task.await.unwrap();
    wait_for(TOTAL).await;
    let _ = c.0.send(true);
    c.1.await.unwrap();

    let r = record.lock();
    for (key, order) in &r.first {
        let expected: Vec<usize> = (0..PER_KEY).collect();
        if order != &expected {
            // Who delivered what around the first event out of order, for the diagnosis.
            let late = order.windows(2).find(|w| w[1] < w[0]).map_or(0, |w| w[1]);
            for line in r
                .log
                .iter()
                .filter(|l| &l.2 == key && l.3 + 30 >= late && l.3 <= late + 30)
            {
                eprintln!("{line:?}");
            }
            panic!("{key}: first receipts out of send order: {order:?}");
        }
    }
    assert_eq!(r.first.len(), KEYS);
    println!(
        "{TOTAL} events over 3 members joining and leaving: per-key order kept, {} redelivered",
        r.deliveries - TOTAL
    );
}

/// A nacked event waits out its backoff, then comes back before its partition's later events
/// with its attempt raised; another partition keeps flowing meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_event_comes_back_first_after_its_backoff() {
    let server = require_peer!(Peer::Pulsar);
    let backend = connect(&format!("{}&nack_delay=1s&nack_max_delay=4s", server.url())).await;
    let topic = stream(&backend, 2).await;
    let producer = backend.producer(&topic).await.expect("producer");
    // Two keys on different partitions, found through the receipts.
    let mut by_partition: HashMap<String, String> = HashMap::new();
    for k in 0..64 {
        let key = format!("k{k}");
        let receipt = producer
            .send(Event::new(format!("probe-{key}")).with_key(key.clone()))
            .await
            .unwrap();
        by_partition
            .entry(receipt.partition.unwrap().to_string())
            .or_insert(key);
        if by_partition.len() == 2 {
            break;
        }
    }
    let (slow, other) = (by_partition["0"].clone(), by_partition["1"].clone());
    let consumer = backend
        .consumer(&topic, ConsumerOptions::new(unique_name("g")))
        .await
        .unwrap();
    for i in 0..3 {
        producer
            .send(Event::new(format!("{slow}:{i}")).with_key(slow.clone()))
            .await
            .unwrap();
    }
    let receive = || async {
        consumer
            .receive_timeout(WAIT)
            .await
            .unwrap()
            .expect("in time")
    };
    let first = receive().await;
    assert_eq!(text(&first.event.payload), format!("{slow}:0"));
    assert_eq!(first.attempt, Some(1));
    let nacked_at = Instant::now();
    first.nack();
    producer
        .send(Event::new(format!("{other}:0")).with_key(other.clone()))
        .await
        .unwrap();
    let meanwhile = receive().await;
    assert_eq!(
        text(&meanwhile.event.payload),
        format!("{other}:0"),
        "the other partition flows during the backoff"
    );
    assert!(nacked_at.elapsed() < Duration::from_secs(1));
    meanwhile.ack();
    let again = receive().await;
    assert_eq!(
        text(&again.event.payload),
        format!("{slow}:0"),
        "the nacked event comes first"
    );
    assert!(
        nacked_at.elapsed() >= Duration::from_secs(1),
        "backoff respected"
    );
    assert_eq!(again.attempt, Some(2));
    let nacked_again = Instant::now();
    again.nack();
    let third = receive().await;
    assert_eq!(text(&third.event.payload), format!("{slow}:0"));
    assert!(
        nacked_again.elapsed() >= Duration::from_secs(2),
        "the backoff doubles"
    );
    assert_eq!(third.attempt, Some(3));
    third.ack();
    for i in 1..3 {
        let d = receive().await;
        assert_eq!(text(&d.event.payload), format!("{slow}:{i}"));
        d.ack();
    }
    consumer.close().await.unwrap();
}

/// With producer batching, ten events are one Pulsar message: acking five must not
/// acknowledge the message (the raw crate would, and a crash would lose the other five).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_acked_batch_is_not_lost_in_a_crash() {
    // RUST_LOG=tributary_pulsar=trace shows the second member's takeover: the announcement,
    // the cursor read, each rewind request and every event queued or dropped.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_writer(std::io::stderr)
        .try_init();
    let server = require_peer!(Peer::Pulsar);
    let backend = connect(&format!("{}&batch_size=100&batch_delay=50ms", server.url())).await;
    let topic = stream(&backend, 1).await;
    let group = unique_name("g");
    let first = backend.consumer(&topic, earliest(&group)).await.unwrap();
    let producer = backend.producer(&topic).await.unwrap();
    let sent: Vec<Event> = (0..10).map(|i| Event::new(format!("b{i}"))).collect();
    let receipts = producer.send_batch(sent).await.unwrap();
    let entries: std::collections::HashSet<String> = receipts
        .iter()
        .map(|r| {
            let p = r.position.as_ref().unwrap().to_string();
            p.rsplit_once(':').unwrap().0.to_owned()
        })
        .collect();
    assert_eq!(entries.len(), 1, "one batched message: {receipts:?}");
    for i in 0..10 {
        let d = first.receive_timeout(WAIT).await.unwrap().unwrap();
        if i % 2 == 0 {
            d.ack();
        } else {
            std::mem::forget(d.handle); // never settled, as in a crash
        }
    }
    first.commit().await.unwrap();
    drop(first);
    let second = backend.consumer(&topic, earliest(&group)).await.unwrap();
    // The whole batch comes back; the first of it may take a while under load (the broker
    // hands the dropped member's subscription over), so only the wait for extras is short.
    let mut again = Vec::new();
    while again.len() < 10 {
        let Some(d) = second.receive_timeout(WAIT).await.unwrap() else {
            break;
        };
        again.push(text(&d.event.payload));
        d.ack();
    }
    while let Some(d) = second
        .receive_timeout(Duration::from_secs(2))
        .await
        .unwrap()
    {
        again.push(text(&d.event.payload));
        d.ack();
    }
    again.sort();
    let all: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    assert_eq!(again, all, "the whole batch again: nothing lost");
    second.commit().await.unwrap();
    drop(second);
    let third = backend.consumer(&topic, earliest(&group)).await.unwrap();
    assert!(
        third
            .receive_timeout(Duration::from_secs(2))
            .await
            .unwrap()
            .is_none(),
        "a fully acked batch is not delivered again"
    );
}

/// The child side of the SIGKILL test: consume ten events, ack 0, 2, 4, 6, 8, make sure the
/// acks reached the broker, say so, and wait to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_consumer_for_the_kill_test() {
    let Ok(spec) = std::env::var("PULSAR_KILL_CHILD") else {
        return; // only runs as the child of the test below
    };
    let mut parts = spec.split('|');
    let (url, topic, group) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let backend = connect(url).await;
    let consumer = backend.consumer(topic, earliest(group)).await.unwrap();
    let mut held = Vec::new();
    let mut acked = Vec::new();
    for i in 0..10 {
        let d = consumer
            .receive_timeout(WAIT)
            .await
            .unwrap()
            .expect("event");
        let payload = text(&d.event.payload);
        if i % 2 == 0 {
            acked.push(payload);
            d.ack();
        } else {
            held.push(d);
        }
    }
    consumer.commit().await.unwrap();
    println!("ACKED {}", acked.join(","));
    // Killed by the parent long before this ends.
    tokio::time::sleep(Duration::from_secs(120)).await;
    drop(held);
}

/// A consumer process SIGKILLed after acking 5 of 10: the next member gets exactly the other 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consumer_leaves_exactly_its_unacked_events() {
    let server = require_peer!(Peer::Pulsar);
    let backend = connect(server.url()).await;
    let topic = stream(&backend, 1).await;
    let group = unique_name("g");
    // The group exists before the events, so the child starts at the first one.
    backend
        .consumer(&topic, earliest(&group))
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let producer = backend.producer(&topic).await.unwrap();
    let sent: Vec<Event> = (0..10).map(|i| Event::new(format!("e{i}"))).collect();
    producer.send_batch(sent).await.unwrap();

    let mut child = this_test_binary_running("child_consumer_for_the_kill_test")
        .env(
            "PULSAR_KILL_CHILD",
            format!("{}|{topic}|{group}", server.url()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Killed however this test ends.
    let mut child = KillOnDrop(child);
    let acked = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .inspect(|line| eprintln!("child: {line}"))
            // libtest may print the test's name on the same line first.
            .find_map(|line| line.split_once("ACKED ").map(|(_, acked)| acked.to_owned()))
    });
    let acked = tokio::time::timeout(WAIT, acked)
        .await
        .expect("the child acked in time")
        .unwrap()
        .expect("the child's ACKED line");
    // SAFETY: kill(2) on our own child process.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGKILL) }, 0);
    child.0.wait().unwrap();
    assert_eq!(acked, "e0,e2,e4,e6,e8");

    let next = backend.consumer(&topic, earliest(&group)).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        let d = next
            .receive_timeout(WAIT)
            .await
            .unwrap()
            .expect("the unacked five");
        got.push(text(&d.event.payload));
        d.ack();
    }
    assert!(
        next.receive_timeout(Duration::from_secs(2))
            .await
            .unwrap()
            .is_none(),
        "an acked event came back"
    );
    got.sort();
    assert_eq!(got, ["e1", "e3", "e5", "e7", "e9"]);
    drop(child);
}

/// A new group can start at a message id from a receipt (inclusive); an existing group keeps
/// its own position whatever start it asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_starts_at_a_position() {
    let server = require_peer!(Peer::Pulsar);
    let backend = connect(server.url()).await;
    let topic = stream(&backend, 3).await;
    let producer = backend.producer(&topic).await.unwrap();
    let receipts = producer
        .send_batch(
            (0..6)
                .map(|i| Event::new(format!("p{i}")).with_key("one-key"))
                .collect(),
        )
        .await
        .unwrap();
    let start = receipts[3].position.clone().unwrap();
    let group = unique_name("g");
    let consumer = backend
        .consumer(
            &topic,
            ConsumerOptions::new(group.clone()).start(StartPosition::Position(start.clone())),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let d = consumer
            .receive_timeout(WAIT)
            .await
            .unwrap()
            .expect("event");
        assert_eq!(
            d.position.as_ref(),
            Some(&receipts[3 + got.len()].position.clone().unwrap())
        );
        got.push(text(&d.event.payload));
        d.ack();
    }
    assert_eq!(got, ["p3", "p4", "p5"]);
    assert!(
        consumer
            .receive_timeout(Duration::from_secs(1))
            .await
            .unwrap()
            .is_none()
    );
    consumer.close().await.unwrap();
    // The group exists now: Earliest does not move it back.
    let again = backend.consumer(&topic, earliest(&group)).await.unwrap();
    assert!(
        again
            .receive_timeout(Duration::from_secs(2))
            .await
            .unwrap()
            .is_none()
    );
    let bad = backend
        .consumer(
            &topic,
            ConsumerOptions::new(unique_name("g"))
                .start(StartPosition::Position(tributary::Position::new("1:2:9"))),
        )
        .await
        .err()
        .expect("a position on a partition the stream lacks");
    assert_eq!(bad.kind(), ErrorKind::Config, "{bad}");
}

/// An event over the broker's limit is refused before sending, naming the limit and stream;
/// consumer options are checked by `ConsumerOptions::validate`; the admin API describes streams with partitions, positions and per-group backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_administration() {
    let server = require_peer!(Peer::Pulsar);
    let backend = connect(server.url()).await;
    let topic = stream(&backend, 3).await;
    let producer = backend.producer(&topic).await.unwrap();
    let err = producer
        .send(Event::new(vec![0u8; 5 * 1024 * 1024 + 1]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    let message = err.to_string();
    assert!(
        message.contains("5241856") && message.contains("5242880") && message.contains(&topic),
        "{message}"
    );

    // Consumer options are checked as every backend checks them, before any subscription.
    for group in ["", "bad\ngroup"] {
        let Err(err) = backend.consumer(&topic, earliest(group)).await else {
            panic!("group {group:?} was accepted");
        };
        assert_eq!(err.kind(), ErrorKind::Config, "{group:?}: {err}");
        assert!(err.to_string().contains("consumer group name"), "{err}");
    }

    let group = unique_name("g");
    let consumer = backend.consumer(&topic, earliest(&group)).await.unwrap();
    producer
        .send_batch(
            (0..10)
                .map(|i| Event::new(format!("x{i}")).with_key(format!("k{i}")))
                .collect(),
        )
        .await
        .unwrap();
    for _ in 0..4 {
        consumer.receive_timeout(WAIT).await.unwrap().unwrap().ack();
    }
    consumer.commit().await.unwrap();
    let pulsar = backend
        .as_any()
        .downcast_ref::<tributary_pulsar::PulsarBackend>()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let backlogs = pulsar.backlogs(&topic).await.unwrap();
        let mine = &backlogs[&group];
        if mine.backlog == 6 {
            assert_eq!(mine.kind.as_deref(), Some("Failover"));
            assert!(mine.consumers >= 1, "{mine:?}");
            break;
        }
        assert!(Instant::now() < deadline, "backlog {mine:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let info = backend.describe_stream(&topic).await.unwrap();
    assert_eq!(info.partitions.len(), 3);
    assert!(
        info.partitions.iter().any(|p| p.earliest.is_some()),
        "{info:?}"
    );
    assert!(backend.list_streams().await.unwrap().contains(&topic));
    let err = backend
        .create_stream(&topic, StreamSpec::with_partitions(3))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    backend.delete_stream(&topic).await.unwrap();
    assert!(!backend.list_streams().await.unwrap().contains(&topic));
    let err = backend.describe_stream(&topic).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}
