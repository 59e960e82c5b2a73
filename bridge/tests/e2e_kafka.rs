//! End to end against a real Kafka broker: local → Kafka, then Kafka → Kafka (another topic),
//! comparing the full sequence of events on both sides: content, per-key order, lineage.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;

use common::{read_distinct, read_n, wait_until};
use tributary::{Backend, Event, StreamSpec, Timestamp};
use tributary_bridge::route::lineage::Origin;
use tributary_bridge::route::{self, CancellationToken, RouteSpec, RouteStats};
use tributary_testcontainers::{Peer, require_peer, unique_name};

const EVENTS: usize = 3000;

/// The tests share one broker, which two of them freeze, and measure the process's memory:
/// they run one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const KEYS: usize = 20;

fn source_events() -> Vec<Event> {
    (0..EVENTS)
        .map(|i| {
            Event::new(format!("{}-{}", i % KEYS, i / KEYS))
                .with_key(format!("key-{}", i % KEYS))
                .with_header("n", i.to_string())
                .with_timestamp(Timestamp::from_millis(1_700_000_000_000 + i as i64))
        })
        .collect()
}

/// How long a reader waits for the next event before the test fails with its lag.
const QUIET: Duration = Duration::from_secs(60);

/// Per key, the payloads in arrival order.
fn by_key(events: &[Event]) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
    let mut map: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for e in events {
        map.entry(e.key.clone().unwrap().to_vec())
            .or_default()
            .push(e.payload.to_vec());
    }
    map
}

/// Warnings from the bridge and the backends go to the test's output, so a stall in CI shows
/// what the route saw (RUST_LOG overrides).
fn show_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

struct RunningRoute {
    name: String,
    cancel: CancellationToken,
    stats: Arc<RouteStats>,
    task: tokio::task::JoinHandle<tributary::Result<()>>,
}

fn spawn_route(spec: RouteSpec) -> RunningRoute {
    let cancel = CancellationToken::default();
    let stats = Arc::new(RouteStats::default());
    let name = spec.name.clone();
    let task = tokio::spawn(route::run_route(spec, stats.clone(), cancel.clone()));
    RunningRoute {
        name,
        cancel,
        stats,
        task,
    }
}

/// Runs `check` while the routes run: a route that stops on its own fails the test with its
/// error at once, and every 10 s each route's counters are printed, so a stall says whether
/// the route or the reader stopped.
async fn while_routes_run<T>(routes: &mut [RunningRoute], check: impl Future<Output = T>) -> T {
    let progress = |routes: &[RunningRoute]| {
        routes
            .iter()
            .map(|r| format!("{}: {}", r.name, r.stats))
            .collect::<Vec<_>>()
            .join("; ")
    };
    tokio::pin!(check);
    let mut ticks = tokio::time::interval(Duration::from_secs(10));
    ticks.tick().await;
    loop {
        let ended = futures::future::select_all(routes.iter_mut().map(|r| &mut r.task));
        tokio::select! {
            out = &mut check => return out,
            (result, index, _) = ended => {
                panic!("route `{}` stopped on its own: {result:?} ({})", routes[index].name, progress(routes))
            }
            _ = ticks.tick() => println!("progress: {}", progress(routes)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_to_kafka_to_kafka_keeps_content_order_and_lineage() {
    let _serial = ONE_AT_A_TIME.lock().await;
    show_logs();
    let server = require_peer!(Peer::Kafka);
    tributary_kafka::register();
    let kafka = tributary::connect(server.url()).await.unwrap();
    let local = tributary::connect("memory://e2e-kafka?partitions=4")
        .await
        .unwrap();
    let (first, second) = (unique_name("bridge-a"), unique_name("bridge-b"));
    for topic in [&first, &second] {
        kafka
            .create_stream(topic, StreamSpec::with_partitions(4))
            .await
            .unwrap();
    }
    let sent = source_events();
    local
        .producer("orders")
        .await
        .unwrap()
        .send_batch(sent.clone())
        .await
        .unwrap();

    let mut to_kafka = RouteSpec::new(
        "local-to-kafka",
        local.clone(),
        "orders",
        kafka.clone(),
        first.clone(),
    );
    to_kafka.group = "e2e".into();
    let mut kafka_to_kafka = RouteSpec::new(
        "kafka-to-kafka",
        kafka.clone(),
        first.clone(),
        kafka.clone(),
        second.clone(),
    );
    kafka_to_kafka.group = unique_name("e2e");
    let mut routes = [spawn_route(to_kafka), spawn_route(kafka_to_kafka)];

    let (on_first, on_second) = while_routes_run(&mut routes, async {
        (
            read_n(&kafka, &first, EVENTS, QUIET).await,
            read_n(&kafka, &second, EVENTS, QUIET).await,
        )
    })
    .await;
    for route in routes {
        route.cancel.cancel();
        route.task.await.unwrap().unwrap();
    }

    // Same events per key, in the same order, on both hops.
    assert_eq!(by_key(&on_first), by_key(&sent));
    assert_eq!(by_key(&on_second), by_key(&sent));
    // Content: key, payload, original headers and timestamp survive both hops.
    let original: BTreeMap<Vec<u8>, &Event> =
        sent.iter().map(|e| (e.payload.to_vec(), e)).collect();
    for event in &on_second {
        let want = original[&event.payload.to_vec()];
        assert_eq!(event.key, want.key);
        assert_eq!(event.timestamp, want.timestamp);
        assert_eq!(event.headers.get("n"), want.headers.get("n"));
        // Lineage names the last hop (Kafka, the first topic, its partition and offset).
        let origin = Origin::of(event).expect("an origin header");
        assert_eq!(origin.backend, "kafka");
        assert_eq!(origin.stream, first);
        assert_eq!(origin.route, "kafka-to-kafka");
        assert!(origin.partition.is_some_and(|p| p.parse::<u32>().is_ok()));
        assert!(origin.position.is_some_and(|p| p.parse::<u64>().is_ok()));
    }
    for event in &on_first {
        assert_eq!(
            Origin::of(event).map(|o| o.backend).as_deref(),
            Some("memory")
        );
    }
}

fn resident_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("VmRSS:")
                        .map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                })
                .flatten()
        })
        .map_or(0, |kb| kb / 1024)
}

