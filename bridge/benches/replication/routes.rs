//! How the daemon's cost grows with its routes: one release daemon with 1, 4 and 16
//! Kafka→Kafka routes (`BENCH_ROUTES`, default `1,4,16`), the same number of events in all,
//! split evenly over the routes' source topics (4 partitions each), each route in a consumer
//! group of its own. Rate, CPU per event and peak memory of the daemon's process.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tributary::{Backend, StreamSpec};
use tributary_testcontainers::{Server, group_cpu_time, unique_name};

use crate::PARTITIONS;
use crate::backlog::{Backlog, produce_backlog, watch_backlog};
use crate::kafka_run::{daemon_command, daemon_config, work_dir};
use crate::process::{Replicator, RssSampler};
use crate::report::mib;

/// One daemon run with `routes` routes.
pub(crate) struct RoutesRow {
    routes: usize,
    events: u64,
    backlog: Backlog,
    peak_rss: u64,
    peak_threads: u64,
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
        let events = per_route * routes as u64;
        let topics: Vec<(String, String, String)> = (0..routes)
            .map(|i| {
                let source = unique_name(&format!("t-rep-routes{routes}-{i}"));
                (format!("r{i}"), format!("{source}-copy"), source)
            })
            .collect();
        for (_, target, source) in &topics {
            for topic in [source, target] {
                kafka
                    .create_stream(topic, StreamSpec::with_partitions(PARTITIONS))
                    .await
                    .unwrap_or_else(|e| panic!("create {topic}: {e}"));
            }
            produce_backlog(kafka.as_ref(), source, per_route).await;
        }
        let route_list: Vec<(&str, &str, &str)> = topics
            .iter()
            .map(|(name, target, source)| (name.as_str(), source.as_str(), target.as_str()))
            .collect();
        let targets: Vec<&str> = topics
            .iter()
            .map(|(_, target, _)| target.as_str())
            .collect();
        let dir = work_dir();
        let tag = unique_name(&format!("routes{routes}"));
        let config = dir.join(format!("{tag}.toml"));
        std::fs::write(&config, daemon_config(server.url(), &route_list)).unwrap();
        let name = format!("bridge, {routes} routes");
        let started = Instant::now();
        let mut process = Replicator::spawn(
            &name,
            daemon_command(bridge_bin, &config),
            &dir.join(format!("{tag}.log")),
        );
        let rss = RssSampler::start(Some(process.pgid));
        let pgid = process.pgid;
        let backlog = watch_backlog(
            kafka.as_ref(),
            &targets,
            events,
            started,
            &mut || process.check_alive(),
            &move || group_cpu_time(pgid),
        )
        .await;
        let peak_threads = rss.peak_threads.clone();
        let peak_rss = rss.finish();
        process.stop();
        eprintln!(
            "[{name}] {events} events copied in {:.2}s (first after {:.2}s)",
            backlog.total.as_secs_f64(),
            backlog.first_at.as_secs_f64()
        );
        rows.push(RoutesRow {
            routes,
            events,
            backlog,
            peak_rss,
            peak_threads: peak_threads.load(std::sync::atomic::Ordering::Relaxed),
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
        "| routes | events | first event | all copied | steady events/s | CPU µs per event (steady) | CPU µs per event (from launch) | peak threads | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {:.2} s | {:.2} s | {:.0} | {:.2} | {:.2} | {} | {} |",
            row.routes,
            row.events,
            row.backlog.first_at.as_secs_f64(),
            row.backlog.total.as_secs_f64(),
            row.backlog.steady(row.events),
            row.backlog.cpu_per_event_us(row.events),
            row.backlog.total_cpu_per_event_us(row.events),
            row.peak_threads,
            mib(row.peak_rss),
        );
    }
    println!(
        "  first event: from the daemon's launch (its groups' joins included) to the first event on any target; steady: after it, until every target held its route's events (targets polled every 50 ms); CPU: the daemon's process group, user + system, over the steady part and from its launch (start-up and joins included); threads and RSS sampled every 100 ms"
    );
}
