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
pub mod kafka;
mod native;
mod probe;
mod process;
pub mod python;
pub mod run_host;

pub use process::{Process, tail as log_tail};

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use error::{PeerError, Reason};

/// The servers tributary is tested against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Apache Kafka 4.x, single KRaft node.
    Kafka,
    /// Apache Pulsar 4.0.x standalone.
    Pulsar,
    /// Google Cloud Pub/Sub (Google's `pstest` fake, or the gcloud emulator in Docker).
    PubSub,
    /// AWS Kinesis (the ferrokinesis emulator).
    Kinesis,
    /// Azure Event Hubs (the project's own AMQP emulator, `tributary-eventhubs-emulator`).
    EventHubs,
    /// Azure Blob Storage (Azurite), where the Event Hubs backend keeps its groups' ownership
    /// and checkpoints. Its URL is the blob endpoint of the development account
    /// ([`AZURITE_ACCOUNT`], [`AZURITE_ACCOUNT_KEY`]): `http://127.0.0.1:P/devstoreaccount1`.
    Azurite,
    /// Amazon DynamoDB (dynalite), where the Kinesis backend keeps its group's leases.
    DynamoDb,
}

/// The storage account Azurite serves (its well-known development account).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// The published key of Azurite's development account (not a secret: every Azurite has it).
pub const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A storage connection string for an Azurite [`Server`] (the form Microsoft's SDKs take).
pub fn azurite_connection_string(server: &Server) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_ACCOUNT_KEY};BlobEndpoint={};",
        server.url()
    )
}

impl Peer {
    /// Every peer, in a fixed order.
    pub const ALL: [Peer; 7] = [
        Peer::Kafka,
        Peer::Pulsar,
        Peer::PubSub,
        Peer::Kinesis,
        Peer::EventHubs,
        Peer::Azurite,
        Peer::DynamoDb,
    ];

    /// Lower-case name used in file names, environment variables and installer arguments.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Kafka => "kafka",
            Peer::Pulsar => "pulsar",
            Peer::PubSub => "pubsub",
            Peer::Kinesis => "kinesis",
            Peer::EventHubs => "eventhubs",
            Peer::Azurite => "azurite",
            Peer::DynamoDb => "dynamodb",
        }
    }

    /// The variable that gives this peer's URL in external mode.
    pub fn url_variable(self) -> &'static str {
        match self {
            Peer::Kafka => "TRIBUTARY_KAFKA_URL",
            Peer::Pulsar => "TRIBUTARY_PULSAR_URL",
            Peer::PubSub => "TRIBUTARY_PUBSUB_URL",
            Peer::Kinesis => "TRIBUTARY_KINESIS_URL",
            Peer::EventHubs => "TRIBUTARY_EVENTHUBS_URL",
            Peer::Azurite => "TRIBUTARY_AZURITE_URL",
            Peer::DynamoDb => "TRIBUTARY_DYNAMODB_URL",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Kafka => "Kafka",
            Peer::Pulsar => "Pulsar",
            Peer::PubSub => "Pub/Sub",
            Peer::Kinesis => "Kinesis",
            Peer::EventHubs => "Event Hubs",
            Peer::Azurite => "Azurite",
            Peer::DynamoDb => "DynamoDB",
        })
    }
}

/// Where servers come from (`TRIBUTARY_PEERS_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Installed processes from the peers cache.
    Native,
    /// Official container images through the `docker` command.
    Docker,
    /// URLs given in environment variables.
    External,
}

impl Mode {
    /// Reads `TRIBUTARY_PEERS_MODE`; unset means [`Mode::Native`].
    pub fn from_env() -> Result<Mode, String> {
        match std::env::var("TRIBUTARY_PEERS_MODE").as_deref() {
            Err(_) | Ok("") | Ok("native") => Ok(Mode::Native),
            Ok("docker") => Ok(Mode::Docker),
            Ok("external") => Ok(Mode::External),
            Ok(other) => Err(format!(
                "TRIBUTARY_PEERS_MODE={other:?} is not a mode; use native, docker or external"
            )),
        }
    }
}

/// Where to find installed servers and where to write logs and data.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// How servers are provided.
    pub mode: Mode,
    /// The peers cache (native mode).
    pub peers_dir: PathBuf,
    /// Logs and server data go under `<work_dir>/`, normally `target/peers`.
    pub work_dir: PathBuf,
    /// How long a server may take to answer its readiness probe.
    pub startup_timeout: Duration,
}

impl Launcher {
    /// The launcher the environment describes (see the crate documentation).
    pub fn from_env() -> Result<Launcher, String> {
        Ok(Launcher {
            mode: Mode::from_env()?,
            peers_dir: peers_dir(),
            work_dir: target_dir().join("peers"),
            startup_timeout: Duration::from_secs(180),
        })
    }

