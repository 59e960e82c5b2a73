//! The broker restarted three times while a producer and a consumer run: every send that was
//! acknowledged is received, nothing hangs, and duplicates stay within what was in flight.
//! (Its own test binary: restarting the shared server would disturb other tests.)

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tributary::{ConsumerExt, ConsumerOptions, Event, StartPosition, StreamSpec};
use tributary_testcontainers::{Peer, require_peer, unique_name};

/// The consumer's prefetch per partition: with the ready queue behind it, the most a member
/// can hold unacked when the broker goes away.
const RECEIVER_QUEUE: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_broker_restarts_lose_nothing_and_hang_nowhere() {
    let server = require_peer!(Peer::Pulsar);
    tributary_pulsar::register();
    let url = format!("{}&receiver_queue={RECEIVER_QUEUE}", server.url());
    let backend = tributary::connect(&url).await.expect("connect");
    let topic = unique_name("restarts");
    backend
        .create_stream(&topic, StreamSpec::with_partitions(2))
        .await
        .expect("create");
    let consumer = Arc::new(
        backend
            .consumer(
                &topic,
                ConsumerOptions::new(unique_name("g")).start(StartPosition::Earliest),
            )
            .await
            .expect("consumer"),
    );
    let producer = backend.producer(&topic).await.expect("producer");

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(parking_lot::Mutex::new(Vec::<usize>::new()));
    let failed_sends = Arc::new(AtomicUsize::new(0));
    let longest_send = Arc::new(parking_lot::Mutex::new(Duration::ZERO));
    let sender = {
        let (stop, acknowledged, failed_sends, longest_send) = (
            stop.clone(),
            acknowledged.clone(),
            failed_sends.clone(),
            longest_send.clone(),
        );
        tokio::spawn(async move {
            let mut seq = 0usize;
            while !stop.load(Ordering::Acquire) {
                let event = Event::new(format!("{seq}")).with_key(format!("k{}", seq % 8));
                let started = Instant::now();
                let result = producer.send(event).await;
                let took = started.elapsed();
                {
                    let mut longest = longest_send.lock();
                    *longest = (*longest).max(took);
                }
                match result {
                    Ok(_) => acknowledged.lock().push(seq),
                    Err(e) => {
                        assert!(e.is_retryable(), "send {seq}: {e}");
                        failed_sends.fetch_add(1, Ordering::Relaxed);
                    }
                }
                seq += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            producer.close().await.expect("close producer");
        })
    };
    let received: Arc<parking_lot::Mutex<HashMap<usize, usize>>> = Arc::default();
    let receiver = {
        let (consumer, received) = (consumer.clone(), received.clone());
        tokio::spawn(async move {
            let mut errors = 0usize;
            loop {
                match consumer.receive_timeout(Duration::from_millis(500)).await {
                    Ok(Some(d)) => {
                        let seq: usize = std::str::from_utf8(&d.event.payload)
                            .unwrap()
                            .parse()
                            .unwrap();
                        *received.lock().entry(seq).or_default() += 1;
                        d.ack();
                    }
                    Ok(None) => {}
                    Err(e) => {
                        errors += 1;
                        assert!(errors < 100, "receive keeps failing: {e}");
                    }
                }
            }
        })
    };

    let acked = || acknowledged.lock().len();
    let wait_acked = |n: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        while acked() < n {
            assert!(
                Instant::now() < deadline,
                "sends stalled at {} of {n}",
                acked()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut target = 300;
    let mut restart_times = Vec::new();
    for _ in 0..3 {
        wait_acked(target).await;
        let server = server.clone();
        let started = Instant::now();
        tokio::task::spawn_blocking(move || server.restart())
            .await
            .unwrap()
            .expect("restart");
        restart_times.push(started.elapsed());
        target = acked() + 300;
    }
    wait_acked(target).await;
    stop.store(true, Ordering::Release);
    sender.await.unwrap();

    let want: Vec<usize> = acknowledged.lock().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let missing: Vec<usize> = {
            let got = received.lock();
            want.iter()
                .filter(|s| !got.contains_key(s))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged sends never arrived, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver.abort();
    let duplicates: usize = received.lock().values().map(|n| n - 1).sum();
    // Per restart, at most what a member held (prefetch and ready queue, per partition) plus
    // the producer's message awaiting its receipt.
    let in_flight = 2 * 2 * RECEIVER_QUEUE + 1;
    println!(
        "3 restarts ({restart_times:?}): {} sends acknowledged, {} failed and reported, all received; {duplicates} duplicates (bound {}); longest send {:?}",
        want.len(),
        failed_sends.load(Ordering::Relaxed),
        3 * in_flight,
        *longest_send.lock()
    );
    assert!(
        duplicates <= 3 * in_flight,
        "{duplicates} duplicates, more than in flight"
    );
    consumer.close().await.expect("close consumer");
}