/// A Kafka topic to be frozen, and `total` keyed events waiting at a local source.
async fn frozen_sink_setup(
    server: &tributary_testcontainers::Server,
    name: &str,
    total: usize,
) -> (Arc<dyn Backend>, Arc<dyn Backend>, String, Vec<Event>) {
    tributary_kafka::register();
    // Short librdkafka timeouts are not wanted here: sends must wait the outage out.
    let kafka = tributary::connect(server.url()).await.unwrap();
    let local = tributary::connect(&format!("memory://e2e-{name}?partitions=4"))
        .await
        .unwrap();
    let topic = unique_name(name);
    kafka
        .create_stream(&topic, StreamSpec::with_partitions(4))
        .await
        .unwrap();
    let events: Vec<Event> = (0..total)
        .map(|i| {
            Event::new(format!("{}-{}", i % KEYS, i / KEYS)).with_key(format!("key-{}", i % KEYS))
        })
        .collect();
    let producer = local.producer("orders").await.unwrap();
    for chunk in events.chunks(5000) {
        producer.send_batch(chunk.to_vec()).await.unwrap();
    }
    (kafka, local, topic, events)
}

/// Per key, payloads in arrival order with repeats of an already-seen event dropped: at least
/// once means an interrupted batch may be written twice, and order is judged on first copies.
fn first_copies_by_key(events: &[Event]) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
    let mut map = by_key(events);
    for seq in map.values_mut() {
        let mut seen = std::collections::HashSet::new();
        seq.retain(|payload| seen.insert(payload.clone()));
    }
    map
}

/// The sink hangs (the broker is frozen with SIGSTOP): intake stops within the in-flight
/// window, memory stays flat, and everything flows once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_sink_stops_intake_and_the_route_resumes() {
    let _serial = ONE_AT_A_TIME.lock().await;
    show_logs();
    let server = require_peer!(Peer::Kafka);
    let total = 40_000;
    let (kafka, local, topic, events) = frozen_sink_setup(&server, "dead-sink", total).await;

    let in_flight = 500;
    let mut spec = RouteSpec::new(
        "dead-sink",
        local.clone(),
        "orders",
        kafka.clone(),
        topic.clone(),
    );
    spec.group = "dead".into();
    spec.max_batch = 100;
    spec.in_flight = in_flight;
    spec.retry.attempts = 1000;
    let stats = Arc::new(RouteStats::default());
    let cancel = CancellationToken::default();
    let task = tokio::spawn(route::run_route(spec, stats.clone(), cancel.clone()));
    let replicated = |s: &RouteStats| s.replicated.load(std::sync::atomic::Ordering::Relaxed);
    let received = |s: &RouteStats| s.received.load(std::sync::atomic::Ordering::Relaxed);
    // A route that dies here would leave this wait spinning forever without its deadline.
    wait_until(
        "1000 events replicated before the broker is frozen",
        Duration::from_secs(60),
        || replicated(&stats) >= 1000 || task.is_finished(),
        || format!("route: {stats}"),
    )
    .await;
    if task.is_finished() {
        panic!("the route stopped: {:?} ({stats})", task.await);
    }

    server.suspend().expect("SIGSTOP the broker");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (stalled_at, rss_before) = (replicated(&stats), resident_mib());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (still, rss_after, taken) = (replicated(&stats), resident_mib(), received(&stats));
    let lag = stats.lag();
    server.resume().expect("SIGCONT the broker");
    println!(
        "dead sink: replicated {stalled_at} -> {still} in 4 s, taken from the source {taken} (in_flight {in_flight}), source lag {lag:?}, RSS {rss_before} -> {rss_after} MiB"
    );
    // The lag keeps being reported while the sink hangs: everything not yet acked.
    let lag = lag.expect("the local source reports its lag");
    assert!(
        lag >= total as u64 - still - 100 && lag <= total as u64,
        "lag {lag} with {still} of {total} acked"
    );
    assert!(
        still - stalled_at <= 100,
        "the route kept writing to a frozen broker"
    );
    assert!(
        taken - still <= in_flight as u64 + 100,
        "read {} events ahead of the sink",
        taken - still
    );
    assert!(
        rss_after <= rss_before + 64,
        "memory grew from {rss_before} to {rss_after} MiB"
    );

    let copied = read_distinct(&kafka, &topic, total, QUIET).await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    // The broker's outage may end before the batch in hand was confirmed: written twice.
    assert_eq!(
        first_copies_by_key(&copied),
        by_key(&events),
        "every event, per-key order kept, after the broker came back"
    );
}

