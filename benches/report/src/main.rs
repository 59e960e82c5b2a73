//! Writes `BENCHMARKS.md` and its SVG plots from what `scripts/bench` collected.
//!
//! `tributary-bench-report RESULTS_DIR REPO_ROOT`. RESULTS_DIR holds:
//! - `meta.txt`: `key=value` lines (date, commit, command, events);
//! - `machine.txt`: the machine as `lscpu`, `free`, `uname` and the load average saw it;
//! - `suites.tsv`: one line per benchmark suite: name, `ran`/`skipped`/`failed`, a reason, and
//!   when and at which commit it ran (missing in older results: the run's own);
//! - `meta.txt` also holds a `rerun=` line per `scripts/bench --keep` since the full run;
//! - `<suite>.txt`: each suite's raw output;
//! - `local.json`: the local backend's figures (`core/benches/local.rs`, `BENCH_JSON`);
//! - `kinesis.json`: the Kinesis suite's figures (`backends/kinesis/benches/kinesis.rs`,
//!   `BENCH_JSON`).
//!
//! The plots go to `docs/benchmarks/` so the Markdown can link them by relative path.

mod kinesis;
mod plots;
#[path = "../../stats.rs"]
mod stats;
#[cfg(test)]
mod stats_tests;

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [results, root] = args.as_slice() else {
        eprintln!("usage: tributary-bench-report RESULTS_DIR REPO_ROOT");
        std::process::exit(2);
    };
    if let Err(e) = run(results, root) {
        eprintln!("bench report: {e}");
        std::process::exit(1);
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// One figure of the batch sweep.
pub(crate) struct Throughput {
    pub case: String,
    pub baseline: bool,
    pub batch: u64,
    pub per_sec: f64,
}

/// Latency percentiles of one case, in µs.
pub(crate) struct Latency {
    pub case: String,
    pub baseline: bool,
    pub values: [f64; 4],
}

/// One row of the partition sweep.
pub(crate) struct Scaling {
    pub case: String,
    pub partitions: u64,
    pub per_sec: f64,
    pub open_ms: f64,
    pub rss_before: f64,
    pub rss_peak: f64,
}

/// Hand-measured sections in `docs/benchmarks/`, copied into BENCHMARKS.md as they are.
const KEPT_SECTIONS: &[&str] = &["bridge-inflight-curve.md"];

pub(crate) const PERCENTILES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];

/// A goal of the local suite: `case` against `baseline` at `batch`, judged on the median of
/// the per-round ratios.
struct Pair {
    case: String,
    baseline: String,
    goal: f64,
    batch: u64,
    round_ratios: Vec<f64>,
}

impl Pair {
    fn met(&self) -> bool {
        stats::median(&self.round_ratios) >= self.goal
    }
}

struct Local {
    events: u64,
    throughput: Vec<Throughput>,
    pairs: Vec<Pair>,
    latency: Vec<Latency>,
    scaling: Vec<Scaling>,
}

impl Local {
    /// The sweep's events/s for `case` at `batch`, if the run measured it.
    fn rate(&self, case: &str, batch: u64) -> Option<f64> {
        self.throughput
            .iter()
            .find(|t| t.case == case && t.batch == batch)
            .map(|t| t.per_sec)
    }
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value, String> {
    v.get(name)
        .ok_or_else(|| format!("local.json: `{name}` is missing in {v}"))
}

fn num(v: &Value, name: &str) -> Result<f64, String> {
    field(v, name)?
        .as_f64()
        .ok_or_else(|| format!("local.json: `{name}` is not a number in {v}"))
}

fn text(v: &Value, name: &str) -> Result<String, String> {
    Ok(field(v, name)?
        .as_str()
        .ok_or_else(|| format!("local.json: `{name}` is not a string in {v}"))?
        .to_owned())
}

fn list<'a>(v: &'a Value, name: &str) -> Result<&'a [Value], String> {
    Ok(field(v, name)?
        .as_array()
        .ok_or_else(|| format!("local.json: `{name}` is not a list"))?
        .as_slice())
}

