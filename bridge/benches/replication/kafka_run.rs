//! Kafka→Kafka replicators: the bridge daemon and MirrorMaker 2, each with its own topics.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use tributary::Backend;
use tributary_testcontainers::{Server, group_cpu_time, peers_dir, unique_name};

use crate::PARTITIONS;
use crate::backlog::{Backlog, high_watermarks, watch_backlog};
use crate::latency::{Clock, Latency, paced_latency};
use crate::process::{Replicator, RssSampler};
use crate::report::Row;

/// One Kafka→Kafka replicator and its topics.
pub(crate) struct KafkaRun {
    pub(crate) name: String,
    /// `None`: the bridge daemon; `Some((source alias, target alias, tasks.max))`: MM2.
    pub(crate) mm2: Option<(String, String, u32)>,
    pub(crate) backlog_src: String,
    pub(crate) backlog_dst: String,
    pub(crate) paced_src: String,
    pub(crate) paced_dst: String,
}

impl KafkaRun {
    pub(crate) fn bridge() -> Self {
        let backlog = unique_name("rep-bridge-backlog");
        let paced = unique_name("rep-bridge-paced");
        KafkaRun {
            name: "bridge Kafka→Kafka".into(),
            mm2: None,
            backlog_dst: format!("{backlog}-copy"),
            paced_dst: format!("{paced}-copy"),
            backlog_src: backlog,
            paced_src: paced,
        }
    }

    /// MM2 names the target `<source alias>.<topic>` (DefaultReplicationPolicy); each run gets
    /// its own aliases so it also gets its own internal Connect topics.
    pub(crate) fn mm2(source: &str, target: &str, tasks: u32) -> Self {
        let backlog = unique_name(&format!("rep-mm2-{tasks}-backlog"));
        let paced = unique_name(&format!("rep-mm2-{tasks}-paced"));
        KafkaRun {
            name: format!("MirrorMaker 2 Kafka→Kafka (tasks.max={tasks})"),
            mm2: Some((source.to_string(), target.to_string(), tasks)),
            backlog_dst: format!("{source}.{backlog}"),
            paced_dst: format!("{source}.{paced}"),
            backlog_src: backlog,
            paced_src: paced,
        }
    }

    /// Every topic the run reads or writes: its two sources and their two targets.
    pub(crate) fn topics(&self) -> [&str; 4] {
        [
            &self.backlog_src,
            &self.paced_src,
            &self.backlog_dst,
            &self.paced_dst,
        ]
    }

    /// Starts the replicator on both flows (backlog and paced), logging to the bench's work
    /// directory.
    fn spawn(&self, server: &Server, bridge_bin: &Path) -> Replicator {
        let dir = work_dir();
        let tag = self.backlog_src.clone();
        let log = dir.join(format!("{tag}.log"));
        let process = match &self.mm2 {
            None => {
                let config = dir.join(format!("{tag}.toml"));
                let routes = [
                    (
                        "backlog",
                        self.backlog_src.as_str(),
                        self.backlog_dst.as_str(),
                    ),
                    ("paced", self.paced_src.as_str(), self.paced_dst.as_str()),
                ];
                std::fs::write(&config, daemon_config(server.url(), &routes)).unwrap();
                Replicator::spawn(&self.name, daemon_command(bridge_bin, &config), &log)
            }
            Some((source, target, tasks)) => {
                let config = dir.join(format!("{tag}.properties"));
                std::fs::write(
                    &config,
                    self.mm2_config(server.address(), source, target, *tasks),
                )
                .unwrap();
                let wrapper = peers_dir().join("kafka/current/bin/kafka-mirror-maker2");
                assert!(
                    wrapper.is_file(),
                    "MirrorMaker 2 is not installed: no {}",
                    wrapper.display()
                );
                let mut command = Command::new(wrapper);
                command.arg(&config);
                Replicator::spawn(&self.name, command, &log)
            }
        };
        eprintln!(
            "[{}] started, pid {}, log {}",
            self.name,
            process.pgid,
            log.display()
        );
        process
    }

