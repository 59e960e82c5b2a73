//! Several processes in one `file://` consumer group share the partitions through the group
//! engine's leases, and a killed one's partitions move to the survivors.
//!
//! The children are this test binary run again with `TRIBUTARY_GROUP_CHILD` set: each consumes
//! the group, acks, commits after every batch, and prints one line per acked event.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tributary::backend::{CheckpointStore, FileCheckpointStore};
use tributary::{ConsumerOptions, Event, StartPosition, StreamSpec};
use tributary_testcontainers::{KillOnDrop, this_test_binary_running};

const STREAM: &str = "orders";
const GROUP: &str = "billing";
const PARTITIONS: u32 = 8;
const KEYS: usize = 40;
const IN_FLIGHT: usize = 50;

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The child: consume until killed or until the parent goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_consumer() {
    let Ok(dir) = std::env::var("TRIBUTARY_GROUP_CHILD") else {
        return; // Only meaningful as a child of `three_processes_share_a_file_group`.
    };
    // Warnings (lost leases, read retries) reach the parent's output through stderr.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("warn")
        .try_init();
    let backend = tributary::connect(&format!("file://{dir}?group_lease=3s"))
        .await
        .unwrap();
    let consumer = backend
        .consumer(
            STREAM,
            ConsumerOptions::new(GROUP)
                .start(StartPosition::Earliest)
                .max_in_flight(IN_FLIGHT),
        )
        .await
        .unwrap();
    println!("READY {}", std::process::id());
    // The parent holds our stdin: when it goes (even SIGKILLed), so do we.
    std::thread::spawn(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        std::process::exit(0);
    });
    loop {
        let batch = match consumer
            .receive_batch(IN_FLIGHT, Duration::from_millis(5))
            .await
        {
            Ok(batch) => batch,
            Err(e) => {
                println!("ERROR {e}");
                return;
            }
        };
        // Processing is printing: each event is printed (and flushed) before it is acked, so a
        // kill can cause a duplicate but never an acked event that was not processed.
        let mut out = std::io::stdout().lock();
        for d in batch {
            // Slow enough that a kill lands mid-stream.
            std::thread::sleep(Duration::from_micros(300));
            use std::io::Write;
            writeln!(
                out,
                "ACK {} {} {} {}",
                now_nanos(),
                d.partition.as_ref().unwrap(),
                d.position.as_ref().unwrap(),
                String::from_utf8_lossy(&d.event.payload)
            )
            .and_then(|_| out.flush())
            .unwrap();
            d.ack();
        }
        drop(out);
        consumer.commit().await.unwrap();
    }
}

struct Worker {
    /// Killed however the test ends.
    child: KillOnDrop,
    acks: Arc<parking_lot::Mutex<Vec<(u128, String, String)>>>,
}

fn spawn_child(dir: &str) -> Worker {
    let mut child = KillOnDrop(
        this_test_binary_running("child_consumer")
            .env("TRIBUTARY_GROUP_CHILD", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            eprintln!("child: {line}");
        }
    });
    let acks = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let sink = acks.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if line.starts_with("ERROR") {
                eprintln!("child: {line}");
            }
            let mut f = line.split(' ');
            if f.next() == Some("ACK") {
                let (t, p, _pos, payload) = (f.next(), f.next(), f.next(), f.next());
                if let (Some(t), Some(p), Some(payload)) = (t, p, payload) {
                    sink.lock()
                        .push((t.parse().unwrap(), p.to_owned(), payload.to_owned()));
                }
            }
        }
    });
    Worker { child, acks }
}

async fn lease_counts(store: &FileCheckpointStore) -> Vec<usize> {
    let now = tributary::Timestamp::now();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for lease in store.leases(GROUP, STREAM).await.unwrap() {
        if !lease.is_free(now) {
            *counts.entry(lease.owner).or_default() += 1;
        }
    }
    let mut counts: Vec<usize> = counts.into_values().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    counts
}

