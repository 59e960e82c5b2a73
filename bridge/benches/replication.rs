//! The bridge beside Kafka MirrorMaker 2, in the same run, on the same broker (issue 6).
//!
//! `cargo bench -p tributary-bridge --features kafka --bench replication [-- EVENTS]` prints a
//! table; nothing is asserted. Three replicators copy the same work:
//!
//! - **bridge local→local**: `memory://` to `memory://`, routes run inside this process;
//! - **bridge Kafka→Kafka**: the release `tributary bridge --config FILE` daemon, its own process;
//! - **MirrorMaker 2 Kafka→Kafka**: `connect-mirror-maker` (dedicated mode) from the installed
//!   Kafka jars, once with `tasks.max=1` (its default) and once with one task per partition.
//!
//! For each: a backlog of EVENTS (default 200,000) events of 100 B, 20 keys, 4 partitions, is
//! produced first; the replicator starts; the clock runs until the target's summed high
//! watermarks reach EVENTS (polled every 50 ms). "startup" is the time to the first replicated
//! event and "steady" the rate after it, so JVM start-up does not dominate. Then, with the
//! replicator still running, 2,000 events/s for 10 s go to a second source topic; latency is
//! the target record's LogAppendTime minus the source record's CreateTime (target topics are
//! created with `message.timestamp.type=LogAppendTime`). Peak RSS is the replicator process's
//! VmRSS sampled every 100 ms; for the in-process local case it is this process's growth.
//!
//! The bridge daemon runs with the configuration file's defaults; `BENCH_BRIDGE_MAX_EVENTS` and
//! `BENCH_BRIDGE_IN_FLIGHT` override its batch size and in-flight limit for tuning runs, and
//! `BENCH_SKIP_MM2=1` leaves MirrorMaker 2 out.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tributary::{
    Backend, ConsumerExt, ConsumerOptions, Event, StartPosition, StreamSpec, Timestamp,
};

#[path = "replication/inflight.rs"]
mod inflight;
use tributary_bridge::route::{self, CancellationToken, RouteSpec, RouteStats};
use tributary_testcontainers::{
    Peer, Process, Server, group_resident_bytes, log_tail, peers_dir, require, unique_name,
};

const PAYLOAD: usize = 100;
const KEYS: usize = 20;
const PARTITIONS: u32 = 4;
const PRODUCE_BATCH: usize = 1000;
/// Paced stream for the latency phase: this many events per second …
const PACED_RATE: usize = 2_000;
/// … for this long, in ticks of 10 ms.
const PACED_FOR: Duration = Duration::from_secs(10);
/// A replicator that has copied nothing after this long has failed.
const FIRST_EVENT_TIMEOUT: Duration = Duration::from_secs(120);
/// A backlog not fully copied after this long has failed.
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the paced events may take to arrive after the last one was sent (about).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The heap the installed `kafka-mirror-maker2` wrapper gives MirrorMaker 2 unless
/// `KAFKA_HEAP_OPTS` says otherwise (upstream's `connect-mirror-maker.sh`: -Xms256M -Xmx2G).
const MM2_DEFAULT_HEAP: &str = "-Xms256m -Xmx512m";

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let Some(server) = require(Peer::Kafka) else {
        return;
    };
    let bridge_bin = if std::env::var_os("BENCH_CURVE_ONLY").is_some() {
        PathBuf::new()
    } else {
        build_bridge()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // `BENCH_CURVE_ONLY=1`: only the in-flight curve (no release daemon, no MirrorMaker 2).
    if std::env::var_os("BENCH_CURVE_ONLY").is_some() {
        let curve = runtime.block_on(async {
            tributary_kafka::register();
            let kafka = tributary::connect(server.url()).await.unwrap();
            warm_up_groups(kafka.as_ref()).await;
            inflight::measure(kafka, n).await
        });
        inflight::print(&curve);
        return;
    }
    let rows = runtime.block_on(run_all(&server, &bridge_bin, n));
    let curve = runtime.block_on(async {
        let kafka = tributary::connect(server.url()).await.unwrap();
        inflight::measure(kafka, n.min(100_000)).await
    });
    print_report(&server, n, &rows);
    inflight::print(&curve);
}

