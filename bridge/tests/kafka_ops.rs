//! The daemon on a Kafka source as an operator watches it (issue 22): the source-lag gauge
//! against the broker's own figures (`kafka-consumer-groups.sh --describe`) from the start,
//! while the route cannot open, once caught up, after a restart, and after a takeover (two
//! daemons in one group, one SIGKILLed); a daemon restarted after SIGKILL replicating again
//! at once with static group membership; a broker that stops answering, said in the log
//! within seconds; and a SIGTERM with the broker gone, which still exits within
//! `daemon.shutdown_timeout`.

mod harness;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{Daemon, LockHolder, http_get, metric, run, wait_output, wait_until};
use tributary_testcontainers::{Peer, Server, peers_dir, require, threads_named, unique_name};

const PARTITIONS: u32 = 4;
const KEYS: usize = 50;

/// Runs one of Kafka's own command-line tools (by class, through the installed
/// kafka-run-class) and returns its standard output.
fn kafka_tool(class: &str, args: &[&str]) -> String {
    let child = Command::new(peers_dir().join("kafka/current/bin/kafka-run-class"))
        .env("KAFKA_HEAP_OPTS", "-Xmx256m")
        .env("KAFKA_TIERED_STOP", "1")
        .arg(class)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{class}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The group's lag from the broker's own tools: each partition's end offset
/// (`kafka-get-offsets.sh`) less the group's committed offset (`kafka-consumer-groups.sh
/// --describe`, which lists only partitions with a commit; one without counts from 0, where a
/// route reading from `earliest` begins on a fresh topic).
fn broker_lag(server: &Server, group: &str, topic: &str) -> u64 {
    let ends = kafka_tool(
        "org.apache.kafka.tools.GetOffsetShell",
        &["--bootstrap-server", server.address(), "--topic", topic],
    );
    let described = kafka_tool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        &[
            "--bootstrap-server",
            server.address(),
            "--describe",
            "--group",
            group,
        ],
    );
    let mut committed = std::collections::HashMap::new();
    for line in described.lines() {
        // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG …
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 6
            && cols[1] == topic
            && let Ok(offset) = cols[3].parse::<u64>()
        {
            committed.insert(cols[2].to_owned(), offset);
        }
    }
    let mut lag = 0;
    let mut partitions = 0;
    for line in ends.lines() {
        // topic:partition:end
        let mut parts = line.rsplitn(3, ':');
        let (Some(end), Some(partition), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if name != topic {
            continue;
        }
        partitions += 1;
        let end: u64 = end.parse().unwrap();
        lag += end - committed.get(partition).copied().unwrap_or(0).min(end);
    }
    assert_eq!(partitions, PARTITIONS, "end offsets: {ends}");
    lag
}

/// Creates `topic` with `partitions` through the CLI, as an operator would.
fn create_topic(url: &str, topic: &str, partitions: u32) {
    let (code, err) = run(
        &[
            "streams",
            url,
            "create",
            topic,
            "-p",
            &partitions.to_string(),
        ],
        &[],
        "",
    );
    assert_eq!(code, Some(0), "{err}");
}

fn produce(url: &str, topic: &str, from: usize, n: usize) {
    let lines: String = (from..from + n)
        .map(|i| format!("{{\"key\":\"k{}\",\"payload\":\"event-{i}\"}}\n", i % KEYS))
        .collect();
    let (code, err) = run(&["produce", url, topic, "--format", "json"], &[], &lines);
    assert_eq!(code, Some(0), "{err}");
}

fn lag_gauge(addr: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics");
    metric(&body, "tributary_bridge_source_lag_events", "k")
}

fn events_out(addr: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics");
    metric(&body, "tributary_bridge_events_out_total", "k").unwrap_or(0.0)
}

/// Issue 22 defect 2: the gauge is there from the first seconds, equal to the broker's figure,
/// whether the route runs or not (here its sink is locked), counts every partition (a member
/// that read part of the topic and left still owns its commits), reaches 0 when caught up,
/// and is there again at once after a restart of a caught-up route.
#[test]
fn the_lag_gauge_agrees_with_the_broker_from_start_and_after_a_restart() {
    let Some(server) = require(Peer::Kafka) else {
        return;
    };
    let url = server.url().to_owned();
    let topic = unique_name("lag");
    let group = unique_name("lag-group");
    create_topic(&url, &topic, PARTITIONS);
    produce(&url, &topic, 0, 20_000);
    // Another member of the group reads part of the topic and leaves.
    let (code, err) = run(
        &["consume", &url, &topic, "-g", &group, "-n", "5000"],
        &[],
        "",
    );
    assert_eq!(code, Some(0), "{err}");
    println!("{err}");
    let expected = broker_lag(&server, &group, &topic);
    println!("broker: lag {expected} after another member read 5000");
    assert_eq!(expected, 15_000);

    let dir = tempfile::tempdir().unwrap();
    let sink = format!("file://{}", dir.path().join("sink").display());
    let holder = LockHolder::hold(&sink);
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"10s\"\n[[route]]\nname = \"k\"\nsource = {{ url = \"{url}\", stream = \"{topic}\", group = \"{group}\" }}\nsink = {{ url = \"{sink}\", stream = \"out\" }}\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut daemon = Daemon::start(&config, &[]);
    let addr = daemon.addr(Duration::from_secs(30));
    let first = wait_until(Duration::from_secs(30), "the lag gauge", || {
        lag_gauge(&addr)
    });
    println!(
        "daemon start, sink locked: gauge {first} after {:?} (broker {expected})",
        started.elapsed()
    );
    assert_eq!(first, expected as f64);
    assert_eq!(http_get(&addr, "/readyz").0, 503);

    holder.release();
    wait_until(Duration::from_secs(120), "the route to catch up", || {
        (events_out(&addr) >= 15_000.0 && lag_gauge(&addr) == Some(0.0)).then_some(())
    });
    let broker = broker_lag(&server, &group, &topic);
    println!("caught up: gauge 0, broker {broker}");
    assert_eq!(broker, 0);
    let (status, _, log) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{log}");

    let restarted = Instant::now();
    let mut daemon = Daemon::start(&config, &[]);
    let addr = daemon.addr(Duration::from_secs(30));
    let after = wait_until(
        Duration::from_secs(30),
        "the lag gauge after a restart",
        || lag_gauge(&addr),
    );
    println!(
        "restart of a caught-up route: gauge {after} after {:?}",
        restarted.elapsed()
    );
    assert_eq!(after, 0.0);
    produce(&url, &topic, 20_000, 1000);
    wait_until(Duration::from_secs(60), "the new events copied", || {
        (events_out(&addr) >= 1000.0 && lag_gauge(&addr) == Some(0.0)).then_some(())
    });
    let (status, _, log) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{log}");
}

/// The lag gauges of several routes on one Kafka source come from the clients the backend
/// has (its admin client and its lag reader), not from a client per route: a
/// daemon with 16 routes ran 16 librdkafka clients for its lag gauges beside the 16 members
/// that do the work, each with its own threads and connections.
#[test]
fn lag_gauges_of_several_routes_agree_with_the_broker_without_a_client_per_route() {
    let Some(server) = require(Peer::Kafka) else {
        return;
    };
    const ROUTES: usize = 4;
    const EVENTS: usize = 2000;
    let url = server.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let sink = format!("file://{}", dir.path().join("sink").display());
    let mut toml = String::from("[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"10s\"\n");
    let mut routes = Vec::new();
    for i in 0..ROUTES {
        let (topic, group) = (unique_name("lag-routes"), unique_name("lag-routes-group"));
        create_topic(&url, &topic, PARTITIONS);
        produce(&url, &topic, 0, EVENTS);
        toml.push_str(&format!(
            "[[route]]\nname = \"r{i}\"\nsource = {{ url = \"{url}\", stream = \"{topic}\", group = \"{group}\", start = \"earliest\" }}\nsink = {{ url = \"{sink}\", stream = \"out-{i}\" }}\n"
        ));
        routes.push((format!("r{i}"), topic, group));
    }
    let config = dir.path().join("bridge.toml");
    std::fs::write(&config, toml).unwrap();
    let mut daemon = Daemon::start(&config, &[]);
    let addr = daemon.addr(Duration::from_secs(30));
    wait_until(Duration::from_secs(120), "every route caught up", || {
        let (_, body) = http_get(&addr, "/metrics");
        routes
            .iter()
            .all(|(route, _, _)| {
                metric(&body, "tributary_bridge_events_out_total", route)
                    .is_some_and(|out| out >= EVENTS as f64)
                    && metric(&body, "tributary_bridge_source_lag_events", route) == Some(0.0)
            })
            .then_some(())
    });
    let clients = threads_named(daemon.pid(), "rdk:main");
    println!("{ROUTES} routes on one Kafka source: {clients} librdkafka clients");
    for (route, topic, group) in &routes {
        assert_eq!(broker_lag(&server, group, topic), 0, "route {route}");
    }
    let (status, _, log) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    // A member per route, the admin client and the lag reader.
    assert!(
        clients <= ROUTES + 2,
        "{clients} librdkafka clients for {ROUTES} routes (at most one per route and 2 more)"
    );
}

/// Issue 22 "restart after a crash": with a static member id on the source URL
/// (`consumer.group.instance.id`), a daemon restarted after SIGKILL gets its partitions back
/// at once instead of waiting out the dead member's session (45 s by default).
#[test]
fn a_daemon_restarted_after_sigkill_replicates_again_at_once_with_static_membership() {
    let Some(server) = require(Peer::Kafka) else {
        return;
    };
    let url = server.url().to_owned();
    let topic = unique_name("restart");
    let group = unique_name("restart-group");
    create_topic(&url, &topic, PARTITIONS);
    produce(&url, &topic, 0, 2000);
    let dir = tempfile::tempdir().unwrap();
    let sink = format!("file://{}", dir.path().join("sink").display());
    let config = dir.path().join("bridge.toml");
    let source = format!("{url}?consumer.group.instance.id={group}-k");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"10s\"\n[[route]]\nname = \"k\"\nsource = {{ url = \"{source}\", stream = \"{topic}\", group = \"{group}\" }}\nsink = {{ url = \"{sink}\", stream = \"out\" }}\n"
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, &[]);
    let addr = daemon.addr(Duration::from_secs(30));
    wait_until(
        Duration::from_secs(60),
        "the first 2000 events copied",
        || (events_out(&addr) >= 2000.0).then_some(()),
    );
    drop(daemon); // SIGKILL
    produce(&url, &topic, 2000, 2000);
    let restarted = Instant::now();
    let mut daemon = Daemon::start(&config, &[]);
    let addr = daemon.addr(Duration::from_secs(30));
    let (first, all) = wait_until(Duration::from_secs(120), "replication after the restart", {
        let mut first = None;
        move || {
            let out = events_out(&addr);
            if out > 0.0 && first.is_none() {
                first = Some(restarted.elapsed());
            }
            (out >= 2000.0).then(|| (first.unwrap(), restarted.elapsed()))
        }
    });
    println!("restart after SIGKILL: first event copied after {first:?}, 2000 after {all:?}");
    // Without a static member id this waits out the dead member's session (45 s).
    assert!(
        first < Duration::from_secs(15),
        "replication resumed only after {first:?}: {}",
        daemon.stderr()
    );
    let (status, _, log) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{log}");
}

