use std::fmt;

use crate::Peer;

/// Why a server is not available to a test.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The server is not installed in the peers cache (native mode).
    NotInstalled,
    /// The server was started but exited or never answered its readiness probe.
    StartFailed,
    /// External mode was chosen but no URL was given for this server.
    NoUrl,
    /// This mode cannot provide this server (for example Event Hubs before its emulator exists).
    Unsupported,
}

/// A server that could not be provided: which, why, the end of its log and how to fix it.
#[derive(Debug, Clone)]
pub struct PeerError {
    /// The server concerned.
    pub peer: Peer,
    /// The broad reason, for callers that decide between skipping and failing.
    pub reason: Reason,
    /// What went wrong, in one sentence.
    pub message: String,
    /// The last lines of the server's log, when it was started.
    pub log_tail: Vec<String>,
    /// Where the full log is.
    pub log_path: Option<std::path::PathBuf>,
    /// Free and total MiB of the file system holding the log (and the server's data), read
    /// when the server failed: a full disk ends servers with an empty log and no other clue.
    pub disk_mib: Option<(u32, u32)>,
    /// How to get the server: commands to run or variables to set.
    pub fix: Vec<String>,
}

impl PeerError {
    pub(crate) fn new(peer: Peer, reason: Reason, message: impl Into<String>) -> Self {
        PeerError {
            peer,
            reason,
            message: message.into(),
            log_tail: Vec::new(),
            log_path: None,
            disk_mib: None,
            fix: Vec::new(),
        }
    }

    pub(crate) fn fix(mut self, how: impl Into<String>) -> Self {
        self.fix.push(how.into());
        self
    }

    pub(crate) fn with_log(mut self, path: &std::path::Path) -> Self {
        self.log_tail = crate::process::tail(path, 15);
        self.log_path = Some(path.to_path_buf());
        self.disk_mib = path.parent().and_then(crate::process::disk_mib);
        self
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} server unavailable: {}", self.peer, self.message)?;
        if !self.log_tail.is_empty() {
            write!(f, "\n  last lines of its log")?;
            if let Some(path) = &self.log_path {
                write!(f, " ({})", path.display())?;
            }
            writeln!(f, ":")?;
            for line in &self.log_tail {
                writeln!(f, "    | {line}")?;
            }
        } else if let Some(path) = &self.log_path {
            write!(f, "\n  log (empty): {}", path.display())?;
        }
        if let Some((free, total)) = self.disk_mib {
            write!(
                f,
                "\n  disk: {free} MiB free of {total} MiB on the log's file system{}",
                if free < 2048 {
                    " (nearly full: servers fail to start or stop writing)"
                } else {
                    ""
                }
            )?;
        }
        for how in &self.fix {
            write!(f, "\n  fix: {how}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PeerError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that died on a full disk leaves an empty log: the error must still say where the
    /// log is, that it is empty, and how much room its file system had.
    #[test]
    fn a_failed_start_names_its_empty_log_and_the_free_disk() {
        let dir = std::env::temp_dir().join(format!("peer-error-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("pulsar.log");
        std::fs::write(&log, "").unwrap();
        let error = PeerError::new(Peer::Pulsar, Reason::StartFailed, "exited").with_log(&log);
        let text = error.to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(text.contains("log (empty): "), "{text}");
        let (free, total) = error.disk_mib.expect("statvfs of the temp dir");
        assert!(free <= total && total > 0, "{free} of {total}");
        assert!(
            text.contains(&format!("{free} MiB free of {total} MiB")),
            "{text}"
        );
    }
}