    /// Starts the replicator, waits until the backlog's `n` events are on its target, then,
    /// with `paced_for`, runs the paced stream through it for that long, and stops it: one
    /// replicator's part of a round (`cpu_rounds.rs`). The paced target must have been created
    /// with broker timestamps ([`create_log_append_topics`]).
    pub(crate) async fn copy_backlog(
        &self,
        server: &Server,
        kafka: &dyn Backend,
        bridge_bin: &Path,
        n: u64,
        paced_for: Option<Duration>,
    ) -> (Backlog, Option<Latency>) {
        let started = Instant::now();
        let mut process = self.spawn(server, bridge_bin);
        let pgid = process.pgid;
        let cpu = move || group_cpu_time(pgid);
        let backlog = watch_backlog(
            kafka,
            &[&self.backlog_dst],
            n,
            started,
            &mut || process.check_alive(),
            &cpu,
        )
        .await;
        let latency = match paced_for {
            Some(paced_for) => Some(
                paced_latency(
                    kafka,
                    &self.paced_src,
                    kafka,
                    &self.paced_dst,
                    Clock::LogAppendTime,
                    paced_for,
                )
                .await,
            ),
            None => None,
        };
        if let Err(e) = process.check_alive() {
            panic!("{e}");
        }
        process.stop();
        (backlog, latency)
    }

    pub(crate) async fn measure(
        &self,
        server: &Server,
        kafka: Arc<dyn Backend>,
        bridge_bin: &Path,
        n: u64,
    ) -> Row {
        let started = Instant::now();
        let mut process = self.spawn(server, bridge_bin);
        let rss = RssSampler::start(Some(process.pgid));
        let pgid = process.pgid;
        let cpu = move || group_cpu_time(pgid);
        let backlog = watch_backlog(
            kafka.as_ref(),
            &[&self.backlog_dst],
            n,
            started,
            &mut || process.check_alive(),
            &cpu,
        )
        .await;
        eprintln!(
            "[{}] backlog copied in {:.2}s (first event after {:.2}s)",
            self.name,
            backlog.total.as_secs_f64(),
            backlog.first_at.as_secs_f64()
        );
        let paced_from = cpu();
        let latency = paced_latency(
            kafka.as_ref(),
            &self.paced_src,
            kafka.as_ref(),
            &self.paced_dst,
            Clock::LogAppendTime,
            crate::PACED_FOR,
        )
        .await;
        if let Err(e) = process.check_alive() {
            panic!("{e}");
        }
        let paced_cpu = cpu().saturating_sub(paced_from);
        let peak = rss.finish();
        process.stop();
        let copied = high_watermarks(kafka.as_ref(), &self.backlog_dst).await;
        if copied != n {
            eprintln!(
                "[{}] note: the backlog target holds {copied} events, {n} were produced",
                self.name
            );
        }
        Row {
            name: self.name.clone(),
            events: n,
            backlog,
            latency,
            paced_cpu,
            peak_rss: peak,
            rss_note: if self.mm2.is_some() {
                "JVM process"
            } else {
                "daemon process"
            },
            kafka: true,
            mm2_tasks: self.mm2.as_ref().map(|m| m.2),
        }
    }

    /// Dedicated-mode MirrorMaker 2: one flow, both "clusters" the same broker, only topic
    /// replication (no heartbeats, checkpoints, ACL/config sync), producer/consumer defaults.
    ///
    /// `heartbeats.replication.enabled = false`: MM2 replicates every topic its policy calls a
    /// heartbeats topic whatever the topic filter says, and with source and target on one
    /// broker each copy (`a.heartbeats`, `a.a.heartbeats`, …) is found again at the next
    /// refresh (every second here): runs before that setting created a topic a second and
    /// reassigned the task each time, which no two-cluster deployment does.
    pub(crate) fn mm2_config(
        &self,
        bootstrap: &str,
        source: &str,
        target: &str,
        tasks: u32,
    ) -> String {
        format!(
            "clusters = {source}, {target}\n\
             {source}.bootstrap.servers = {bootstrap}\n\
             {target}.bootstrap.servers = {bootstrap}\n\
             {source}->{target}.enabled = true\n\
             {source}->{target}.topics = {}, {}\n\
             {target}->{source}.enabled = false\n\
             tasks.max = {tasks}\n\
             replication.factor = 1\n\
             offset-syncs.topic.replication.factor = 1\n\
             checkpoints.topic.replication.factor = 1\n\
             heartbeats.topic.replication.factor = 1\n\
             config.storage.replication.factor = 1\n\
             offset.storage.replication.factor = 1\n\
             status.storage.replication.factor = 1\n\
             emit.heartbeats.enabled = false\n\
             heartbeats.replication.enabled = false\n\
             emit.checkpoints.enabled = false\n\
             sync.group.offsets.enabled = false\n\
             sync.topic.acls.enabled = false\n\
             sync.topic.configs.enabled = false\n\
             refresh.topics.interval.seconds = 1\n\
             refresh.groups.interval.seconds = 600\n",
            self.backlog_src, self.paced_src
        )
    }
}

