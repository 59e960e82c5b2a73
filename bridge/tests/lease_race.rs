//! Issue 22 defect 1: a `file://` source under steady load lost its group lease to itself (the
//! periodic flusher and the commit path renewed from stale copies), and another process then
//! read the same group's events. Here: small batches and a short lease, so commits and
//! renewals race many times over; no lease is lost, and a second process in the group gets
//! nothing while the daemon owns the only partition.

mod harness;

use std::time::{Duration, Instant};

use harness::{Daemon, http_get, metric, run, wait_until};

#[test]
fn a_file_source_keeps_its_lease_under_load_and_a_second_member_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        "file://{}?partitions=1&group_lease=1s",
        dir.path().join("src").display()
    );
    let sink = format!("file://{}", dir.path().join("sink").display());
    let n = 200_000;
    let lines: String = (0..n).map(|i| format!("event-{i}\n")).collect();
    assert_eq!(run(&["produce", &source, "in"], &[], &lines).0, Some(0));
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"10s\"\n[[route]]\nname = \"r\"\nsource = {{ url = \"{source}\", stream = \"in\", group = \"g\" }}\nsink = {{ url = \"{sink}\", stream = \"out\" }}\nbatch = {{ max_events = 20 }}\nin_flight = 40\n"
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, &[]);
    let addr = daemon.addr(Duration::from_secs(30));
    let out = |addr: &str| {
        let (_, body) = http_get(addr, "/metrics");
        metric(&body, "tributary_bridge_events_out_total", "r").unwrap_or(0.0)
    };
    wait_until(Duration::from_secs(60), "replication under way", || {
        (out(&addr) > 0.0).then_some(())
    });
    // Many lease periods of commits and renewals under load.
    let started = Instant::now();
    wait_until(Duration::from_secs(30), "eight lease periods", || {
        (started.elapsed() >= Duration::from_secs(8)).then_some(())
    });
    let copied = out(&addr);
    assert!(
        copied < n as f64,
        "the backlog ran out before the second member tried ({copied}); make it larger"
    );
    let (code, err) = run(
        &[
            "consume",
            &source,
            "in",
            "-g",
            "g",
            "-n",
            "100",
            "--idle-exit",
            "3s",
        ],
        &[],
        "",
    );
    println!("after {copied} events copied, a second member of the group: {err}");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("consumed 0 events"), "{err}");
    let log = daemon.stderr();
    assert!(!log.contains("taken over"), "{log}");
    let (status, _, log) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{log}");
}