/// Builds the release `tributary` binary with the Kafka backend (a no-op when `cargo bench`
/// already did) and returns its path, next to this bench in `<target>/release/`.
fn build_bridge() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building: cargo build --release -p tributary-bridge --features kafka");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "tributary-bridge",
            "--features",
            "kafka",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cannot run cargo to build the bridge binary");
    assert!(
        status.success(),
        "building the bridge binary failed: {status}"
    );
    let exe = std::env::current_exe().expect("the bench's own path");
    let release = exe
        .ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "deps"))
        .and_then(Path::parent)
        .expect("the bench runs from <target>/release/deps")
        .to_path_buf();
    let bin = release.join("tributary");
    assert!(bin.is_file(), "no bridge binary at {}", bin.display());
    bin
}

/// One line of the table.
struct Row {
    name: String,
    events: u64,
    backlog: Backlog,
    latency: Latency,
    peak_rss: u64,
    rss_note: &'static str,
    kafka: bool,
    mm2_tasks: Option<u32>,
}

/// How a backlog was copied.
#[derive(Clone, Copy)]
struct Backlog {
    /// From the replicator's launch until all events were on the target.
    total: Duration,
    /// From launch until the first event was seen on the target.
    first_at: Duration,
    /// Events already on the target at that first sighting.
    first_count: u64,
}

impl Backlog {
    fn rate(&self, n: u64) -> f64 {
        n as f64 / self.total.as_secs_f64()
    }
    fn steady(&self, n: u64) -> f64 {
        let span = (self.total - self.first_at).as_secs_f64();
        if span <= 0.0 {
            return f64::NAN;
        }
        (n - self.first_count) as f64 / span
    }
}

/// Replication latencies of the paced stream, in milliseconds.
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
    samples: usize,
    /// How the arrival time was taken.
    clock: &'static str,
}

async fn run_all(server: &Server, bridge_bin: &Path, n: u64) -> Vec<Row> {
    tributary_kafka::register();
    let kafka = tributary::connect(server.url()).await.unwrap();
    let mut rows = Vec::new();

    eprintln!("[local→local] bridge in process, memory:// → memory://");
    rows.push(local_to_local(n).await);

    // Every Kafka topic up front: the LogAppendTime targets need the Kafka CLI (a JVM each).
    // The first consumer group on a fresh broker waits seconds for Kafka to create its
    // internal offsets topic; whichever replicator ran first would pay for that alone.
    warm_up_groups(kafka.as_ref()).await;

    let mut runs = vec![KafkaRun::bridge()];
    // Tuning the bridge does not need the two JVM runs each time.
    if std::env::var_os("BENCH_SKIP_MM2").is_none() {
        runs.push(KafkaRun::mm2("a", "b", 1));
        runs.push(KafkaRun::mm2("m", "n", PARTITIONS));
    }
    for run in &runs {
        for topic in [&run.backlog_src, &run.paced_src] {
            kafka
                .create_stream(topic, StreamSpec::with_partitions(PARTITIONS))
                .await
                .unwrap();
        }
    }
    let targets: Vec<String> = runs
        .iter()
        .flat_map(|r| [r.backlog_dst.clone(), r.paced_dst.clone()])
        .collect();
    create_log_append_topics(server.address(), &targets);
    for topic in &targets {
        wait_topic(kafka.as_ref(), topic).await;
    }

    for run in &runs {
        eprintln!("[{}] producing {n} events to {}", run.name, run.backlog_src);
        let rate = produce_backlog(kafka.as_ref(), &run.backlog_src, n).await;
        eprintln!("[{}] backlog produced at {rate:.0} events/s", run.name);
        rows.push(run.measure(server, kafka.clone(), bridge_bin, n).await);
    }
    rows
}

