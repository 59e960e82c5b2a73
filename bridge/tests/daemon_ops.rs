//! The daemon as an operator meets it: start-up against a server that cannot be reached, a
//! sink that cannot be opened, a route sharing a named `memory://` instance with others, and
//! the latency metrics a dashboard reads.

mod common;
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::intercept::Intercepting;
use harness::{Daemon, LockHolder, closed_port, http_get, metric, run, wait_until};
use tributary_bridge::{config, daemon};

/// Issue 17 defect 5: A reads a named `memory://` instance that B writes and C reads too. A's
/// sink is locked when the daemon starts; once it is free, A recovers, without closing the
/// instance B and C use.
#[test]
fn a_route_sharing_a_named_memory_backend_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let url = |name: &str| format!("file://{}", dir.path().join(name).display());
    let (ok, locked) = (url("ok"), url("locked"));
    let lines: String = (0..100).map(|i| format!("event-{i}\n")).collect();
    assert_eq!(run(&["produce", &ok, "in"], &[], &lines).0, Some(0));
    let holder = LockHolder::hold(&locked);
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"10s\"\n\
             [[route]]\nname = \"a\"\nsource = {{ url = \"memory://m1\", stream = \"mid\", group = \"a\" }}\nsink = {{ url = \"{locked}\", stream = \"out\" }}\nretry = {{ max_backoff = \"1s\" }}\n\
             [[route]]\nname = \"b\"\nsource = {{ url = \"{ok}\", stream = \"in\" }}\nsink = {{ url = \"memory://m1\", stream = \"mid\" }}\n\
             [[route]]\nname = \"c\"\nsource = {{ url = \"memory://m1\", stream = \"mid\", group = \"c\" }}\nsink = {{ url = \"{ok}\", stream = \"back\" }}\n"
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, &[]);
    let addr = daemon.addr(Duration::from_secs(30));
    let unhealthy = wait_until(
        Duration::from_secs(30),
        "route a failing on its locked sink",
        || {
            let (status, body) = http_get(&addr, "/healthz");
            let line = body.lines().find(|l| l.starts_with("route a:"))?.to_owned();
            (status == 503 && !line.contains("connecting")).then_some(line)
        },
    );
    println!("while the sink was locked: {unhealthy}");
    holder.release();
    wait_until(
        Duration::from_secs(60),
        "route a to copy every event once its sink is free",
        || {
            let (_, body) = http_get(&addr, "/metrics");
            let out = |r| metric(&body, "tributary_bridge_events_out_total", r).unwrap_or(0.0);
            (out("a") >= 100.0 && out("b") >= 100.0 && out("c") >= 100.0).then_some(())
        },
    );
    assert_eq!(http_get(&addr, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(http_get(&addr, "/readyz").0, 200);
    let (status, _, log) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    assert!(!log.contains("memory: closed"), "{log}");
}

/// Issue 22 "start-up against an unreachable broker": `/healthz` says the route is connecting
/// from the first moment, and SIGTERM 3 s after start ends the daemon at once, without
/// waiting for the connection attempt (30 s by default).
#[test]
fn an_unreachable_broker_shows_as_connecting_and_does_not_delay_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"20s\"\n[[route]]\nname = \"k\"\nsource = {{ url = \"kafka://127.0.0.1:{}\", stream = \"in\" }}\nsink = {{ url = \"memory://\", stream = \"out\" }}\n",
            closed_port()
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let mut daemon = Daemon::start(&config, &[]);
    let addr = daemon.addr(Duration::from_secs(10));
    let (status, body) = http_get(&addr, "/healthz");
    println!(
        "/healthz after {:?}: {status} {}",
        started.elapsed(),
        body.trim()
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("route k: connecting"), "{body}");
    assert_eq!(http_get(&addr, "/readyz").0, 503);
    wait_until(Duration::from_secs(10), "3 s to pass", || {
        (started.elapsed() >= Duration::from_secs(3)).then_some(())
    });
    let (status, took, log) = daemon.terminate(Duration::from_secs(60));
    println!("SIGTERM 3 s after start: exited in {took:?}");
    assert!(status.success(), "{log}");
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?}: {log}"
    );
}

