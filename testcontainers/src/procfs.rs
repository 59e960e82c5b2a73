//! What `/proc` says about a server's (or any child's) process group: its memory, its CPU time,
//! and whether it still runs.

use std::time::Duration;

/// The `/proc/<pid>/stat` fields after the parenthesised command name (`state ppid pgrp …`,
/// so field *n* of proc(5) is at index *n* − 3) of every process in group `pgid`, with its pid.
fn group_stats(pgid: u32) -> Vec<(u32, Vec<String>)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let fields: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
            (fields.get(2)?.parse::<u32>().ok()? == pgid).then_some((pid, fields))
        })
        .collect()
}

/// Sum of VmRSS over every process in the process group `pgid` (0 when there is none).
pub fn group_resident_bytes(pgid: u32) -> u64 {
    group_stats(pgid)
        .into_iter()
        .filter_map(|(pid, _)| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .sum()
}

/// User and system CPU time used so far by the processes of group `pgid`, with what their
/// finished and reaped children used (a wrapper script's JVM, say); zero when there is none.
pub fn group_cpu_time(pgid: u32) -> Duration {
    // SAFETY: sysconf reads a constant of the system.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks: u64 = group_stats(pgid)
        .iter()
        .map(|(_, fields)| {
            // utime, stime, cutime, cstime: proc(5) fields 14 to 17.
            (11..=14)
                .filter_map(|i| fields.get(i)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum();
    Duration::from_secs_f64(ticks as f64 / ticks_per_second)
}

/// Threads of the processes of group `pgid` (0 when there is none).
pub fn group_threads(pgid: u32) -> u64 {
    group_stats(pgid)
        .iter()
        // num_threads: proc(5) field 20.
        .filter_map(|(_, fields)| fields.get(17)?.parse::<u64>().ok())
        .sum()
}

/// Threads of process `pid` named `name` (`/proc/PID/task/*/comm`; the kernel keeps 15
/// bytes of a name). librdkafka names each client's main thread `rdk:main`, so this counts a
/// process's Kafka clients.
pub fn threads_named(pid: u32, name: &str) -> usize {
    thread_ids_named(pid, name).len()
}

/// The ids of process `pid`'s threads named `name`: the same set before and after a step
/// means the same threads, where a count would not show one replaced by another.
pub fn thread_ids_named(pid: u32, name: &str) -> std::collections::BTreeSet<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Default::default();
    };
    tasks
        .filter_map(|task| {
            let path = task.ok()?.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            if comm.trim_end_matches('\n') != name {
                return None;
            }
            path.file_name()?.to_str()?.parse().ok()
        })
        .collect()
}

/// `true` when any process of group `pgid` is still alive (zombies count as gone).
pub fn process_group_alive(pgid: u32) -> bool {
    group_stats(pgid)
        .iter()
        .any(|(_, fields)| fields.first().map(String::as_str) != Some("Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_child_group_shows_cpu_time_and_memory() {
        use std::os::unix::process::CommandExt as _;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id();
        assert!(group_resident_bytes(pgid) > 0);
        assert_eq!(group_threads(pgid), 1, "sh runs one thread");
        assert_eq!(threads_named(pgid, "sh"), 1);
        assert_eq!(threads_named(pgid, "rdk:main"), 0);
        // A single-threaded process's one thread has the process's id.
        assert_eq!(
            thread_ids_named(pgid, "sh").into_iter().collect::<Vec<_>>(),
            [pgid]
        );
        assert!(process_group_alive(pgid));
        let mut cpu = Duration::ZERO;
        while child.try_wait().unwrap().is_none() {
            cpu = cpu.max(group_cpu_time(pgid));
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(cpu > Duration::ZERO, "no CPU time seen for a busy loop");
        assert!(!process_group_alive(pgid));
    }
}
