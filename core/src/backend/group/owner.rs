//! Lease owner ids, and telling whether the process behind one is gone.
//!
//! An owner id is `HOST:PID:START:NONCE`: the host name, the process id, the process's start
//! time in clock ticks since boot (so a reused pid is not mistaken for the old process) and a
//! per-runtime nonce. A lease held by a process of this host that no longer runs can be taken
//! at once instead of after its lease time: a crashed or killed consumer's partitions move
//! immediately on a single host, and running an example twice in a row does not wait.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

static HOST: LazyLock<String> = LazyLock::new(|| {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().replace(':', "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned())
});

static NONCE: AtomicU64 = AtomicU64::new(0);

/// The start time of process `pid` in clock ticks since boot (field 22 of `/proc/PID/stat`),
/// where the platform tells.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after the last `)`.
    let after = stat.get(stat.rfind(')')? + 1..)?;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// A new owner id for one group runtime of this process.
pub(crate) fn new_owner_id() -> String {
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or(0);
    let nonce = NONCE.fetch_add(1, Ordering::Relaxed);
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}:{pid}:{start}:{:x}{nonce}", *HOST, salt & 0xfff)
}

/// Whether `owner` names a process of this host that has exited. Unknown formats, other hosts
/// and platforms without `/proc` answer `false`: their leases run out the normal way.
pub(crate) fn is_dead_local(owner: &str) -> bool {
    let mut fields = owner.rsplitn(4, ':');
    let (Some(_nonce), Some(start), Some(pid), Some(host)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    if host != HOST.as_str() {
        return false;
    }
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    if pid == std::process::id() || start == 0 {
        return false;
    }
    if !std::path::Path::new("/proc/self/stat").exists() {
        return false;
    }
    start_time(pid) != Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_an_exited_one_is_dead() {
        let me = new_owner_id();
        assert!(!is_dead_local(&me), "{me}");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let start = start_time(std::process::id()).unwrap();
        let gone = format!("{}:{pid}:{start}:1", *HOST);
        assert!(is_dead_local(&gone), "{gone}");
        assert!(!is_dead_local("other-host:1:1:1"));
        assert!(!is_dead_local("not an owner id"));
    }
}