fn parse_local(body: &str) -> Result<Local, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("local.json: {e}"))?;
    let flag = |v: &Value| v.get("baseline").and_then(Value::as_bool).unwrap_or(false);
    Ok(Local {
        events: num(&v, "events")? as u64,
        throughput: list(&v, "throughput")?
            .iter()
            .map(|t| {
                Ok(Throughput {
                    case: text(t, "case")?,
                    baseline: flag(t),
                    batch: num(t, "batch")? as u64,
                    per_sec: num(t, "per_sec")?,
                })
            })
            .collect::<Result<_, String>>()?,
        pairs: list(&v, "pairs")?
            .iter()
            .map(|p| {
                Ok(Pair {
                    case: text(p, "case")?,
                    baseline: text(p, "baseline")?,
                    goal: num(p, "goal")?,
                    batch: num(p, "batch")? as u64,
                    round_ratios: list(p, "round_ratios")?
                        .iter()
                        .map(|r| {
                            r.as_f64().ok_or_else(|| {
                                format!("local.json: a round ratio is not a number in {p}")
                            })
                        })
                        .collect::<Result<_, String>>()?,
                })
            })
            .collect::<Result<_, String>>()?,
        latency: list(&v, "latency")?
            .iter()
            .map(|l| {
                Ok(Latency {
                    case: text(l, "case")?,
                    baseline: flag(l),
                    values: [
                        num(l, "p50")?,
                        num(l, "p90")?,
                        num(l, "p99")?,
                        num(l, "p999")?,
                    ],
                })
            })
            .collect::<Result<_, String>>()?,
        scaling: list(&v, "scaling")?
            .iter()
            .map(|s| {
                Ok(Scaling {
                    case: text(s, "case")?,
                    partitions: num(s, "partitions")? as u64,
                    per_sec: num(s, "per_sec")?,
                    open_ms: num(s, "open_secs")? * 1e3,
                    rss_before: num(s, "rss_before")? / (1u64 << 20) as f64,
                    rss_peak: num(s, "rss_peak")? / (1u64 << 20) as f64,
                })
            })
            .collect::<Result<_, String>>()?,
    })
}

