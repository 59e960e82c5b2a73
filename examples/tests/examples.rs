//! Runs every example program, as a user would, against `memory://`, `file://` and (for the
//! backend switch) real Kafka and Pub/Sub servers, and checks what each prints. So the
//! examples compile and work in CI, and the README's example is the program tested here.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tributary_testcontainers::{Peer, require_peer};

/// Longest any one run may take; the slowest (100,000 events on `file://`) needs a few seconds.
const DEADLINE: Duration = Duration::from_secs(120);

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs an example binary to completion, killing it if it outlives the deadline.
fn run(binary: &str, args: &[&str]) -> Run {
    run_with_env(binary, args, ("EXAMPLES_UNUSED", ""))
}

fn run_with_env(binary: &str, args: &[&str], env: (&str, &str)) -> Run {
    let child = Command::new(binary)
        .args(args)
        .env(env.0, env.1)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {binary}: {e}"));
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = match finished.recv_timeout(DEADLINE) {
        Ok(output) => output.expect("wait for the example"),
        Err(_) => {
            // SAFETY: kill(2) on our child's pid, not yet reaped: the waiting thread is still
            // blocked on it, so the pid cannot have been reused.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{binary} {args:?} ran longer than {DEADLINE:?}");
        }
    };
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[track_caller]
fn succeeded(run: &Run, what: &str) {
    assert_eq!(
        run.code, 0,
        "{what} exited with {}\nstdout:\n{}\nstderr:\n{}",
        run.code, run.stdout, run.stderr
    );
}

fn file_url(dir: &tempfile::TempDir) -> String {
    format!("file://{}", dir.path().display())
}

#[test]
fn bulk_produce_reports_three_rates_and_stores_every_event() {
    let bin = env!("CARGO_BIN_EXE_bulk_produce");
    let memory = run(bin, &["memory://", "--events", "20000"]);
    succeeded(&memory, "bulk_produce on memory://");
    for how in ["one awaited send", "concurrent sends", "send_batch"] {
        assert!(memory.stdout.contains(how), "{}", memory.stdout);
    }
    assert!(
        memory.stdout.contains("40200 events in `bulk`"),
        "{}",
        memory.stdout
    );

    let dir = tempfile::tempdir().unwrap();
    let file = run(bin, &[&file_url(&dir), "--events", "20000"]);
    succeeded(&file, "bulk_produce on file://");
    // What the program says it stored is on disk: the partitions' next offsets add up.
    let stored = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let backend = tributary::connect(&file_url(&dir)).await.unwrap();
        let info = backend.describe_stream("bulk").await.unwrap();
        backend.close().await.unwrap();
        info.partitions
            .iter()
            .map(|p| p.next.as_ref().and_then(|n| n.as_offset()).unwrap_or(0))
            .sum::<u64>()
    });
    assert_eq!(stored, 40_200, "{}", file.stdout);
}

fn processed(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("processed "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn consume_resume_continues_across_process_restarts_on_file() {
    let bin = env!("CARGO_BIN_EXE_consume_resume");
    let dir = tempfile::tempdir().unwrap();
    let url = file_url(&dir);
    let first = run(bin, &[&url, "--seed", "1000", "--max", "600"]);
    succeeded(&first, "first run");
    let second = run(bin, &[&url]);
    succeeded(&second, "second run");
    let third = run(bin, &[&url]);
    succeeded(&third, "third run");

    let (first, second, third) = (processed(&first), processed(&second), processed(&third));
    assert_eq!(first.len(), 600);
    assert_eq!(
        second.len(),
        400,
        "the second run should take exactly the rest"
    );
    assert!(third.is_empty(), "a third run found {third:?}");
    let all: BTreeSet<&String> = first.iter().chain(&second).collect();
    let want: BTreeSet<String> = (0..1000).map(|i| format!("order-{i}")).collect();
    assert_eq!(all, want.iter().collect(), "every order processed once");
}

#[test]
fn consume_resume_runs_in_memory() {
    let run = run(
        env!("CARGO_BIN_EXE_consume_resume"),
        &["memory://", "--seed", "100"],
    );
    succeeded(&run, "consume_resume on memory://");
    assert_eq!(processed(&run).len(), 100, "{}", run.stdout);
}

#[test]
fn nack_retry_retries_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    for url in ["memory://".to_owned(), file_url(&dir)] {
        let run = run(env!("CARGO_BIN_EXE_nack_retry"), &[&url]);
        succeeded(&run, &format!("nack_retry on {url}"));
        assert!(
            run.stdout
                .contains("49 payments settled (10 after a retry), 1 dead-lettered"),
            "{url}:\n{}",
            run.stdout
        );
        assert!(
            run.stdout
                .contains("payment-13: dead-lettered after 3 attempts (account closed)"),
            "{}",
            run.stdout
        );
    }
}

fn switch_backend(url: &str) {
    let run = run(env!("CARGO_BIN_EXE_switch_backend"), &[url]);
    succeeded(&run, &format!("switch_backend on {url}"));
    assert!(
        run.stdout.contains("received and acked 100 events"),
        "{url}:\n{}",
        run.stdout
    );
}

#[test]
fn switch_backend_runs_on_memory_and_file() {
    switch_backend("memory://");
    let dir = tempfile::tempdir().unwrap();
    switch_backend(&file_url(&dir));
}

#[test]
fn switch_backend_runs_on_kafka() {
    let kafka = require_peer!(Peer::Kafka);
    switch_backend(kafka.url());
}

#[test]
fn switch_backend_runs_on_pubsub() {
    let pubsub = require_peer!(Peer::PubSub);
    switch_backend(pubsub.url());
}

/// Issue 21: the README's example, run twice in a row, failed 2 times in 3 because the first
/// run's group outlived it. Ten runs back to back on one directory must all succeed, each
/// taking the next event.
#[test]
fn readme_example_runs_ten_times_back_to_back_on_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = file_url(&dir);
    for i in 1..=10 {
        let run = run(env!("CARGO_BIN_EXE_readme"), &[&url]);
        succeeded(&run, &format!("run {i} of 10"));
    }
}