/// Runs one consumer group to its first commit, so `__consumer_offsets` exists.
async fn warm_up_groups(kafka: &dyn Backend) {
    let topic = unique_name("t-rep-warm-up");
    kafka
        .create_stream(&topic, StreamSpec::with_partitions(1))
        .await
        .unwrap();
    let started = Instant::now();
    let consumer = kafka
        .consumer(
            &topic,
            ConsumerOptions::new(unique_name("warm-up")).start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let producer = kafka.producer(&topic).await.unwrap();
    producer.send(Event::new("warm-up")).await.unwrap();
    let delivery = consumer
        .receive_timeout(Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the warm-up event");
    delivery.ack();
    consumer.commit().await.unwrap();
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    eprintln!(
        "[warm-up] first consumer group ready after {:.2}s",
        started.elapsed().as_secs_f64()
    );
}

/// The local backend to itself, with the routes on this process's runtime.
async fn local_to_local(n: u64) -> Row {
    let source = tributary::connect("memory://bench-source?partitions=4")
        .await
        .unwrap();
    let sink = tributary::connect("memory://bench-sink?partitions=4")
        .await
        .unwrap();
    for (backend, stream) in [
        (&source, "backlog"),
        (&source, "paced"),
        (&sink, "backlog-copy"),
        (&sink, "paced-copy"),
    ] {
        backend
            .create_stream(stream, StreamSpec::with_partitions(PARTITIONS))
            .await
            .unwrap();
    }
    let rate = produce_backlog(source.as_ref(), "backlog", n).await;
    eprintln!("[local→local] backlog produced at {rate:.0} events/s");

    let baseline = own_rss();
    let rss = RssSampler::start(None);
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let routes: Vec<_> = [("backlog", "backlog-copy"), ("paced", "paced-copy")]
        .into_iter()
        .map(|(from, to)| {
            let mut spec = RouteSpec::new(
                format!("bench-{from}"),
                source.clone(),
                from,
                sink.clone(),
                to,
            );
            spec.group = unique_name("bench");
            tokio::spawn(route::run_route(
                spec,
                Arc::new(RouteStats::default()),
                cancel.clone(),
            ))
        })
        .collect();
    let backlog = watch_backlog(sink.as_ref(), "backlog-copy", n, started, &mut || Ok(())).await;
    let latency = paced_latency(
        source.as_ref(),
        "paced",
        sink.as_ref(),
        "paced-copy",
        Clock::Receive,
    )
    .await;
    cancel.cancel();
    for task in routes {
        task.await.unwrap().unwrap();
    }
    let peak = rss.finish();
    source.close().await.unwrap();
    sink.close().await.unwrap();
    Row {
        name: "bridge local→local (memory://, in process)".into(),
        events: n,
        backlog,
        latency,
        peak_rss: peak.saturating_sub(baseline),
        rss_note: "growth of the bench process (includes the copied events held by memory://)",
        kafka: false,
        mm2_tasks: None,
    }
}

/// One Kafka→Kafka replicator and its topics.
struct KafkaRun {
    name: String,
    /// `None`: the bridge daemon; `Some((source alias, target alias, tasks.max))`: MM2.
    mm2: Option<(&'static str, &'static str, u32)>,
    backlog_src: String,
    backlog_dst: String,
    paced_src: String,
    paced_dst: String,
}

impl KafkaRun {
    fn bridge() -> Self {
        let backlog = unique_name("rep-bridge-backlog");
        let paced = unique_name("rep-bridge-paced");
        KafkaRun {
            name: "bridge Kafka→Kafka".into(),
            mm2: None,
            backlog_dst: format!("{backlog}-copy"),
            paced_dst: format!("{paced}-copy"),
            backlog_src: backlog,
            paced_src: paced,
        }
    }

    /// MM2 names the target `<source alias>.<topic>` (DefaultReplicationPolicy); each run gets
    /// its own aliases so it also gets its own internal Connect topics.
    fn mm2(source: &'static str, target: &'static str, tasks: u32) -> Self {
        let backlog = unique_name(&format!("rep-mm2-{tasks}-backlog"));
        let paced = unique_name(&format!("rep-mm2-{tasks}-paced"));
        KafkaRun {
            name: format!("MirrorMaker 2 Kafka→Kafka (tasks.max={tasks})"),
            mm2: Some((source, target, tasks)),
            backlog_dst: format!("{source}.{backlog}"),
            paced_dst: format!("{source}.{paced}"),
            backlog_src: backlog,
            paced_src: paced,
        }
    }

    async fn measure(
        &self,
        server: &Server,
        kafka: Arc<dyn Backend>,
        bridge_bin: &Path,
        n: u64,
    ) -> Row {
        let dir = work_dir();
        let tag = self.backlog_src.clone();
        let log = dir.join(format!("{tag}.log"));
        let started = Instant::now();
        let mut process = match self.mm2 {
            None => {
                let config = dir.join(format!("{tag}.toml"));
                std::fs::write(&config, self.bridge_config(server.url())).unwrap();
                let mut command = Command::new(bridge_bin);
                command
                    .args(["bridge", "--config"])
                    .arg(&config)
                    .env("TRIBUTARY_LOG", "warn");
                Replicator::spawn(&self.name, command, &log)
            }
            Some((source, target, tasks)) => {
                let config = dir.join(format!("{tag}.properties"));
                std::fs::write(
                    &config,
                    self.mm2_config(server.address(), source, target, tasks),
                )
                .unwrap();
                let wrapper = peers_dir().join("kafka/current/bin/kafka-mirror-maker2");
                assert!(
                    wrapper.is_file(),
                    "MirrorMaker 2 is not installed: no {}",
                    wrapper.display()
                );
                let mut command = Command::new(wrapper);
                command.arg(&config);
                Replicator::spawn(&self.name, command, &log)
            }
        };
        eprintln!(
            "[{}] started, pid {}, log {}",
            self.name,
            process.pgid,
            log.display()
        );
        let rss = RssSampler::start(Some(process.pgid));
        let backlog = watch_backlog(kafka.as_ref(), &self.backlog_dst, n, started, &mut || {
            process.check_alive()
        })
        .await;
        eprintln!(
            "[{}] backlog copied in {:.2}s (first event after {:.2}s)",
            self.name,
            backlog.total.as_secs_f64(),
            backlog.first_at.as_secs_f64()
        );
        let latency = paced_latency(
            kafka.as_ref(),
            &self.paced_src,
            kafka.as_ref(),
            &self.paced_dst,
            Clock::LogAppendTime,
        )
        .await;
        if let Err(e) = process.check_alive() {
            panic!("{e}");
        }
        let peak = rss.finish();
        process.stop();
        let copied = high_watermarks(kafka.as_ref(), &self.backlog_dst).await;
        if copied != n {
            eprintln!(
                "[{}] note: the backlog target holds {copied} events, {n} were produced",
                self.name
            );
        }
        Row {
            name: self.name.clone(),
            events: n,
            backlog,
            latency,
            peak_rss: peak,
            rss_note: if self.mm2.is_some() {
                "JVM process"
            } else {
                "daemon process"
            },
            kafka: true,
            mm2_tasks: self.mm2.map(|m| m.2),
        }
    }

    /// The daemon's configuration: one route per topic, default batching and in-flight limit.
    fn bridge_config(&self, url: &str) -> String {
        let mut toml = String::from("[daemon]\nlisten = \"off\"\nshutdown_timeout = \"10s\"\n");
        for (name, from, to) in [
            ("backlog", &self.backlog_src, &self.backlog_dst),
            ("paced", &self.paced_src, &self.paced_dst),
        ] {
            // A group per route: routes sharing one would rebalance each other.
            let group = unique_name(&format!("bench-bridge-{name}"));
            let _ = write!(
                toml,
                "\n[[route]]\nname = \"{name}\"\n\
                 source = {{ url = \"{url}\", stream = \"{from}\", group = \"{group}\", start = \"earliest\" }}\n\
                 sink = {{ url = \"{url}\", stream = \"{to}\" }}\n"
            );
            if let Some(max_events) = bridge_knob("BENCH_BRIDGE_MAX_EVENTS") {
                let _ = writeln!(toml, "batch = {{ max_events = {max_events} }}");
            }
            if let Some(in_flight) = bridge_knob("BENCH_BRIDGE_IN_FLIGHT") {
                let _ = writeln!(toml, "in_flight = {in_flight}");
            }
        }
        toml
    }

    /// Dedicated-mode MirrorMaker 2: one flow, both "clusters" the same broker, only topic
    /// replication (no heartbeats, checkpoints, ACL/config sync), producer/consumer defaults.
    fn mm2_config(&self, bootstrap: &str, source: &str, target: &str, tasks: u32) -> String {
        format!(
            "clusters = {source}, {target}\n\
             {source}.bootstrap.servers = {bootstrap}\n\
             {target}.bootstrap.servers = {bootstrap}\n\
             {source}->{target}.enabled = true\n\
             {source}->{target}.topics = {}, {}\n\
             {target}->{source}.enabled = false\n\
             tasks.max = {tasks}\n\
             replication.factor = 1\n\
             offset-syncs.topic.replication.factor = 1\n\
             checkpoints.topic.replication.factor = 1\n\
             heartbeats.topic.replication.factor = 1\n\
             config.storage.replication.factor = 1\n\
             offset.storage.replication.factor = 1\n\
             status.storage.replication.factor = 1\n\
             emit.heartbeats.enabled = false\n\
             emit.checkpoints.enabled = false\n\
             sync.group.offsets.enabled = false\n\
             sync.topic.acls.enabled = false\n\
             sync.topic.configs.enabled = false\n\
             refresh.topics.interval.seconds = 1\n\
             refresh.groups.interval.seconds = 600\n",
            self.backlog_src, self.paced_src
        )
    }
}

/// An optional bridge setting from the environment, for tuning runs; unset keeps the
/// configuration file's default.
fn bridge_knob(name: &str) -> Option<usize> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

fn work_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "deps"))
        .and_then(|deps| deps.parent()?.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join("bench-replication");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Creates `topics` (4 partitions) with broker-stamped timestamps, with the Kafka CLI, all at
/// once.
fn create_log_append_topics(bootstrap: &str, topics: &[String]) {
    let tool = peers_dir().join("kafka/current/bin/kafka-topics");
    assert!(
        tool.is_file(),
        "the Kafka CLI is not installed: no {}",
        tool.display()
    );
    let children: Vec<_> = topics
        .iter()
        .map(|topic| {
            let child = Command::new(&tool)
                .args([
                    "--bootstrap-server",
                    bootstrap,
                    "--create",
                    "--topic",
                    topic,
                ])
                .args(["--partitions", &PARTITIONS.to_string()])
                .args(["--replication-factor", "1"])
                .args(["--config", "message.timestamp.type=LogAppendTime"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("cannot run kafka-topics");
            (topic, child)
        })
        .collect();
    for (topic, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kafka-topics --create {topic} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

async fn wait_topic(backend: &dyn Backend, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while backend.describe_stream(topic).await.is_err() {
        assert!(Instant::now() < deadline, "topic {topic} never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The backlog: `n` events of 100 B over 20 keys, sent in batches of 1000. Returns events/s.
async fn produce_backlog(backend: &dyn Backend, stream: &str, n: u64) -> f64 {
    let producer = backend.producer(stream).await.unwrap();
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let batch: Vec<Event> = (sent..n.min(sent + PRODUCE_BATCH as u64))
            .map(|i| {
                let mut payload = format!("backlog {i}").into_bytes();
                payload.resize(PAYLOAD, b'.');
                Event::new(payload).with_key(format!("key-{:02}", i as usize % KEYS))
            })
            .collect();
        sent += batch.len() as u64;
        producer.send_batch(batch).await.unwrap();
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    producer.close().await.unwrap();
    rate
}

/// Sum of the partitions' next positions (Kafka: high watermarks via `fetch_watermarks`).
async fn high_watermarks(backend: &dyn Backend, stream: &str) -> u64 {
    backend
        .describe_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("describe {stream}: {e}"))
        .partitions
        .iter()
        .filter_map(|p| p.next.as_ref()?.as_offset())
        .sum()
}

/// Polls the target every 50 ms until it holds `n` events.
async fn watch_backlog(
    target: &dyn Backend,
    stream: &str,
    n: u64,
    started: Instant,
    alive: &mut dyn FnMut() -> Result<(), String>,
) -> Backlog {
    let mut first: Option<(Duration, u64)> = None;
    loop {
        let count = high_watermarks(target, stream).await;
        let now = started.elapsed();
        if count > 0 && first.is_none() {
            first = Some((now, count));
        }
        if count >= n {
            let (first_at, first_count) = first.unwrap();
            return Backlog {
                total: now,
                first_at,
                first_count: first_count.min(n),
            };
        }
        if let Err(e) = alive() {
            panic!("{e}");
        }
        if first.is_none() && now > FIRST_EVENT_TIMEOUT {
            panic!("nothing replicated to {stream} within {FIRST_EVENT_TIMEOUT:?}");
        }
        if now > BACKLOG_TIMEOUT {
            panic!("only {count} of {n} events replicated to {stream} within {BACKLOG_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where the arrival time of a replicated event comes from.
#[derive(Clone, Copy)]
enum Clock {
    /// The target record's timestamp, stamped by the broker (LogAppendTime topics).
    LogAppendTime,
    /// When this process received it from the target (backends without broker timestamps).
    Receive,
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Produces `PACED_RATE` events/s for `PACED_FOR` to `source`, each carrying its creation time
/// (CreateTime in ms, and in µs in the payload), and measures when each one lands on `target`.
async fn paced_latency(
    source: &dyn Backend,
    source_stream: &str,
    target: &dyn Backend,
    target_stream: &str,
    clock: Clock,
) -> Latency {
    let ticks = (PACED_FOR.as_millis() / 10) as usize;
    let per_tick = PACED_RATE / 100;
    let total = ticks * per_tick;
    // The consumer is in its group (Kafka: partitions assigned) before the first event is sent.
    let consumer = target
        .consumer(
            target_stream,
            ConsumerOptions::new(unique_name("bench-latency")).start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let collector = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total);
        let give_up = Instant::now() + PACED_FOR + DRAIN_TIMEOUT;
        while latencies.len() < total && Instant::now() < give_up {
            let Some(d) = consumer
                .receive_timeout(Duration::from_millis(200))
                .await
                .unwrap()
            else {
                continue;
            };
            let arrived_us = match clock {
                Clock::Receive => now_micros(),
                Clock::LogAppendTime => {
                    d.event
                        .timestamp
                        .expect("a Kafka record has a timestamp")
                        .as_millis()
                        * 1000
                }
            };
            let created_us: i64 = std::str::from_utf8(&d.event.payload[..16])
                .ok()
                .and_then(|s| s.parse().ok())
                .expect("a paced event starts with its creation time");
            let created_us = match clock {
                // Both in whole milliseconds, as Kafka stores them.
                Clock::LogAppendTime => created_us / 1000 * 1000,
                Clock::Receive => created_us,
            };
            latencies.push((arrived_us - created_us) as f64 / 1000.0);
            d.ack();
        }
        consumer.close().await.unwrap();
        latencies
    });

    let producer = source.producer(source_stream).await.unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut seq = 0usize;
    for _ in 0..ticks {
        tick.tick().await;
        let batch: Vec<Event> = (0..per_tick)
            .map(|_| {
                let created = now_micros();
                let mut payload = format!("{created:016} paced {seq}").into_bytes();
                payload.resize(PAYLOAD, b'.');
                seq += 1;
                Event::new(payload)
                    .with_key(format!("key-{:02}", seq % KEYS))
                    .with_timestamp(Timestamp::from_millis(created / 1000))
            })
            .collect();
        producer.send_batch(batch).await.unwrap();
    }
    producer.close().await.unwrap();
    let mut latencies = collector.await.unwrap();
    assert!(
        latencies.len() == total,
        "only {} of {total} paced events reached {target_stream} within {DRAIN_TIMEOUT:?} after the last was sent (replicator stalled?)",
        latencies.len()
    );
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Latency {
        p50: at(0.50),
        p99: at(0.99),
        max: *latencies.last().unwrap(),
        samples: latencies.len(),
        clock: match clock {
            Clock::LogAppendTime => "target LogAppendTime − source CreateTime (ms)",
            Clock::Receive => "receive time at a consumer of the sink − creation time (µs)",
        },
    }
}

/// A replicator process, in its own process group (the fixtures' [`Process`]: a watchdog
/// stops it should this bench die without dropping it).
struct Replicator {
    name: String,
    process: Process,
    pgid: u32,
    stopped: bool,
}

impl Replicator {
    fn spawn(name: &str, command: Command, log: &Path) -> Replicator {
        let process = Process::spawn(command, log, None)
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Replicator {
            name: name.to_string(),
            pgid: process.pid(),
            process,
            stopped: false,
        }
    }

    /// `Err` with the log's tail once the process has exited.
    fn check_alive(&mut self) -> Result<(), String> {
        match self.process.exited() {
            None => Ok(()),
            Some(status) => Err(format!(
                "{} exited early ({status}); log {}:\n{}",
                self.name,
                self.process.log().display(),
                log_tail(self.process.log(), 30).join("\n")
            )),
        }
    }

    /// SIGTERM to the group, SIGKILL after 10 s (and always, for stragglers).
    fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            self.process.stop(Duration::from_secs(10));
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        if !self.stopped && std::thread::panicking() {
            eprintln!(
                "{} is being stopped after a failure; its log: {}",
                self.name,
                self.process.log().display()
            );
        }
        self.stop();
    }
}

/// VmRSS of this process, in bytes.
fn own_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Samples resident memory every 100 ms on a thread and keeps the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    /// `None`: this process; `Some(pgid)`: that process group.
    fn start(pgid: Option<u32>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let rss = match pgid {
                    None => own_rss(),
                    Some(pgid) => group_resident_bytes(pgid),
                };
                p.fetch_max(rss, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.0} ms")
    }
}

fn print_report(server: &Server, n: u64, rows: &[Row]) {
    let heap = std::env::var("KAFKA_HEAP_OPTS")
        .map(|h| format!("{h} (KAFKA_HEAP_OPTS)"))
        .unwrap_or_else(|_| {
            format!("{MM2_DEFAULT_HEAP} (the kafka-mirror-maker2 wrapper's default)")
        });
    println!(
        "\nReplication · Kafka {} (one local broker, same run) · backlog {n} events of {PAYLOAD} B, {KEYS} keys, {PARTITIONS} partitions · paced {PACED_RATE}/s for {}s",
        server.url(),
        PACED_FOR.as_secs()
    );
    println!(
        "| replicator | events | backlog events/s | steady events/s | startup | p50 | p99 | max | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2}s | {} | {} | {} | {} |",
            r.name,
            r.events,
            r.backlog.rate(n),
            r.backlog.steady(n),
            r.backlog.first_at.as_secs_f64(),
            ms(r.latency.p50),
            ms(r.latency.p99),
            ms(r.latency.max),
            mib(r.peak_rss)
        );
    }
    println!();
    for r in rows {
        println!(
            "  {}: latency over {} events, {}; RSS: {}",
            r.name, r.latency.samples, r.latency.clock, r.rss_note
        );
    }
    println!(
        "  MirrorMaker 2: Kafka 4.3.1 jars, dedicated mode, heap {heap}, producer/consumer defaults, no heartbeats/checkpoints/config sync; bridge daemon: batch max_events {}, in_flight {}, 1 MiB / 5 ms linger, lineage headers added to every event",
        bridge_knob("BENCH_BRIDGE_MAX_EVENTS").map_or("2000 (default)".into(), |v| v.to_string()),
        bridge_knob("BENCH_BRIDGE_IN_FLIGHT").map_or("4000 (default)".into(), |v| v.to_string()),
    );

    let Some(bridge) = rows.iter().find(|r| r.kafka && r.mm2_tasks.is_none()) else {
        return;
    };
    let mm2: Vec<&Row> = rows.iter().filter(|r| r.mm2_tasks.is_some()).collect();
    if mm2.is_empty() {
        return;
    }
    // Conservative: the bridge against MM2's best throughput and MM2's smallest footprint.
    let best = |f: &dyn Fn(&Row) -> f64| mm2.iter().map(|r| f(r)).fold(0.0, f64::max);
    let best_backlog = best(&|r| r.backlog.rate(n));
    let best_steady = best(&|r| r.backlog.steady(n));
    let least_rss = mm2.iter().map(|r| r.peak_rss).min().unwrap();
    let backlog_ratio = bridge.backlog.rate(n) / best_backlog;
    let steady_ratio = bridge.backlog.steady(n) / best_steady;
    let memory_ratio = least_rss as f64 / bridge.peak_rss as f64;
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "\nbridge Kafka→Kafka vs MirrorMaker 2 (its best run for throughput, its smallest for memory):"
    );
    println!(
        "  throughput bridge/MM2: backlog {backlog_ratio:.2}×, steady {steady_ratio:.2}×  (goal ≥ 2×: {} on steady, {} on backlog)",
        verdict(steady_ratio >= 2.0),
        verdict(backlog_ratio >= 2.0)
    );
    println!(
        "  memory MM2/bridge: {memory_ratio:.1}× ({} vs {})  (goal ≥ 5×, i.e. ≤ ⅕ of MM2's: {})",
        mib(least_rss),
        mib(bridge.peak_rss),
        verdict(memory_ratio >= 5.0)
    );
    let p99_mm2 = mm2
        .iter()
        .map(|r| r.latency.p99)
        .fold(f64::INFINITY, f64::min);
    println!(
        "  latency p99: bridge {} vs MM2 best {}",
        ms(bridge.latency.p99),
        ms(p99_mm2)
    );
}
