//! The other side of the interop tests: the platforms' official Python clients, from the venv
//! that `scripts/peers/install-pyclients.sh` puts in the peers cache.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! use tributary_testcontainers::python::{self, Script};
//!
//! // Without the venv (or without boto3 in it) the test prints a loud SKIPPED notice and
//! // returns; with TRIBUTARY_REQUIRE_PEERS=1 it fails.
//! let Some(python) = python::interpreter("boto3") else { return };
//! let stdout = Script::new(&python, "tests/py/get_records.py")
//!     .arg("http://127.0.0.1:4567")
//!     .deadline(Duration::from_secs(60))
//!     .run()
//!     .await;
//! # let _ = stdout; }
//! ```

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a script may run unless [`Script::deadline`] says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(180);

/// The venv's Python interpreter if it imports `modules` (Python's `import` list, such as
/// `"boto3, aws_kinesis_agg"`); otherwise `None` after a loud SKIPPED notice, or a panic when
/// `TRIBUTARY_REQUIRE_PEERS` is set.
pub fn interpreter(modules: &str) -> Option<PathBuf> {
    let python = crate::peers_dir().join("pyvenv/current/bin/python");
    let ready = python.is_file()
        && std::process::Command::new(&python)
            .args(["-c", &format!("import {modules}")])
            .output()
            .is_ok_and(|o| o.status.success());
    if ready {
        return Some(python);
    }
    let why = format!(
        "{} cannot import {modules}; fix: scripts/peers/install-all.sh pyclients",
        python.display()
    );
    assert!(
        !crate::peers_required(),
        "{why} (TRIBUTARY_REQUIRE_PEERS is set)"
    );
    let _ = writeln!(
        std::io::stderr().lock(),
        "\nSKIPPED Python interop: {why}\n"
    );
    None
}

/// One run of a Python script, with a deadline ([`DEFAULT_DEADLINE`] unless set).
#[derive(Debug)]
pub struct Script {
    command: tokio::process::Command,
    shown: String,
    deadline: Duration,
}

impl Script {
    /// `python script`; a relative `script` is found from the working directory (cargo runs
    /// tests from their crate's directory).
    pub fn new(python: &Path, script: impl AsRef<Path>) -> Script {
        let script = script.as_ref();
        let mut command = tokio::process::Command::new(python);
        command.arg(script).kill_on_drop(true);
        Script {
            command,
            shown: script.display().to_string(),
            deadline: DEFAULT_DEADLINE,
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Script {
        self.command.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Script
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Sets an environment variable for the script.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Script {
        self.command.env(key, value);
        self
    }

    /// How long the script may run before it is killed and the test fails.
    pub fn deadline(mut self, deadline: Duration) -> Script {
        self.deadline = deadline;
        self
    }

    /// Runs the script to its end and returns what it printed on stdout. Panics, quoting its
    /// output, when it fails, prints anything but UTF-8, or outlives its deadline (it is
    /// killed then).
    pub async fn run(mut self) -> String {
        let output = tokio::time::timeout(self.deadline, self.command.output())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "python {} did not finish within {:?}",
                    self.shown, self.deadline
                )
            })
            .unwrap_or_else(|e| panic!("cannot run python {}: {e}", self.shown));
        let stdout = String::from_utf8(output.stdout)
            .unwrap_or_else(|e| panic!("python {} printed non-UTF-8: {e}", self.shown));
        assert!(
            output.status.success(),
            "python {} failed ({}): {}\nstdout: {stdout}",
            self.shown,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}