/// The sink is slow, not dead: the broker is frozen for 300 ms of every 400 ms. Intake never
/// runs more than the in-flight window ahead of the sink, memory stays flat, every event
/// arrives in per-key order, and the reported lag falls to zero at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_sink_keeps_intake_within_the_window_and_finishes() {
    let _serial = ONE_AT_A_TIME.lock().await;
    show_logs();
    let server = require_peer!(Peer::Kafka);
    let total = 20_000;
    let (kafka, local, topic, events) = frozen_sink_setup(&server, "slow-sink", total).await;
    let in_flight = 400;
    let max_batch = 50;
    let mut spec = RouteSpec::new(
        "slow-sink",
        local.clone(),
        "orders",
        kafka.clone(),
        topic.clone(),
    );
    spec.group = "slow".into();
    spec.max_batch = max_batch;
    spec.in_flight = in_flight;
    spec.retry.attempts = 1000;
    let stats = Arc::new(RouteStats::default());
    let cancel = CancellationToken::default();
    let started = std::time::Instant::now();
    let task = tokio::spawn(route::run_route(spec, stats.clone(), cancel.clone()));
    let replicated = |s: &RouteStats| s.replicated.load(std::sync::atomic::Ordering::Relaxed);
    let received = |s: &RouteStats| s.received.load(std::sync::atomic::Ordering::Relaxed);

    let rss_start = resident_mib();
    let (mut max_ahead, mut max_rss, mut cycles) = (0, rss_start, 0);
    let deadline = started + Duration::from_secs(180);
    while replicated(&stats) < total as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {total} replicated in 180 s",
            replicated(&stats)
        );
        server.suspend().expect("SIGSTOP the broker");
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            max_ahead = max_ahead.max(received(&stats) - replicated(&stats));
        }
        server.resume().expect("SIGCONT the broker");
        tokio::time::sleep(Duration::from_millis(100)).await;
        max_ahead = max_ahead.max(received(&stats) - replicated(&stats));
        max_rss = max_rss.max(resident_mib());
        cycles += 1;
    }
    let elapsed = started.elapsed();
    // The reporter publishes every second: the lag must come down to nothing.
    let lag_deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stats.lag() != Some(0) && std::time::Instant::now() < lag_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let final_lag = stats.lag();
    println!(
        "slow sink: {total} events in {:.1} s ({:.0}/s) over {cycles} freeze cycles; at most {max_ahead} read ahead of the sink (in_flight {in_flight}); RSS {rss_start} -> peak {max_rss} MiB; final lag {final_lag:?}",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    assert!(
        max_ahead <= (in_flight + max_batch) as u64,
        "read {max_ahead} events ahead of a slow sink (in_flight {in_flight})"
    );
    assert!(
        max_rss <= rss_start + 64,
        "memory grew from {rss_start} to {max_rss} MiB"
    );
    assert_eq!(final_lag, Some(0), "nothing left at the source");
    let copied = read_distinct(&kafka, &topic, total, QUIET).await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(
        first_copies_by_key(&copied),
        by_key(&events),
        "every event, per-key order kept"
    );
}