/// One partition's row of `kafka-consumer-groups.sh --describe`: its lag (`None` for `-`, no
/// commit) and the member that holds it (`None` for `-`, nobody).
struct Holding {
    lag: Option<u64>,
    consumer: Option<String>,
}

/// `kafka-consumer-groups.sh --describe` for `group` on `topic`, by partition.
fn describe(server: &Server, group: &str, topic: &str) -> Vec<Holding> {
    let text = kafka_tool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        &[
            "--bootstrap-server",
            server.address(),
            "--describe",
            "--group",
            group,
        ],
    );
    // A group is made when its first member joins: until then the tool says it is not found.
    if text.contains("GroupIdNotFoundException") {
        return Vec::new();
    }
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .by_ref()
        .find(|l| l.contains("LOG-END-OFFSET"))
        .unwrap_or_else(|| panic!("no table in kafka-consumer-groups output: {text}"))
        .split_whitespace()
        .collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (topic_at, lag_at, consumer_at) = (column("TOPIC"), column("LAG"), column("CONSUMER-ID"));
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols.len() > consumer_at && cols[topic_at] == topic)
        .map(|cols| Holding {
            lag: cols[lag_at].parse().ok(),
            consumer: Some(cols[consumer_at].to_owned()).filter(|c| c != "-"),
        })
        .collect()
}

