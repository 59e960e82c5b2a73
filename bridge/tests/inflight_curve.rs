//! Issue 22's throughput cliff, measured as an operator saw it: the `tributary` daemon copying
//! the same Kafka backlog to `file://` with each pair of `batch.max_events` and `in_flight`,
//! beside `tributary consume` reading the same backlog in the same run (the source alone).
//! Figures only, no timed assertions; ignored by default, as it takes minutes:
//!
//! ```text
//! cargo build --release -p tributary-bridge --features kafka
//! TRIBUTARY_BIN=target/release/tributary cargo test -p tributary-bridge --features kafka \
//!     --test inflight_curve -- --ignored --nocapture
//! ```
//!
//! The in-process curve is part of `cargo bench --bench replication` too.

mod harness;

use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Daemon, http_get, metric, run, wait_until};
use tributary_testcontainers::{Peer, require, unique_name};

const EVENTS: usize = 100_000;
const KEYS: usize = 50;
const POINTS: &[(usize, usize)] = &[
    (20, 40),
    (100, 200),
    (100, 400),
    (200, 400),
    (500, 1000),
    (1000, 2000),
];

fn bin() -> String {
    std::env::var("TRIBUTARY_BIN").unwrap_or_else(|_| harness::BIN.to_owned())
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn in_flight_curve_kafka_to_file() {
    let Some(server) = require(Peer::Kafka) else {
        return;
    };
    let url = server.url().to_owned();
    let topic = unique_name("curve");
    let (code, err) = run(&["streams", &url, "create", &topic, "-p", "8"], &[], "");
    assert_eq!(code, Some(0), "{err}");
    let payload = "x".repeat(100);
    let lines: String = (0..EVENTS)
        .map(|i| format!("{{\"key\":\"k{}\",\"payload\":\"{payload}\"}}\n", i % KEYS))
        .collect();
    let (code, err) = run(&["produce", &url, &topic, "--format", "json"], &[], &lines);
    assert_eq!(code, Some(0), "{err}");

    let started = Instant::now();
    let out = Command::new(bin())
        .args(["consume", &url, &topic, "-g", &unique_name("alone"), "-n"])
        .arg(EVENTS.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = harness::wait_output(out, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alone = EVENTS as f64 / started.elapsed().as_secs_f64();

    let mut rows = Vec::new();
    for &(batch, in_flight) in POINTS {
        let dir = tempfile::tempdir().unwrap();
        let sink = format!("file://{}", dir.path().join("sink").display());
        let config = dir.path().join("bridge.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nlisten = \"127.0.0.1:0\"\n[[route]]\nname = \"c\"\nsource = {{ url = \"{url}\", stream = \"{topic}\", group = \"{}\", start = \"earliest\" }}\nsink = {{ url = \"{sink}\", stream = \"out\" }}\nbatch = {{ max_events = {batch} }}\nin_flight = {in_flight}\n",
                unique_name("curve")
            ),
        )
        .unwrap();
        let mut daemon = Daemon::start_bin(&bin(), &config, &[]);
        let addr = daemon.addr(Duration::from_secs(30));
        // From the first event copied, so the group join is not counted.
        let out = |addr: &str| {
            let (_, body) = http_get(addr, "/metrics");
            metric(&body, "tributary_bridge_events_out_total", "c").unwrap_or(0.0)
        };
        wait_until(Duration::from_secs(120), "the first event", || {
            (out(&addr) > 0.0).then_some(())
        });
        let (first, from) = (Instant::now(), out(&addr));
        wait_until(Duration::from_secs(600), "the whole backlog", || {
            (out(&addr) >= EVENTS as f64).then_some(())
        });
        let rate = (EVENTS as f64 - from) / first.elapsed().as_secs_f64();
        let (status, _, log) = daemon.terminate(Duration::from_secs(30));
        assert!(status.success(), "{log}");
        println!("batch {batch}, in_flight {in_flight}: {rate:.0} events/s");
        rows.push((batch, in_flight, rate));
    }
    println!(
        "\nIn-flight curve · tributary daemon, Kafka → file:// (fsync default) · {EVENTS} events of 100 B, {KEYS} keys, 8 partitions"
    );
    println!(
        "baseline in the same run: `tributary consume -g` alone {alone:.0} events/s (including its start and group join)"
    );
    println!("| batch.max_events | in_flight | events/s | of consume alone |");
    println!("|---|---|---|---|");
    for (batch, in_flight, rate) in rows {
        println!(
            "| {batch} | {in_flight} | {rate:.0} | {:.0}% |",
            100.0 * rate / alone
        );
    }
}
