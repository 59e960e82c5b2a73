//! Interop with AWS's Python tools against the same ferrokinesis: boto3 (what a Python user
//! writes reads as plain tributary events; what tributary writes reads to boto3 as ordinary
//! records), and aws-kinesis-agg (the KPL's aggregated format: records it aggregates are split
//! by tributary with each user record's partition key; records tributary aggregates are split
//! by it). Enough events to pass the group's prefetch (1,024 per shard) several times over.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tributary::{
    Backend, ConsumerExt, ConsumerOptions, Delivery, Event, StartPosition, StreamSpec, Timestamp,
};
use tributary_testcontainers::python::{self, Script};
use tributary_testcontainers::{Peer, require, unique_name};

const EVENTS: usize = 6_000;
const KEYS: usize = 30;

/// The Python interpreter with boto3 and aws-kinesis-agg, or `None` after a loud skip.
fn python() -> Option<PathBuf> {
    python::interpreter("boto3, aws_kinesis_agg")
}

fn script(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
        .display()
        .to_string()
}

async fn run_python(python: &Path, args: Vec<String>) -> Vec<serde_json::Value> {
    let (script, args) = args.split_first().expect("a script");
    Script::new(python, script)
        .args(args)
        .run()
        .await
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// What every case starts from: the shared ferrokinesis, the Python tools, a backend
/// connected with `options`, and a fresh stream of `shards` shards.
struct Case {
    url: String,
    python: PathBuf,
    backend: Arc<dyn Backend>,
    stream: String,
}

impl Case {
    /// `None` after a loud skip (no server or no Python tools).
    async fn new(prefix: &str, shards: u32, options: &str) -> Option<Case> {
        let server = require(Peer::Kinesis)?;
        let python = python()?;
        let backend = common::connect(server.url(), options).await;
        let stream = unique_name(prefix);
        backend
            .create_stream(&stream, StreamSpec::with_partitions(shards))
            .await
            .unwrap();
        Some(Case {
            url: server.url().to_owned(),
            python,
            backend,
            stream,
        })
    }

    /// `put_records.py` writes EVENTS records over KEYS keys (`py-NNNNNN`, `key-K`);
    /// returns what it wrote, one JSON line a (possibly aggregated) record.
    async fn python_writes(&self, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec![
            script("put_records.py"),
            common::endpoint(&self.url),
            self.stream.clone(),
            EVENTS.to_string(),
            KEYS.to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        run_python(&self.python, args).await
    }

    /// Sends `events` with tributary, then reads every user record back with boto3 and
    /// aws-kinesis-agg (`get_records.py`): the receipts, and the records read.
    async fn tributary_writes(
        &self,
        events: &[Event],
    ) -> (Vec<tributary::Receipt>, Vec<serde_json::Value>) {
        let producer = self.backend.producer(&self.stream).await.unwrap();
        let receipts = producer.send_batch(events.to_vec()).await.unwrap();
        let args = vec![
            script("get_records.py"),
            common::endpoint(&self.url),
            self.stream.clone(),
            EVENTS.to_string(),
        ];
        let read = run_python(&self.python, args).await;
        assert_eq!(read.len(), EVENTS);
        (receipts, read)
    }

    async fn receive_all(&self) -> Vec<Delivery> {
        receive_all(self.backend.as_ref(), &self.stream, EVENTS).await
    }
}

/// The number in a Python-written payload (`py-NNNNNN`), checking its key is `key-(N % KEYS)`.
fn checked_index(d: &Delivery) -> usize {
    let payload = String::from_utf8(d.event.payload.to_vec()).unwrap();
    let i: usize = payload.strip_prefix("py-").unwrap().parse().unwrap();
    assert_eq!(
        d.event.key.as_deref(),
        Some(format!("key-{}", i % KEYS).as_bytes()),
        "{payload}"
    );
    i
}

/// A record's data as boto3 printed it (base64).
fn data_of(record: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(record["data"].as_str().unwrap())
        .unwrap()
}

async fn receive_all(backend: &dyn Backend, stream: &str, n: usize) -> Vec<Delivery> {
    let consumer = backend
        .consumer(
            stream,
            ConsumerOptions::new(unique_name("reader")).start(StartPosition::Earliest),
        )
        .await
        .expect("consumer");
    let mut got = Vec::new();
    let deadline = Instant::now() + common::WAIT;
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "received {} of {n} events",
            got.len()
        );
        got.extend(
            consumer
                .receive_batch(1000, Duration::from_millis(20))
                .await
                .expect("receive"),
        );
    }
    assert!(
        consumer
            .receive_timeout(Duration::from_millis(500))
            .await
            .unwrap()
            .is_none(),
        "more events than were written"
    );
    got
}

