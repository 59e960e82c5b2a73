//! The printed table: one row per replicator, and the bridge against MirrorMaker 2.

use std::time::Duration;

use tributary_testcontainers::Server;

use crate::backlog::Backlog;
use crate::cpu_rounds::CPU_GOAL;
use crate::kafka_run::bridge_knob;
use crate::latency::Latency;
use crate::{KEYS, MM2_DEFAULT_HEAP, PACED_FOR, PACED_RATE, PARTITIONS, PAYLOAD};

/// One line of the table.
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) events: u64,
    pub(crate) backlog: Backlog,
    pub(crate) latency: Latency,
    /// The replicator's CPU time during the paced phase (its `latency.samples` events).
    pub(crate) paced_cpu: Duration,
    pub(crate) peak_rss: u64,
    pub(crate) rss_note: &'static str,
    pub(crate) kafka: bool,
    pub(crate) mm2_tasks: Option<u32>,
}

impl Row {
    /// CPU time per event of the paced phase, in µs: mostly the cost of waiting at 2,000
    /// events/s (polls, timers, heartbeats), which a backlog hides.
    pub(crate) fn paced_cpu_per_event_us(&self) -> f64 {
        self.paced_cpu.as_secs_f64() * 1e6 / self.latency.samples.max(1) as f64
    }
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub(crate) fn ms(v: f64) -> String {
    // Kafka's LogAppendTime is whole milliseconds: "9 ms", not "9.00 ms", which would claim a
    // precision the clock does not have.
    if v < 10.0 && v.fract() != 0.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.0} ms")
    }
}

