//! Replicator processes and their memory.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tributary_testcontainers::{Process, group_resident_bytes, group_threads, log_tail};

/// A replicator process, in its own process group (the fixtures' [`Process`]: a watchdog
/// stops it should this bench die without dropping it).
pub(crate) struct Replicator {
    pub(crate) name: String,
    pub(crate) process: Process,
    pub(crate) pgid: u32,
    pub(crate) stopped: bool,
}

impl Replicator {
    pub(crate) fn spawn(name: &str, command: Command, log: &Path) -> Replicator {
        let process = Process::spawn(command, log, None)
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Replicator {
            name: name.to_string(),
            pgid: process.pid(),
            process,
            stopped: false,
        }
    }

    /// `Err` with the log's tail once the process has exited.
    pub(crate) fn check_alive(&mut self) -> Result<(), String> {
        match self.process.exited() {
            None => Ok(()),
            Some(status) => Err(format!(
                "{} exited early ({status}); log {}:\n{}",
                self.name,
                self.process.log().display(),
                log_tail(self.process.log(), 30).join("\n")
            )),
        }
    }

    /// SIGTERM to the group, SIGKILL after 10 s (and always, for stragglers).
    pub(crate) fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            self.process.stop(Duration::from_secs(10));
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        if !self.stopped && std::thread::panicking() {
            eprintln!(
                "{} is being stopped after a failure; its log: {}",
                self.name,
                self.process.log().display()
            );
        }
        self.stop();
    }
}

/// Samples resident memory every 100 ms on a thread and keeps the peak.
pub(crate) struct RssSampler {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) peak: Arc<AtomicU64>,
    /// Most threads seen in the process group (0 for this process).
    pub(crate) peak_threads: Arc<AtomicU64>,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    /// `None`: this process; `Some(pgid)`: that process group.
    pub(crate) fn start(pgid: Option<u32>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let peak_threads = Arc::new(AtomicU64::new(0));
        let (s, p, t) = (stop.clone(), peak.clone(), peak_threads.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let rss = match pgid {
                    None => crate::probe::rss_bytes(),
                    Some(pgid) => {
                        t.fetch_max(group_threads(pgid), Ordering::Relaxed);
                        group_resident_bytes(pgid)
                    }
                };
                p.fetch_max(rss, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        RssSampler {
            stop,
            peak,
            peak_threads,
            thread: Some(thread),
        }
    }

    pub(crate) fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