/// Thousands separated by commas, as the README writes figures.
fn grouped(x: f64) -> String {
    if !x.is_finite() {
        return "–".to_owned();
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

fn cases<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for n in names {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

fn local_section(md: &mut String, local: &Local) {
    let rate = |case: &str, batch: u64| local.rate(case, batch);
    let _ = writeln!(
        md,
        "## Local backend (`cargo bench -p tributary --bench local`)\n\n\
         Events of 100 B with a key out of 1000, 4 partitions; producer and consumer run \
         concurrently, each in a task of its own as in the channel baseline (`send_batch(B)`, \
         `receive_batch(B)`, every delivery acked); {} events per row (fsync rows: at most \
         1,000 batches). Each rate is the median of the run's rounds; in each round every \
         case runs at every batch size, a backend right after its baseline, and each goal is \
         judged on the median of its per-round ratios, given with its 95% interval.\n",
        grouped(local.events as f64)
    );
    md.push_str("| goal row | batch | backend | baseline | median ratio per round | goal | met |\n|---|---|---|---|---|---|---|\n");
    for pair in &local.pairs {
        let (Some(a), Some(b)) = (
            rate(&pair.case, pair.batch),
            rate(&pair.baseline, pair.batch),
        ) else {
            continue;
        };
        let _ = writeln!(
            md,
            "| `{}` vs {} | {} | {}/s | {}/s | {} | ≥ {}× | {} |",
            pair.case,
            pair.baseline,
            pair.batch,
            grouped(a),
            grouped(b),
            stats::ratio_with_interval(&pair.round_ratios),
            pair.goal,
            if pair.met() { "yes" } else { "**no**" }
        );
    }
    let batches: Vec<u64> = {
        let mut b: Vec<u64> = local.throughput.iter().map(|t| t.batch).collect();
        b.sort_unstable();
        b.dedup();
        b
    };
    md.push_str("\nThroughput (events/s) by batch size:\n\n| |");
    for b in &batches {
        let _ = write!(md, " B={b} |");
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(batches.len()));
    md.push('\n');
    for case in cases(local.throughput.iter().map(|t| t.case.as_str())) {
        let baseline = local
            .throughput
            .iter()
            .any(|t| t.case == case && t.baseline);
        let _ = write!(
            md,
            "| {case}{} |",
            if baseline { " (baseline)" } else { "" }
        );
        for b in &batches {
            let _ = write!(md, " {} |", grouped(rate(case, *b).unwrap_or(f64::NAN)));
        }
        md.push('\n');
    }
    md.push_str("\n![throughput against batch size](docs/benchmarks/throughput-batch.svg)\n");
    if !local.latency.is_empty() {
        md.push_str(
            "\nLatency (µs): one event sent, then received and acked, 2,000 times; the raw \
             write rows time one frame's write (and fdatasync).\n\n| |",
        );
        for p in PERCENTILES {
            let _ = write!(md, " {p} |");
        }
        md.push_str("\n|---|---|---|---|---|\n");
        for l in &local.latency {
            let _ = write!(
                md,
                "| {}{} |",
                l.case,
                if l.baseline { " (baseline)" } else { "" }
            );
            for v in l.values {
                let _ = write!(md, " {v:.1} |");
            }
            md.push('\n');
        }
        md.push_str("\n![latency percentiles](docs/benchmarks/latency.svg)\n");
    }
    if !local.scaling.is_empty() {
        let _ = writeln!(
            md,
            "\nConsume by partition count: a backlog of {} events, then one consumer drains it \
             with `receive_batch(1000)`, acking each; events/s from its first read (joining the group \
             and opening the partitions is the \"open\" column). Memory is the process's resident set (VmRSS) \
             before the consumer opens and its peak while draining (sampled every 5 ms); for \
             `memory://` the backlog itself is resident.\n",
            grouped(local.events as f64)
        );
        md.push_str("| backend | partitions | events/s | open | RSS before | RSS peak | growth |\n|---|---|---|---|---|---|---|\n");
        for s in &local.scaling {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.0} ms | {:.0} MiB | {:.0} MiB | {:+.0} MiB |",
                s.case,
                s.partitions,
                grouped(s.per_sec),
                s.open_ms,
                s.rss_before,
                s.rss_peak,
                s.rss_peak - s.rss_before
            );
        }
        md.push_str("\n![consume throughput against partitions](docs/benchmarks/partitions.svg)\n");
    }
}

/// One performance goal as a suite judged it: row, measured figure, goal, met.
struct Goal {
    suite: String,
    row: String,
    measured: String,
    goal: String,
    met: bool,
}

/// The goals of the local suite, from its JSON: each backend against its baseline at the
/// batch size the goal names.
fn local_goals(local: &Local) -> Vec<Goal> {
    local
        .pairs
        .iter()
        .filter(|p| !p.round_ratios.is_empty())
        .map(|p| Goal {
            suite: "local".into(),
            row: format!("`{}` vs {}, batches of {}", p.case, p.baseline, p.batch),
            measured: stats::ratio_with_interval(&p.round_ratios),
            goal: format!("≥ {}×", p.goal),
            met: p.met(),
        })
        .collect()
}

/// The `goal: ROW | MEASURED | GOAL | yes/no` lines a suite printed (`benches/probe.rs`).
fn printed_goals(suite: &str, output: &str) -> Vec<Goal> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("goal: "))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(" | ").map(str::trim).collect();
            let [row, measured, goal, met] = f.as_slice() else {
                return None;
            };
            Some(Goal {
                suite: suite.into(),
                row: (*row).into(),
                measured: (*measured).into(),
                goal: (*goal).into(),
                met: *met == "yes",
            })
        })
        .collect()
}

/// The headline: every goal any suite of this run measured, met or not, in one table.
fn goals_section(
    md: &mut String,
    suites: &[(String, String, String)],
    results: &Path,
    local: Option<&Local>,
    kinesis: Option<&kinesis::Kinesis>,
) {
    let mut goals = local.map(local_goals).unwrap_or_default();
    goals.extend(kinesis.map(kinesis::goals).unwrap_or_default());
    for (name, status, _) in suites {
        if status != "ran" || name == "local" || name == "kinesis" {
            continue;
        }
        if let Ok(output) = std::fs::read_to_string(results.join(format!("{name}.txt"))) {
            goals.extend(printed_goals(name, &output));
        }
    }
    if goals.is_empty() {
        return;
    }
    let met = goals.iter().filter(|g| g.met).count();
    let _ = writeln!(
        md,
        "## Goals

{met} of {} goals met in these results; each suite judges its own rows from its \
         own figures (details and spread in its section and raw output below).\n\n\
         | suite | goal row | measured | goal | met |\n|---|---|---|---|---|",
        goals.len()
    );
    for g in &goals {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            g.suite,
            g.row,
            g.measured,
            g.goal,
            if g.met { "yes" } else { "**no**" }
        );
    }
    md.push('\n');
}

