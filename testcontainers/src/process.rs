//! Server processes: each in its own process group, its output in a log file, and a watchdog
//! that kills the group when the test process goes away by any means (panic, `exit`, SIGKILL).
//!
//! Shared servers live in statics, which Rust never drops, so `Drop` alone cannot stop them.
//! The watchdog is a `sh` that blocks reading a pipe whose only writer is this process: the
//! kernel closes that pipe however the process ends, the read returns, and the watchdog kills
//! the server's process group. `PR_SET_PDEATHSIG` would not do: it fires when the spawning
//! *thread* exits, which for a test thread is long before the other tests are done.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

/// A process started in its own process group, its output appended to a log file, with a
/// watchdog that stops the group should this process end without dropping it. The fixtures
/// run servers in it; benchmarks run the programs they measure (a replicator, a peer tool).
#[derive(Debug)]
pub struct Process {
    child: Child,
    watchdog: Option<(Child, ChildStdin)>,
    log: PathBuf,
}

impl Process {
    /// Starts `command` in a new process group with stdout and stderr appended to `log`. If
    /// the test process dies, the watchdog also deletes `scratch` (the server's data).
    pub fn spawn(
        mut command: Command,
        log: &Path,
        scratch: Option<&Path>,
    ) -> std::io::Result<Process> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let out = OpenOptions::new().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = command.spawn()?;
        let pgid = child.id();
        let remove = scratch
            .and_then(|dir| dir.to_str())
            .filter(|dir| !dir.contains('\''))
            .map(|dir| format!("; rm -rf '{dir}'"))
            .unwrap_or_default();
        let watchdog = spawn_watchdog(
            &format!("kill -TERM -{pgid}"),
            &format!("kill -KILL -{pgid}{remove}"),
        );
        Ok(Process {
            child,
            watchdog,
            log: log.to_path_buf(),
        })
    }

    /// The process id, which is also the process group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// SIGTERM to the group, then SIGKILL after `grace`; reaps the child.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_none() {
            signal_group(self.pid(), libc::SIGTERM);
            let deadline = Instant::now() + grace;
            while self.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // The leader may be gone while children (a JVM under a shell) remain: always sweep.
        signal_group(self.pid(), libc::SIGKILL);
        let _ = self.child.wait();
        if let Some((mut watchdog, stdin)) = self.watchdog.take() {
            drop(stdin);
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Starts a watchdog that runs `term`, waits, then runs `kill` once this process's end of its
/// stdin closes. `None` when `sh` cannot be started: the server then only stops on drop.
pub(crate) fn spawn_watchdog(term: &str, kill: &str) -> Option<(Child, ChildStdin)> {
    let script = format!("read -r _ ; {term} 2>/dev/null; sleep 3; {kill} 2>/dev/null; exit 0");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group, so a Ctrl-C aimed at the test's group does not kill the watchdog
        // before it has done its job.
        .process_group(0)
        .spawn()
        .ok()?;
    let stdin = child.stdin.take()?;
    Some((child, stdin))
}

fn signal_group(pgid: u32, signal: libc::c_int) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid) {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is shared.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// Free (for an unprivileged writer) and total MiB of the file system holding `path`.
pub(crate) fn disk_mib(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: statvfs(3) writes the struct it is given and reads a NUL-terminated path.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let stat = unsafe { stat.assume_init() };
    let mib = |blocks: libc::fsblkcnt_t| {
        let bytes = u128::from(blocks) * u128::from(stat.f_frsize);
        u32::try_from(bytes >> 20).unwrap_or(u32::MAX)
    };
    Some((mib(stat.f_bavail), mib(stat.f_blocks)))
}

/// The last `n` lines of a log file (empty when unreadable).
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    let mut lines: std::collections::VecDeque<String> =
        std::collections::VecDeque::with_capacity(n);
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        if lines.len() == n {
            lines.pop_front();
        }
        lines.push_back(line);
    }
    lines.into()
}

/// Finds the first line of `path` that starts with `prefix` and returns the rest of it.
pub(crate) fn find_line(path: &Path, prefix: &str) -> Option<String> {
    let file = File::open(path).ok()?;
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix(prefix)
                .map(|rest| rest.trim().to_string())
        })
}

/// A TCP port that was free on 127.0.0.1 a moment ago, for starting `peer`.
pub(crate) fn free_port_for(peer: crate::Peer) -> Result<u16, crate::PeerError> {
    Ok(free_ports_for(peer, 1)?[0])
}