/// `in_rounds`: the CPU and latency goals are judged on the alternating rounds
/// (`cpu_rounds.rs`), so this single run's figures are printed beside the others but not as
/// the goals.
pub(crate) fn print_report(server: &Server, n: u64, rows: &[Row], in_rounds: bool) {
    let heap = std::env::var("KAFKA_HEAP_OPTS")
        .map(|h| format!("{h} (KAFKA_HEAP_OPTS)"))
        .unwrap_or_else(|_| {
            format!("{MM2_DEFAULT_HEAP} (the kafka-mirror-maker2 wrapper's default)")
        });
    println!(
        "\nReplication · Kafka {} (one local broker, same run) · backlog {n} events of {PAYLOAD} B, {KEYS} keys, {PARTITIONS} partitions · paced {PACED_RATE}/s for {}s",
        server.url(),
        PACED_FOR.as_secs()
    );
    println!(
        "| replicator | events | backlog events/s | steady events/s | CPU µs/event steady | CPU µs/event paced | startup | p50 | p99 | max | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.1} | {:.2}s | {} | {} | {} | {} |",
            r.name,
            r.events,
            r.backlog.rate(n),
            r.backlog.steady(n),
            r.backlog.cpu_per_event_us(n),
            r.paced_cpu_per_event_us(),
            r.backlog.first_at.as_secs_f64(),
            ms(r.latency.p50),
            ms(r.latency.p99),
            ms(r.latency.max),
            mib(r.peak_rss)
        );
    }
    println!();
    for r in rows {
        println!(
            "  {}: latency over {} events, {}; RSS: {}",
            r.name, r.latency.samples, r.latency.clock, r.rss_note
        );
    }
    println!(
        "  MirrorMaker 2: Kafka 4.3.1 jars, dedicated mode, heap {heap}, producer/consumer defaults, no heartbeats/checkpoints/config sync; bridge daemon: batch max_events {}, in_flight {}, 1 MiB, no linger (defaults), Kafka sink linger.ms {}, lineage headers added to every event{}",
        bridge_knob("BENCH_BRIDGE_MAX_EVENTS").map_or("2000 (default)".into(), |v| v.to_string()),
        bridge_knob("BENCH_BRIDGE_IN_FLIGHT").map_or("4000 (default)".into(), |v| v.to_string()),
        bridge_knob("BENCH_BRIDGE_SINK_LINGER_MS")
            .map_or("1 (the daemon's default)".into(), |v| v.to_string()),
        std::env::var("BENCH_BRIDGE_BIN").map_or(String::new(), |bin| format!(", binary {bin}")),
    );

    let Some(bridge) = rows.iter().find(|r| r.kafka && r.mm2_tasks.is_none()) else {
        return;
    };
    let mm2: Vec<&Row> = rows.iter().filter(|r| r.mm2_tasks.is_some()).collect();
    if mm2.is_empty() {
        return;
    }
    // Conservative: the bridge against MM2's best throughput and MM2's smallest footprint.
    let best = |f: &dyn Fn(&Row) -> f64| mm2.iter().map(|r| f(r)).fold(0.0, f64::max);
    let best_backlog = best(&|r| r.backlog.rate(n));
    let best_steady = best(&|r| r.backlog.steady(n));
    let least_rss = mm2.iter().map(|r| r.peak_rss).min().unwrap();
    let backlog_ratio = bridge.backlog.rate(n) / best_backlog;
    let steady_ratio = bridge.backlog.steady(n) / best_steady;
    let memory_ratio = least_rss as f64 / bridge.peak_rss as f64;
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "\nbridge Kafka→Kafka vs MirrorMaker 2 (its best run for throughput, its smallest for memory):"
    );
    println!(
        "  throughput bridge/MM2: backlog {backlog_ratio:.2}×, steady {steady_ratio:.2}×  (goal ≥ 2×: {} on steady, {} on backlog)",
        verdict(steady_ratio >= 2.0),
        verdict(backlog_ratio >= 2.0)
    );
    println!(
        "  memory MM2/bridge: {memory_ratio:.1}× ({} vs {})  (goal ≥ 5×, i.e. ≤ ⅕ of MM2's: {})",
        mib(least_rss),
        mib(bridge.peak_rss),
        verdict(memory_ratio >= 5.0)
    );
    let least = |f: &dyn Fn(&Row) -> f64| mm2.iter().map(|r| f(r)).fold(f64::INFINITY, f64::min);
    let steady_cpu_mm2 = least(&|r| r.backlog.cpu_per_event_us(n));
    let paced_cpu_mm2 = least(&|r| r.paced_cpu_per_event_us());
    let steady_cpu_ratio = bridge.backlog.cpu_per_event_us(n) / steady_cpu_mm2;
    println!(
        "  CPU per replicated event bridge/MM2 (MM2's thriftiest run): steady copy {:.2} vs {:.2} µs = {steady_cpu_ratio:.2}×  (goal ≤ {CPU_GOAL}×: {}); paced {:.1} vs {:.1} µs = {:.2}×",
        bridge.backlog.cpu_per_event_us(n),
        steady_cpu_mm2,
        if in_rounds {
            "judged on the rounds below"
        } else {
            verdict(steady_cpu_ratio <= CPU_GOAL)
        },
        bridge.paced_cpu_per_event_us(),
        paced_cpu_mm2,
        bridge.paced_cpu_per_event_us() / paced_cpu_mm2
    );
    let p99_mm2 = mm2
        .iter()
        .map(|r| r.latency.p99)
        .fold(f64::INFINITY, f64::min);
    let p50_mm2 = least(&|r| r.latency.p50);
    println!(
        "  latency p50: bridge {} vs MM2 best {}; p99: bridge {} vs MM2 best {}{}",
        ms(bridge.latency.p50),
        ms(p50_mm2),
        ms(bridge.latency.p99),
        ms(p99_mm2),
        if in_rounds {
            " (goals judged on the rounds below)"
        } else {
            ""
        }
    );
    if in_rounds {
        return;
    }
    crate::probe::goal(
        "bridge Kafka→Kafka CPU per replicated event vs MirrorMaker 2 (steady copy)",
        format!("{steady_cpu_ratio:.2}× (one run)"),
        &format!("≤ {CPU_GOAL}×"),
        steady_cpu_ratio <= CPU_GOAL,
    );
    crate::probe::goal(
        &format!("bridge paced {PACED_RATE}/s, p50 latency vs MirrorMaker 2's best (one run)"),
        format!("{} vs {}", ms(bridge.latency.p50), ms(p50_mm2)),
        "≤ MM2's",
        bridge.latency.p50 <= p50_mm2,
    );
    crate::probe::goal(
        &format!("bridge paced {PACED_RATE}/s, p99 latency (one run)"),
        ms(bridge.latency.p99),
        "< 50 ms",
        bridge.latency.p99 < 50.0,
    );
}
