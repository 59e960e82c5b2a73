//! Real servers for tributary's tests: start one, wait until it really serves, hand out its
//! URL, stop it when done (also when the test panics or the test process is killed).
//!
//! ```no_run
//! use tributary_testcontainers::{require, unique_name, Peer};
//!
//! # fn main() {
//! // One Kafka broker per test binary, shared by its tests. Without an installed server the
//! // test prints a loud SKIPPED notice and returns; with TRIBUTARY_REQUIRE_PEERS=1 (CI) it fails.
//! let Some(kafka) = require(Peer::Kafka) else { return };
//! let topic = unique_name("orders");
//! println!("bootstrap {} topic {topic} url {}", kafka.address(), kafka.url());
//! # }
//! ```
//!
//! # Modes
//! `TRIBUTARY_PEERS_MODE` chooses where servers come from:
//! - `native` (default): processes installed in the peers cache ([`peers_dir`]:
//!   `~/.cache/tributary/peers`, or `TRIBUTARY_PEERS_DIR`) by `scripts/peers/install-all.sh`.
//!   No Docker needed.
//! - `docker`: the official images, started with the `docker` command line.
//! - `external`: servers you run yourself, or real cloud accounts, given as tributary URLs in
//!   `TRIBUTARY_KAFKA_URL`, `TRIBUTARY_PULSAR_URL`, `TRIBUTARY_PUBSUB_URL`,
//!   `TRIBUTARY_KINESIS_URL` and `TRIBUTARY_EVENTHUBS_URL`, Azurite's blob endpoint in
//!   `TRIBUTARY_AZURITE_URL` and DynamoDB's endpoint in `TRIBUTARY_DYNAMODB_URL`.
//!
//! Logs go to `target/peers/<server>-<pid>-<n>.log`; a failure to start quotes the last lines,
//! and a test process ended by SIGTERM (its runner's deadline) prints the last lines of the
//! logs of the servers it used.
//!
//! # One server per run
//! With `TRIBUTARY_PEERS_HOST` set (by `scripts/test`), [`shared`] takes its servers from a host
//! process that starts one per peer for the whole run ([`run_host`]); tests in nextest's
//! `private-servers` test group still start their own.
#![warn(missing_docs)]

mod deadline;
mod docker;
mod error;
mod external;
pub mod kafka;
mod native;
mod peer;
mod probe;
mod process;
mod procfs;
pub mod python;
pub mod run_host;
mod server;

pub use peer::{AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY, Mode, Peer, azurite_connection_string};
pub use process::{KillOnDrop, Process, lines_until, tail as log_tail, this_test_binary_running};
pub use procfs::{
    group_cpu_time, group_resident_bytes, group_threads, process_group_alive, thread_ids_named,
    threads_named,
};
pub(crate) use server::wait_ready;
pub use server::{Launcher, Server};

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

pub use error::{PeerError, Reason};

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn next_sequence() -> u64 {
    SEQUENCE.fetch_add(1, Ordering::Relaxed)
}

/// This test process, as a part of the names of the files its servers write: its id and when
/// it started. The id alone repeats across runs (ids are reused, and the sequence restarts),
/// and a server's log is appended to (a restarted server keeps one log), so a new server once
/// wrote after an old run's log and a failed start showed that run's last lines as its own.
fn run_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        format!("{}-{started:x}", std::process::id())
    })
}

/// A stream name no other test (or earlier run) uses, valid on every backend: lower-case
/// letters, digits and dashes, starting with a letter.
pub fn unique_name(prefix: &str) -> String {
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t-{clean}-{}-{}-{nanos:x}",
        std::process::id(),
        next_sequence()
    )
}

/// The peers cache, shared by every checkout on the machine: `TRIBUTARY_PEERS_DIR`, else
/// `$XDG_CACHE_HOME/tributary/peers`, else `~/.cache/tributary/peers` (as in
/// `scripts/peers/lib.sh`).
pub fn peers_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("TRIBUTARY_PEERS_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|cache| cache.join("tributary/peers")))
        .or_else(|| var("HOME").map(|home| home.join(".cache/tributary/peers")))
        .unwrap_or_else(|| std::env::temp_dir().join("tributary-peers"))
}

