//! Where each of the process's threads spent a case, for `BENCH_THREADS=1`: on a CPU, ready but
//! waiting for one (the machine's load), or asleep (waiting for work: the pipeline's hand-offs).
//! Which thread runs what (the caller's, the runtime's workers) decides which one sets the rate.

use std::time::Duration;

/// One thread's `/proc/self/task/TID/schedstat`: time on a CPU and time runnable but waiting
/// for one, in nanoseconds.
pub(crate) struct Thread {
    tid: i32,
    name: String,
    on_cpu: u64,
    runnable: u64,
}

/// Every live thread of the process (never inlined: callgrind dumps its counts before it).
#[inline(never)]
pub(crate) fn snapshot() -> Vec<Thread> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut threads: Vec<Thread> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|tid| {
            let name = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
            let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
            let mut fields = stat.split_whitespace().map(|f| f.parse::<u64>().ok());
            Some(Thread {
                tid,
                name: name.trim().to_owned(),
                on_cpu: fields.next()??,
                runnable: fields.next()??,
            })
        })
        .collect();
    threads.sort_by_key(|t| t.tid);
    threads
}

/// Prints, when `BENCH_THREADS` is set, the wall time per event and, per thread that ran, its
/// CPU and its wait for a CPU per event between `before` and now; the caller's thread (`main`)
/// also its sleep (the rest of the wall time).
pub(crate) fn report(case: &str, batch: usize, n: usize, wall: Duration, before: &[Thread]) {
    if std::env::var_os("BENCH_THREADS").is_none() {
        return;
    }
    let main = std::process::id() as i32;
    let per = |ns: u64| ns as f64 / n as f64;
    let wall_ns = per(wall.as_nanos() as u64);
    let mut line = format!("  threads {case:<20} batch {batch:>4}: wall {wall_ns:>6.1} ns/event;");
    for t in snapshot() {
        let was = before.iter().find(|b| b.tid == t.tid);
        let cpu = per(t.on_cpu - was.map_or(0, |b| b.on_cpu));
        let runnable = per(t.runnable - was.map_or(0, |b| b.runnable));
        if t.tid == main {
            let asleep = wall_ns - cpu - runnable;
            line += &format!(" main cpu {cpu:.1} ready {runnable:.1} asleep {asleep:.1};");
        } else if cpu >= 1.0 {
            line += &format!(" {}/{} cpu {cpu:.1} ready {runnable:.1};", t.name, t.tid);
        }
    }
    eprintln!("{line}");
}
