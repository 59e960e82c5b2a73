//! Where each of the process's threads spent a case, for `BENCH_THREADS=1`: on a CPU, ready but
//! waiting for one (the machine's load), or asleep (waiting for work: the pipeline's hand-offs).
//! Which thread runs what (the caller's, the runtime's workers) decides which one sets the rate.

use std::time::Duration;

use super::sched::{Snapshot, Usage};

/// Every live thread of the process (never inlined: callgrind dumps its counts before it).
#[inline(never)]
pub(crate) fn snapshot() -> Snapshot {
    Snapshot::take(None)
}

/// Prints, when `BENCH_THREADS` is set, the wall time per event and, per thread that ran, its
/// CPU and its wait for a CPU per event between `before` and now; the caller's thread (`main`)
/// also its sleep (the rest of the wall time).
pub(crate) fn report(case: &str, batch: usize, n: usize, wall: Duration, before: &Snapshot) {
    if std::env::var_os("BENCH_THREADS").is_none() {
        return;
    }
    let now = Snapshot::take(None);
    let per = |ns: u64| ns as f64 / n as f64;
    let wall_ns = per(wall.as_nanos() as u64);
    let mut line = format!("  threads {case:<20} batch {batch:>4}: wall {wall_ns:>6.1} ns/event;");
    let main = std::process::id();
    if let (Some((cpu, ready)), Some((cpu_was, ready_was))) = (now.times(main), before.times(main))
    {
        let (cpu, ready) = (per(cpu - cpu_was), per(ready - ready_was));
        let asleep = wall_ns - cpu - ready;
        line += &format!(" main cpu {cpu:.1} ready {ready:.1} asleep {asleep:.1};");
    }
    let main_suffix = format!("/{main}");
    for (name, run_us, wait_us, _, _) in Usage::between(before, &now, n).threads {
        if !name.ends_with(&main_suffix) {
            line += &format!(
                " {name} cpu {:.1} ready {:.1};",
                run_us * 1e3,
                wait_us * 1e3
            );
        }
    }
    eprintln!("{line}");
}
