//! A `file://` group under load keeps its leases: commits after every small batch while the
//! leases renew (issue: the periodic flusher and the commit path both renewed a copy of the
//! lease, the second lost to the first, and the group was "lost to another process" with no
//! other process running). Then a second consumer of the group shares it without either one
//! consuming the other's partitions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tributary::backend::{CheckpointStore, FileCheckpointStore};
use tributary::{ConsumerOptions, Event, StartPosition, StreamSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_and_renewals_under_load_never_lose_the_group_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}?group_lease=2s&fsync=never", dir.path().display());
    let backend = tributary::connect(&url).await.unwrap();
    backend
        .create_stream("src", StreamSpec::with_partitions(4))
        .await
        .unwrap();
    let producer: Arc<dyn tributary::Producer> = backend.producer("src").await.unwrap().into();
    let options = ConsumerOptions::new("bridge")
        .start(StartPosition::Earliest)
        .max_in_flight(40);
    let first = backend.consumer("src", options.clone()).await.unwrap();
    let store = FileCheckpointStore::open(dir.path().join("checkpoints")).unwrap();
    let owner = store.leases("bridge", "src").await.unwrap()[0]
        .owner
        .clone();

    // Three lease times of steady traffic, batches of 20, a commit after each: each lease is
    // renewed about nine times between hundreds of commits. With a 1 s lease this failed
    // once in CI (the message was not kept): renewal is due with 667 ms left, and on a loaded
    // 2-core machine a debug build's renewal, fsyncs included, came up to 220 ms late here.
    // That is a stall, not the race this test is about; the closest margin is printed.
    let writer = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut i = 0u64;
            while started.elapsed() < Duration::from_secs(6) {
                let batch = (i..i + 50)
                    .map(|n| Event::new(format!("{n:08}")).with_key(format!("k{}", n % 16)))
                    .collect();
                producer.send_batch(batch).await.unwrap();
                i += 50;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            i
        })
    };
    let mut received = 0u64;
    let mut commits = 0u64;
    // The least time any lease had left when looked at: how close the group came to losing
    // a partition it was reading.
    let mut closest_ms = i64::MAX;
    let started = Instant::now();
    while !writer.is_finished() {
        if let Ok(Ok(batch)) = tokio::time::timeout(
            Duration::from_millis(100),
            first.receive_batch(20, Duration::from_millis(1)),
        )
        .await
        {
            received += batch.len() as u64;
            batch.into_iter().for_each(|d| d.ack());
            first.commit().await.unwrap();
            commits += 1;
        }
        let leases = store.leases("bridge", "src").await.unwrap();
        let now = tributary::Timestamp::now();
        assert_eq!(leases.len(), 4, "every partition stays leased");
        for lease in leases {
            let at = started.elapsed();
            assert_eq!(
                lease.owner, owner,
                "a lease changed hands with one consumer running ({at:?} in, after {commits} commits)"
            );
            assert!(
                !lease.is_free(now),
                "a lease lapsed while its consumer ran ({at:?} in, after {commits} commits): {lease:?}"
            );
            closest_ms = closest_ms.min(lease.expires_at.as_millis() - now.as_millis());
        }
    }
    let sent = writer.await.unwrap();
    println!(
        "{sent} sent over 6 s with a 2 s lease; {received} received in {commits} batches, each committed; \
         the leases never left their owner, the closest one came to lapsing was {closest_ms} ms left"
    );

    // A second consumer of the group (another backend instance: another lease owner) gets
    // its share; an event goes to both only if it was in flight when a partition moved.
    let second_backend = tributary::connect(&url).await.unwrap();
    let second = second_backend.consumer("src", options).await.unwrap();
    let mut by: HashMap<&str, HashSet<String>> = HashMap::new();
    // Every batch is committed, an fsynced replace of the checkpoint file: this phase took
    // 6 s in CI and up to 27 s here with two `dd conv=fsync` loops and three busy loops
    // beside it. The deadline leaves room for worse, under nextest's 180 s.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut total = received;
    let mut first_seen = HashSet::new();
    let mut second_seen = HashSet::new();
    while total < sent {
        assert!(Instant::now() < deadline, "{total} of {sent} received");
        for (consumer, seen) in [(&first, &mut first_seen), (&second, &mut second_seen)] {
            if let Ok(Ok(batch)) = tokio::time::timeout(
                Duration::from_millis(20),
                consumer.receive_batch(100, Duration::from_millis(1)),
            )
            .await
            {
                for d in batch {
                    seen.insert(String::from_utf8(d.event.payload.to_vec()).unwrap());
                    total += 1;
                    d.ack();
                }
                consumer.commit().await.unwrap();
            }
        }
    }
    by.insert("first", first_seen);
    by.insert("second", second_seen);
    let both = by["first"].intersection(&by["second"]).count();
    assert!(
        both <= 40,
        "{both} events went to both consumers (in flight: 40)"
    );
    println!("then a second consumer shared the group; {both} events went to both");
    first.close().await.unwrap();
    second.close().await.unwrap();
    backend.close().await.unwrap();
    second_backend.close().await.unwrap();
}