/// The README's example as its issue found it, ending without `close()`: the consumer is
/// dropped and the process ends normally. That must hand the group on at once too, so ten runs
/// back to back succeed. Each run is this test binary again, running only `readme_child`.
#[test]
fn readme_example_without_close_runs_ten_times_back_to_back_on_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = file_url(&dir);
    let me = std::env::current_exe().unwrap();
    let me = me.to_str().unwrap();
    for i in 1..=10 {
        let run = run_with_env(
            me,
            &[
                "readme_child",
                "--exact",
                "--nocapture",
                "--include-ignored",
            ],
            ("EXAMPLES_README_CHILD_URL", &url),
        );
        succeeded(&run, &format!("run {i} of 10 without close"));
        assert!(run.stdout.contains("1 passed"), "{}", run.stdout);
    }
}

/// The child of the test above; does nothing unless started by it.
#[test]
#[ignore = "run by readme_example_without_close_runs_ten_times_back_to_back_on_file"]
fn readme_child() {
    let Ok(url) = std::env::var("EXAMPLES_README_CHILD_URL") else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(async {
            use tributary::{ConsumerOptions, Event, StartPosition};
            let backend = tributary::connect(&url).await?;
            let producer = backend.producer("orders").await?;
            producer.send(Event::new("one more")).await?;
            let consumer = backend
                .consumer(
                    "orders",
                    ConsumerOptions::new("billing").start(StartPosition::Earliest),
                )
                .await?;
            let delivery = consumer.receive().await?;
            delivery.ack();
            Ok::<(), tributary::Error>(())
        })
        .expect("the README's example without close()");
}

/// The example program is the README's example, so the test above tests what readers copy.
#[test]
fn readme_example_is_the_program_tested() {
    let readme = include_str!("../../README.md");
    let program = include_str!("../src/bin/readme.rs");
    let block = readme
        .split("```rust\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README has a Rust example");
    let body = program
        .split("// README begin\n")
        .nth(1)
        .and_then(|rest| rest.split("    // README end").next())
        .expect("markers in readme.rs");
    // Compared without layout: the program is indented one level deeper, so rustfmt wraps
    // some of its lines where the README's fit.
    let normalise = |text: &str| -> String {
        text.lines()
            .filter(|l| !l.trim_start().starts_with("use "))
            .collect::<String>()
            .replace(r#"connect("file:///var/lib/app")"#, "connect(&url)")
            .split_whitespace()
            .collect::<String>()
            .replace(",)", ")")
    };
    assert_eq!(
        normalise(block),
        normalise(body),
        "README's Rust example and examples/src/bin/readme.rs differ"
    );
}

/// The ledger's view after its first `events` commands, replayed here independently of the
/// example: the line `event_sourcing` must print.
fn ledger_view(events: u64) -> String {
    let mut balances = std::collections::BTreeMap::<String, u64>::new();
    let mut bounced = 0;
    for i in 0..events {
        let balance = balances.entry(format!("acct-{}", i % 7)).or_default();
        if i % 3 == 2 {
            let amount = 10 + i % 90;
            if *balance >= amount {
                *balance -= amount;
            } else {
                bounced += 1;
            }
        } else {
            *balance += 1 + i % 50;
        }
    }
    let balances: Vec<String> = balances.iter().map(|(a, b)| format!("{a}={b}")).collect();
    format!(
        "view after {events} events: {} bounced={bounced}",
        balances.join(" ")
    )
}

/// Two processes on one stream: the first imports 3,000 events, rebuilds, follows 400 live
/// ones; the second rebuilds all 3,400 from the start (the same view the first ended with)
/// and follows 250 more.
fn event_sourcing(url: &str, stream: &str) {
    let bin = env!("CARGO_BIN_EXE_event_sourcing");
    let first = run(
        bin,
        &[url, "--stream", stream, "--seed", "3000", "--live", "400"],
    );
    succeeded(&first, &format!("event_sourcing on {url}, first run"));
    let lines: Vec<&str> = first.stdout.lines().collect();
    assert!(
        lines[0].starts_with("rebuilt from 3000 events"),
        "{}",
        first.stdout
    );
    assert_eq!(lines[1], ledger_view(3000), "{}", first.stdout);
    assert_eq!(lines[2], "followed 400 live events");
    assert_eq!(lines[3], ledger_view(3400), "{}", first.stdout);

    let second = run(bin, &[url, "--stream", stream, "--live", "250"]);
    succeeded(&second, &format!("event_sourcing on {url}, second run"));
    let lines: Vec<&str> = second.stdout.lines().collect();
    assert!(
        lines[0].starts_with("rebuilt from 3400 events"),
        "{}",
        second.stdout
    );
    assert_eq!(lines[1], ledger_view(3400), "{}", second.stdout);
    assert_eq!(lines[3], ledger_view(3650), "{}", second.stdout);
}

#[test]
fn event_sourcing_rebuilds_and_follows_on_file() {
    let dir = tempfile::tempdir().unwrap();
    event_sourcing(&file_url(&dir), "ledger");
}

#[test]
fn event_sourcing_rebuilds_and_follows_on_kafka() {
    let kafka = require_peer!(Peer::Kafka);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    event_sourcing(kafka.url(), &format!("ledger-{millis}"));
}
