//! The command line end to end: a 100k JSON round trip through `file://`, and a matrix of bad
//! input that must each give one clear error and a non-zero exit, never a panic.

mod cli_support;

use cli_support::{bin, numbered, run, run_bytes, url};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tributary_bridge::json::event_from_json;

#[test]
fn hundred_thousand_json_events_round_trip_with_keys_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let n = 100_000;
    let mut input = String::new();
    for i in 0..n {
        let line = match i % 4 {
            0 => format!(
                r#"{{"key":"user-{}","payload":"order {i}","headers":{{"trace":"t{i}","kind":"plain"}},"timestamp":{}}}"#,
                i % 97,
                1_700_000_000_000i64 + i as i64
            ),
            1 => format!(
                r#"{{"key_b64":"/wA=","payload":"binary key {i}","headers":[["dup","1"],["dup","2"],["bin",{{"b64":"AP8="}}]]}}"#
            ),
            2 => format!(r#"{{"payload":"no key {i}"}}"#),
            _ => format!(
                r#"{{"key":"ключ-{}","payload_b64":"{}","headers":{{"ünï":"cödé"}}}}"#,
                i % 5,
                base64_of(&[&[0xffu8, 0xfe][..], &(i as u32).to_be_bytes()].concat())
            ),
        };
        input.push_str(&line);
        input.push('\n');
    }
    let (code, _, err) = run(
        &["produce", &url, "rt", "--format", "json"],
        input.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("produced {n} events")), "{err}");
    let (code, out, err) = run(
        &[
            "consume",
            &url,
            "rt",
            "--format",
            "json",
            "-n",
            &n.to_string(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    let mut expected: Vec<_> = input
        .lines()
        .enumerate()
        .map(|(i, l)| event_from_json(l, i + 1).unwrap())
        .collect();
    let mut got: Vec<_> = out
        .lines()
        .enumerate()
        .map(|(i, l)| event_from_json(l, i + 1).unwrap())
        .collect();
    assert_eq!(got.len(), n);
    let order = |e: &tributary::Event| e.payload.clone();
    expected.sort_by_key(order);
    got.sort_by_key(order);
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g, e);
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn bad_input_gives_one_clear_error_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let mut cases: Vec<(Vec<String>, &[u8], &str)> = vec![
        (
            vec!["produce".into(), "nats://x".into(), "s".into()],
            b"a\n",
            "unknown URL scheme",
        ),
        (
            // A backend the tests' binary is built without (it has every one that exists).
            vec!["produce".into(), "pulsar://h:6650".into(), "s".into()],
            b"a\n",
            "tributary-pulsar",
        ),
        (
            vec!["consume".into(), "file://relative/x".into(), "s".into()],
            b"",
            "three slashes",
        ),
        (
            vec!["consume".into(), "".into(), "s".into()],
            b"",
            "empty URL",
        ),
        (
            vec!["consume".into(), "not a url".into(), "s".into()],
            b"",
            "is not a URL",
        ),
        (
            vec![
                "consume".into(),
                "memory://?partitions=zero".into(),
                "s".into(),
            ],
            b"",
            "option `partitions`",
        ),
        (
            vec!["consume".into(), "memory://?colour=blue".into(), "s".into()],
            b"",
            "unknown option `colour`",
        ),
        (
            vec![
                "consume".into(),
                url.clone(),
                "s".into(),
                "--from".into(),
                "2024-99-01T00:00:00Z".into(),
            ],
            b"",
            "RFC 3339",
        ),
        (
            vec![
                "consume".into(),
                url.clone(),
                "s".into(),
                "--from".into(),
                "@soon".into(),
            ],
            b"",
            "epoch milliseconds",
        ),
        (
            vec!["consume".into(), url.clone(), "bad/name".into()],
            b"",
            "invalid stream name",
        ),
        (
            vec![
                "consume".into(),
                url.clone(),
                "s".into(),
                "-n".into(),
                "many".into(),
            ],
            b"",
            "invalid value 'many'",
        ),
        (
            vec![
                "produce".into(),
                url.clone(),
                "s".into(),
                "--format".into(),
                "json".into(),
            ],
            b"{\"payload\":\"ok\"}\n{oops\n",
            "line 2: not valid JSON",
        ),
        (
            vec![
                "produce".into(),
                url.clone(),
                "s".into(),
                "--format".into(),
                "json".into(),
            ],
            b"{\"paylaod\":\"x\"}\n",
            "unknown field `paylaod`",
        ),
        (
            vec![
                "produce".into(),
                url.clone(),
                "s".into(),
                "--format".into(),
                "json".into(),
            ],
            b"{\"payload\":\"ok\"}\n{\"payload\":12}\n",
            "line 2: `payload` must be a string, not a number",
        ),
        (
            vec![
                "produce".into(),
                url.clone(),
                "s".into(),
                "--format".into(),
                "json".into(),
            ],
            b"{\"payload\":\"ok\"}\n{\"payload\":\"\xff\"}\n",
            "line 2: not valid UTF-8",
        ),
        (
            vec!["consume".into(), "file:rel/dir".into(), "s".into()],
            b"",
            "`file:rel/dir`",
        ),
        (
            vec![
                "produce".into(),
                url.clone(),
                "s".into(),
                "--batch".into(),
                "0".into(),
            ],
            b"",
            "--batch",
        ),
        (
            vec![
                "streams".into(),
                url.clone(),
                "create".into(),
                "x".into(),
                "--partitions".into(),
                "0".into(),
            ],
            b"",
            "out of range",
        ),
        (
            vec![
                "streams".into(),
                url.clone(),
                "describe".into(),
                "nope".into(),
            ],
            b"",
            "does not exist",
        ),
        (
            vec![
                "streams".into(),
                url.clone(),
                "delete".into(),
                "nope".into(),
            ],
            b"",
            "does not exist",
        ),
        (vec!["frobnicate".into()], b"", "unrecognized subcommand"),
        (vec!["produce".into()], b"", "required arguments"),
    ];
    if cfg!(feature = "kafka") {
        // This binary has Kafka: `kafka://` is no longer a scheme it lacks.
        cases.retain(|(_, _, needle)| *needle != "tributary-kafka");
    }
    for (args, stdin, needle) in cases {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = run(&argv, stdin);
        assert_ne!(code, 0, "{argv:?} succeeded");
        assert!(!err.contains("panicked"), "{argv:?} panicked: {err}");
        assert!(
            err.contains(needle),
            "{argv:?}: expected `{needle}` in: {err}"
        );
        let first = err.lines().find(|l| l.starts_with("error")).unwrap_or("");
        assert!(!first.is_empty(), "{argv:?}: no `error` line in: {err}");
    }
}

#[test]
fn corrupt_stream_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let (code, _, err) = run(&["produce", &url, "orders"], b"one\ntwo\n");
    assert_eq!(code, 0, "{err}");
    // Damaged metadata.
    let meta = dir.path().join("streams/orders/stream.json");
    std::fs::write(&meta, b"{\"partitions\": \"four\"}").unwrap();
    let (code, _, err) = run(&["consume", &url, "orders", "-n", "1"], b"");
    assert_ne!(code, 0);
    assert!(
        err.contains("stream.json") && err.contains("partitions"),
        "{err}"
    );
    std::fs::write(&meta, b"not json at all").unwrap();
    let (code, _, err) = run(&["streams", &url, "describe", "orders"], b"");
    assert_ne!(code, 0);
    assert!(err.contains("not valid JSON"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A stray file in a partition directory.
    std::fs::write(
        &meta,
        b"{\"name\":\"orders\",\"partitions\":4,\"format\":1}",
    )
    .unwrap();
    std::fs::write(dir.path().join("streams/orders/0/garbage.log"), b"x").unwrap();
    let (code, _, err) = run(&["consume", &url, "orders", "-n", "1"], b"");
    assert_ne!(code, 0);
    assert!(err.contains("garbage.log"), "{err}");
}

#[test]
fn a_second_process_reads_and_tails_while_the_first_writes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let mut writer = Command::new(bin())
        .args(["produce", &url, "tail", "--receipts"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = writer.stdin.take().unwrap();
    let mut receipts = BufReader::new(writer.stdout.take().unwrap()).lines();
    for i in 0..100 {
        writeln!(stdin, "first-{i}").unwrap();
    }
    stdin.flush().unwrap();
    for _ in 0..100 {
        receipts.next().unwrap().unwrap();
    }
    // The writer holds the directory lock; this process opens it read-only and tails it.
    let mut reader = Command::new(bin())
        .args(["consume", &url, "tail", "-n", "200"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines_out = BufReader::new(reader.stdout.take().unwrap()).lines();
    let mut lines: Vec<String> = (0..100)
        .map(|_| lines_out.next().unwrap().unwrap())
        .collect();
    // Only now, with the reader caught up and waiting, does the writer go on.
    for i in 0..100 {
        writeln!(stdin, "second-{i}").unwrap();
    }
    drop(stdin);
    assert!(writer.wait().unwrap().success());
    lines.extend(lines_out.map(Result::unwrap));
    let status = reader.wait().unwrap();
    assert!(status.success());
    lines.sort();
    let mut expected: Vec<String> = (0..100)
        .flat_map(|i| [format!("first-{i}"), format!("second-{i}")])
        .collect();
    expected.sort();
    assert_eq!(lines, expected);
}

/// Issue 17 (1): `consume -g` acks an event only once its line reached stdout. A reader that
/// stops reading, then a SIGKILL: every event is either in what the reader got or delivered
/// again to the group.
#[test]
fn a_killed_group_consumer_loses_nothing_it_did_not_print() {
    let dir = tempfile::tempdir().unwrap();
    let u = url(dir.path(), "partitions=1&group_lease=200ms");
    let n = 50_000;
    let (code, _, err) = run(&["produce", &u, "s"], &numbered("e", n));
    assert_eq!(code, 0, "{err}");
    let mut consumer = Command::new(bin())
        .args(["consume", &u, "s", "-g", "G"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(consumer.stdout.take().unwrap());
    let mut printed = Vec::new();
    for _ in 0..1000 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        printed.push(line.trim_end().to_owned());
    }
    // The reader stalls; the consumer fills the pipe and its buffer and blocks. Once its
    // group's commit stopped moving (commits run every 200 ms), it is killed.
    let checkpoint = dir.path().join("checkpoints");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut unchanged) = (0, 0);
    while unchanged < 4 {
        assert!(
            Instant::now() < deadline,
            "the group's commit never settled"
        );
        std::thread::sleep(Duration::from_millis(250));
        let now = committed(&checkpoint);
        unchanged = if now >= 1000 && now == last {
            unchanged + 1
        } else {
            0
        };
        last = now;
    }
    consumer.kill().unwrap();
    consumer.wait().unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    printed.extend(rest.lines().map(str::to_owned));

    // The killed process's group lease (200 ms) must lapse before another takes the group.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (out, err) = loop {
        let (code, out, err) = run(&["consume", &u, "s", "-g", "G", "--idle-exit", "3s"], b"");
        if code == 0 {
            break (out, err);
        }
        assert!(
            err.contains("another process") && Instant::now() < deadline,
            "{err}"
        );
    };
    let again: Vec<&str> = out.lines().collect();
    let first_again: usize = again[0].trim_start_matches('e').parse().unwrap();
    assert!(
        first_again <= printed.len(),
        "events {}..{first_again} were committed but never printed",
        printed.len()
    );
    assert_eq!(printed.len().max(first_again + again.len()), n);
    assert!(
        err.contains(&format!("consumed {} events", again.len())),
        "{err}"
    );
}

/// The group's committed position on partition 0, read through the checkpoint store.
fn committed(checkpoints: &std::path::Path) -> u64 {
    use tributary::backend::checkpoint::{Checkpoint, CheckpointStore, FileCheckpointStore};
    let store = FileCheckpointStore::open(checkpoints).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let saved = runtime
        .block_on(store.checkpoints("G", "s"))
        .unwrap_or_default();
    match saved.get(&tributary::PartitionId::from(0u32)) {
        Some(Checkpoint::Processed(p)) => p.as_offset().unwrap_or(0),
        _ => 0,
    }
}

/// Issue 17 (2): a reader of a directory never holds its writer lock, so a writer starts
/// while it reads, and the reader sees what the writer adds.
#[test]
fn readers_never_block_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let u = url(dir.path(), "");
    let (code, _, err) = run(&["produce", &u, "s"], b"a\n");
    assert_eq!(code, 0, "{err}");
    let mut reader = Command::new(bin())
        .args(["consume", &u, "s", "--idle-exit", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(reader.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "a");
    let (code, _, err) = run(&["streams", &u, "describe", "s"], b"");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["produce", &u, "s"], b"b\n");
    assert_eq!(code, 0, "a reader blocked the writer: {err}");
    assert_eq!(lines.next().unwrap().unwrap(), "b");
    reader.kill().unwrap();
    reader.wait().unwrap();
}

/// Issue 17 (13): the error names the line that is wrong, not the last line of its batch.
#[test]
fn produce_names_the_line_of_a_too_large_event() {
    let dir = tempfile::tempdir().unwrap();
    let u = url(dir.path(), "max_event_bytes=100");
    let mut input = numbered("ok-", 5);
    input.extend_from_slice(&[b'x'; 500]);
    input.extend_from_slice(b"\nok-6\nok-7\nok-8\n");
    let (code, _, err) = run(&["produce", &u, "s"], &input);
    assert_ne!(code, 0);
    assert!(err.contains("line 6:"), "{err}");
    assert!(!err.contains("line 9"), "{err}");
}

/// Issue 17 (13): a raw line is the payload, bytes as they are.
#[test]
fn raw_lines_travel_as_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let u = url(dir.path(), "partitions=1");
    let input: &[u8] = b"plain\n\xff\xfe binary \x00\nwindows\r\nlast without newline";
    let (code, _, err) = run_bytes(&["produce", &u, "s"], input);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run_bytes(&["consume", &u, "s", "-n", "4"], b"");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        b"plain\n\xff\xfe binary \x00\nwindows\nlast without newline\n"
    );
}

/// Issue 17 (13): a batch the disk took only part of says so, and how much.
#[test]
fn a_partly_stored_batch_is_reported_as_such() {
    use tributary::local::partition_for_key;
    let dir = tempfile::tempdir().unwrap();
    let u = url(dir.path(), "");
    let (code, _, err) = run(&["streams", &u, "create", "s", "-p", "2"], b"");
    assert_eq!(code, 0, "{err}");
    let key_for = |p: u32| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| partition_for_key(k.as_bytes(), 2) == p)
            .unwrap()
    };
    let (k0, k1) = (key_for(0), key_for(1));
    let big = "x".repeat(60_000);
    let (code, _, err) = run(
        &["produce", &u, "s", "--format", "json"],
        format!("{{\"key\":\"{k1}\",\"payload\":\"{big}\"}}\n").as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    // Files may not grow past 64 KiB: partition 1's segment cannot take 8 KB more.
    let small = format!("{{\"key\":\"{k0}\",\"payload\":\"fits\"}}\n");
    let large = format!(
        "{{\"key\":\"{k1}\",\"payload\":\"{}\"}}\n",
        "y".repeat(8000)
    );
    let mut child = Command::new(bin());
    child.args(["produce", &u, "s", "--format", "json"]);
    unsafe {
        use std::os::unix::process::CommandExt;
        child.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: 64 << 10,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = child
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{small}{large}").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("batch partly stored: 1 of 2 events were stored"),
        "{err}"
    );
    assert!(err.contains("partition 0 positions 0..1"), "{err}");
    let (code, out, _) = run(&["consume", &u, "s", "-n", "2", "--idle-exit", "2s"], b"");
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().count(),
        2,
        "the big event and the stored part: {out}"
    );
}
