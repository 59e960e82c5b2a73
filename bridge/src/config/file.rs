//! The file's structure, as written: every section with its defaults. Values stay strings
//! here (durations, sizes, URLs with `${VAR}`); [`super::check`] parses and checks them.

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Daemon-wide settings.
    #[serde(default)]
    pub daemon: DaemonSection,
    /// The routes, at least one.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSection>,
}

/// `[daemon]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    /// Address of the operations endpoint, or `off`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// How long a graceful shutdown may take.
    #[serde(default = "default_shutdown")]
    pub shutdown_timeout: String,
    /// `text` (default) or `json` log lines on stderr.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// `[daemon.tracing]`: OTLP export of the routes' spans ([`crate::telemetry::config`]).
    #[serde(default)]
    pub tracing: Option<crate::telemetry::config::TracingSection>,
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            listen: default_listen(),
            shutdown_timeout: default_shutdown(),
            log_format: default_log_format(),
            tracing: None,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9464".into()
}

fn default_shutdown() -> String {
    "30s".into()
}

fn default_log_format() -> String {
    "text".into()
}

/// `[[route]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Unique name (metrics label, lineage header).
    pub name: String,
    /// Where events come from.
    pub source: SourceSection,
    /// Where they go.
    pub sink: SinkSection,
    /// Batching towards the sink.
    #[serde(default)]
    pub batch: BatchSection,
    /// Deliveries held from the source at most (backpressure).
    #[serde(default = "default_in_flight")]
    pub in_flight: usize,
    /// Retries of a failed sink write.
    #[serde(default)]
    pub retry: RetrySection,
    /// Where events the sink keeps refusing go, with the reason in headers.
    pub dead_letter: Option<SinkSection>,
    /// `keep` the key, or `drop` it.
    #[serde(default = "default_key")]
    pub key: String,
    /// `trust` the lineage headers found on source events (the default), or `reset` them.
    #[serde(default = "default_lineage")]
    pub lineage: String,
    /// CEL expression: events for which it is false are dropped (and acked at the source).
    pub filter: Option<String>,
    /// CEL expressions rewriting stream, key and headers.
    pub transform: Option<TransformSection>,
    /// `binary`, `structured` or `keep`: CloudEvents rewritten for the sink's binding
    /// ([`crate::cloudevents`]).
    pub cloudevents: Option<String>,
    /// What the filter and transform may cost per event.
    #[serde(default)]
    pub expression_budget: ExpressionBudgetSection,
}

/// `expression_budget = { … }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpressionBudgetSection {
    /// Comprehension steps (elements visited by `map`, `filter`, `all`, `exists`) per event.
    #[serde(default = "default_budget_steps")]
    pub steps: u64,
    /// Time per event.
    #[serde(default = "default_budget_time")]
    pub time: String,
}

impl Default for ExpressionBudgetSection {
    fn default() -> Self {
        ExpressionBudgetSection {
            steps: default_budget_steps(),
            time: default_budget_time(),
        }
    }
}

fn default_budget_steps() -> u64 {
    crate::transform::Budget::default().steps
}

fn default_budget_time() -> String {
    format!("{}ms", crate::transform::Budget::default().time.as_millis())
}

/// `transform = { … }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformSection {
    /// The sink stream: a string, or null for the route's own.
    pub stream: Option<String>,
    /// The new key: string, bytes, or null for none.
    pub key: Option<String>,
    /// Header name → expression; a null result removes the header.
    #[serde(default)]
    pub set_headers: std::collections::BTreeMap<String, String>,
    /// Headers to remove.
    #[serde(default)]
    pub remove_headers: Vec<String>,
}

// Measured against Kafka (bridge/benches/replication.rs): 500 and 1000 copied 52k events/s,
// 2000 and 4000 copied 89k/s; the byte limit still bounds a batch of large events.
fn default_in_flight() -> usize {
    4000
}

fn default_key() -> String {
    "keep".into()
}

fn default_lineage() -> String {
    "trust".into()
}

/// A source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// Backend URL.
    pub url: String,
    /// Stream.
    pub stream: String,
    /// Consumer group (where progress is kept).
    #[serde(default = "default_group")]
    pub group: String,
    /// Where a new group starts: earliest, latest, an RFC 3339 time, `@millis`, a position.
    #[serde(default = "default_start")]
    pub start: String,
    /// A name for the cluster, used by loop prevention instead of the URL's address.
    pub cluster: Option<String>,
}

fn default_group() -> String {
    "tributary-bridge".into()
}

fn default_start() -> String {
    "earliest".into()
}

/// A sink (also the dead-letter sink).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    /// Backend URL.
    pub url: String,
    /// Stream.
    pub stream: String,
    /// A name for the cluster, used by loop prevention instead of the URL's address.
    pub cluster: Option<String>,
}

/// `batch = { … }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSection {
    /// Events per sink write at most.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Payload bytes per sink write at most (a size: `1MiB`).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: String,
    /// How long the first event of a batch started while the sink is idle waits for more to
    /// join it (what is already waiting joins regardless, up to the limits; a batch gathered
    /// while the previous write was in flight goes when that write is confirmed). `0ms` by
    /// default: latency first; a longer linger buys fewer, larger writes at low rates.
    #[serde(default = "default_linger")]
    pub linger: String,
}

impl Default for BatchSection {
    fn default() -> Self {
        BatchSection {
            max_events: default_max_events(),
            max_bytes: default_max_bytes(),
            linger: default_linger(),
        }
    }
}

fn default_max_events() -> usize {
    2000
}

fn default_max_bytes() -> String {
    "1MiB".into()
}

fn default_linger() -> String {
    "0ms".into()
}

/// `retry = { … }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Attempts per write before the event goes to the dead-letter sink (or the route stops).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// First backoff.
    #[serde(default = "default_backoff")]
    pub backoff: String,
    /// Backoff ceiling.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: String,
    /// Random spread of each backoff, 0 to 1.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            attempts: default_attempts(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
            jitter: default_jitter(),
        }
    }
}

fn default_attempts() -> u32 {
    5
}

fn default_backoff() -> String {
    "100ms".into()
}

fn default_max_backoff() -> String {
    "10s".into()
}

fn default_jitter() -> f64 {
    0.2
}
