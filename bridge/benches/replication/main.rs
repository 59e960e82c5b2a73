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
//! `BENCH_SKIP_MM2=1` leaves MirrorMaker 2 out. `BENCH_BRIDGE_BIN` runs a given daemon binary
//! (an earlier build) instead of building this tree's, `BENCH_BRIDGE_SINK_LINGER_MS` sets its
//! Kafka sink's `linger.ms`, and `BENCH_BRIDGE_WRAP` runs it under a tool (`perf stat …--`).
//! `BENCH_SKIP_CURVE=1` leaves out the in-flight curve; `BENCH_SKIP_ROUTES=1` the daemon with 1, 4
//! and 16 routes (`BENCH_ROUTES=1,4,16`), EVENTS in all split over the routes, and
//! `BENCH_ROUTES_ONLY=1` runs that alone. The CPU goal is judged on `BENCH_CPU_ROUNDS` (default 8)
//! alternating rounds of a backlog copy by the daemon and by MirrorMaker 2 (`cpu_rounds.rs`);
//! `BENCH_CPU_ROUNDS_ONLY=1` runs those alone. The same rounds carry a paced stream through each
//! replicator after its copy, and the latency goals are judged on them. The in-process
//! local→local copy also counts heap allocations per replicated event.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tributary::{Backend, ConsumerExt, ConsumerOptions, Event, StartPosition, StreamSpec};
use tributary_testcontainers::{Peer, Server, require, unique_name};

mod backlog;
mod cpu_rounds;
mod inflight;
mod kafka_run;
mod latency;
mod local;
#[path = "../../../benches/probe.rs"]
mod probe;
mod process;
mod report;
mod routes;

use backlog::{produce_backlog, wait_topic};
use kafka_run::{KafkaRun, create_log_append_topics};
use report::{Row, print_report};

#[global_allocator]
static ALLOCATOR: probe::CountingAllocator = probe::CountingAllocator;

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
    // `BENCH_ROUTES_ONLY=1`: only the daemon by its number of routes (comparing two daemon
    // builds with `BENCH_BRIDGE_BIN`).
    if std::env::var_os("BENCH_ROUTES_ONLY").is_some() {
        let by_routes = runtime.block_on(async {
            tributary_kafka::register();
            let kafka = tributary::connect(server.url()).await.unwrap();
            routes::measure(&server, kafka, &bridge_bin, n).await
        });
        routes::print(&by_routes);
        return;
    }
    // `BENCH_CPU_ROUNDS_ONLY=1`: only the CPU goal's alternating rounds.
    if std::env::var_os("BENCH_CPU_ROUNDS_ONLY").is_some() {
        let rounds = runtime.block_on(async {
            tributary_kafka::register();
            let kafka = tributary::connect(server.url()).await.unwrap();
            warm_up_groups(kafka.as_ref()).await;
            cpu_rounds::measure(&server, kafka, &bridge_bin, n, cpu_rounds::round_count()).await
        });
        cpu_rounds::print(n, &rounds);
        return;
    }
    let rows = runtime.block_on(run_all(&server, &bridge_bin, n));
    // The CPU goal's rounds need MirrorMaker 2, which `BENCH_SKIP_MM2=1` leaves out.
    let cpu_rounds = if std::env::var_os("BENCH_SKIP_MM2").is_some() {
        Vec::new()
    } else {
        runtime.block_on(async {
            let kafka = tributary::connect(server.url()).await.unwrap();
            cpu_rounds::measure(&server, kafka, &bridge_bin, n, cpu_rounds::round_count()).await
        })
    };
    let in_rounds = !cpu_rounds.is_empty();
    // `BENCH_SKIP_ROUTES=1`: not the daemon with 1, 4 and 16 routes.
    let by_routes = if std::env::var_os("BENCH_SKIP_ROUTES").is_some() {
        Vec::new()
    } else {
        runtime.block_on(async {
            let kafka = tributary::connect(server.url()).await.unwrap();
            routes::measure(&server, kafka, &bridge_bin, n).await
        })
    };
    // `BENCH_SKIP_CURVE=1`: the replicators only, for alternating comparison rounds.
    if std::env::var_os("BENCH_SKIP_CURVE").is_some() {
        print_report(&server, n, &rows, in_rounds);
        cpu_rounds::print(n, &cpu_rounds);
        routes::print(&by_routes);
        return;
    }
    let curve = runtime.block_on(async {
        let kafka = tributary::connect(server.url()).await.unwrap();
        inflight::measure(kafka, n.min(100_000)).await
    });
    print_report(&server, n, &rows, in_rounds);
    cpu_rounds::print(n, &cpu_rounds);
    routes::print(&by_routes);
    inflight::print(&curve);
}

/// Builds the release `tributary` binary with the Kafka backend (a no-op when `cargo bench`
/// already did) and returns its path, next to this bench in `<target>/release/`.
///
/// `BENCH_BRIDGE_BIN=PATH` runs that binary instead (an earlier build, to compare beside it).
fn build_bridge() -> PathBuf {
    if let Some(bin) = std::env::var_os("BENCH_BRIDGE_BIN") {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "BENCH_BRIDGE_BIN: no file {}", bin.display());
        return bin;
    }
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

async fn run_all(server: &Server, bridge_bin: &Path, n: u64) -> Vec<Row> {
    tributary_kafka::register();
    let kafka = tributary::connect(server.url()).await.unwrap();
    let mut rows = Vec::new();

    eprintln!("[local→local] bridge in process, memory:// → memory://");
    rows.push(local::local_to_local(n).await);

    // Every Kafka topic up front, so no replicator's clock includes creating one.
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
    create_log_append_topics(server.address(), &targets).await;
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