fn run(results: &Path, root: &Path) -> Result<(), String> {
    let meta_text = read(&results.join("meta.txt"))?;
    let meta: BTreeMap<String, String> = meta_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let reruns: Vec<&str> = meta_text
        .lines()
        .filter_map(|l| l.strip_prefix("rerun="))
        .collect();
    let machine = read(&results.join("machine.txt"))?;
    let get = |k: &str| meta.get(k).map_or("?", String::as_str);
    let run_when = format!("{} at {}", get("date"), get("commit"));
    let suites_text = read(&results.join("suites.tsv"))?;
    let measured = suites_measured(&suites_text, &run_when);
    let suites: Vec<(String, String, String)> = measured
        .iter()
        .map(|(name, status, why, _)| (name.clone(), status.clone(), why.clone()))
        .collect();
    let local = match std::fs::read_to_string(results.join("local.json")) {
        Ok(body) => Some(parse_local(&body)?),
        Err(_) => None,
    };
    let kinesis = match std::fs::read_to_string(results.join("kinesis.json")) {
        Ok(body) => Some(kinesis::parse(&body)?),
        Err(_) => None,
    };
    let plots_dir = root.join("docs/benchmarks");
    std::fs::create_dir_all(&plots_dir)
        .map_err(|e| format!("creating {}: {e}", plots_dir.display()))?;

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Benchmarks\n\n\
         Written by `scripts/bench` (do not edit by hand): every benchmark of the repository, each \
         beside its baseline measured in the same run on the same machine. Nothing here is a timed \
         assertion; the figures are what this run saw.\n\n\
         - date: {}\n- commit: `{}`\n- command: `{}`\n",
        get("date"),
        get("commit"),
        get("command")
    );
    if !reruns.is_empty() {
        md.push_str(
            "Suites rerun since, with `scripts/bench --keep` (the others are this run's):\n\n",
        );
        for rerun in &reruns {
            let _ = writeln!(md, "- {rerun}");
        }
        md.push('\n');
    }
    md.push_str("## Suites\n\n| suite | status | measured | note |\n|---|---|---|---|\n");
    for (name, status, why, when) in &measured {
        let _ = writeln!(md, "| {name} | {status} | {when} | {why} |");
    }
    md.push('\n');
    goals_section(&mut md, &suites, results, local.as_ref(), kinesis.as_ref());
    if let Some(local) = &local {
        local_section(&mut md, local);
        plots::throughput_by_batch(&plots_dir.join("throughput-batch.svg"), &local.throughput)?;
        if !local.latency.is_empty() {
            plots::latency(&plots_dir.join("latency.svg"), &local.latency)?;
        }
        if !local.scaling.is_empty() {
            plots::partitions(&plots_dir.join("partitions.svg"), &local.scaling)?;
        }
    }
    if let Some(kinesis) = &kinesis {
        kinesis::section(&mut md, kinesis);
    }
    // Sections measured by hand (a curve a suite prints only after a long comparison, say)
    // live beside the plots, so that regenerating this file does not lose them.
    for name in KEPT_SECTIONS {
        let path = plots_dir.join(name);
        if let Ok(section) = std::fs::read_to_string(&path) {
            let _ = writeln!(md, "\n{}", section.trim_end());
        }
    }
    let _ = writeln!(md, "\n## Machine\n\n```text\n{}\n```", machine.trim_end());
    md.push_str("\n## Raw output\n");
    for (name, status, _) in &suites {
        if status == "skipped" {
            continue;
        }
        let raw = std::fs::read_to_string(results.join(format!("{name}.txt")))
            .unwrap_or_else(|e| format!("(no output: {e})"));
        let _ = writeln!(md, "\n### {name}\n\n```text\n{}\n```", raw.trim_end());
    }
    let out = root.join("BENCHMARKS.md");
    std::fs::write(&out, md).map_err(|e| format!("writing {}: {e}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// `suites.tsv`'s lines as (name, status, reason, when and at which commit), a line without
/// the last field (results written before `--keep` existed) taking the run's own, `run_when`.
fn suites_measured(tsv: &str, run_when: &str) -> Vec<(String, String, String, String)> {
    tsv.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.splitn(4, '\t');
            let mut next = || f.next().unwrap_or("").to_owned();
            let (name, status, why) = (next(), next(), next());
            let when = Some(next())
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| run_when.to_owned());
            (name, status, why, when)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suite_rerun_with_keep_shows_its_own_date_and_the_others_the_run_s() {
        let tsv = "local\tran\t346 s\n\
                   kafka\tskipped\tserver not installed\n\
                   replication\tran\t200 s\t2026-12-03 18:10 UTC at 5c95e5e\n";
        let rows = suites_measured(tsv, "2026-12-03 11:33 UTC at b8517c4");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].3, "2026-12-03 11:33 UTC at b8517c4");
        assert_eq!(rows[1].2, "server not installed");
        assert_eq!(rows[1].3, "2026-12-03 11:33 UTC at b8517c4");
        assert_eq!(
            (rows[2].0.as_str(), rows[2].2.as_str(), rows[2].3.as_str()),
            ("replication", "200 s", "2026-12-03 18:10 UTC at 5c95e5e")
        );
    }

    #[test]
    fn goal_lines_printed_by_a_suite_become_rows_and_other_lines_are_ignored() {
        let output = "round 1: produce raw 10/s\n\
            goal: Kafka produce vs raw rdkafka | 1.02× | ≥ 0.95× | yes\n\
            goal: bridge p99 latency | 61 ms | < 50 ms | no\n\
            goal: malformed | only two\n";
        let goals = printed_goals("kafka", output);
        assert_eq!(goals.len(), 2);
        assert_eq!(goals[0].row, "Kafka produce vs raw rdkafka");
        assert_eq!(goals[0].measured, "1.02×");
        assert!(goals[0].met);
        assert_eq!(goals[1].goal, "< 50 ms");
        assert!(!goals[1].met);
        assert_eq!(goals[1].suite, "kafka");
    }
}