    /// Starts a server of its own for the caller; it stops when the returned value is dropped.
    pub fn start(&self, peer: Peer) -> Result<Server, PeerError> {
        let started = Instant::now();
        let mut server = match self.mode {
            Mode::Native => native::start(self, peer),
            Mode::Docker => docker::start(self, peer),
            Mode::External => external(peer),
        }?;
        server.startup = started.elapsed();
        if let Some(log) = &server.log {
            deadline::watch(log);
        }
        Ok(server)
    }

    /// Starts a Kinesis emulator of its own with extra command-line options (native mode), for
    /// tests that need a server set up differently from the shared one, such as ferrokinesis's
    /// AWS-like shard throughput limits: `start_kinesis_with(&["--enforce-limits"])`.
    pub fn start_kinesis_with(&self, options: &[&str]) -> Result<Server, PeerError> {
        if self.mode != Mode::Native {
            return Err(PeerError::new(
                Peer::Kinesis,
                Reason::Unsupported,
                format!(
                    "emulator options are for installed servers; {:?} mode cannot pass them",
                    self.mode
                ),
            ));
        }
        let started = Instant::now();
        let options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        let mut server = native::start_with(self, Peer::Kinesis, &options)?;
        server.startup = started.elapsed();
        Ok(server)
    }

    pub(crate) fn log_path(&self, peer: Peer) -> PathBuf {
        self.work_dir.join(format!(
            "{}-{}-{}.log",
            peer.name(),
            std::process::id(),
            next_sequence()
        ))
    }

    pub(crate) fn data_dir(&self, peer: Peer) -> PathBuf {
        self.work_dir.join(format!(
            "{}-{}-{}.data",
            peer.name(),
            std::process::id(),
            next_sequence()
        ))
    }
}

/// A running (or externally provided) server.
#[derive(Debug)]
pub struct Server {
    peer: Peer,
    mode: Mode,
    url: String,
    address: String,
    http_address: Option<String>,
    log: Option<PathBuf>,
    startup: Duration,
    process: Mutex<Option<process::Process>>,
    _container: Option<docker::Container>,
    data_dir: Option<PathBuf>,
    recipe: Option<native::Recipe>,
    /// Provided by the run's host ([`run_host`]): other test processes use it too.
    shared_by_run: bool,
}

impl Server {
    /// Which server this is.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// How it was provided.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The tributary URL for this server, for example `kafka://127.0.0.1:39461` or
    /// `pubsub://tributary-test?endpoint=http://127.0.0.1:40123`; for DynamoDB, which is no
    /// tributary backend, its endpoint (`http://127.0.0.1:40125`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `host:port` of the server's main protocol: the Kafka bootstrap server, Pulsar's binary
    /// protocol, the Pub/Sub gRPC endpoint, the Kinesis HTTP endpoint.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// `host:port` of an HTTP admin API, where the server has a separate one (Pulsar).
    pub fn http_address(&self) -> Option<&str> {
        self.http_address.as_deref()
    }

    /// The server's log file (native and docker modes).
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// How long it took from launch until the readiness probe succeeded.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The process (group) id of a native server.
    pub fn pid(&self) -> Option<u32> {
        self.process.lock().ok()?.as_ref().map(|p| p.pid())
    }

    /// Resident memory of a native server's whole process group, in bytes.
    pub fn resident_bytes(&self) -> Option<u64> {
        self.pid().map(group_resident_bytes)
    }

    /// Stops the server and starts it again on the same ports with the same data, waiting until
    /// it serves (native mode only): for tests of clients that must survive a server restart.
    pub fn restart(&self) -> Result<(), PeerError> {
        self.refuse_if_shared_by_run("restarted")?;
        let Some(recipe) = &self.recipe else {
            return Err(PeerError::new(
                self.peer,
                Reason::Unsupported,
                format!("{:?} servers cannot be restarted by the fixture", self.mode),
            ));
        };
        let mut guard = self
            .process
            .lock()
            .map_err(|_| PeerError::new(self.peer, Reason::StartFailed, "server lock poisoned"))?;
        if let Some(mut old) = guard.take() {
            old.stop(Duration::from_secs(30));
        }
        let log = self
            .log
            .clone()
            .unwrap_or_else(|| recipe.launcher.log_path(self.peer));
        *guard = Some(recipe.relaunch(self.peer, &log)?);
        Ok(())
    }

    /// Freezes the server (SIGSTOP to its process group): it keeps its sockets but answers
    /// nothing, like a hung or partitioned peer. Native mode only; [`Server::resume`] undoes it.
    pub fn suspend(&self) -> Result<(), PeerError> {
        self.signal(libc::SIGSTOP)
    }

    /// Lets a [`suspend`](Server::suspend)ed server run again (SIGCONT).
    pub fn resume(&self) -> Result<(), PeerError> {
        self.signal(libc::SIGCONT)
    }

