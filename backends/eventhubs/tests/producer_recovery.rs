//! A producer whose connection is lost (a network failure, a gateway restart) must come back:
//! each send after the cut either succeeds or fails within the producer's `timeout`, sends
//! succeed again soon after, and every event whose send succeeded can be read.
//!
//! The emulator runs in this process so the test can cut its connections
//! (`Emulator::drop_connections`).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tributary::{ConsumerExt, Event};
use tributary_testcontainers::{Peer, require};

/// The producer's deadline per send in this test (the default is 30 s).
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a send during a cut may take to end: the SDK notices the lost connection at once.
const QUICK: Duration = Duration::from_secs(3);
/// How long sending may take to work again after a cut: the SDK reconnects in about 150 ms,
/// or, when its recovery left the sender's session dead, the producer replaces its client,
/// at most once every 5 s (the rounds here follow each other within a second or two).
const AGAIN: Duration = Duration::from_secs(10);

fn batch(prefix: &str, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event::new(format!("{prefix}-{i}")).with_key(format!("key-{}", i % 7)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_sends_again_after_its_connection_is_lost() {
    sends_across_a_cut(false).await;
}

/// The cut lands while a send is waiting for its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_in_flight_when_the_connection_is_lost_ends_and_the_producer_recovers() {
    sends_across_a_cut(true).await;
}

/// Three times: a cut of the emulator's connections (during a send when `mid_send`), then
/// sends until five in a row succeed. No call may wait for the producer's `timeout` (SDK 0.16
/// on upstream fe2o3-amqp waited for a lost send's outcome for good: 5 of 6 runs failed), and
/// sends must work again soon (after a cut during a send, SDK 0.16 could leave the sender's
/// session dead for good: 3 of 5 runs sent nothing more within 60 s before the producer
/// replaced its client). Then every event a send reported sent must be readable.
async fn sends_across_a_cut(mid_send: bool) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let Some(azurite) = require(Peer::Azurite) else {
        return;
    };
    let (emulator, base, hub) = common::in_process_emulator("prodcut", 2).await;
    let url = common::url_for(&base, &azurite, &format!("&timeout={}s", TIMEOUT.as_secs()));
    let backend = common::connect(&url).await;
    let producer = backend.producer(&hub).await.expect("producer");

    let mut sent: BTreeSet<String> = BTreeSet::new();
    let payloads = |events: &[Event]| -> Vec<String> {
        events
            .iter()
            .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
            .collect()
    };
    let first = batch("before", 50);
    producer
        .send_batch(first.clone())
        .await
        .expect("send before the cut");
    sent.extend(payloads(&first));

    for round in 0..3 {
        let cut = if mid_send {
            let events = batch(&format!("during{round}"), 200);
            let call = Instant::now();
            let (result, cut) = tokio::join!(
                tokio::time::timeout(TIMEOUT, producer.send_batch(events.clone())),
                async {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    emulator.drop_connections()
                }
            );
            let took = call.elapsed();
            match result {
                Err(_) => {
                    panic!("round {round}: the send during the cut did not end within {TIMEOUT:?}")
                }
                Ok(Ok(_)) => sent.extend(payloads(&events)),
                Ok(Err(e)) => eprintln!(
                    "round {round}: the send during the cut failed in {took:?}: {:?}: {e}",
                    e.kind()
                ),
            }
            assert!(
                took < QUICK,
                "round {round}: the send during the cut took {took:?} (more than {QUICK:?})"
            );
            cut
        } else {
            emulator.drop_connections()
        };
        assert!(
            cut >= 1,
            "round {round}: the producer's connection was cut ({cut})"
        );

        let started = Instant::now();
        let mut outcomes = Vec::new();
        let mut in_a_row = 0;
        let mut attempt = 0;
        while in_a_row < 5 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "round {round}: no five sends in a row succeeded within 60 s after the cut: {outcomes:?}"
            );
            let events = batch(&format!("after{round}-{attempt}"), 20);
            let call = Instant::now();
            let result = tokio::time::timeout(
                TIMEOUT + Duration::from_secs(5),
                producer.send_batch(events.clone()),
            )
            .await;
            let took = call.elapsed();
            match result {
                Err(_) => panic!(
                    "round {round}: send {attempt} after the cut did not return within {:?} (timeout {TIMEOUT:?}); earlier: {outcomes:?}",
                    TIMEOUT + Duration::from_secs(5)
                ),
                Ok(Ok(_)) => {
                    in_a_row += 1;
                    sent.extend(payloads(&events));
                    outcomes.push(format!("ok in {took:?}"));
                }
                Ok(Err(e)) => {
                    in_a_row = 0;
                    outcomes.push(format!("{:?} in {took:?}: {e}", e.kind()));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            attempt += 1;
        }
        eprintln!("round {round}: sends after the cut: {outcomes:?}");
        assert!(
            started.elapsed() < AGAIN,
            "round {round}: sending again took {:?} (more than {AGAIN:?}): {outcomes:?}",
            started.elapsed()
        );
    }

    // Everything a send said it sent is there (more is allowed: a failed send may have landed).
    let consumer = common::read_from_earliest(&backend, &hub).await;
    let mut read = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !sent.is_subset(&read) {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(delivery) = consumer.receive_timeout(wait).await.expect("receive") else {
            break;
        };
        read.insert(String::from_utf8_lossy(&delivery.event.payload).into_owned());
        delivery.ack();
    }
    let missing: Vec<_> = sent.difference(&read).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} of {} events whose send succeeded were not read (first: {missing:?})",
        sent.difference(&read).count(),
        sent.len()
    );
    consumer.close().await.expect("close consumer");
    producer.close().await.expect("close producer");
    backend.close().await.expect("close backend");
    emulator.shutdown().await;
}