/// Gauge readings with the moment each was taken.
type Readings = std::sync::Arc<std::sync::Mutex<Vec<(Instant, Option<f64>)>>>;

/// The lag gauge of the daemon at `addr` every 100 ms, with the moment of each reading.
struct GaugeRecorder {
    readings: Readings,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GaugeRecorder {
    fn start(addr: &str) -> GaugeRecorder {
        let readings = Readings::default();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (addr, readings, stop) = (addr.to_owned(), readings.clone(), stop.clone());
            move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let lag = lag_gauge(&addr);
                    readings.lock().unwrap().push((Instant::now(), lag));
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        GaugeRecorder {
            readings,
            stop,
            thread: Some(thread),
        }
    }

    /// The readings taken between `from` and `to`.
    fn between(&self, from: Instant, to: Instant) -> Vec<Option<f64>> {
        let readings = self.readings.lock().unwrap();
        readings
            .iter()
            .filter(|(at, _)| (from..=to).contains(at))
            .map(|(_, lag)| *lag)
            .collect()
    }
}

impl Drop for GaugeRecorder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Issue 22 must-show: the lag gauge after a takeover. Two daemons share a route (one group,
/// a static member id each); one is SIGKILLed with a backlog on every partition; once the
/// survivor holds all of them (as `kafka-consumer-groups.sh --describe` shows), its gauge
/// agrees with that tool's LAG within 2 s. The sink (Kafka, `linger.ms` 200 ms, batches of 50)
/// holds the route to at most 250 events/s, so the backlog is still there when compared.
///
/// The lag only falls while the survivor drains it, so a gauge at most 2 s behind the broker
/// reads at least the tool's figure when the tool starts and at most that figure 2 s after
/// the tool answers: the readings of that window bracket it. A gauge that reads 0 or stays
/// put while the backlog drains (what an operator saw after a takeover) falls outside.
#[test]
fn the_lag_gauge_agrees_with_the_broker_within_2s_after_a_takeover() {
    let Some(server) = require(Peer::Kafka) else {
        return;
    };
    let url = server.url().to_owned();
    let (topic, sink_topic) = (unique_name("takeover"), unique_name("takeover-sink"));
    let group = unique_name("takeover-group");
    for (name, partitions) in [(&topic, PARTITIONS), (&sink_topic, 1)] {
        create_topic(&url, name, partitions);
    }
    produce(&url, &topic, 0, 400);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bridge.toml");
    // A session of 10 s, so the dead member's partitions move within the test's patience.
    let source = format!(
        "{url}?instance_id=${{REPLICA}}&consumer.session.timeout.ms=10000&consumer.heartbeat.interval.ms=1000"
    );
    let sink = format!("{url}?producer.linger.ms=200");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"10s\"\n[[route]]\nname = \"k\"\nsource = {{ url = \"{source}\", stream = \"{topic}\", group = \"{group}\", start = \"earliest\" }}\nsink = {{ url = \"{sink}\", stream = \"{sink_topic}\" }}\nbatch = {{ max_events = 50, linger = \"5ms\" }}\nin_flight = 100\n"
        ),
    )
    .unwrap();
    let mut a = Daemon::start(&config, &[("REPLICA", "replica-a")]);
    a.addr(Duration::from_secs(30));
    let mut b = Daemon::start(&config, &[("REPLICA", "replica-b")]);
    let b_addr = b.addr(Duration::from_secs(30));
    // Both members of the group, the first events replicated and committed on every partition.
    wait_until(
        Duration::from_secs(90),
        "two members, the first events committed",
        || {
            let rows = describe(&server, &group, &topic);
            let members: std::collections::HashSet<_> =
                rows.iter().filter_map(|h| h.consumer.clone()).collect();
            (rows.len() == PARTITIONS as usize
                && members.len() == 2
                && rows.iter().all(|h| h.lag == Some(0)))
            .then_some(())
        },
    );

