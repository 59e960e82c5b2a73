//! Running the `tributary` binary from tests. `TRIBUTARY_BIN` points the tests at another
//! build (an older one, to see a regression test fail before its fix).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The binary under test.
pub fn bin() -> String {
    std::env::var("TRIBUTARY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tributary").to_owned())
}

/// Runs the binary with `stdin` as input: (exit code, stdout, stderr).
pub fn run(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let (code, out, err) = run_bytes(args, stdin);
    (code, String::from_utf8_lossy(&out).into_owned(), err)
}

/// Like [`run`], with stdout as bytes.
pub fn run_bytes(args: &[&str], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = Command::new(bin())
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
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `file://` URL of a directory, with `query` (`""` for none).
pub fn url(dir: &Path, query: &str) -> String {
    if query.is_empty() {
        format!("file://{}", dir.display())
    } else {
        format!("file://{}?{query}", dir.display())
    }
}

/// Lines `0..n` joined, one per line.
pub fn numbered(prefix: &str, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("{prefix}{i}\n"))
        .collect::<String>()
        .into_bytes()
}

/// The segment files of a partition directory, oldest first.
pub fn segments(partition: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(partition)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs
}

/// Receipts printed by `produce --receipts`: (partition, position) per line.
pub fn receipts(out: &str) -> Vec<(u32, u64)> {
    out.lines()
        .map(|l| {
            let (p, o) = l.split_once(' ').expect("`partition position`");
            (p.parse().unwrap(), o.parse().unwrap())
        })
        .collect()
}