/// `n` distinct TCP ports that were free on 127.0.0.1 a moment ago, for one server of `peer`.
/// Every listener is held until all are bound: picked one after another and released in
/// between, the kernel may hand out the same port twice (a Kafka start once got one port for
/// both its client and controller listeners and refused to start).
pub(crate) fn free_ports_for(peer: crate::Peer, n: usize) -> Result<Vec<u16>, crate::PeerError> {
    let unavailable = |e: std::io::Error| {
        crate::PeerError::new(
            peer,
            crate::Reason::StartFailed,
            format!("no free port on 127.0.0.1: {e}"),
        )
    };
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(unavailable)?;
    held.iter()
        .map(|listener| listener.local_addr().map(|addr| addr.port()))
        .collect::<std::io::Result<Vec<u16>>>()
        .map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use super::free_ports_for;

    /// Ports picked for one server are distinct. Picked one at a time with each listener
    /// released before the next bind, 200 of them repeated one in 77 of 100 runs here.
    #[test]
    fn ports_picked_together_are_distinct() {
        let ports = free_ports_for(crate::Peer::Kafka, 200).unwrap();
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
    }

    fn shell(script: &str) -> super::KillOnDrop {
        super::KillOnDrop(
            std::process::Command::new("sh")
                .args(["-c", script])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("sh"),
        )
    }

    #[test]
    fn lines_until_returns_the_lines_up_to_the_marker_within_a_line() {
        let mut child = shell("echo first; printf 'test child ... READY\\n'; echo after");
        let stdout = child.stdout.take().expect("piped");
        let lines = super::lines_until(stdout, "READY", std::time::Duration::from_secs(10));
        assert_eq!(
            lines,
            Ok(vec!["first".to_owned(), "test child ... READY".to_owned()])
        );
    }

    #[test]
    fn lines_until_fails_when_the_output_ends_or_the_time_is_up_first() {
        let mut ended = shell("echo only");
        let stdout = ended.stdout.take().expect("piped");
        let why = super::lines_until(stdout, "READY", std::time::Duration::from_secs(10))
            .expect_err("no marker");
        assert!(why.contains("ended") && why.contains("only"), "{why}");

        let mut silent = shell("echo waiting; exec sleep 30");
        let stdout = silent.stdout.take().expect("piped");
        let started = std::time::Instant::now();
        let why = super::lines_until(stdout, "READY", std::time::Duration::from_millis(300))
            .expect_err("no marker");
        assert!(why.contains("within") && why.contains("waiting"), "{why}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "returned at its deadline, not when the child ended"
        );
    }
}

/// This test binary run again for one of its tests: `test` matched exactly, whether or not it
/// is `#[ignore]`d, on one thread, its output not captured, so that what the child prints
/// reaches the parent reading its stdout. Running one test on one thread, libtest writes
/// `test NAME ... ` with no newline before the test's first output, so a parent looks for its
/// markers within a line, not at its start. The caller sets the child's environment and pipes,
/// spawns it and holds it in a [`KillOnDrop`]. Tests that need a second process (a consumer to
/// SIGKILL, a member to rejoin) run their child side as a test of the same binary that does
/// nothing unless its environment says it is the child.
///
/// ```no_run
/// use std::process::Stdio;
/// use tributary_testcontainers::{KillOnDrop, this_test_binary_running};
///
/// let child = KillOnDrop(
///     this_test_binary_running("child_consumer")
///         .env("CHILD_STREAM", "orders")
///         .stdout(Stdio::piped())
///         .spawn()
///         .expect("spawn the child consumer"),
/// );
/// ```
pub fn this_test_binary_running(test: &str) -> Command {
    // `current_exe` fails only if /proc is unreadable; argv[0] then names the binary as the
    // test harness was started, which is what a rerun needs.
    let binary = std::env::current_exe()
        .map(std::ffi::OsString::from)
        .unwrap_or_else(|_| std::env::args_os().next().unwrap_or_default());
    let mut command = Command::new(binary);
    command.args([
        test,
        "--exact",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    command
}

/// Reads a child's output line by line until a line contains `marker` (within a line: see
/// [`this_test_binary_running`]) and returns the lines up to and including it. A thread keeps
/// draining the rest, so the child never blocks on a full pipe. Fails with what the child
/// printed when it ends, or `within` passes, before the marker: a child stuck before it would
/// otherwise hold its test until the runner's deadline, which says nothing of why.
///
/// ```no_run
/// use std::process::Stdio;
/// use std::time::Duration;
/// use tributary_testcontainers::{KillOnDrop, lines_until, this_test_binary_running};
///
/// let mut child = KillOnDrop(
///     this_test_binary_running("child_consumer")
///         .stdout(Stdio::piped())
///         .spawn()
///         .expect("spawn the child consumer"),
/// );
/// let stdout = child.stdout.take().expect("piped");
/// lines_until(stdout, "READY", Duration::from_secs(60)).expect("the child started");
/// ```
pub fn lines_until(
    output: impl std::io::Read + Send + 'static,
    marker: &str,
    within: Duration,
) -> Result<Vec<String>, String> {
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            // Once the caller has its marker nobody listens: the lines are only drained.
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + within;
    let mut read = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(marker);
                read.push(line);
                if found {
                    return Ok(read);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "no line with `{marker}` within {within:?}; the child printed {read:?}"
                ));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!(
                    "the child's output ended without a line with `{marker}`; it printed {read:?}"
                ));
            }
        }
    }
}

/// A child process of a test (the test binary run again as a consumer, say), killed with
/// SIGKILL and reaped when dropped: a test that fails between spawning it and killing it
/// leaves nothing running through the rest of the run.
///
/// ```no_run
/// use tributary_testcontainers::KillOnDrop;
///
/// let mut child = KillOnDrop(std::process::Command::new("sleep").arg("600").spawn().unwrap());
/// assert!(child.try_wait().unwrap().is_none(), "still running");
/// // However this function ends from here, the sleep is killed.
/// ```
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
