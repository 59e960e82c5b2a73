//! The bridge daemon killed with SIGKILL at five moments while copying, restarted each time:
//! the sink ends with every source event at least once, per-key order holds, and duplicates
//! stay within the in-flight limit per kill.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::time::Duration;

use tributary::{ConsumerExt, ConsumerOptions, Event, StartPosition, StreamSpec};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");
const EVENTS: usize = 20_000;
const KEYS: usize = 50;
const IN_FLIGHT: usize = 400;

fn config(dir: &std::path::Path, source: &str, sink: &str) -> std::path::PathBuf {
    let path = dir.join("bridge.toml");
    std::fs::write(
        &path,
        format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"10s\"\n\n[[route]]\nname = \"crashy\"\nsource = {{ url = \"{source}\", stream = \"orders\", group = \"bridge\" }}\nsink = {{ url = \"{sink}\", stream = \"orders\" }}\nbatch = {{ max_events = 100, linger = \"1ms\" }}\nin_flight = {IN_FLIGHT}\n"
        ),
    )
    .unwrap();
    path
}

/// Starts the daemon and waits until its route is open: it then holds the sink directory and
/// the source group (a file:// directory has one writer; polling earlier could take that role).
async fn start_ready(config: &std::path::Path) -> (std::process::Child, String) {
    let mut daemon = Command::new(BIN)
        .args(["bridge", "--config"])
        .arg(config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader keeps draining its stderr, so it never blocks on a full pipe.
    let addr = common::lines_within(
        daemon.stderr.take().unwrap(),
        "the daemon's stderr",
        Duration::from_secs(30),
    )
    .find(|line| {
        line.trim()
            .strip_prefix("operations endpoint: http://")
            .map(|rest| rest.split('/').next().unwrap().to_string())
    });
    common::wait_until_async(
        "the daemon is ready",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { ready(&addr) },
    )
    .await;
    (daemon, addr)
}

fn ready(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.write_all(format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes());
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

async fn sink_count(sink: &str) -> u64 {
    // Opens the sink read-only while the daemon holds it.
    let backend = tributary::connect(sink).await.unwrap();
    let count = match backend.describe_stream("orders").await {
        Ok(info) => info
            .partitions
            .iter()
            .filter_map(|p| p.next.as_ref().and_then(|n| n.as_offset()))
            .sum(),
        Err(_) => 0,
    };
    backend.close().await.unwrap();
    count
}

/// Counts the distinct payloads stored in the sink, read by a group of its own while the
/// daemon may still be writing.
async fn distinct_in_sink(sink: &str, poll: usize) -> usize {
    let backend = tributary::connect(sink).await.unwrap();
    let consumer = backend
        .consumer(
            "orders",
            ConsumerOptions::new(format!("progress-{poll}")).start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    while let Some(d) = consumer
        .receive_timeout(Duration::from_millis(300))
        .await
        .unwrap()
    {
        seen.insert(d.event.payload.clone());
        d.ack();
    }
    consumer.close().await.unwrap();
    backend.close().await.unwrap();
    seen.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_five_times_loses_nothing_and_keeps_per_key_order() {
    let dir = tempfile::tempdir().unwrap();
    // A killed process keeps its groups until the lease ends: a short lease for quick restarts.
    let source = format!(
        "file://{}?fsync=never&group_lease=1s",
        dir.path().join("source").display()
    );
    let sink = format!("file://{}?fsync=never", dir.path().join("sink").display());
    {
        let backend = tributary::connect(&source).await.unwrap();
        backend
            .create_stream("orders", StreamSpec::with_partitions(4))
            .await
            .unwrap();
        let producer = backend.producer("orders").await.unwrap();
        let mut per_key = vec![0usize; KEYS];
        let events: Vec<Event> = (0..EVENTS)
            .map(|i| {
                let key = i % KEYS;
                per_key[key] += 1;
                Event::new(format!("k{key}-{}", per_key[key])).with_key(format!("k{key}"))
            })
            .collect();
        for chunk in events.chunks(1000) {
            producer.send_batch(chunk.to_vec()).await.unwrap();
        }
        producer.close().await.unwrap();
        backend.close().await.unwrap();
    }
    let config = config(dir.path(), &source, &sink);

    // Five kills, each a fixed time after the daemon is ready (so a failure can be replayed).
    let mut kills = Vec::new();
    for wait_ms in [60u64, 150, 30, 220, 100] {
        let (mut daemon, _addr) = start_ready(&config).await;
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        daemon.kill().unwrap(); // SIGKILL: no drain, no commit, no lease release
        daemon.wait().unwrap();
        kills.push(sink_count(&sink).await);
    }
    // A last run to completion, stopped cleanly.
    let (mut daemon, _addr) = start_ready(&config).await;
    // The sink's count includes the replays, so it reaches EVENTS before the last source
    // events are copied: wait until every distinct event is there before stopping the daemon.
    let polls = std::sync::atomic::AtomicUsize::new(0);
    common::wait_until_async(
        "every distinct event in the sink",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || async {
            if sink_count(&sink).await < EVENTS as u64 {
                return false;
            }
            let poll = polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            distinct_in_sink(&sink, poll).await == EVENTS
        },
    )
    .await;
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(
        common::wait_child(
            &mut daemon,
            "the daemon after SIGTERM",
            Duration::from_secs(30)
        )
        .success()
    );

    let backend = tributary::connect(&sink).await.unwrap();
    let total = sink_count(&sink).await as usize;
    let consumer = backend
        .consumer(
            "orders",
            ConsumerOptions::new("check").start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let mut per_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..total {
        let d = consumer
            .receive_timeout(Duration::from_secs(10))
            .await
            .unwrap()
            .expect("every stored event");
        let payload = String::from_utf8(d.event.payload.to_vec()).unwrap();
        let (key, n) = payload.split_once('-').unwrap();
        per_key
            .entry(key.to_string())
            .or_default()
            .push(n.parse().unwrap());
        *seen.entry(payload).or_default() += 1;
        d.ack();
    }
    assert_eq!(seen.len(), EVENTS, "every source event reached the sink");
    let duplicates = total - EVENTS;
    for (key, sequence) in &per_key {
        // Replays repeat a suffix; the first occurrences must still come in source order.
        let mut next = 1;
        for &n in sequence {
            if n == next {
                next += 1;
            } else {
                assert!(n < next, "{key}: {n} arrived before {next}");
            }
        }
        assert_eq!(next - 1, EVENTS / KEYS, "{key}");
    }
    println!("sink counts after each SIGKILL: {kills:?}; {total} stored, {duplicates} duplicates");
    assert!(
        duplicates <= 5 * IN_FLIGHT,
        "{duplicates} duplicates exceed 5 kills x in_flight {IN_FLIGHT}"
    );
}
