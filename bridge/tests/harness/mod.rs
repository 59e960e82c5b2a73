//! The `tributary` binary as an operator runs it: a daemon process whose stderr is collected
//! as it comes, its operations endpoint, `bridge validate`. Every wait has a deadline.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tributary");

/// `GET path` on the operations endpoint: status and body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the operations endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of `name{…route="route"…}` in a Prometheus page.
pub fn metric(body: &str, name: &str, route: &str) -> Option<f64> {
    body.lines()
        .find(|l| {
            l.starts_with(name)
                && l[name.len()..].starts_with('{')
                && l.contains(&format!("route=\"{route}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
}

/// Polls `check` every 50 ms until it gives `Some`, failing with `what` after `limit`.
pub fn wait_until<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `tributary ARGS` with `stdin`: exit code and stdout + stderr.
pub fn run(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = wait_output(child, Duration::from_secs(60));
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The child's output, killing it if it has not exited after `limit`.
pub fn wait_output(child: Child, limit: Duration) -> std::process::Output {
    let pid = child.id();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if Instant::now() > deadline {
                    // SAFETY: kill(2) on a child of this process.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })
    };
    let out = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        !watchdog.join().unwrap(),
        "`tributary` still running after {limit:?}, killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `tributary bridge validate` on a file holding `contents`: exit code and all output.
pub fn validate(
    dir: &Path,
    name: &str,
    contents: &str,
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let file = dir.join(name);
    std::fs::write(&file, contents).unwrap();
    run(&["bridge", "validate", file.to_str().unwrap()], env, "")
}

/// A running `tributary bridge --config FILE`.
pub struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts the daemon on `config` with extra environment variables.
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_bin(BIN, config, env)
    }

    /// Starts the daemon of another `tributary` binary (a release build, for figures).
    pub fn start_bin(bin: &str, config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(bin)
            .args(["bridge", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = BufReader::new(child.stderr.take().unwrap());
        let collected = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            while pipe.read_line(&mut line).unwrap_or(0) > 0 {
                collected.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Daemon {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The daemon's process id.
    #[allow(dead_code)] // Only some of the test binaries that share this harness look.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits until stderr contains `needle` (failing if the daemon exits first).
    pub fn wait_for_log(&mut self, needle: &str, limit: Duration) -> String {
        wait_until(limit, &format!("`{needle}` in the daemon's log"), || {
            let log = self.stderr();
            if log.contains(needle) {
                return Some(log);
            }
            if let Some(status) = self.exited() {
                self.finish_reader();
                panic!(
                    "daemon exited ({status}) before logging `{needle}`:\n{}",
                    self.stderr()
                );
            }
            None
        })
    }

    /// The operations endpoint's address, once the daemon announced it.
    pub fn addr(&mut self, limit: Duration) -> String {
        let log = self.wait_for_log("operations endpoint: http://", limit);
        let rest = log.split("operations endpoint: http://").nth(1).unwrap();
        rest.split('/').next().unwrap().to_string()
    }

    /// SIGTERM, then waits up to `limit` for the exit: the status, how long it took, and the
    /// whole log.
    pub fn terminate(mut self, limit: Duration) -> (std::process::ExitStatus, Duration, String) {
        // SAFETY: kill(2) on the child we spawned.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let sent = Instant::now();
        let status = wait_until(limit, "the daemon to exit after SIGTERM", || {
            self.child.try_wait().unwrap()
        });
        let took = sent.elapsed();
        self.finish_reader();
        (status, took, self.stderr())
    }

    fn finish_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process that holds `dir`'s writer lock until its stdin is closed.
pub struct LockHolder(std::process::Child);

impl LockHolder {
    /// Starts `tributary produce URL held` and waits until it holds the writer lock.
    pub fn hold(url: &str) -> LockHolder {
        let mut child = Command::new(BIN)
            .args(["produce", url, "held"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The first line makes it open the directory for writing.
        let stdin = child.stdin.as_mut().unwrap();
        stdin.write_all(b"x\n").unwrap();
        stdin.flush().unwrap();
        let dir = url.trim_start_matches("file://");
        wait_until(
            Duration::from_secs(20),
            "the holder to lock the directory",
            || {
                std::fs::read_to_string(format!("{dir}/LOCK"))
                    .ok()
                    .filter(|l| l.starts_with(&format!("pid {} ", child.id())))
            },
        );
        LockHolder(child)
    }

    /// Closes its input: it exits, releasing the lock.
    pub fn release(mut self) {
        drop(self.0.stdin.take());
        assert!(self.0.wait().unwrap().success());
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