/// The histogram and gauges a dashboard reads: latency in buckets (not a summary that reads 0
/// once idle), the last event's latency and time, whether the route runs.
#[test]
fn replication_latency_is_a_histogram_with_a_last_event_gauge() {
    let dir = tempfile::tempdir().unwrap();
    let source = format!("file://{}", dir.path().join("source").display());
    // Raw lines carry no event time, and the local backend stamps none: give each one.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let lines: String = (0..50)
        .map(|i| format!("{{\"payload\":\"event-{i}\",\"timestamp\":{now_ms}}}\n"))
        .collect();
    assert_eq!(
        run(&["produce", &source, "in", "--format", "json"], &[], &lines).0,
        Some(0)
    );
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\n[[route]]\nname = \"r\"\nsource = {{ url = \"{source}\", stream = \"in\" }}\nsink = {{ url = \"memory://\", stream = \"out\" }}\n"
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, &[]);
    let addr = daemon.addr(Duration::from_secs(30));
    let body = wait_until(Duration::from_secs(30), "50 events replicated", || {
        let (_, body) = http_get(&addr, "/metrics");
        (metric(&body, "tributary_bridge_events_out_total", "r").unwrap_or(0.0) >= 50.0)
            .then_some(body)
    });
    for needle in [
        "# TYPE tributary_bridge_replication_latency_seconds histogram",
        "tributary_bridge_replication_latency_seconds_bucket{route=\"r\",le=\"0.005\"}",
        "tributary_bridge_replication_latency_seconds_count{route=\"r\"} 50",
        "# HELP tributary_bridge_last_event_age_seconds",
        "tributary_bridge_route_up{route=\"r\"} 1",
    ] {
        assert!(body.contains(needle), "missing {needle}:\n{body}");
    }
    let age = metric(&body, "tributary_bridge_last_event_age_seconds", "r").unwrap();
    let time = metric(&body, "tributary_bridge_last_event_timestamp_seconds", "r").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((0.0..60.0).contains(&age), "{age}");
    assert!((now - 120.0..=now + 1.0).contains(&time), "{time} vs {now}");
    let (status, _, log) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{log}");
}