    drop(a); // SIGKILL: no commit, no LeaveGroup
    let killed = Instant::now();
    produce(&url, &topic, 400, 8000);
    let gauge = GaugeRecorder::start(&b_addr);

    // The survivor holds every partition once the dead member's session has expired.
    let (rows, asked, answered) = wait_until(Duration::from_secs(90), "the takeover", || {
        let asked = Instant::now();
        let rows = describe(&server, &group, &topic);
        let answered = Instant::now();
        let holders: std::collections::HashSet<_> =
            rows.iter().map(|h| h.consumer.clone()).collect();
        (rows.len() == PARTITIONS as usize && holders.len() == 1 && !holders.contains(&None))
            .then_some((rows, asked, answered))
    });
    let broker: u64 = rows
        .iter()
        .map(|h| h.lag.expect("every partition has a commit"))
        .sum();
    // Readings up to 2 s after the tool answered.
    wait_until(Duration::from_secs(10), "2 s of readings", || {
        (answered.elapsed() > Duration::from_millis(2100)).then_some(())
    });
    let readings = gauge.between(asked, answered + Duration::from_secs(2));
    let known: Vec<f64> = readings.iter().flatten().copied().collect();
    let mut steps = readings.clone();
    steps.dedup();
    println!(
        "takeover {:?} after the kill: kafka-consumer-groups LAG {broker} (asked over {:?}); the survivor's gauge from then to 2 s after ({} readings): {steps:?}",
        asked - killed,
        answered - asked,
        readings.len()
    );
    assert!(
        broker > 0,
        "the backlog was gone before the comparison: the test proves nothing"
    );
    assert_eq!(
        known.len(),
        readings.len(),
        "the gauge was absent: {readings:?}"
    );
    let (low, high) = known
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(
        low <= broker as f64 && broker as f64 <= high,
        "the survivor's gauge {readings:?} does not bracket the broker's lag {broker} within 2 s"
    );
    drop(gauge);
    let (status, _, log) = b.terminate(Duration::from_secs(30));
    assert!(status.success(), "{log}");
}