    fn signal(&self, signal: libc::c_int) -> Result<(), PeerError> {
        self.refuse_if_shared_by_run("frozen or resumed")?;
        let pgid = self
            .pid()
            .and_then(|p| libc::pid_t::try_from(p).ok())
            .ok_or_else(|| {
                PeerError::new(
                    self.peer,
                    Reason::Unsupported,
                    format!("{:?} servers cannot be signalled", self.mode),
                )
            })?;
        // SAFETY: kill(2) on the server's own process group.
        if unsafe { libc::kill(-pgid, signal) } != 0 {
            return Err(PeerError::new(
                self.peer,
                Reason::StartFailed,
                format!(
                    "signal {signal} to process group {pgid}: {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
        Ok(())
    }

    fn refuse_if_shared_by_run(&self, what: &str) -> Result<(), PeerError> {
        if !self.shared_by_run {
            return Ok(());
        }
        Err(PeerError::new(
            self.peer,
            Reason::Unsupported,
            format!(
                "this server is shared by every test of the run and cannot be {what} by one of them"
            ),
        )
        .fix(format!(
            "put the test in the `{}` test group of .config/nextest.toml, so it starts a server of its own",
            run_host::PRIVATE_GROUP_PREFIX
        )))
    }

    /// Stops the server now (dropping it does the same).
    pub fn stop(&self) {
        if let Ok(mut guard) = self.process.lock()
            && let Some(mut process) = guard.take()
        {
            process.stop(Duration::from_secs(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Sum of VmRSS over every process in the process group `pgid` (0 when there is none).
pub fn group_resident_bytes(pgid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state ppid pgrp ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let pgrp = rest
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse::<u32>().ok());
        if pgrp != Some(pgid) {
            continue;
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            total += kb * 1024;
        }
    }
    total
}

/// `true` when any process of group `pgid` is still alive (zombies count as gone).
pub fn process_group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|s| s.parse::<u32>().ok());
        pgrp == Some(pgid) && state != Some("Z")
    })
}

fn external(peer: Peer) -> Result<Server, PeerError> {
    let variable = peer.url_variable();
    let url = std::env::var(variable).map_err(|_| {
        PeerError::new(
            peer,
            Reason::NoUrl,
            format!("external mode, but {variable} is not set"),
        )
        .fix(format!(
            "export {variable}=<tributary URL of your {peer} server>"
        ))
        .fix("or unset TRIBUTARY_PEERS_MODE to start installed servers")
    })?;
    let (address, http_address) = addresses_from_url(&url).ok_or_else(|| {
        PeerError::new(
            peer,
            Reason::NoUrl,
            format!("{variable} is not a URL with a host: {}", redact(&url)),
        )
    })?;
    Ok(Server {
        peer,
        mode: Mode::External,
        url,
        address,
        http_address,
        log: None,
        startup: Duration::ZERO,
        process: Mutex::new(None),
        _container: None,
        data_dir: None,
        recipe: None,
        shared_by_run: false,
    })
}

/// The main and admin `host:port` a tributary URL points at: the `endpoint` option wins over
/// the URL's own host (Pub/Sub and Kinesis name a project or region there), `admin` gives the
/// HTTP address.
fn addresses_from_url(url: &str) -> Option<(String, Option<String>)> {
    let (_, rest) = url.split_once("://")?;
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority
        .trim_end_matches('/')
        .rsplit('@')
        .next()?
        .split(',')
        .next()?;
    let option = |name: &str| {
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| {
                v.split_once("://")
                    .map(|(_, hp)| hp)
                    .unwrap_or(v)
                    .trim_end_matches('/')
                    .to_string()
            })
        })
    };
    let address = option("endpoint").unwrap_or_else(|| authority.to_string());
    Some((address, option("admin")))
}

fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    }
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn next_sequence() -> u64 {
    SEQUENCE.fetch_add(1, Ordering::Relaxed)
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

/// Polls `probe` until it succeeds, the process exits, or the launcher's timeout passes.
pub(crate) fn wait_ready(
    launcher: &Launcher,
    peer: Peer,
    process: &mut process::Process,
    mut probe: impl FnMut() -> Result<(), String>,
) -> Result<(), PeerError> {
    let deadline = Instant::now() + launcher.startup_timeout;
    loop {
        if let Some(status) = process.exited() {
            return Err(PeerError::new(
                peer,
                Reason::StartFailed,
                format!("the server exited during start-up ({status})"),
            )
            .with_log(process.log()));
        }
        let last = match probe() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(PeerError::new(
                peer,
                Reason::StartFailed,
                format!(
                    "not serving after {:?}; last probe: {last}",
                    launcher.startup_timeout
                ),
            )
            .with_log(process.log()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_endpoint_then_authority() {
        assert_eq!(
            addresses_from_url("kafka://10.0.0.1:9092,10.0.0.2:9092"),
            Some(("10.0.0.1:9092".into(), None))
        );
        assert_eq!(
            addresses_from_url("pubsub://proj?endpoint=http://127.0.0.1:8085"),
            Some(("127.0.0.1:8085".into(), None))
        );
        assert_eq!(
            addresses_from_url("pulsar://127.0.0.1:6650?admin=http://127.0.0.1:8080/"),
            Some(("127.0.0.1:6650".into(), Some("127.0.0.1:8080".into())))
        );
        assert_eq!(addresses_from_url("not a url"), None);
    }

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
}
