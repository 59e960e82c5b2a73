//! The command line end to end: a 100k JSON round trip through `file://`, and a matrix of bad
//! input that must each give one clear error and a non-zero exit, never a panic.

use std::io::Write;
use std::process::{Command, Stdio};
use tributary_bridge::json::event_from_json;

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

fn run(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tributary");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

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
    let cases: Vec<(Vec<String>, &[u8], &str)> = vec![
        (
            vec!["produce".into(), "nats://x".into(), "s".into()],
            b"a\n",
            "unknown URL scheme",
        ),
        (
            vec!["produce".into(), "kafka://h:9092".into(), "s".into()],
            b"a\n",
            "tributary-kafka",
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
    std::fs::write(&meta, b"{\"name\":\"orders\",\"partitions\":4}").unwrap();
    std::fs::write(dir.path().join("streams/orders/0/garbage.log"), b"x").unwrap();
    let (code, _, err) = run(&["consume", &url, "orders", "-n", "1"], b"");
    assert_ne!(code, 0);
    assert!(err.contains("garbage.log"), "{err}");
}

#[test]
fn a_second_process_reads_and_tails_while_the_first_writes() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let mut writer = Command::new(BIN)
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
    let mut reader = Command::new(BIN)
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