/// A broker that stops answering shows in the daemon's log within seconds: the gauge's reading
/// is bounded as a whole (5 s), where it used to wait the backend's `timeout` (30 s by
/// default) for each of its requests in turn, leaving a stale figure and no word for half a
/// minute or more. librdkafka's mock cluster, served from this test's process, is the broker
/// the test can take down without disturbing the shared one.
#[test]
fn a_broker_that_stops_answering_is_reported_within_seconds() {
    use rdkafka::mocking::MockCluster;

    let cluster = MockCluster::new(1).expect("mock cluster");
    let topic = "lag-down";
    cluster.create_topic(topic, 2, 1).expect("topic");
    let url = format!("kafka://{}", cluster.bootstrap_servers());
    // The mock cluster does not answer DescribeConfigs, which a producer asks for the topic's
    // size limit (falling back to the broker's default when no answer comes within `timeout`).
    let produce_url = format!("{url}?timeout=2s");
    produce(&produce_url, topic, 0, 200);

    let dir = tempfile::tempdir().unwrap();
    let sink = format!("file://{}", dir.path().join("sink").display());
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"30s\"\n[[route]]\nname = \"k\"\nsource = {{ url = \"{url}\", stream = \"{topic}\", group = \"g-down\" }}\nsink = {{ url = \"{sink}\", stream = \"out\" }}\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut daemon = Daemon::start(&config, &[]);
    let addr = daemon.addr(Duration::from_secs(30));
    wait_until(Duration::from_secs(60), "the route to catch up", || {
        (events_out(&addr) >= 200.0 && lag_gauge(&addr) == Some(0.0)).then_some(())
    });
    println!("caught up after {:?}", started.elapsed());

    cluster.broker_down(1).expect("broker down");
    let down = Instant::now();
    daemon.wait_for_log("source lag unknown", Duration::from_secs(60));
    let reported = down.elapsed();
    println!("broker down: the daemon said so after {reported:?}");
    // The reading's bound (5 s), the gauge's tick (1 s) and a reading already under way.
    assert!(
        reported < Duration::from_secs(12),
        "the lag warning came {reported:?} after the broker went down:\n{}",
        daemon.stderr()
    );
    let log = daemon.stderr();
    let warning = log
        .lines()
        .find(|l| l.contains("source lag unknown"))
        .unwrap();
    assert!(warning.contains(topic), "{warning}");

    cluster.broker_up(1).expect("broker up");
    let up = Instant::now();
    produce(&produce_url, topic, 200, 100);
    wait_until(
        Duration::from_secs(60),
        "the route after the outage",
        || (events_out(&addr) >= 300.0 && lag_gauge(&addr) == Some(0.0)).then_some(()),
    );
    println!(
        "caught up again {:?} after the broker came back",
        up.elapsed()
    );
    let (status, took, log) = daemon.terminate(Duration::from_secs(60));
    println!("terminated in {took:?}");
    assert!(status.success(), "{status}\n{log}");
}

