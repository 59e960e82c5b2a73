//! The daemon from a configuration file: routes run, the operations endpoint answers,
//! `validate` names bad options, and SIGTERM drains and exits 0.

mod common;
mod harness;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TimedLines, lines_within, wait_child, wait_until_blocking};
use harness::{BIN, http_get, validate};

#[test]
fn validate_names_every_bad_option() {
    let dir = tempfile::tempdir().unwrap();
    // The same mistakes in TOML and in YAML, reported with the same paths.
    for (name, contents) in [
        (
            "bad.toml",
            "[[route]]\nname = \"r\"\nsource = { url = \"memory://\", stream = \"in\" }\nsink = { url = \"kafka://${NO_SUCH_VAR}\", stream = \"out\" }\nbatch = { max_events = 0 }\nretry = { attempts = 0 }\n",
        ),
        (
            "bad.yaml",
            "route:\n  - name: r\n    source: { url: 'memory://', stream: in }\n    sink: { url: 'kafka://${NO_SUCH_VAR}', stream: out }\n    batch: { max_events: 0 }\n    retry: { attempts: 0 }\n",
        ),
    ] {
        let (code, stderr) = validate(dir.path(), name, contents, &[]);
        assert_eq!(code, Some(2), "{name}: a configuration error exits 2");
        for needle in [
            "route[0].sink.url",
            "NO_SUCH_VAR",
            "route[0].batch.max_events",
            "route[0].retry.attempts",
        ] {
            assert!(
                stderr.contains(needle),
                "{name}: missing {needle}: {stderr}"
            );
        }
    }
    let (code, stderr) = validate(
        dir.path(),
        "good.yml",
        "route:\n  - name: r\n    source: { url: 'memory://', stream: in }\n    sink: { url: 'memory://', stream: out }\n",
        &[],
    );
    assert_eq!(code, Some(0), "a good YAML file validates: {stderr}");
}