async fn wait_for_counts(store: &FileCheckpointStore, want: &[usize], within: Duration) -> f64 {
    let started = Instant::now();
    loop {
        let counts = lease_counts(store).await;
        if counts == want {
            return started.elapsed().as_secs_f64();
        }
        assert!(
            started.elapsed() < within,
            "partitions never spread as {want:?} within {within:?}: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_a_file_group() {
    if std::env::var("TRIBUTARY_GROUP_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    let backend = tributary::connect(&format!("file://{path}")).await.unwrap();
    backend
        .create_stream(STREAM, StreamSpec::with_partitions(PARTITIONS))
        .await
        .unwrap();
    let producer = backend.producer(STREAM).await.unwrap();
    let mut sent = 0usize;
    let mut send = async |n: usize| {
        let events: Vec<Event> = (sent..sent + n)
            .map(|i| {
                Event::new(format!("k{:02}-{i:06}", i % KEYS)).with_key(format!("k{:02}", i % KEYS))
            })
            .collect();
        sent += n;
        producer.send_batch(events).await.unwrap();
    };
    send(2_000).await;

    let store = FileCheckpointStore::open(dir.path().join("checkpoints")).unwrap();
    let mut workers: Vec<Worker> = (0..3).map(|_| spawn_child(&path)).collect();
    let spread = wait_for_counts(&store, &[3, 3, 2], Duration::from_secs(30)).await;
    println!("3 processes hold 3/3/2 of {PARTITIONS} partitions {spread:.1} s after they started");

    send(4_000).await;
    // Mid-stream: the victim has acked some of the new events and holds deliveries in flight.
    let victim_started = Instant::now();
    while workers[0].acks.lock().len() < 500 {
        assert!(
            victim_started.elapsed() < Duration::from_secs(60),
            "the first process consumes nothing"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    workers[0].child.kill().unwrap();
    workers[0].child.wait().unwrap();
    let killed_at = Instant::now();
    let takeover = wait_for_counts(&store, &[4, 4], Duration::from_secs(30)).await;
    println!(
        "SIGKILLed one process; the survivors hold 4/4 {takeover:.1} s later (the lease is 3 s; \
         a dead process on this host is seen at once)"
    );
    let _ = killed_at;
    send(2_000).await;

    // Every event acked by someone.
    let all: Vec<String> = (0..sent)
        .map(|i| format!("k{:02}-{i:06}", i % KEYS))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut acked: HashMap<String, usize> = HashMap::new();
        for w in &workers {
            for (_, _, payload) in w.acks.lock().iter() {
                *acked.entry(payload.clone()).or_default() += 1;
            }
        }
        let missing = all.iter().filter(|p| !acked.contains_key(*p)).count();
        if missing == 0 {
            let duplicates: usize = acked.values().map(|n| n - 1).sum();
            println!(
                "{sent} events, all acked; {duplicates} acked twice (in flight per process: {IN_FLIGHT})"
            );
            // Handovers: the kill, and the steals while the three spread (at most two).
            assert!(
                duplicates <= 3 * IN_FLIGHT,
                "{duplicates} duplicates is more than the in-flight windows of three handovers"
            );
            break;
        }
        if Instant::now() >= deadline {
            let mut by_partition: BTreeMap<u32, usize> = BTreeMap::new();
            for p in all.iter().filter(|p| !acked.contains_key(*p)) {
                let partition = tributary::local::partition_for_key(&p.as_bytes()[..3], PARTITIONS);
                *by_partition.entry(partition).or_default() += 1;
            }
            let leases = store.leases(GROUP, STREAM).await.unwrap();
            let checkpoints = store.checkpoints(GROUP, STREAM).await.unwrap();
            panic!(
                "{missing} of {sent} events never acked; missing per partition {by_partition:?}; \
                 leases {leases:#?}; checkpoints {checkpoints:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in &mut workers[1..] {
        let _ = w.child.kill();
        let _ = w.child.wait();
    }

    // Per-key order: each key's events were first acked in the order they were sent.
    let mut first: BTreeMap<String, (u128, String)> = BTreeMap::new();
    for w in &workers {
        for (t, _, payload) in w.acks.lock().iter() {
            let entry = first.entry(payload.clone()).or_insert((*t, String::new()));
            if *t < entry.0 {
                entry.0 = *t;
            }
        }
    }
    let mut by_key: BTreeMap<&str, Vec<(u128, &str)>> = BTreeMap::new();
    for (payload, (t, _)) in &first {
        by_key.entry(&payload[..3]).or_default().push((*t, payload));
    }
    for (key, mut events) in by_key {
        events.sort();
        let order: Vec<&str> = events.iter().map(|(_, p)| *p).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "key {key} first acked out of order");
    }
    backend.close().await.unwrap();
}