/// Per key, in order: payloads are `py-NNNNNN`, keys `key-K`.
fn check_key_order(deliveries: &[Delivery]) {
    let mut last: HashMap<Vec<u8>, String> = HashMap::new();
    for d in deliveries {
        let key = d.event.key.clone().expect("a key").to_vec();
        let payload = String::from_utf8(d.event.payload.to_vec()).unwrap();
        if let Some(prev) = last.insert(key, payload.clone()) {
            assert!(prev < payload, "{prev} delivered before {payload}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tributary_reads_what_boto3_wrote() {
    let Some(case) = Case::new("from-boto3", 2, "").await else {
        return;
    };
    let before = Timestamp::now().as_millis();
    let written = case.python_writes(&[]).await;
    let after = Timestamp::now().as_millis();
    assert_eq!(written.len(), EVENTS);
    let where_: HashMap<String, (String, String)> = written
        .iter()
        .map(|w| {
            (
                w["users"][0].as_str().unwrap().to_owned(),
                (
                    w["shard"].as_str().unwrap().to_owned(),
                    w["sequence"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    let got = case.receive_all().await;
    let mut seen = HashSet::new();
    for d in &got {
        let i = checked_index(d);
        assert!(seen.insert(i), "py-{i:06} twice");
        assert!(d.event.headers.is_empty());
        let t = d.event.timestamp.expect("the arrival time").as_millis();
        assert!(
            (before - 1000..=after + 1000).contains(&t),
            "arrival {t} outside {before}..{after}"
        );
        let (shard, sequence) = &where_[&format!("py-{i:06}")];
        assert_eq!(d.partition.as_ref().unwrap().as_str(), shard);
        assert_eq!(d.position.as_ref().unwrap().as_str(), sequence);
        assert_eq!(d.attempt, Some(1));
    }
    check_key_order(&got);
    for d in got {
        d.ack();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn boto3_reads_what_tributary_wrote() {
    let Some(case) = Case::new("to-boto3", 2, "").await else {
        return;
    };
    let events: Vec<Event> = (0..EVENTS)
        .map(|i| match i % 3 {
            0 => Event::new(format!("plain-{i:06}")).with_key(format!("key-{}", i % KEYS)),
            1 => Event::new(format!("keyless-{i:06}")),
            _ => Event::new(format!("rich-{i:06}"))
                .with_key("k")
                .with_header("trace", "abc"),
        })
        .collect();
    let (receipts, read) = case.tributary_writes(&events).await;
    let by_sequence: HashMap<&str, &serde_json::Value> = read
        .iter()
        .map(|r| (r["sequence"].as_str().unwrap(), r))
        .collect();
    for (event, receipt) in events.iter().zip(&receipts) {
        let r = by_sequence[receipt.position.as_ref().unwrap().as_str()];
        assert_eq!(
            r["shard"].as_str().unwrap(),
            receipt.partition.as_ref().unwrap().as_str()
        );
        assert_eq!(r["aggregated"], false);
        let data = data_of(r);
        let partition_key = r["partition_key"].as_str().unwrap();
        let text = String::from_utf8_lossy(&event.payload);
        if text.starts_with("plain") {
            // A plain event is an ordinary record: the key is the partition key, the payload
            // the data.
            assert_eq!(data, event.payload.as_ref());
            assert_eq!(Some(partition_key.as_bytes()), event.key.as_deref());
        } else if text.starts_with("keyless") {
            assert_eq!(data, event.payload.as_ref());
            assert!(partition_key.starts_with("~tributary:"), "{partition_key}");
        } else {
            assert_eq!(partition_key, "k");
            assert!(data.starts_with(b"\xF5TRB\x01"));
            assert!(data.ends_with(event.payload.as_ref()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_kinesis_agg_records_are_split_with_their_partition_keys() {
    // One shard: the aggregates mix keys (as the KPL does), so only one shard keeps every
    // key's records in one order.
    let Some(case) = Case::new("kpl", 1, "").await else {
        return;
    };
    let written = case.python_writes(&["--aggregate"]).await;
    assert_eq!(
        written.len(),
        EVENTS / 100,
        "100 user records per aggregated record"
    );
    let mut position_of: HashMap<String, String> = HashMap::new();
    for w in &written {
        for (i, user) in w["users"].as_array().unwrap().iter().enumerate() {
            position_of.insert(
                user.as_str().unwrap().to_owned(),
                format!("{}:{i}", w["sequence"].as_str().unwrap()),
            );
        }
    }
    let got = case.receive_all().await;
    for d in &got {
        let i = checked_index(d);
        assert_eq!(
            d.position.as_ref().unwrap().as_str(),
            position_of[&format!("py-{i:06}")]
        );
    }
    check_key_order(&got);
    let distinct: HashSet<_> = got.iter().map(|d| d.event.payload.clone()).collect();
    assert_eq!(distinct.len(), EVENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_kinesis_agg_splits_what_tributary_aggregated() {
    let Some(case) = Case::new("agg-to-py", 2, "aggregate=true").await else {
        return;
    };
    let events: Vec<Event> = (0..EVENTS)
        .map(|i| Event::new(format!("agg-{i:06}")).with_key(format!("key-{}", i % 5)))
        .collect();
    let (receipts, read) = case.tributary_writes(&events).await;
    let aggregated = read.iter().filter(|r| r["aggregated"] == true).count();
    assert!(
        aggregated > EVENTS / 2,
        "only {aggregated} of {EVENTS} user records were aggregated"
    );
    let by_position: HashMap<String, &serde_json::Value> = read
        .iter()
        .map(|r| {
            let position = if r["aggregated"] == true {
                format!("{}:{}", r["sequence"].as_str().unwrap(), r["sub"])
            } else {
                r["sequence"].as_str().unwrap().to_owned()
            };
            (position, r)
        })
        .collect();
    for (event, receipt) in events.iter().zip(&receipts) {
        let r = by_position[receipt.position.as_ref().unwrap().as_str()];
        assert_eq!(data_of(r), event.payload.as_ref());
        assert_eq!(
            Some(r["partition_key"].as_str().unwrap().as_bytes()),
            event.key.as_deref()
        );
    }
}