/// Kafka's own console consumer (the Java client, from the installed Kafka jars) reads the two
/// lineage headers a Kafka→Kafka route wrote: every copy names the route, the source stream and
/// the exact partition and offset it was read at, which together cover each source partition's
/// offsets without a gap, and the path names the source as the daemon would. 60,000 events of
/// 1 KiB over 4 partitions, about 64 MiB each way: 4 times the route consumer's prefetch
/// (`queued.max.messages.kbytes`, 16 MiB), 15 times its in-flight window (4,000 events) and
/// 16 times the Java consumer's fetch of a partition (`max.partition.fetch.bytes`, 1 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_console_consumer_reads_the_lineage_a_route_wrote() {
    const N: usize = 60_000;
    const PAYLOAD: usize = 1024;
    let _serial = ONE_AT_A_TIME.lock().await;
    show_logs();
    let server = require_peer!(Peer::Kafka);
    tributary_kafka::register();
    let kafka = tributary::connect(server.url()).await.unwrap();
    let (source, sink) = (unique_name("lineage-src"), unique_name("lineage-dst"));
    for topic in [&source, &sink] {
        kafka
            .create_stream(topic, StreamSpec::with_partitions(4))
            .await
            .unwrap();
    }
    let producer = kafka.producer(&source).await.unwrap();
    for chunk in (0..N).collect::<Vec<_>>().chunks(1000) {
        let batch = chunk
            .iter()
            .map(|i| {
                let mut payload = format!("event-{i};").into_bytes();
                payload.resize(PAYLOAD, b'.');
                Event::new(payload)
                    .with_key(format!("key-{}", i % KEYS))
                    .with_header("n", i.to_string())
            })
            .collect();
        producer.send_batch(batch).await.unwrap();
    }
    producer.close().await.unwrap();

    let mut spec = RouteSpec::new(
        "java-reads-lineage",
        kafka.clone(),
        source.clone(),
        kafka.clone(),
        sink.clone(),
    );
    spec.group = unique_name("lineage");
    spec.source_identity = route::stream_identity(server.url(), None, &source);
    let mut routes = [spawn_route(spec)];
    let stats = routes[0].stats.clone();
    while_routes_run(
        &mut routes,
        wait_until(
            "the route copies every event",
            Duration::from_secs(120),
            || stats.replicated.load(Ordering::Relaxed) >= N as u64,
            || stats.to_string(),
        ),
    )
    .await;
    for route in routes {
        route.cancel.cancel();
        route.task.await.unwrap().unwrap();
    }

    let lines = tributary_testcontainers::kafka::console_consume(
        server.address(),
        &sink,
        N,
        &["print.headers=true", "print.key=true", "key.separator=|"],
        Duration::from_secs(150),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lines.len(), N, "the Java consumer read every copy");

    let path = format!("kafka://{}/{source}", server.address());
    let mut offsets: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut partition_of_key: BTreeMap<String, String> = BTreeMap::new();
    for line in lines.iter().map(String::as_str) {
        // `h1:v1,h2:v2|key|value`; no header value here holds a comma.
        let mut fields = line.splitn(3, '|');
        let (headers, key, value) = (
            fields.next().unwrap(),
            fields.next().unwrap(),
            fields.next().unwrap(),
        );
        let headers: BTreeMap<&str, &str> = headers
            .split(',')
            .map(|h| h.split_once(':').unwrap_or_else(|| panic!("{line}")))
            .collect();
        let expected = format!("event-{};", headers["n"]);
        assert!(
            value.len() == PAYLOAD && value.starts_with(&expected),
            "{expected}… of {PAYLOAD} bytes: {line}"
        );
        assert_eq!(headers["tributary-path"], path, "{line}");
        let origin = Origin::parse(headers["tributary-origin"].as_bytes())
            .unwrap_or_else(|| panic!("an origin that reads back: {line}"));
        assert_eq!(origin.route, "java-reads-lineage");
        assert_eq!(origin.backend, "kafka");
        assert_eq!(origin.stream, source);
        let partition = origin.partition.expect("a partition");
        let offset: u64 = origin.position.expect("a position").parse().unwrap();
        // A key's events all come from the one source partition it hashes to.
        let first = partition_of_key
            .entry(key.to_string())
            .or_insert_with(|| partition.clone());
        assert_eq!(*first, partition, "{line}");
        offsets.entry(partition).or_default().push(offset);
    }
    // The source partitions' offsets, each exactly once: the origin is where each copy was read.
    let mut covered = 0;
    for (partition, mut seen) in offsets {
        seen.sort_unstable();
        let expected: Vec<u64> = (0..seen.len() as u64).collect();
        assert_eq!(seen, expected, "offsets of source partition {partition}");
        covered += seen.len();
    }
    assert_eq!(covered, N);
}
