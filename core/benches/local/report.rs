//! The figures of a run: rows, percentiles, the printed tables with each case's ratio to its
//! baseline, and the JSON `scripts/bench` reads.

use std::fmt::Write as _;
use std::time::Duration;

use super::{BATCHES, FSYNC_BATCHES, PAYLOAD, PINGS, probe};

/// One throughput figure of the batch sweep.
pub(crate) struct Throughput {
    pub(crate) case: &'static str,
    pub(crate) baseline: bool,
    pub(crate) batch: usize,
    pub(crate) events: usize,
    /// Every round's events/s, in round order.
    pub(crate) rounds: Vec<f64>,
}

impl Throughput {
    /// The median of the rounds.
    pub(crate) fn per_sec(&self) -> f64 {
        probe::stats::median(&self.rounds)
    }
}

/// Latency percentiles of one case, in microseconds.
pub(crate) struct Latency {
    pub(crate) case: &'static str,
    pub(crate) baseline: bool,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
}

/// One row of the partition sweep.
pub(crate) struct Scaling {
    pub(crate) case: &'static str,
    pub(crate) partitions: u32,
    pub(crate) events: usize,
    pub(crate) per_sec: f64,
    /// Joining the group and opening the partitions, before the first read (not in `per_sec`).
    pub(crate) open_secs: f64,
    pub(crate) rss_before: u64,
    pub(crate) rss_peak: u64,
}

