//! The consumer group across processes: three consumer processes share a four-shard stream
//! through the DynamoDB lease table; one is SIGKILLed mid-stream; the others take its shards
//! once its leases expire. Nothing is lost, and what comes twice is at most what the killed
//! process had received and not yet checkpointed.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tributary::backend::CheckpointStore;
use tributary::{ConsumerOptions, Event, StartPosition, StreamSpec};
use tributary_testcontainers::{
    KillOnDrop, Peer, lines_until, require_peer, this_test_binary_running, unique_name,
};

const CHILD: &str = "TRIBUTARY_KINESIS_GROUP_CHILD";
const EVENTS: usize = 6_000;
const KEYS: usize = 40;

/// One consumer process: receives, writes `millis partition position payload` per delivery to its
/// file (flushed before the ack), acks. Run by the parent test; a no-op otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: a consumer process of three_consumer_processes_share_a_stream"]
async fn consumer_process() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let mut parts = spec.splitn(4, '|');
    let (url, stream, group, out) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    // The parent sets RUST_LOG=tributary=debug (every lease taken, lost and released) and keeps
    // this stderr in a file it prints if the test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    tributary_kinesis::register();
    let backend = tributary::connect(url).await.expect("connect");
    let consumer = backend
        .consumer(
            stream,
            ConsumerOptions::new(group).start(StartPosition::Earliest),
        )
        .await
        .expect("consumer");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .expect("output file");
    println!("READY");
    std::io::stdout().flush().unwrap();
    loop {
        let batch = consumer
            .receive_batch(500, Duration::from_millis(20))
            .await
            .expect("receive");
        let mut lines = String::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        for d in &batch {
            lines.push_str(&format!(
                "{now} {} {} {}\n",
                d.partition.as_ref().unwrap(),
                d.position.as_ref().unwrap(),
                String::from_utf8_lossy(&d.event.payload)
            ));
        }
        file.write_all(lines.as_bytes()).unwrap();
        file.flush().unwrap();
        for d in batch {
            d.ack();
        }
    }
}

/// The consumer processes: killed when the test ends, however it ends (they loop until
/// killed), with their logs (`<output>.log`) printed if it failed: which process held which
/// shard and when is what a failure here turns on.
struct Consumers {
    children: Vec<KillOnDrop>,
    logs: Vec<PathBuf>,
}

impl Drop for Consumers {
    fn drop(&mut self) {
        self.children.clear();
        if !std::thread::panicking() {
            return;
        }
        for (i, path) in self.logs.iter().enumerate() {
            let log = std::fs::read_to_string(path).unwrap_or_default();
            eprintln!("---- consumer process {i}: {} ----\n{log}", path.display());
        }
    }
}

fn log_path(out: &Path) -> PathBuf {
    out.with_extension("log")
}

fn spawn_consumer(url: &str, stream: &str, group: &str, out: &Path) -> KillOnDrop {
    let log = std::fs::File::create(log_path(out)).expect("consumer log file");
    // Killed if it never says READY, too.
    let mut child = KillOnDrop(
        this_test_binary_running("consumer_process")
            .env(CHILD, format!("{url}|{stream}|{group}|{}", out.display()))
            .env("RUST_LOG", "tributary=debug")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn a consumer process"),
    );
    let stdout = child.stdout.take().unwrap();
    if let Err(why) = lines_until(stdout, "READY", Duration::from_secs(60)) {
        panic!("consumer process did not start: {why}");
    }
    child
}

/// Deliveries in a consumer's file: (partition, position, payload, milliseconds since the
/// epoch).
fn deliveries(path: &Path) -> Vec<(String, String, String, u128)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(4, ' ');
            let at = parts.next()?.parse().ok()?;
            Some((
                parts.next()?.to_owned(),
                parts.next()?.to_owned(),
                parts.next()?.to_owned(),
                at,
            ))
        })
        .collect()
}