#[cfg(test)]
mod local_tests {
    use super::*;

    /// A local run's JSON with one goal pair over 7 rounds.
    fn run_with(ratios: &str) -> String {
        format!(
            r#"{{"bench":"local","events":1000,"payload":100,
            "throughput":[
              {{"case":"memory://","baseline":false,"batch":100,"events":1000,"per_sec":3.0,"rounds":[3.0]}},
              {{"case":"tokio mpsc","baseline":true,"batch":100,"events":1000,"per_sec":6.0,"rounds":[6.0]}}],
            "pairs":[{{"case":"memory://","baseline":"tokio mpsc","goal":0.5,"batch":100,"round_ratios":{ratios}}}],
            "latency":[],"scaling":[]}}"#
        )
    }

    #[test]
    fn a_local_goal_is_judged_on_the_median_of_its_round_ratios_with_its_interval() {
        // The best round (0.9) would pass, the ratio of medians too; the median of the rounds
        // (0.45) does not.
        let local = parse_local(&run_with("[0.9,0.45,0.44,0.46,0.40,0.45,0.47]")).unwrap();
        let goals = local_goals(&local);
        assert_eq!(goals.len(), 1);
        assert!(!goals[0].met, "median 0.45 is below 0.5");
        assert_eq!(
            goals[0].measured,
            "0.45× (95% interval 0.40–0.90 over 7 rounds)"
        );
        let mut md = String::new();
        local_section(&mut md, &local);
        assert!(
            md.contains("| 0.45× (95% interval 0.40–0.90 over 7 rounds) | ≥ 0.5× | **no** |"),
            "{md}"
        );
    }

    #[test]
    fn a_local_run_without_round_ratios_is_refused_by_name() {
        let body = run_with("[]").replace(r#","round_ratios":[]"#, "");
        let err = parse_local(&body).err().expect("refused");
        assert!(err.contains("`round_ratios` is missing"), "{err}");
    }
}
