//! The Kinesis suite's section: tributary's producer and consumer beside raw `aws-sdk-kinesis`
//! calls on the same ferrokinesis, from the figures the bench writes (`BENCH_JSON`,
//! `backends/kinesis/benches/kinesis.rs`).

use serde_json::Value;
use std::fmt::Write as _;

use crate::grouped;
use crate::stats;

/// Issue 18's goal for every adapter against its raw client.
const GOAL: f64 = 0.95;

/// One side-by-side row: produce or consume.
struct Row {
    case: String,
    raw_per_sec: f64,
    per_sec: f64,
    raw_cpu_us: f64,
    cpu_us: f64,
    raw_allocations: f64,
    allocations: f64,
    /// tributary's rate over raw's in each measured round, in round order.
    round_ratios: Vec<f64>,
}

impl Row {
    /// The goal's verdict: the median of the rounds' ratios, as the other suites judge theirs.
    fn met(&self) -> bool {
        stats::median(&self.round_ratios) >= GOAL
    }
}

pub(crate) struct Kinesis {
    events: u64,
    payload: u64,
    shards: u64,
    rounds: u64,
    rows: Vec<Row>,
}

fn num(v: &Value, name: &str) -> Result<f64, String> {
    v.get(name)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("kinesis.json: `{name}` is missing or not a number in {v}"))
}

pub(crate) fn parse(body: &str) -> Result<Kinesis, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("kinesis.json: {e}"))?;
    let rows = v
        .get("rows")
        .and_then(Value::as_array)
        .ok_or("kinesis.json: `rows` is missing or not a list")?
        .iter()
        .map(|r| {
            Ok(Row {
                case: r
                    .get("case")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("kinesis.json: `case` is missing in {r}"))?
                    .to_owned(),
                raw_per_sec: num(r, "raw_per_sec")?,
                per_sec: num(r, "per_sec")?,
                raw_cpu_us: num(r, "raw_cpu_us")?,
                cpu_us: num(r, "cpu_us")?,
                raw_allocations: num(r, "raw_allocations")?,
                allocations: num(r, "allocations")?,
                round_ratios: r
                    .get("round_ratios")
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("kinesis.json: `round_ratios` is missing in {r}"))?
                    .iter()
                    .map(|x| {
                        x.as_f64().ok_or_else(|| {
                            format!("kinesis.json: a round ratio is not a number in {r}")
                        })
                    })
                    .collect::<Result<_, String>>()?,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Kinesis {
        events: num(&v, "events")? as u64,
        payload: num(&v, "payload")? as u64,
        shards: num(&v, "shards")? as u64,
        rounds: num(&v, "rounds")? as u64,
        rows,
    })
}

pub(crate) fn section(md: &mut String, k: &Kinesis) {
    let _ = writeln!(
        md,
        "\n## Kinesis (`cargo bench -p tributary-kinesis --bench kinesis`)\n\n\
         tributary's producer and consumer beside raw `aws-sdk-kinesis` calls doing the same work \
         on the same ferrokinesis: {} events of {} B with a key out of 10,000, a {}-shard stream, \
         `PutRecords` of 500 records with 4 in flight, one `GetRecords` per shard per 200 ms. \
         Rates are over {} rounds, after a warm-up round, that alternate which side goes first; \
         each side produces and consumes on a stream of its own, deleted before the other side \
         starts (the emulator slows as it holds more records). The goal is judged on the median \
         of the per-round ratios (each round's two sides run seconds apart), given with its 95% \
         interval; the rates and their ratio are over all rounds. CPU is this process's (the \
         emulator runs in its own), per event, the rounds' mean.\n",
        grouped(k.events as f64),
        k.payload,
        k.shards,
        k.rounds
    );
    md.push_str(
        "| | raw events/s | tributary | ratio of rates | median ratio per round | goal | met | CPU µs/event raw | ours | allocations/event raw | ours |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &k.rows {
        let _ = writeln!(
            md,
            "| {} | {}/s | {}/s | {:.2}× | {} | ≥ {GOAL}× | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            r.case,
            grouped(r.raw_per_sec),
            grouped(r.per_sec),
            r.per_sec / r.raw_per_sec,
            stats::ratio_with_interval(&r.round_ratios),
            if r.met() { "yes" } else { "**no**" },
            r.raw_cpu_us,
            r.cpu_us,
            r.raw_allocations,
            r.allocations
        );
    }
}

/// The suite's rows as goals for the table at the top of the report.
pub(crate) fn goals(k: &Kinesis) -> Vec<crate::Goal> {
    k.rows
        .iter()
        .map(|r| crate::Goal {
            suite: "kinesis".into(),
            row: format!(
                "Kinesis {} vs raw aws-sdk-kinesis (median ratio per round)",
                r.case
            ),
            measured: stats::ratio_with_interval(&r.round_ratios),
            goal: format!("≥ {GOAL}×"),
            met: r.met(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_figures_become_a_table_with_ratios_against_the_goal() {
        // Produce: rates over the rounds 0.97×, but the median round 0.94× decides.
        let json = r#"{"events":100000,"payload":100,"shards":4,"rounds":6,"rows":[
            {"case":"produce","raw_per_sec":20000,"per_sec":19500,"raw_cpu_us":10.0,"cpu_us":12.5,"raw_allocations":20.0,"allocations":14.0,
             "round_ratios":[0.90,1.20,0.93,0.95,0.80,0.99]},
            {"case":"consume","raw_per_sec":50000,"per_sec":40000,"raw_cpu_us":3.0,"cpu_us":6.0,"raw_allocations":5.0,"allocations":9.0,
             "round_ratios":[1.0,0.96,0.98,0.97,0.99]}]}"#;
        let k = parse(json).unwrap();
        let mut md = String::new();
        section(&mut md, &k);
        assert!(md.contains("100,000 events of 100 B"), "{md}");
        assert!(
            md.contains("| produce | 20,000/s | 19,500/s | 0.97× | 0.94× (95% interval 0.80–1.20 over 6 rounds) | ≥ 0.95× | **no** | 10.0 | 12.5 | 20.0 | 14.0 |"),
            "{md}"
        );
        assert!(
            md.contains("| consume | 50,000/s | 40,000/s | 0.80× | 0.98× (5 rounds: too few for a 95% interval) | ≥ 0.95× | yes |"),
            "{md}"
        );
        let verdicts: Vec<_> = goals(&k).into_iter().map(|g| (g.measured, g.met)).collect();
        assert_eq!(
            verdicts,
            [
                (
                    "0.94× (95% interval 0.80–1.20 over 6 rounds)".to_owned(),
                    false
                ),
                (
                    "0.98× (5 rounds: too few for a 95% interval)".to_owned(),
                    true
                )
            ]
        );
        assert!(parse(r#"{"events":1,"rows":[]}"#).is_err());
        // A round ratio that is not a number is an error, not a silent zero.
        assert!(parse(&json.replace("0.96", "\"x\"")).is_err());
    }
}