#[test]
fn the_daemon_replicates_reports_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let source = format!("file://{}", dir.path().join("source").display());
    let sink = format!("file://{}", dir.path().join("sink").display());
    // Events written before the daemon starts; a second batch while it runs.
    let produce = |from: usize, to: usize| {
        produce_orders(&source, "orders", from..to, &["--key", "customer"]);
    };
    produce(0, 500);

    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"10s\"\n\n[[route]]\nname = \"orders\"\nsource = {{ url = \"{source}\", stream = \"orders\", group = \"bridge\" }}\nsink = {{ url = \"{sink}\", stream = \"orders-copy\" }}\nbatch = {{ max_events = 100 }}\n"
        ),
    )
    .unwrap();
    let validated = Command::new(BIN)
        .args(["bridge", "validate"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        validated.status.success(),
        "{}",
        String::from_utf8_lossy(&validated.stderr)
    );
    assert!(String::from_utf8_lossy(&validated.stdout).contains("ok, 1 route(s)"));

    let (mut daemon, mut stderr, addr) = start_daemon(&config);
    wait_for_metric(&addr, 500);
    assert_eq!(http_get(&addr, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(http_get(&addr, "/readyz"), (200, "ready\n".to_string()));
    assert_eq!(http_get(&addr, "/nope").0, 404);
    let rest = stop(&mut daemon, &mut stderr);
    assert!(
        rest.contains("stopped cleanly; orders: 500 replicated"),
        "{rest}"
    );

    // A restart resumes from the committed position: only the new events are copied.
    produce(500, 600);
    let (mut daemon, mut stderr, addr) = start_daemon(&config);
    wait_for_metric(&addr, 100);
    let rest = stop(&mut daemon, &mut stderr);
    assert!(
        rest.contains("stopped cleanly; orders: 100 replicated"),
        "{rest}"
    );

    let out = Command::new(BIN)
        .args([
            "consume",
            &sink,
            "orders-copy",
            "--group",
            "check",
            "--from",
            "earliest",
            "-n",
            "600",
            "--idle-exit",
            "2s",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        lines.len(),
        600,
        "every event exactly once after a clean stop and a restart"
    );
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.contains(&format!("\"order-{i}\"")),
            "event {i} out of order: {line}"
        );
    }
    assert!(lines[0].contains("tributary-origin"), "{}", lines[0]);
}

/// The sink directory is held by another process when the daemon starts, so it opens
/// read-only and the route cannot write: the daemon stays up, reports the route unhealthy and
/// not ready, and once the other process exits it connects afresh and replicates everything.
#[test]
fn a_route_recovers_when_its_sink_becomes_writable() {
    let dir = tempfile::tempdir().unwrap();
    let source = format!("file://{}", dir.path().join("source").display());
    let sink_dir = dir.path().join("sink");
    let sink = format!("file://{}", sink_dir.display());
    produce_orders(&source, "orders", 0..200, &[]);
    produce_orders(&sink, "orders-copy", 0..1, &[]);
    // A writer that waits for input holds the sink directory's writer lock.
    let mut holder = Command::new(BIN)
        .args(["produce", &sink, "orders-copy"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = sink_dir.join("LOCK");
    let holder_id = format!(
        "pid {} on {}",
        holder.id(),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim()
    );
    wait_until_blocking(
        "the holder takes the lock",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || match std::fs::read_to_string(&lock).unwrap_or_default() {
            owner if owner == holder_id => Ok(()),
            owner => Err(format!("LOCK says {owner:?}")),
        },
    );

    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"10s\"\nlog_format = \"json\"\n\n[[route]]\nname = \"orders\"\nsource = {{ url = \"{source}\", stream = \"orders\" }}\nsink = {{ url = \"{sink}\", stream = \"orders-copy\" }}\nretry = {{ max_backoff = \"500ms\" }}\n"
        ),
    )
    .unwrap();
    let (mut daemon, mut stderr, addr) = start_daemon(&config);
    let unhealthy = wait_until_blocking(
        "/healthz reports the route failing",
        Duration::from_secs(10),
        Duration::from_millis(50),
        // "connecting" comes first (routes connect in the background); wait for the failure.
        || match http_get(&addr, "/healthz") {
            (503, body) if !body.contains("connecting") => Ok(body),
            (status, body) => Err(format!("{status} {body}")),
        },
    );
    assert!(unhealthy.starts_with("route orders:"), "{unhealthy}");
    assert_eq!(http_get(&addr, "/readyz").0, 503);
    println!(
        "while the sink was held elsewhere: /healthz 503 {}",
        unhealthy.trim()
    );

    holder.kill().unwrap();
    holder.wait().unwrap();
    wait_for_metric(&addr, 200);
    assert_eq!(http_get(&addr, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(http_get(&addr, "/readyz").0, 200);
    let rest = stop(&mut daemon, &mut stderr);
    assert!(
        rest.contains("stopped cleanly; orders: 200 replicated"),
        "{rest}"
    );
    // `log_format = "json"`: the failures were logged as JSON lines. The first can come
    // before the line with the endpoint's address (routes connect in the background), so the
    // whole log is searched.
    let log = stderr.read_so_far();
    let failure_log = log
        .lines()
        .find(|l| l.contains("route failed"))
        .unwrap_or_else(|| panic!("no failure logged: {log}"));
    let parsed: serde_json::Value = serde_json::from_str(failure_log).expect("a JSON log line");
    assert_eq!(parsed["level"], "ERROR", "{failure_log}");
}

/// `order-<i>` for each `i` in `range`, through `tributary produce`.
fn produce_orders(url: &str, stream: &str, range: std::ops::Range<usize>, extra: &[&str]) {
    let lines: String = range.map(|i| format!("order-{i}\n")).collect();
    let mut child = Command::new(BIN)
        .args(["produce", url, stream])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

fn start_daemon(config: &std::path::Path) -> (std::process::Child, TimedLines, String) {
    let mut daemon = Command::new(BIN)
        .args(["bridge", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = lines_within(
        daemon.stderr.take().unwrap(),
        "the daemon's stderr",
        Duration::from_secs(30),
    );
    let addr = stderr.find(|line| {
        line.trim()
            .strip_prefix("operations endpoint: http://")
            .map(|rest| rest.split('/').next().unwrap().to_string())
    });
    (daemon, stderr, addr)
}

/// A counter of route `orders`, 0 while the page does not show it yet.
fn events_metric(body: &str, name: &str) -> u64 {
    harness::metric(body, name, "orders").map_or(0, |v| v as u64)
}

fn wait_for_metric(addr: &str, events: u64) {
    let body = wait_until_blocking(
        &format!("{events} events replicated and the lag at 0"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let (status, body) = http_get(addr, "/metrics");
            assert_eq!(status, 200);
            // The lag gauge is published every second; once everything is out it must read 0.
            let lag_is_zero = body.lines().any(|l| {
                l.starts_with("tributary_bridge_source_lag_events{")
                    && l.contains("route=\"orders\"")
                    && l.ends_with(" 0")
            });
            if events_metric(&body, "tributary_bridge_events_out_total") >= events && lag_is_zero {
                Ok(body)
            } else {
                Err(body)
            }
        },
    );
    assert!(
        events_metric(&body, "tributary_bridge_events_in_total") >= events,
        "{body}"
    );
    assert!(body.contains("tributary_bridge_batch_seconds"), "{body}");
}

/// SIGTERM, then the daemon must drain and exit 0 within its 10 s deadline.
fn stop(daemon: &mut std::process::Child, stderr: &mut TimedLines) -> String {
    // SAFETY: kill(2) on the child we spawned.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let stopped = Instant::now();
    let status = wait_child(daemon, "the daemon after SIGTERM", Duration::from_secs(30));
    stderr.extend(Duration::from_secs(10));
    let rest = stderr.rest();
    assert!(status.success(), "exit {status:?}: {rest}");
    assert!(stopped.elapsed() < Duration::from_secs(10));
    rest
}