pub(crate) fn percentiles(
    case: &'static str,
    baseline: bool,
    mut samples: Vec<Duration>,
) -> Latency {
    samples.sort();
    let at = |p: f64| {
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    Latency {
        case,
        baseline,
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        p999: at(0.999),
    }
}

#[derive(Default)]
pub(crate) struct Results {
    pub(crate) throughput: Vec<Throughput>,
    pub(crate) latency: Vec<Latency>,
    pub(crate) scaling: Vec<Scaling>,
}

impl Results {
    fn rate(&self, case: &str, batch: usize) -> Option<&Throughput> {
        self.throughput
            .iter()
            .find(|t| t.case == case && t.batch == batch)
    }

    /// `case`'s rate over `baseline`'s in each round, at `batch`: the two ran back to back,
    /// so a round's load weighs on both.
    fn round_ratios(&self, case: &str, baseline: &str, batch: usize) -> Option<Vec<f64>> {
        let (ours, theirs) = (self.rate(case, batch)?, self.rate(baseline, batch)?);
        Some(
            ours.rounds
                .iter()
                .zip(&theirs.rounds)
                .map(|(a, b)| a / b)
                .collect(),
        )
    }
}

/// The batch size the goals are set at.
const GOAL_BATCH: usize = 100;

/// The pairs the issue sets goals for: (case, its baseline, goal ratio).
const PAIRS: [(&str, &str, f64); 4] = [
    ("memory://", "tokio mpsc", 0.5),
    ("file:// fsync=never", "raw write", 0.5),
    ("file:// fsync=always", "raw write + fdatasync", 0.7),
    ("fsync=always preallocate", "raw write + fdatasync", 0.7),
];

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

pub(crate) fn print(n: usize, r: &Results) {
    println!(
        "\nlocal backend: events of {PAYLOAD} B with a key out of 1000, 4 partitions; produce \
         and consume concurrently (each a task of its own), send_batch(B) / receive_batch(B) + ack each; {n} events \
         (fsync rows: at most {FSYNC_BATCHES} batches)\n"
    );
    print!("{:<24}", "events/s, batch");
    for b in BATCHES {
        print!(" {b:>12}");
    }
    println!();
    let mut cases: Vec<&str> = Vec::new();
    for t in &r.throughput {
        if !cases.contains(&t.case) {
            cases.push(t.case);
        }
    }
    let per_sec = |case: &str, batch: usize| r.rate(case, batch).map(Throughput::per_sec);
    for case in &cases {
        print!("{case:<24}");
        for b in BATCHES {
            print!(" {:>12.0}", per_sec(case, b).unwrap_or(f64::NAN));
        }
        println!();
    }
    println!();
    // One line of ratios per batch size, printed when both sides ran at batch 100.
    let ratios = |case: &str, baseline: &str, note: &str| {
        if per_sec(case, 100).is_none() || per_sec(baseline, 100).is_none() {
            return;
        }
        print!("{:<46}", format!("{case} / {baseline}"));
        // Ratios of the rounds' medians; the goal lines below judge per-round ratios.
        for b in BATCHES {
            let ratio =
                per_sec(case, b).unwrap_or(f64::NAN) / per_sec(baseline, b).unwrap_or(f64::NAN);
            print!(" {ratio:>6.2}");
        }
        println!("{note}");
    };
    for (case, baseline, goal) in PAIRS {
        ratios(case, baseline, &format!("   (goal ≥ {goal} at batch 100)"));
    }
    // Like for like with `fsync=always`: the log keeps one file per partition.
    ratios(
        "file:// fsync=always",
        "raw fdatasync, 4 files",
        "   (like for like)",
    );
    ratios(
        "fsync=always preallocate",
        "raw fdatasync, 4 zeroed",
        "   (like for like)",
    );
    ratios(
        "fsync=always 1 partition",
        "raw write + fdatasync",
        "   (like for like)",
    );
    // The floor against the baselines: what the goals leave for the API and the backend.
    ratios("log + group floor", "tokio mpsc", "");
    ratios("log + group floor", "raw write", "");
    // `file://` does all `memory://` does and writes the frames besides, so this is the most
    // its `fsync=never` row could reach against raw writes.
    ratios(
        "memory://",
        "raw write",
        "   (the ceiling of file:// fsync=never / raw write)",
    );
    println!();
    for (case, baseline, goal) in PAIRS {
        if let Some(ratios) = r.round_ratios(case, baseline, GOAL_BATCH) {
            probe::ratio_goal(
                &format!("`{case}` vs {baseline}, batches of {GOAL_BATCH}"),
                &ratios,
                goal,
            );
        }
    }
    // Not a goal: the bound the `fsync=never` goal meets first (see the ratio line above).
    if let Some(ratios) = r.round_ratios("memory://", "raw write", GOAL_BATCH) {
        println!(
            "ceiling of `file:// fsync=never`: `memory://` vs raw write, batches of {GOAL_BATCH} | {}",
            probe::ratio_with_interval(&ratios)
        );
    }
    if !r.latency.is_empty() {
        println!(
            "\nlatency: send one event, receive and ack it ({PINGS} samples); raw write: one frame\n"
        );
        println!(
            "{:<24} {:>10} {:>10} {:>10} {:>10}",
            "µs", "p50", "p90", "p99", "p99.9"
        );
        for l in &r.latency {
            println!(
                "{:<24} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
                l.case, l.p50, l.p90, l.p99, l.p999
            );
        }
    }
    if !r.scaling.is_empty() {
        println!(
            "\npartitions: consume a backlog of {n} events with one consumer, receive_batch(1000)\n"
        );
        println!(
            "{:<24} {:>10} {:>12} {:>10} {:>16} {:>16}",
            "", "partitions", "events/s", "open ms", "RSS before MiB", "RSS peak MiB"
        );
        for s in &r.scaling {
            println!(
                "{:<24} {:>10} {:>12.0} {:>10.1} {:>16.1} {:>16.1}",
                s.case,
                s.partitions,
                s.per_sec,
                s.open_secs * 1e3,
                mib(s.rss_before),
                mib(s.rss_peak)
            );
        }
    }
}

fn json_numbers(values: &[f64]) -> String {
    let items: Vec<String> = values.iter().map(|v| format!("{v:.4}")).collect();
    format!("[{}]", items.join(","))
}

fn json_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub(crate) fn to_json(n: usize, r: &Results) -> String {
    let mut out = String::new();
    write!(
        out,
        "{{\"bench\":\"local\",\"events\":{n},\"payload\":{PAYLOAD},"
    )
    .unwrap();
    out.push_str("\"throughput\":[");
    for (i, t) in r.throughput.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write!(
            out,
            "{{\"case\":{},\"baseline\":{},\"batch\":{},\"events\":{},\"per_sec\":{:.1},\"rounds\":{}}}",
            json_str(t.case),
            t.baseline,
            t.batch,
            t.events,
            t.per_sec(),
            json_numbers(&t.rounds)
        )
        .unwrap();
    }
    out.push_str("],\"pairs\":[");
    for (i, (case, baseline, goal)) in PAIRS.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let ratios = r
            .round_ratios(case, baseline, GOAL_BATCH)
            .unwrap_or_default();
        write!(
            out,
            "{{\"case\":{},\"baseline\":{},\"goal\":{goal},\"batch\":{GOAL_BATCH},\"round_ratios\":{}}}",
            json_str(case),
            json_str(baseline),
            json_numbers(&ratios)
        )
        .unwrap();
    }
    out.push_str("],\"latency\":[");
    for (i, l) in r.latency.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write!(
            out,
            "{{\"case\":{},\"baseline\":{},\"p50\":{:.2},\"p90\":{:.2},\"p99\":{:.2},\"p999\":{:.2}}}",
            json_str(l.case),
            l.baseline,
            l.p50,
            l.p90,
            l.p99,
            l.p999
        )
        .unwrap();
    }
    out.push_str("],\"scaling\":[");
    for (i, s) in r.scaling.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write!(
            out,
            "{{\"case\":{},\"partitions\":{},\"events\":{},\"per_sec\":{:.1},\"open_secs\":{:.4},\"rss_before\":{},\"rss_peak\":{}}}",
            json_str(s.case),
            s.partitions,
            s.events,
            s.per_sec,
            s.open_secs,
            s.rss_before,
            s.rss_peak
        )
        .unwrap();
    }
    out.push_str("]}\n");
    out
}
