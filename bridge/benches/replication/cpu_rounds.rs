//! CPU per replicated event, the bridge daemon against MirrorMaker 2, in alternating rounds.
//!
//! One steady copy by each replicator is one sample of a figure that moves with the machine:
//! across the full runs of 2026-12-01 to 12-04 MirrorMaker 2's steady copy cost 13.7–30.3 µs
//! an event and the daemon's 3.2–6.5 µs, so a single pair could land on either side of the
//! ¼ goal whatever the build. Here each round copies a fresh backlog with each replicator
//! (the daemon first in even rounds, MirrorMaker 2 first in odd ones, each on topics of its
//! own, deleted after the round) and the goal is judged on the median of the per-round ratios
//! with its 95% interval, as every other ratio goal of `scripts/bench` is.
//!
//! The goal is judged on the second half of each copy (from the first poll that finds half
//! the backlog on the target): from the first replicated event on, a JVM is still compiling
//! its hot paths, which made MirrorMaker 2's figure 1.2–1.5× its second half's in the first
//! rounds measured, while the daemon's two figures agreed. The whole steady copy is printed
//! beside it.
//!
//! `BENCH_CPU_ROUNDS` sets the number of rounds (default 8; 0 leaves them out). MirrorMaker 2
//! runs with `tasks.max=1`, its default and its thriftiest setting in every run so far.

use std::path::Path;
use std::sync::Arc;

use tributary::{Backend, StreamSpec};
use tributary_testcontainers::Server;

use crate::PARTITIONS;
use crate::backlog::produce_backlog;
use crate::kafka_run::{KafkaRun, bridge_knob};
use crate::probe::stats;

/// The goal: the daemon's CPU per replicated event at most this fraction of MirrorMaker 2's.
pub(crate) const CPU_GOAL: f64 = 0.25;

/// One round: each replicator's CPU per event (µs) over its steady copy of the same backlog.
pub(crate) struct CpuRound {
    bridge_us: f64,
    mm2_us: f64,
    /// The same over the second half of each copy (`Backlog::half_cpu`).
    bridge_half_us: f64,
    mm2_half_us: f64,
    bridge_first: bool,
}

impl CpuRound {
    fn ratio(&self) -> f64 {
        self.bridge_us / self.mm2_us
    }
    fn half_ratio(&self) -> f64 {
        self.bridge_half_us / self.mm2_half_us
    }
}

/// `BENCH_CPU_ROUNDS`, else 8.
pub(crate) fn round_count() -> usize {
    bridge_knob("BENCH_CPU_ROUNDS").unwrap_or(8)
}

/// Runs `rounds` rounds of an `n`-event backlog copy by the daemon and by MirrorMaker 2.
pub(crate) async fn measure(
    server: &Server,
    kafka: Arc<dyn Backend>,
    bridge_bin: &Path,
    n: u64,
    rounds: usize,
) -> Vec<CpuRound> {
    let mut results = Vec::new();
    for round in 0..rounds {
        let bridge = KafkaRun::bridge();
        // Aliases of their own, so each round's MirrorMaker 2 also gets fresh internal topics,
        // as the main comparison's runs do.
        let mm2 = KafkaRun::mm2(&format!("c{round}s"), &format!("c{round}t"), 1);
        for run in [&bridge, &mm2] {
            for topic in run.topics() {
                kafka
                    .create_stream(topic, StreamSpec::with_partitions(PARTITIONS))
                    .await
                    .unwrap_or_else(|e| panic!("create {topic}: {e}"));
            }
            produce_backlog(kafka.as_ref(), &run.backlog_src, n).await;
        }
        let bridge_first = round % 2 == 0;
        let order = if bridge_first {
            [&bridge, &mm2]
        } else {
            [&mm2, &bridge]
        };
        let (mut bridge_us, mut bridge_half_us) = (f64::NAN, f64::NAN);
        let (mut mm2_us, mut mm2_half_us) = (f64::NAN, f64::NAN);
        for run in order {
            let copied = run
                .copy_backlog(server, kafka.as_ref(), bridge_bin, n)
                .await;
            let us = copied.cpu_per_event_us(n);
            let half_us = copied.second_half_cpu_per_event_us(n);
            if run.mm2.is_some() {
                (mm2_us, mm2_half_us) = (us, half_us);
            } else {
                (bridge_us, bridge_half_us) = (us, half_us);
            }
        }
        let result = CpuRound {
            bridge_us,
            mm2_us,
            bridge_half_us,
            mm2_half_us,
            bridge_first,
        };
        eprintln!(
            "[CPU round {round}] bridge {bridge_us:.2} µs/event ({bridge_half_us:.2} second half), MirrorMaker 2 {mm2_us:.2} ({mm2_half_us:.2}): {:.2}× ({:.2}×; {} first)",
            result.ratio(),
            result.half_ratio(),
            if bridge_first { "bridge" } else { "MM2" }
        );
        results.push(result);
        for run in [&bridge, &mm2] {
            for topic in run.topics() {
                // A leftover topic only costs the broker disk; the next round's are new.
                let _ = kafka.delete_stream(topic).await;
            }
        }
    }
    results
}

/// The rounds' table and the goal line judged on them.
pub(crate) fn print(n: u64, rounds: &[CpuRound]) {
    if rounds.is_empty() {
        return;
    }
    println!(
        "\nCPU per replicated event in alternating rounds · Kafka→Kafka, a fresh backlog of {n} events per replicator and round, the daemon's defaults against MirrorMaker 2 tasks.max=1; CPU: each process group's user + system time from its first replicated event (second half: from the first sighting of half the backlog on the target) until the target held the backlog"
    );
    println!(
        "| round | first | bridge µs/event | MirrorMaker 2 µs/event | bridge/MM2 | second half: bridge | MirrorMaker 2 | bridge/MM2 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "| {i} | {} | {:.2} | {:.2} | {:.2}× | {:.2} | {:.2} | {:.2}× |",
            if r.bridge_first { "bridge" } else { "MM2" },
            r.bridge_us,
            r.mm2_us,
            r.ratio(),
            r.bridge_half_us,
            r.mm2_half_us,
            r.half_ratio()
        );
    }
    let bridge: Vec<f64> = rounds.iter().map(|r| r.bridge_half_us).collect();
    let mm2: Vec<f64> = rounds.iter().map(|r| r.mm2_half_us).collect();
    let whole: Vec<f64> = rounds.iter().map(CpuRound::ratio).collect();
    let ratios: Vec<f64> = rounds.iter().map(CpuRound::half_ratio).collect();
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{:.2} µs ({lo:.2}–{hi:.2})", stats::median(v))
    };
    println!(
        "  second half, medians (range): bridge {}, MirrorMaker 2 {}; the whole steady copy's ratio: {}",
        range(&bridge),
        range(&mm2),
        crate::probe::ratio_with_interval(&whole)
    );
    let median = stats::median(&ratios);
    crate::probe::goal(
        "bridge Kafka→Kafka CPU per replicated event vs MirrorMaker 2 (second half of a steady copy, median ratio per round)",
        crate::probe::ratio_with_interval(&ratios),
        &format!("≤ {CPU_GOAL}×"),
        median <= CPU_GOAL,
    );
}