/// A daemon configuration with one Kafka→Kafka route per `(name, source topic, target topic)`
/// on the broker at `url`: default batching and in-flight limit unless a `BENCH_BRIDGE_*`
/// knob says otherwise.
pub(crate) fn daemon_config(url: &str, routes: &[(&str, &str, &str)]) -> String {
    // `BENCH_BRIDGE_SINK_LINGER_MS` sets the Kafka sink producer's `linger.ms` (the daemon
    // otherwise applies its own default).
    let sink_url = match bridge_knob("BENCH_BRIDGE_SINK_LINGER_MS") {
        Some(ms) => format!("{url}?producer.linger.ms={ms}"),
        None => url.to_string(),
    };
    let mut toml = String::from("[daemon]\nlisten = \"off\"\nshutdown_timeout = \"10s\"\n");
    for (name, from, to) in routes {
        // A group per route: routes sharing one would rebalance each other.
        let group = unique_name(&format!("bench-bridge-{name}"));
        let _ = write!(
            toml,
            "\n[[route]]\nname = \"{name}\"\n\
             source = {{ url = \"{url}\", stream = \"{from}\", group = \"{group}\", start = \"earliest\" }}\n\
             sink = {{ url = \"{sink_url}\", stream = \"{to}\" }}\n"
        );
        if let Some(max_events) = bridge_knob("BENCH_BRIDGE_MAX_EVENTS") {
            let _ = writeln!(toml, "batch = {{ max_events = {max_events} }}");
        }
        if let Some(in_flight) = bridge_knob("BENCH_BRIDGE_IN_FLIGHT") {
            let _ = writeln!(toml, "in_flight = {in_flight}");
        }
    }
    toml
}

/// The release daemon on `config`, logging warnings only.
/// `BENCH_BRIDGE_WRAP="perf stat -e … -o FILE --"` runs it under a tool.
pub(crate) fn daemon_command(bridge_bin: &Path, config: &Path) -> Command {
    let wrap = std::env::var("BENCH_BRIDGE_WRAP").unwrap_or_default();
    let mut wrap = wrap.split_whitespace();
    let mut command = match wrap.next() {
        Some(tool) => {
            let mut command = Command::new(tool);
            command.args(wrap).arg(bridge_bin);
            command
        }
        None => Command::new(bridge_bin),
    };
    command
        .args(["bridge", "--config"])
        .arg(config)
        .env("TRIBUTARY_LOG", "warn");
    command
}

/// An optional bridge setting from the environment, for tuning runs; unset keeps the
/// configuration file's default.
pub(crate) fn bridge_knob(name: &str) -> Option<usize> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

pub(crate) fn work_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "deps"))
        .and_then(|deps| deps.parent()?.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join("bench-replication");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Creates `topics` (4 partitions) with broker-stamped timestamps
/// (`message.timestamp.type=LogAppendTime`), in one request of this process's own admin client.
pub(crate) async fn create_log_append_topics(bootstrap: &str, topics: &[String]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("an admin client for the bench's topics");
    let partitions = i32::try_from(PARTITIONS).expect("a partition count Kafka allows");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|topic| {
            NewTopic::new(topic, partitions, TopicReplication::Fixed(1))
                .set("message.timestamp.type", "LogAppendTime")
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new, &options)
        .await
        .unwrap_or_else(|e| panic!("create {topics:?}: {e}"));
    for result in results {
        if let Err((topic, code)) = result {
            panic!("create topic {topic} with LogAppendTime: {code}");
        }
    }
}
