//! One server per peer for a whole test run, shared by the run's test processes.
//!
//! cargo-nextest runs every test in a process of its own, so the per-process [`crate::shared`]
//! servers would mean a Kafka or Pulsar JVM per test (3–7 s and ~300 MB each). `scripts/test`
//! therefore starts a host process (`tributary-peers host SOCKET`) before the tests and exports
//! `TRIBUTARY_PEERS_HOST=SOCKET`; [`crate::shared`] then asks the host for a peer, and the host
//! starts it on first request and hands every later request the same one. The host stops its
//! servers when `scripts/test` ends, however it ends (it watches its parent), and each
//! server's watchdog stops it should the host itself be killed.
//!
//! A server shared by the whole run cannot be restarted or frozen by one test without breaking
//! the others, so tests that do ([`crate::Server::restart`], [`crate::Server::suspend`]) belong
//! to the `private-servers` test group of `.config/nextest.toml`: nextest tells their processes
//! so (`NEXTEST_TEST_GROUP`), and they start servers of their own as without a host.
//!
//! The protocol is one line each way over a Unix socket: the peer's name; then
//! `ok␉URL␉ADDRESS␉HTTP-ADDRESS␉LOG␉STARTUP-MS␉MODE` (`-` for an absent field) or
//! `err␉REASON␉MESSAGE`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::{Launcher, Mode, Peer, PeerError, Reason, Server};

/// The variable naming the host's socket.
pub const HOST_VARIABLE: &str = "TRIBUTARY_PEERS_HOST";

/// Test groups whose names start with this start servers of their own even when a host runs.
pub const PRIVATE_GROUP_PREFIX: &str = "private-servers";

/// The host's socket, when one is offered to this process and the process may use it.
pub(crate) fn offered() -> Option<PathBuf> {
    let socket = std::env::var_os(HOST_VARIABLE).filter(|s| !s.is_empty())?;
    let group = std::env::var("NEXTEST_TEST_GROUP").unwrap_or_default();
    (!group.starts_with(PRIVATE_GROUP_PREFIX)).then(|| PathBuf::from(socket))
}

/// Asks the host at `socket` for `peer`.
pub(crate) fn request(socket: &Path, peer: Peer) -> Result<Server, PeerError> {
    let unreachable = |e: std::io::Error| {
        PeerError::new(
            peer,
            Reason::StartFailed,
            format!(
                "the run's server host at {} does not answer: {e}",
                socket.display()
            ),
        )
        .fix(format!(
            "unset {HOST_VARIABLE} to start servers in the test process"
        ))
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    // The host may be starting the server: Pulsar takes seconds, and its start has a deadline
    // of its own (Launcher::startup_timeout) that the answer reports.
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .map_err(unreachable)?;
    writeln!(stream, "{}", peer.name()).map_err(unreachable)?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(unreachable)?;
    let fields: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
    let field = |i: usize| fields.get(i).filter(|f| **f != "-").map(|f| f.to_string());
    match fields.first() {
        Some(&"ok") => {
            let (Some(url), Some(address)) = (field(1), field(2)) else {
                return Err(unreachable(std::io::Error::other(format!(
                    "malformed answer {line:?}"
                ))));
            };
            let startup = field(5).and_then(|ms| ms.parse().ok()).unwrap_or(0);
            let mode = match field(6).as_deref() {
                Some("docker") => Mode::Docker,
                Some("external") => Mode::External,
                _ => Mode::Native,
            };
            Ok(Server::shared_by_run(
                peer,
                mode,
                url,
                address,
                field(3),
                field(4).map(PathBuf::from),
                Duration::from_millis(startup),
            ))
        }
        Some(&"err") => {
            let reason = match field(1).as_deref() {
                Some("not-installed") => Reason::NotInstalled,
                Some("no-url") => Reason::NoUrl,
                Some("unsupported") => Reason::Unsupported,
                _ => Reason::StartFailed,
            };
            let message = field(2).unwrap_or_default().replace('\u{1f}', "\n");
            Err(PeerError::new(
                peer,
                reason,
                format!("the run's server host could not provide it: {message}"),
            ))
        }
        _ => Err(unreachable(std::io::Error::other(format!(
            "malformed answer {line:?}"
        )))),
    }
}

type Slot = Arc<OnceLock<Result<Arc<Server>, PeerError>>>;

/// Serves peers on `socket` until the process that started the host ends, then stops every
/// server it started (SIGTERM ends it too; the servers' watchdogs then stop them). Prints
/// `ready` on standard output once it accepts requests.
pub fn serve(socket: &Path) -> std::io::Result<()> {
    let launcher = Launcher::from_env().map_err(std::io::Error::other)?;
    let _ = std::fs::remove_file(socket);
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(socket)?;
    let started: Arc<Mutex<HashMap<Peer, Slot>>> = Arc::default();
    {
        let started = started.clone();
        let socket = socket.to_path_buf();
        // SAFETY: getppid(2) has no preconditions.
        let parent = unsafe { libc::getppid() };
        std::thread::spawn(move || {
            // Orphaned (scripts/test ended, however it ended): the parent changes.
            // SAFETY: as above.
            while unsafe { libc::getppid() } == parent {
                std::thread::sleep(Duration::from_millis(500));
            }
            for slot in started.lock().unwrap_or_else(|e| e.into_inner()).values() {
                if let Some(Ok(server)) = slot.get() {
                    server.stop();
                }
            }
            let _ = std::fs::remove_file(&socket);
            std::process::exit(0);
        });
    }
    println!("ready");
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (launcher, started) = (launcher.clone(), started.clone());
        std::thread::spawn(move || answer(stream, &launcher, &started));
    }
    Ok(())
}

