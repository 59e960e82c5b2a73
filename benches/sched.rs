//! Where a phase's CPU went, per thread, in this process or another (a server's): each
//! thread's time on a CPU and time runnable but waiting for one
//! (`/proc/<pid>/task/<tid>/schedstat`, nanoseconds) and its voluntary and involuntary context
//! switches (`status`). On a shared machine the rate depends on which thread is the long pole
//! and on how often a runnable thread waits, not only on the process's CPU per event. Included
//! by path (`#[path] mod sched;`) like `probe.rs`.

// Each benchmark uses the part it needs.
#![allow(dead_code)]

use std::collections::BTreeMap;

/// One thread's counters at one moment.
#[derive(Clone, Copy, Default)]
struct Counters {
    run_ns: u64,
    wait_ns: u64,
    voluntary: u64,
    involuntary: u64,
}

/// Every thread of a process, by thread id, with its name.
#[derive(Default)]
pub struct Snapshot(BTreeMap<u32, (String, Counters)>);

impl Snapshot {
    /// Thread `tid`'s time on a CPU and time runnable but waiting for one, nanoseconds.
    pub fn times(&self, tid: u32) -> Option<(u64, u64)> {
        self.0.get(&tid).map(|(_, c)| (c.run_ns, c.wait_ns))
    }

    /// The threads of `pid` (`None`: this process) now; empty where /proc is not there.
    pub fn take(pid: Option<u32>) -> Self {
        let base = pid.map_or_else(|| "/proc/self".to_string(), |p| format!("/proc/{p}"));
        let mut threads = BTreeMap::new();
        let Ok(dir) = std::fs::read_dir(format!("{base}/task")) else {
            return Self(threads);
        };
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let path = entry.path();
            let read = |name: &str| std::fs::read_to_string(path.join(name)).unwrap_or_default();
            let name = read("comm").trim().to_string();
            let mut sched = read("schedstat")
                .split_whitespace()
                .map(|v| v.parse::<u64>().unwrap_or(0))
                .collect::<Vec<_>>()
                .into_iter();
            let status = read("status");
            let field = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let counters = Counters {
                run_ns: sched.next().unwrap_or(0),
                wait_ns: sched.next().unwrap_or(0),
                voluntary: field("voluntary_ctxt_switches:"),
                involuntary: field("nonvoluntary_ctxt_switches:"),
            };
            threads.insert(tid, (name, counters));
        }
        Self(threads)
    }
}

/// What a process's threads did between two snapshots, per event.
#[derive(Clone, Default)]
pub struct Usage {
    /// CPU time per event, µs, all threads.
    pub run_us: f64,
    /// Time runnable but not running per event, µs, all threads.
    pub wait_us: f64,
    /// Voluntary (sleeps) and involuntary (preempted) switches per 1000 events.
    pub voluntary: f64,
    pub involuntary: f64,
    /// Per thread that ran: name and tid, CPU µs, waiting µs, voluntary and involuntary
    /// switches per 1000 events.
    pub threads: Vec<(String, f64, f64, f64, f64)>,
}

impl Usage {
    /// From `before` to `after` over `events`; a thread born meanwhile counts from zero.
    pub fn between(before: &Snapshot, after: &Snapshot, events: usize) -> Self {
        let per = |v: u64| v as f64 / events as f64;
        let mut usage = Usage::default();
        for (tid, (name, now)) in &after.0 {
            let was = before.0.get(tid).map(|(_, c)| *c).unwrap_or_default();
            let d = Counters {
                run_ns: now.run_ns.saturating_sub(was.run_ns),
                wait_ns: now.wait_ns.saturating_sub(was.wait_ns),
                voluntary: now.voluntary.saturating_sub(was.voluntary),
                involuntary: now.involuntary.saturating_sub(was.involuntary),
            };
            usage.run_us += per(d.run_ns) / 1e3;
            usage.wait_us += per(d.wait_ns) / 1e3;
            usage.voluntary += per(d.voluntary) * 1e3;
            usage.involuntary += per(d.involuntary) * 1e3;
            // Threads that did next to nothing (under 0.01 µs per event) are left out of the
            // list, not of the sums.
            if per(d.run_ns) >= 10.0 {
                usage.threads.push((
                    format!("{name}/{tid}"),
                    per(d.run_ns) / 1e3,
                    per(d.wait_ns) / 1e3,
                    per(d.voluntary) * 1e3,
                    per(d.involuntary) * 1e3,
                ));
            }
        }
        usage.threads.sort_by(|a, b| b.1.total_cmp(&a.1));
        usage
    }

    /// One line: the sums, then each thread.
    pub fn line(&self) -> String {
        let threads: Vec<String> = self
            .threads
            .iter()
            .map(|(name, run, wait, vol, invol)| {
                format!("{name} {run:.2}/{wait:.2} µs {vol:.0}+{invol:.0} sw")
            })
            .collect();
        format!(
            "CPU {:.2} µs, runnable-waiting {:.2} µs, switches {:.0} voluntary + {:.0} involuntary per 1000 [{}]",
            self.run_us,
            self.wait_us,
            self.voluntary,
            self.involuntary,
            threads.join("; ")
        )
    }
}
