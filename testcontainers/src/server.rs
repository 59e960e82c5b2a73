//! A server for the tests: how one is launched ([`Launcher`]), what a test can ask of it (its
//! URL, address, log, memory) and do to it (restart, freeze, stop).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::external::external;
use crate::{
    Mode, Peer, PeerError, Reason, deadline, docker, group_resident_bytes, native, next_sequence,
    peers_dir, process, run_host, run_tag, target_dir,
};

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
            run_tag(),
            next_sequence()
        ))
    }

    pub(crate) fn data_dir(&self, peer: Peer) -> PathBuf {
        self.work_dir.join(format!(
            "{}-{}-{}.data",
            peer.name(),
            run_tag(),
            next_sequence()
        ))
    }
}

/// A running (or externally provided) server.
#[derive(Debug)]
pub struct Server {
    pub(crate) peer: Peer,
    pub(crate) mode: Mode,
    pub(crate) url: String,
    pub(crate) address: String,
    pub(crate) http_address: Option<String>,
    pub(crate) log: Option<PathBuf>,
    pub(crate) startup: Duration,
    pub(crate) process: Mutex<Option<process::Process>>,
    pub(crate) _container: Option<docker::Container>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) recipe: Option<native::Recipe>,
    /// Provided by the run's host ([`run_host`]): other test processes use it too.
    pub(crate) shared_by_run: bool,
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