/// Cargo's target directory, found from the running test binary.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // Test binaries live in <target>/<profile>/deps/ (CACHEDIR.TAG is not always there: a
    // target directory created before cargo ran has none).
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|a| a.file_name().is_some_and(|n| n == "deps"))
                .and_then(|deps| deps.parent()?.parent())
                .or_else(|| exe.ancestors().find(|a| a.join("CACHEDIR.TAG").is_file()))
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| std::env::temp_dir().join("tributary-target"))
}

/// `true` when `TRIBUTARY_REQUIRE_PEERS` is set (to anything but `0`): a missing server fails.
pub fn peers_required() -> bool {
    std::env::var("TRIBUTARY_REQUIRE_PEERS").is_ok_and(|v| !v.is_empty() && v != "0")
}

type SharedSlot = OnceLock<Result<Arc<Server>, PeerError>>;
static SHARED: [SharedSlot; Peer::ALL.len()] = [const { OnceLock::new() }; Peer::ALL.len()];

/// The test binary's one instance of `peer`, started on first use and shared by its tests.
/// It stops when the test process ends, however it ends. When a run's host is offered
/// ([`run_host`]), the host's instance instead, shared by every test process of the run.
pub fn shared(peer: Peer) -> Result<Arc<Server>, PeerError> {
    SHARED[peer.index()]
        .get_or_init(|| {
            if let Some(socket) = run_host::offered() {
                let server = run_host::request(&socket, peer)?;
                if let Some(log) = &server.log {
                    deadline::watch(log);
                }
                return Ok(Arc::new(server));
            }
            let launcher =
                Launcher::from_env().map_err(|e| PeerError::new(peer, Reason::Unsupported, e))?;
            launcher.start(peer).map(Arc::new)
        })
        .clone()
}

/// The shared server for `peer`, or `None` after a loud "SKIPPED" notice when it is not
/// available. Under `TRIBUTARY_REQUIRE_PEERS=1` an unavailable server panics instead, so CI
/// cannot pass by skipping.
pub fn require(peer: Peer) -> Option<Arc<Server>> {
    match shared(peer) {
        Ok(server) => Some(server),
        Err(error) if peers_required() => {
            panic!("{error}\n  (TRIBUTARY_REQUIRE_PEERS is set, so a missing server is a failure)")
        }
        Err(error) => {
            skipped(&error);
            None
        }
    }
}

/// Writes the skip notice straight to the process's stderr: libtest captures `eprintln!` of
/// passing tests, and a skip that nobody sees is worse than a failure.
pub(crate) fn skipped(error: &PeerError) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string();
    let bar = "=".repeat(78);
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n{bar}\nSKIPPED {test}: {error}\n  (set TRIBUTARY_REQUIRE_PEERS=1 to make this a failure; scripts/test installs every server)\n{bar}"
    );
}

/// `let server = require_peer!(Peer::Kafka);` returns from the test (after the skip notice)
/// when the server is unavailable.
#[macro_export]
macro_rules! require_peer {
    ($peer:expr) => {
        match $crate::require($peer) {
            Some(server) => server,
            None => return,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_unique_and_portable() {
        let a = unique_name("Orders_EU");
        let b = unique_name("Orders_EU");
        assert_ne!(a, b);
        assert!(a.starts_with("t-orders-eu-"), "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{a}"
        );
    }

    /// A later run whose process gets the same id must not write after this run's log (nor
    /// into its data): the names carry when this process started, not only its id and a
    /// sequence that restarts with every run.
    #[test]
    fn server_files_are_named_for_this_run() {
        let launcher = Launcher {
            mode: Mode::Native,
            peers_dir: PathBuf::from("peers"),
            work_dir: PathBuf::from("work"),
            startup_timeout: std::time::Duration::from_secs(1),
        };
        let log = launcher.log_path(Peer::Kafka);
        let name = log.file_name().unwrap().to_str().unwrap().to_owned();
        let parts = name_parts(&name);
        assert_eq!(
            parts.len(),
            4,
            "kafka, process id, start time, sequence: {name}"
        );
        assert_eq!(parts[1], std::process::id().to_string());
        let started = u128::from_str_radix(&parts[2], 16).expect("hex millis");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert!(started <= now && now - started < 3_600_000, "{name}");
        let data = launcher.data_dir(Peer::Kafka);
        assert!(
            data.to_str().unwrap().contains(run_tag()),
            "{}",
            data.display()
        );
    }

    fn name_parts(name: &str) -> Vec<String> {
        name.trim_end_matches(".log")
            .split('-')
            .map(str::to_owned)
            .collect()
    }
}