/// Issue 22 defect 4: a route whose sink cannot be opened never joins its source's group
/// (joining and leaving again moves every member's partitions), and backs off between
/// attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_cannot_open_never_joins_the_source_group() {
    let consumers = Arc::new(AtomicUsize::new(0));
    let producers = Arc::new(AtomicUsize::new(0));
    let (c, p) = (consumers.clone(), producers.clone());
    tributary::register_scheme("counting", move |url| {
        let (consumers, producers) = (c.clone(), p.clone());
        let refuse_producers = url.host_str() == Some("broken");
        Box::pin(async move {
            // The memory backend, counting the consumers (group joins) and producers opened
            // on it, refusing every producer when the URL's host is `broken`.
            let inner = tributary::connect("memory://counting").await?;
            Ok(Intercepting::new(inner)
                .scheme("counting")
                .before_producer(move |stream| {
                    producers.fetch_add(1, Ordering::SeqCst);
                    if refuse_producers {
                        return Err(tributary::Error::unavailable(format!(
                            "`{stream}` cannot take events now"
                        )));
                    }
                    Ok(())
                })
                .before_consumer(move |_| {
                    consumers.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .into_backend())
        })
    });
    let mut plan = config::parse(
        "[daemon]\nlisten = \"off\"\n[[route]]\nname = \"r\"\nsource = { url = \"memory://\", stream = \"in\" }\nsink = { url = \"memory://\", stream = \"out\" }\nretry = { max_backoff = \"200ms\" }\n",
        &|_| None,
    )
    .unwrap();
    plan.routes[0].source_url = "counting://source".into();
    plan.routes[0].sink_url = "counting://broken".into();
    let running = daemon::start(plan).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while producers.load(Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the route never tried 3 times"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failure = running.failing().get("r").cloned().unwrap_or_default();
    println!("after 3 attempts: {failure}");
    assert!(failure.contains("sink"), "{failure}");
    assert_eq!(
        consumers.load(Ordering::SeqCst),
        0,
        "the source's group was joined although the sink could not be opened"
    );
    running.shutdown(Duration::from_secs(10)).await.unwrap();
}

/// A producer whose sends never return; each pending send says when it is dropped.
struct NeverAnswers {
    inner: Box<dyn tributary::Producer>,
    sends: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

/// Sets its flag when the send holding it is dropped (its task ended or was aborted).
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl tributary::Producer for NeverAnswers {
    async fn send(&self, _: tributary::Event) -> tributary::Result<tributary::Receipt> {
        self.hang().await
    }
    async fn send_batch(
        &self,
        _: Vec<tributary::Event>,
    ) -> tributary::Result<Vec<tributary::Receipt>> {
        self.hang().await
    }
    async fn flush(&self) -> tributary::Result<()> {
        Ok(())
    }
    async fn close(&self) -> tributary::Result<()> {
        self.inner.close().await
    }
}

impl NeverAnswers {
    async fn hang<T>(&self) -> T {
        let _flag = DropFlag(self.dropped.clone());
        self.sends.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

/// A route that cannot drain within its share of `daemon.shutdown_timeout` is stopped before
/// the backends close, not left running under them: by the time `shutdown` returns, its
/// pending send has been dropped (its deliveries, never acked, go back to the source's group).
/// Before, the route's task was only detached and its send stayed pending after shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_cannot_drain_is_stopped_before_the_backends_close() {
    let sends = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let (s, d) = (sends.clone(), dropped.clone());
    tributary::register_scheme("never-answers", move |_| {
        let (sends, dropped) = (s.clone(), d.clone());
        Box::pin(async move {
            let inner = tributary::connect("memory://never-answers").await?;
            Ok(Intercepting::new(inner)
                .scheme("never-answers")
                .wrap_producer(move |inner| {
                    Box::new(NeverAnswers {
                        inner,
                        sends: sends.clone(),
                        dropped: dropped.clone(),
                    })
                })
                .into_backend())
        })
    });
    let source = tributary::connect("memory://cannot-drain").await.unwrap();
    let producer = source.producer("in").await.unwrap();
    producer
        .send_batch(
            (0..100)
                .map(|i| tributary::Event::new(format!("e{i}")))
                .collect(),
        )
        .await
        .unwrap();
    let mut plan = config::parse(
        "[daemon]\nlisten = \"off\"\n[[route]]\nname = \"r\"\nsource = { url = \"memory://\", stream = \"in\", start = \"earliest\" }\nsink = { url = \"memory://\", stream = \"out\" }\n",
        &|_| None,
    )
    .unwrap();
    plan.routes[0].source_url = "memory://cannot-drain".into();
    plan.routes[0].sink_url = "never-answers://sink".into();
    let running = daemon::start(plan).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sends.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the route never sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let error = running
        .shutdown(Duration::from_secs(2))
        .await
        .expect_err("the route could not drain");
    println!("{error}");
    assert!(
        dropped.load(Ordering::SeqCst),
        "the route's pending send outlived the shutdown"
    );
    producer.close().await.unwrap();
}

#[test]
fn reopening_backs_off() {
    let retry = tributary_bridge::route::RetryPolicy {
        jitter: 0.0,
        max_backoff: Duration::from_secs(1),
        ..Default::default()
    };
    let delays: Vec<u64> = (1..=8)
        .map(|n| daemon::reopen_delay(&retry, n).as_secs())
        .collect();
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
}
