//! `tributary conformance URL`: the suite's table for any URL, and an exit status that says
//! whether anything failed.

use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn tributary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_file_url_prints_its_table_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let (code, out, err) = run(&["conformance", &url, "--scale", "10000"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.starts_with(&format!("conformance: {url}\n")), "{out}");
    for row in [
        "round_trip",
        "server_restart",
        "throughput",
        "10000 events: produce",
        "nack_order",
    ] {
        assert!(out.contains(row), "no `{row}` in\n{out}");
    }
    let rows = out
        .lines()
        .filter(|l| l.contains(" passed ") || l.contains(" not applicable "))
        .count();
    assert_eq!(rows, 28, "one row per case:\n{out}");
    assert!(
        out.contains(&format!("{url}: 27 passed, 0 failed, 1 not applicable")),
        "{out}"
    );
}

#[test]
fn a_failed_case_makes_the_exit_status_one() {
    // A bound no case can meet: the case fails, the run reports it and exits 1.
    let (code, out, err) = run(&[
        "conformance",
        "memory://",
        "--only",
        "round_trip,ack",
        "--case-timeout",
        "1ms",
    ]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("FAILED"), "{out}");
    assert!(out.contains("did not finish within 1ms"), "{out}");
    assert!(
        err.contains("2 of 2 cases failed: round_trip, ack"),
        "{err}"
    );
}

#[test]
fn broken_urls_and_options_exit_non_zero_with_the_reason() {
    let (code, _, err) = run(&["conformance", "memory://?no_such_option=1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no_such_option"), "{err}");

    let (code, _, err) = run(&["conformance", "nats://127.0.0.1:4222"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown URL scheme `nats://`"), "{err}");

    let (code, _, err) = run(&["conformance", "file://relative/dir"]);
    assert_ne!(code, 0, "{err}");

    let (code, _, err) = run(&["conformance", "memory://", "--only", "round_trips"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`round_trips` is not a case"), "{err}");

    let (code, _, err) = run(&["conformance"]);
    assert_ne!(code, 0, "a URL is required: {err}");
}

#[test]
fn list_prints_every_case_with_its_contract() {
    let (code, out, err) = run(&["conformance", "--list"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 28, "{out}");
    assert!(
        out.lines().any(|l| l.contains("nack_order")
            && l.contains("delivery")
            && l.contains("e0 and e1 come back in that order before e3")),
        "{out}"
    );
}
