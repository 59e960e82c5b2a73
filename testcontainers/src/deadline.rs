//! What a test process says when its runner ends it: the test runner's deadline
//! (`.config/nextest.toml`: SIGTERM, then SIGKILL after a grace period) would otherwise leave
//! only the test's name, and a hang against a server is usually explained in that server's log.
//!
//! The first server a test process obtains installs a SIGTERM handler. The handler only writes
//! a byte to a pipe (all a signal handler may safely do); a thread waiting on that pipe prints
//! the last lines of the log of every server the process used to standard error, where the
//! runner shows it with the failure, and then lets SIGTERM end the process as it would have.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, Once};

/// Lines of each server's log shown when the process is ended.
const TAIL_LINES: usize = 40;

static LOGS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();
/// The pipe's write end, for the handler (an atomic load is async-signal-safe).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// Remembers `log` for the report and makes sure the SIGTERM handler is installed.
pub(crate) fn watch(log: &Path) {
    {
        let mut logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
        if !logs.iter().any(|l| l == log) {
            logs.push(log.to_path_buf());
        }
    }
    INSTALL.call_once(install);
}

extern "C" fn on_sigterm(_: libc::c_int) {
    let byte = 1u8;
    // SAFETY: write(2) is async-signal-safe; the descriptor is set before the handler exists.
    unsafe {
        libc::write(
            WAKE_FD.load(Ordering::Relaxed),
            (&byte as *const u8).cast(),
            1,
        );
    }
}

fn install() {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe(2) fills the two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return;
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    WAKE_FD.store(write_fd, Ordering::Relaxed);
    let spawned = std::thread::Builder::new()
        .name("sigterm-report".into())
        .spawn(move || {
            let mut byte = 0u8;
            // SAFETY: read(2) into a one-byte buffer we own.
            let n = unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) };
            if n == 1 {
                report();
            }
            // SAFETY: restore the default action and deliver SIGTERM again, so the process ends
            // the way its runner asked.
            unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
                libc::raise(libc::SIGTERM);
            }
        });
    if spawned.is_err() {
        return;
    }
    // SAFETY: a plain handler (no SA_SIGINFO) that only calls write(2).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
    }
}

fn report() {
    let logs = LOGS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut err = std::io::stderr().lock();
    let bar = "=".repeat(78);
    let _ = writeln!(
        err,
        "\n{bar}\nSIGTERM (the test runner's deadline?): the last {TAIL_LINES} lines of the log of each server this test used"
    );
    for log in &logs {
        let _ = writeln!(err, "---- {}", log.display());
        for line in crate::process::tail(log, TAIL_LINES) {
            let _ = writeln!(err, "  | {line}");
        }
    }
    let _ = writeln!(err, "{bar}");
    let _ = err.flush();
}
