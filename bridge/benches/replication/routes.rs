//! How the daemon's cost grows with its routes: one release daemon with 1, 4 and 16
//! Kafka→Kafka routes (`BENCH_ROUTES`, default `1,4,16`), the same number of events in all,
//! split evenly over the routes' source topics (4 partitions each), each route in a consumer
//! group of its own. Rate, CPU per event and peak memory of the daemon's process.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary::{Backend, StreamSpec};
use tributary_testcontainers::{Server, group_cpu_time, unique_name};

use crate::backlog::{high_watermarks, produce_backlog};
use crate::kafka_run::work_dir;
use crate::process::{Replicator, RssSampler};
use crate::report::mib;
use crate::{BACKLOG_TIMEOUT, FIRST_EVENT_TIMEOUT, PARTITIONS};

/// One daemon run with `routes` routes.
pub(crate) struct RoutesRow {
    routes: usize,
    events: u64,
    /// From the daemon's launch to the first event on any target.
    first_at: Duration,
    /// From the launch until every target held its route's events.
    total: Duration,
    /// Events on the targets at the first sighting, and the daemon's CPU time after it.
    first_count: u64,
    steady_cpu: Duration,
    peak_rss: u64,
}

impl RoutesRow {
    fn steady_rate(&self) -> f64 {
        let span = (self.total - self.first_at).as_secs_f64();
        if span <= 0.0 {
            return f64::NAN;
        }
        (self.events - self.first_count) as f64 / span
    }

    fn cpu_per_event_us(&self) -> f64 {
        self.steady_cpu.as_secs_f64() * 1e6 / (self.events - self.first_count).max(1) as f64
    }
}

/// The route counts to run: `BENCH_ROUTES` (comma-separated), else 1, 4 and 16.
pub(crate) fn route_counts() -> Vec<usize> {
    std::env::var("BENCH_ROUTES")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|r| r.trim().parse().ok())
                .filter(|&r| r > 0)
                .collect()
        })
        .unwrap_or_else(|| vec![1, 4, 16])
}

/// Runs the daemon once per route count over about `n` events in all.
pub(crate) async fn measure(
    server: &Server,
    kafka: Arc<dyn Backend>,
    bridge_bin: &Path,
    n: u64,
) -> Vec<RoutesRow> {
    let mut rows = Vec::new();
    for routes in route_counts() {
        let per_route = (n / routes as u64).max(1);
        let pairs: Vec<(String, String)> = (0..routes)
            .map(|i| {
                let source = unique_name(&format!("t-rep-routes{routes}-{i}"));
                let target = format!("{source}-copy");
                (source, target)
            })
            .collect();
        for (source, target) in &pairs {
            for topic in [source, target] {
                kafka
                    .create_stream(topic, StreamSpec::with_partitions(PARTITIONS))
                    .await
                    .unwrap_or_else(|e| panic!("create {topic}: {e}"));
            }
            produce_backlog(kafka.as_ref(), source, per_route).await;
        }
        let mut toml = String::from("[daemon]\nlisten = \"off\"\nshutdown_timeout = \"10s\"\n");
        for (i, (source, target)) in pairs.iter().enumerate() {
            // A group per route: routes sharing one would rebalance each other.
            let group = unique_name(&format!("bench-routes-{i}"));
            let _ = write!(
                toml,
                "\n[[route]]\nname = \"r{i}\"\n\
                 source = {{ url = \"{url}\", stream = \"{source}\", group = \"{group}\", start = \"earliest\" }}\n\
                 sink = {{ url = \"{url}\", stream = \"{target}\" }}\n",
                url = server.url(),
            );
        }
        let dir = work_dir();
        let tag = unique_name(&format!("routes{routes}"));
        let config = dir.join(format!("{tag}.toml"));
        std::fs::write(&config, toml).unwrap();
        let mut command = Command::new(bridge_bin);
        command
            .args(["bridge", "--config"])
            .arg(&config)
            .env("TRIBUTARY_LOG", "warn");
        let name = format!("bridge, {routes} routes");
        let started = Instant::now();
        let mut process = Replicator::spawn(&name, command, &dir.join(format!("{tag}.log")));
        let rss = RssSampler::start(Some(process.pgid));
        let pgid = process.pgid;
        let events = per_route * routes as u64;
        let mut first: Option<(Duration, u64, Duration)> = None;
        let (total, steady_cpu) = loop {
            let mut copied = 0;
            for (_, target) in &pairs {
                copied += high_watermarks(kafka.as_ref(), target).await;
            }
            let now = started.elapsed();
            if copied > 0 && first.is_none() {
                first = Some((now, copied.min(events), group_cpu_time(pgid)));
            }
            if copied >= events {
                let from = first.map_or(Duration::ZERO, |f| f.2);
                break (now, group_cpu_time(pgid).saturating_sub(from));
            }
            if let Err(e) = process.check_alive() {
                panic!("{e}");
            }
            if first.is_none() && now > FIRST_EVENT_TIMEOUT {
                panic!("[{name}] nothing replicated within {FIRST_EVENT_TIMEOUT:?}");
            }
            if now > BACKLOG_TIMEOUT {
                panic!("[{name}] {copied} of {events} events within {BACKLOG_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let peak_rss = rss.finish();
        process.stop();
        let (first_at, first_count, _) = first.expect("seen before done");
        eprintln!(
            "[{name}] {events} events copied in {:.2}s (first after {:.2}s)",
            total.as_secs_f64(),
            first_at.as_secs_f64()
        );
        rows.push(RoutesRow {
            routes,
            events,
            first_at,
            total,
            first_count,
            steady_cpu,
            peak_rss,
        });
    }
    rows
}

pub(crate) fn print(rows: &[RoutesRow]) {
    if rows.is_empty() {
        return;
    }
    println!(
        "\nThe daemon by its number of routes · Kafka→Kafka on the one broker, the events split evenly over the routes' source topics ({PARTITIONS} partitions each), a consumer group per route"
    );
    println!(
        "| routes | events | first event | all copied | steady events/s | CPU µs per event (steady) | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {:.2} s | {:.2} s | {:.0} | {:.2} | {} |",
            row.routes,
            row.events,
            row.first_at.as_secs_f64(),
            row.total.as_secs_f64(),
            row.steady_rate(),
            row.cpu_per_event_us(),
            mib(row.peak_rss),
        );
    }
    println!(
        "  first event: from the daemon's launch (its groups' joins included) to the first event on any target; steady: after it, until every target held its route's events (targets polled every 50 ms); CPU: the daemon's process group, user + system, over the steady part; RSS sampled every 100 ms"
    );
}
