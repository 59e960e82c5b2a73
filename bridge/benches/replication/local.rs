//! The bridge local→local: `memory://` to `memory://`, routes in this process.

use std::sync::Arc;
use std::time::Instant;

use tributary::StreamSpec;
use tributary_bridge::route::{self, CancellationToken, RouteSpec, RouteStats};
use tributary_testcontainers::unique_name;

use crate::PARTITIONS;
use crate::backlog::{produce_backlog, watch_backlog};
use crate::latency::{Clock, paced_latency};
use crate::process::RssSampler;
use crate::report::Row;

/// The local backend to itself, with the routes on this process's runtime.
pub(crate) async fn local_to_local(n: u64) -> Row {
    let source = tributary::connect("memory://bench-source?partitions=4")
        .await
        .unwrap();
    let sink = tributary::connect("memory://bench-sink?partitions=4")
        .await
        .unwrap();
    for (backend, stream) in [
        (&source, "backlog"),
        (&source, "paced"),
        (&sink, "backlog-copy"),
        (&sink, "paced-copy"),
    ] {
        backend
            .create_stream(stream, StreamSpec::with_partitions(PARTITIONS))
            .await
            .unwrap();
    }
    let rate = produce_backlog(source.as_ref(), "backlog", n).await;
    eprintln!("[local→local] backlog produced at {rate:.0} events/s");

    let baseline = crate::probe::rss_bytes();
    let rss = RssSampler::start(None);
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let allocations_before = crate::probe::allocations().0;
    let routes: Vec<_> = [("backlog", "backlog-copy"), ("paced", "paced-copy")]
        .into_iter()
        .map(|(from, to)| {
            let mut spec = RouteSpec::new(
                format!("bench-{from}"),
                source.clone(),
                from,
                sink.clone(),
                to,
            );
            spec.group = unique_name("bench");
            tokio::spawn(route::run_route(
                spec,
                Arc::new(RouteStats::default()),
                cancel.clone(),
            ))
        })
        .collect();
    // The routes run in this process: its CPU time, with the bench's own polling in it.
    let backlog = watch_backlog(
        sink.as_ref(),
        &["backlog-copy"],
        n,
        started,
        &mut || Ok(()),
        &crate::probe::cpu_time,
    )
    .await;
    eprintln!(
        "[local→local] heap allocations per replicated event, backlog copy (whole process): {:.1}",
        crate::probe::allocations()
            .0
            .saturating_sub(allocations_before) as f64
            / n as f64
    );
    let paced_from = crate::probe::cpu_time();
    let latency = paced_latency(
        source.as_ref(),
        "paced",
        sink.as_ref(),
        "paced-copy",
        Clock::Receive,
        crate::PACED_FOR,
    )
    .await;
    let paced_cpu = crate::probe::cpu_time().saturating_sub(paced_from);
    cancel.cancel();
    for task in routes {
        task.await.unwrap().unwrap();
    }
    let peak = rss.finish();
    source.close().await.unwrap();
    sink.close().await.unwrap();
    Row {
        name: "bridge local→local (memory://, in process)".into(),
        events: n,
        backlog,
        latency,
        paced_cpu,
        peak_rss: peak.saturating_sub(baseline),
        rss_note: "growth of the bench process (includes the copied events held by memory://)",
        kafka: false,
        mm2_tasks: None,
    }
}