/// `daemon.shutdown_timeout` is a promise to a supervisor that kills at it (Kubernetes'
/// grace period): with the broker gone mid-stream, batches in hand cannot drain, and the
/// daemon still exits within the deadline, status 1, saying why. It used to drain for the
/// whole deadline and then give closing the backends a second more. The mock cluster is the
/// broker the test can take down without disturbing the shared one.
#[test]
fn sigterm_exits_within_the_shutdown_timeout_while_the_sink_hangs() {
    use rdkafka::mocking::MockCluster;

    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("hung-in", 2, 1).expect("topic");
    cluster.create_topic("hung-out", 2, 1).expect("topic");
    // The mock cluster does not answer DescribeConfigs: see the test above.
    let url = format!("kafka://{}?timeout=2s", cluster.bootstrap_servers());
    produce(&url, "hung-in", 0, 100_000);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bridge.toml");
    let deadline = Duration::from_secs(3);
    std::fs::write(
        &config,
        format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"{}s\"\n[[route]]\nname = \"k\"\nsource = {{ url = \"{url}\", stream = \"hung-in\", group = \"g-hung\" }}\nsink = {{ url = \"{url}\", stream = \"hung-out\" }}\nbatch = {{ max_events = 50 }}\nin_flight = 100\n",
            deadline.as_secs()
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, &[]);
    let addr = daemon.addr(Duration::from_secs(30));
    wait_until(Duration::from_secs(60), "the route to replicate", || {
        (events_out(&addr) >= 500.0).then_some(())
    });
    cluster.broker_down(1).expect("broker down");
    // The premise, seen rather than slept on: the sink has stopped confirming batches (the
    // count of events out holds still for half a second), so the batches in hand wait for a
    // broker that is not there. The exit status below says they could not drain.
    let mut last = (events_out(&addr), Instant::now());
    wait_until(Duration::from_secs(30), "replication to stall", || {
        let out = events_out(&addr);
        if out != last.0 {
            last = (out, Instant::now());
        }
        (last.1.elapsed() >= Duration::from_millis(500)).then_some(())
    });
    let (status, took, log) = daemon.terminate(Duration::from_secs(60));
    println!(
        "SIGTERM with the broker down: exited {status} after {took:?} (deadline {deadline:?})"
    );
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("daemon.shutdown_timeout"), "{log}");
    // The slack is the process's exit and this test's polling, not a phase of the shutdown.
    assert!(
        took <= deadline + Duration::from_millis(500),
        "the daemon exited {took:?} after SIGTERM, past its shutdown_timeout of {deadline:?}:\n{log}"
    );
}