fn answer(stream: UnixStream, launcher: &Launcher, started: &Mutex<HashMap<Peer, Slot>>) {
    let mut line = String::new();
    if BufReader::new(&stream).read_line(&mut line).is_err() {
        return;
    }
    let name = line.trim();
    let reply = match Peer::ALL.iter().find(|p| p.name() == name) {
        None => format!("err\tunsupported\tno peer named {name:?}"),
        Some(&peer) => {
            let slot = started
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(peer)
                .or_default()
                .clone();
            // Concurrent requests for one peer wait for the first one's start.
            match slot.get_or_init(|| launcher.start(peer).map(Arc::new)) {
                Ok(server) => {
                    let dash = |v: Option<&str>| v.unwrap_or("-").to_string();
                    let mode = match server.mode() {
                        Mode::Native => "native",
                        Mode::Docker => "docker",
                        Mode::External => "external",
                    };
                    format!(
                        "ok\t{}\t{}\t{}\t{}\t{}\t{mode}",
                        server.url(),
                        server.address(),
                        dash(server.http_address()),
                        dash(server.log_path().and_then(Path::to_str)),
                        server.startup_time().as_millis()
                    )
                }
                Err(error) => {
                    let reason = match error.reason {
                        Reason::NotInstalled => "not-installed",
                        Reason::NoUrl => "no-url",
                        Reason::Unsupported => "unsupported",
                        _ => "start-failed",
                    };
                    // One line on the wire; the unit separator stands for the line breaks.
                    let message = error.to_string().replace(['\n', '\t'], "\u{1f}");
                    format!("err\t{reason}\t{message}")
                }
            }
        }
    };
    let _ = writeln!(&stream, "{reply}");
}

impl Server {
    fn shared_by_run(
        peer: Peer,
        mode: Mode,
        url: String,
        address: String,
        http_address: Option<String>,
        log: Option<PathBuf>,
        startup: Duration,
    ) -> Server {
        Server {
            peer,
            mode,
            url,
            address,
            http_address,
            log,
            startup,
            process: Mutex::new(None),
            _container: None,
            data_dir: None,
            recipe: None,
            shared_by_run: true,
        }
    }
}