fn payload(i: usize) -> String {
    format!("k{:02}:{:06}", i % KEYS, i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_consumer_processes_share_a_stream_and_survive_a_sigkill() {
    let kinesis = require_peer!(Peer::Kinesis);
    let dynamodb = require_peer!(Peer::DynamoDb);
    let url = format!(
        "{}&dynamodb_endpoint={}&lease_ttl=3s&commit_interval=200ms",
        kinesis.url(),
        dynamodb.url()
    );
    tributary_kinesis::register();
    let backend = tributary::connect(&url).await.unwrap();
    let stream = unique_name("group");
    let group = unique_name("g");
    backend
        .create_stream(&stream, StreamSpec::with_partitions(4))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("c{i}.txt")))
        .collect();
    let mut consumers = Consumers {
        children: Vec::new(),
        logs: files.iter().map(|f| log_path(f)).collect(),
    };
    for file in &files {
        consumers
            .children
            .push(spawn_consumer(&url, &stream, &group, file));
    }

    // Let the group settle first (three owners over four shards, read from the lease table,
    // unchanged for over two balance rounds), so the only handover of the test is the one the
    // kill causes. Unchanged for a while, not just spread: a member whose shard was taken
    // reads it until its next balance round (every second with a 3 s lease) shows it the
    // table; events sent before then reach both, and the same process again if the shard
    // comes back to it after the kill.
    let store = common::lease_store(dynamodb.url());
    let deadline = Instant::now() + common::WAIT;
    let mut settled: Option<(BTreeMap<String, String>, Instant)> = None;
    loop {
        let leases = store.leases(&group, &stream).await.unwrap_or_default();
        let owners: HashSet<&str> = leases.iter().map(|l| l.owner.as_str()).collect();
        if leases.len() == 4 && owners.len() == 3 {
            let table: BTreeMap<String, String> = leases
                .iter()
                .map(|l| (l.key.partition.to_string(), l.owner.clone()))
                .collect();
            match &settled {
                Some((seen, since)) if *seen == table => {
                    if since.elapsed() > Duration::from_millis(2500) {
                        break;
                    }
                }
                _ => settled = Some((table, Instant::now())),
            }
        } else {
            settled = None;
        }
        assert!(
            Instant::now() < deadline,
            "the group never settled over the three processes: {leases:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let producer = backend.producer(&stream).await.unwrap();
    let events: Vec<Event> = (0..EVENTS)
        .map(|i| Event::new(payload(i)).with_key(format!("key-{:02}", i % KEYS)))
        .collect();
    let (first, second) = events.split_at(EVENTS / 2);
    for chunk in first.chunks(500) {
        producer.send_batch(chunk.to_vec()).await.unwrap();
    }
    // Wait until every process has received something: all three hold shards.
    let deadline = Instant::now() + common::WAIT;
    while files.iter().any(|f| deliveries(f).is_empty()) {
        assert!(
            Instant::now() < deadline,
            "not every consumer process received events"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let victim = consumers.children.remove(2);
    // SAFETY: kill(2) on our own child process.
    unsafe { libc::kill(victim.id() as libc::pid_t, libc::SIGKILL) };
    let mut victim = victim;
    victim.wait().unwrap();
    let killed_received = deliveries(&files[2]);
    for chunk in second.chunks(500) {
        producer.send_batch(chunk.to_vec()).await.unwrap();
    }

    // Everything arrives at the survivors or arrived at the victim before it died.
    let want: HashSet<String> = (0..EVENTS).map(payload).collect();
    let deadline = Instant::now() + common::WAIT;
    let all = loop {
        let all: Vec<(usize, (String, String, String, u128))> = files
            .iter()
            .enumerate()
            .flat_map(|(i, f)| deliveries(f).into_iter().map(move |d| (i, d)))
            .collect();
        let got: HashSet<&String> = all.iter().map(|(_, (_, _, p, _))| p).collect();
        if want.iter().all(|p| got.contains(p)) {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {EVENTS} events delivered before the deadline",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Killed and reaped (KillOnDrop) before their files are read for the last time.
    consumers.children.clear();

    let mut count: HashMap<&str, usize> = HashMap::new();
    for (_, (_, _, p, _)) in &all {
        *count.entry(p).or_default() += 1;
    }
    let duplicates: usize = count.values().map(|n| n - 1).sum();
    let killed_dups = count
        .iter()
        .filter(|(p, n)| **n > 1 && killed_received.iter().any(|(_, _, k, _)| k == *p))
        .count();
    // The survivors took the victim's shards over: they delivered events of shards it held.
    let victim_shards: HashSet<&str> = killed_received
        .iter()
        .map(|(s, _, _, _)| s.as_str())
        .collect();
    let taken_over = all
        .iter()
        .filter(|(i, (s, _, _, _))| *i != 2 && victim_shards.contains(s.as_str()))
        .count();
    assert!(
        taken_over > 0,
        "no survivor delivered from the killed process's shards {victim_shards:?}"
    );
    // A duplicate is an event that was in flight at a process when its shard moved away from
    // it (delivered after the process's last checkpoint; the move is the SIGKILL, or the
    // survivors rebalancing after it): it never comes twice to one process, and comes again
    // within a lease time and a few balance rounds of its first delivery (a checkpoint that
    // lagged further would show as much older events coming again).
    let mut by_time = all.clone();
    by_time.sort_by_key(|(_, (_, _, _, at))| *at);
    let mut first: HashMap<&str, (usize, u128)> = HashMap::new();
    for (i, (_, _, p, at)) in &by_time {
        match first.get(p.as_str()) {
            None => {
                first.insert(p.as_str(), (*i, *at));
            }
            Some(&(earlier, then)) => {
                assert_ne!(earlier, *i, "{p} delivered twice to process {i}");
                assert!(
                    at - then <= 10_000,
                    "{p} delivered again {} ms after process {earlier} had it",
                    at - then
                );
            }
        }
    }
    // Per key, each process saw its events in order.
    for (i, file) in files.iter().enumerate() {
        let mut last: BTreeMap<String, usize> = BTreeMap::new();
        for (_, _, p, _) in deliveries(file) {
            let (key, index) = p.split_once(':').unwrap();
            let index: usize = index.parse().unwrap();
            if let Some(prev) = last.insert(key.to_owned(), index) {
                assert!(prev < index, "process {i}, key {key}: {prev} then {index}");
            }
        }
    }
    println!(
        "{EVENTS} events over 4 shards, 3 processes, one SIGKILLed after {} deliveries on {} shards: all delivered, {taken_over} of them later from its shards by the survivors, {duplicates} duplicates ({} of them first delivered to the killed process), each in flight when its shard moved",
        killed_received.len(),
        victim_shards.len(),
        killed_dups
    );
}
