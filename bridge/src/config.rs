//! The bridge daemon's configuration file, in TOML or YAML (by extension: `.yaml`/`.yml` is
//! YAML, anything else TOML). Both describe the same structure, checked the same way.
//!
//! ```toml
//! [daemon]
//! listen = "127.0.0.1:9464"          # /metrics, /healthz, /readyz ("off" to disable)
//! shutdown_timeout = "30s"           # SIGTERM/SIGINT: stop intake, drain, exit 0 within this
//! log_format = "text"                # or "json" (as `--log-json`)
//!
//! [[route]]
//! name = "orders-to-kafka"
//! source = { url = "file:///var/lib/app", stream = "orders", group = "bridge", start = "earliest" }
//! sink = { url = "kafka://${KAFKA_BROKERS}", stream = "orders" }
//! batch = { max_events = 2000, max_bytes = "1MiB", linger = "5ms" }
//! in_flight = 4000                   # deliveries held from the source at most
//! retry = { attempts = 5, backoff = "100ms", max_backoff = "10s", jitter = 0.2 }
//! dead_letter = { url = "file:///var/lib/dlq", stream = "orders-dlq" }
//! key = "keep"                       # or "drop": let the sink spread events
//! filter = "has(payload.amount) && payload.amount >= 100"   # CEL; false drops (and acks)
//! transform = { stream = "'orders-' + payload.region", key = "payload.customer", set_headers = { tier = "payload.amount > 1000 ? 'gold' : 'standard'" }, remove_headers = ["debug"] }
//! ```
//!
//! Filters and transforms are CEL expressions over `key`, `headers`, `timestamp`, `payload`
//! (JSON), `raw` and `source`: see [`crate::transform`]. A source or sink may also name its
//! `cluster` (e.g. `cluster = "eu-1"`) when one cluster is reached by different addresses;
//! loop prevention for bidirectional routes compares these identities.
//!
//! `${NAME}` anywhere in a string is replaced by the environment variable `NAME`, so secrets
//! stay out of the file; URLs are shown redacted everywhere.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tributary::{Error, Result, StartPosition, parse_duration, parse_size, parse_url, redact};

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
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            listen: default_listen(),
            shutdown_timeout: default_shutdown(),
            log_format: default_log_format(),
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
    /// CEL expression: events for which it is false are dropped (and acked at the source).
    pub filter: Option<String>,
    /// CEL expressions rewriting stream, key and headers.
    pub transform: Option<TransformSection>,
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
    /// How long a batch's first event waits for more to join it (what is already waiting
    /// joins regardless, up to the limits).
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
    "5ms".into()
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

/// A checked route, with every value parsed.
#[derive(Debug, Clone)]
pub struct RoutePlan {
    /// Route name.
    pub name: String,
    /// Source URL (with secrets; never print it, use [`redact`]).
    pub source_url: String,
    /// Source stream.
    pub source_stream: String,
    /// Consumer group.
    pub group: String,
    /// Start position for a new group.
    pub start: StartPosition,
    /// Sink URL.
    pub sink_url: String,
    /// Sink stream.
    pub sink_stream: String,
    /// Batch limits.
    pub max_events: usize,
    /// Batch byte limit.
    pub max_bytes: usize,
    /// Batch linger.
    pub linger: Duration,
    /// Deliveries in flight at most.
    pub in_flight: usize,
    /// Retry policy.
    pub retry: crate::route::RetryPolicy,
    /// Dead-letter URL and stream.
    pub dead_letter: Option<(String, String)>,
    /// Whether keys are kept.
    pub keep_key: bool,
    /// Compiled filter and transform.
    pub transform: Option<std::sync::Arc<crate::transform::Transform>>,
    /// The source stream's identity for loop prevention.
    pub source_identity: String,
    /// The sink stream's identity for loop prevention.
    pub sink_identity: String,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Operations endpoint address, `None` when off.
    pub listen: Option<std::net::SocketAddr>,
    /// Graceful shutdown deadline.
    pub shutdown_timeout: Duration,
    /// Routes.
    pub routes: Vec<RoutePlan>,
    /// Logs as JSON lines.
    pub log_json: bool,
}

/// The language a configuration file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML, the default.
    Toml,
    /// YAML, for files named `*.yaml` or `*.yml`.
    Yaml,
}

impl Format {
    /// The format a file's extension names: `.yaml`/`.yml` is YAML, anything else TOML.
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml") => {
                Format::Yaml
            }
            _ => Format::Toml,
        }
    }
}

/// Reads and checks a configuration file without connecting to anything. Every problem is
/// reported, each with its path in the file (`route[1].retry.backoff`).
pub fn load(path: &Path) -> Result<Plan> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    parse_as(Format::of(path), &text, &|name| std::env::var(name).ok())
        .map_err(|e| e.context(format!("{}", path.display())))
}

/// [`load`] on a TOML string, with `env` resolving `${NAME}` references.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Plan> {
    parse_as(Format::Toml, text, env)
}

/// [`load`] on a string in the given format, with `env` resolving `${NAME}` references.
pub fn parse_as(format: Format, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Plan> {
    let located = |path: String, message: String| {
        Error::config(if path == "." {
            message
        } else {
            format!("`{path}`: {message}")
        })
    };
    let file: FileConfig = match format {
        Format::Toml => {
            let deserializer = toml::Deserializer::parse(text)
                .map_err(|e| Error::config(format!("not valid TOML: {}", e.message())))?;
            serde_path_to_error::deserialize(deserializer)
                .map_err(|e| located(e.path().to_string(), e.inner().message().to_string()))?
        }
        Format::Yaml => {
            // An empty document is an empty configuration (reported below as having no route),
            // as an empty TOML file is.
            let text = if text.trim().is_empty() { "{}" } else { text };
            serde_path_to_error::deserialize(yaml_serde::Deserializer::from_str(text)).map_err(
                |e| {
                    let path = e.path().to_string();
                    // The YAML error names the enclosing map itself ("route[0].source: unknown
                    // field …"): keep one path, the precise one.
                    let message = e.inner().to_string();
                    let message = match message.split_once(": ") {
                        Some((own, rest)) if path.starts_with(own) => rest.to_string(),
                        _ => message,
                    };
                    located(path, message)
                },
            )?
        }
    };
    check(file, env)
}

fn check(file: FileConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Plan> {
    let mut problems = Vec::new();
    // `None` when a variable is missing (already reported; the value is not checked further).
    let mut expand = |path: &str, value: &str| -> Option<String> {
        match expand_env(value, env) {
            Ok(v) => Some(v),
            Err(name) => {
                problems.push(format!(
                    "`{path}`: environment variable `{name}` is not set"
                ));
                None
            }
        }
    };
    let listen_raw = expand("daemon.listen", &file.daemon.listen).unwrap_or_else(|| "off".into());
    let shutdown_raw = expand("daemon.shutdown_timeout", &file.daemon.shutdown_timeout)
        .unwrap_or_else(|| "30s".into());
    let mut routes_raw = Vec::new();
    for (i, r) in file.routes.iter().enumerate() {
        let at = |field: &str| format!("route[{i}].{field}");
        routes_raw.push((
            expand(&at("source.url"), &r.source.url),
            expand(&at("sink.url"), &r.sink.url),
            r.dead_letter
                .as_ref()
                .map(|d| expand(&at("dead_letter.url"), &d.url)),
        ));
    }

    let listen = if listen_raw == "off" {
        None
    } else {
        match listen_raw.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.push(format!("`daemon.listen`: `{listen_raw}` is not an address like 127.0.0.1:9464 (or `off`)"));
                None
            }
        }
    };
    let shutdown_timeout = parse_duration(&shutdown_raw).unwrap_or_else(|| {
        problems.push(format!(
            "`daemon.shutdown_timeout`: `{shutdown_raw}` is not a duration (e.g. 30s)"
        ));
        Duration::from_secs(30)
    });
    let log_json = match file.daemon.log_format.as_str() {
        "text" => false,
        "json" => true,
        other => {
            problems.push(format!(
                "`daemon.log_format`: `{other}` is not `text` or `json`"
            ));
            false
        }
    };
    if file.routes.is_empty() {
        problems.push(
            "no route (`[[route]]` in TOML, `route:` in YAML): the file must define at least one"
                .into(),
        );
    }
    let mut names = HashSet::new();
    let mut routes = Vec::new();
    for (i, (r, (source_url, sink_url, dead_url))) in
        file.routes.into_iter().zip(routes_raw).enumerate()
    {
        let at = |field: &str| format!("route[{i}].{field}");
        let mut url_ok = |field: &str, url: &Option<String>| {
            if let Some(url) = url
                && let Err(e) = parse_url(url)
            {
                problems.push(format!("`{}`: {}", at(field), e.message()));
            }
        };
        url_ok("source.url", &source_url);
        url_ok("sink.url", &sink_url);
        if let Some(dead) = &dead_url {
            url_ok("dead_letter.url", dead);
        }
        let source_url = source_url.unwrap_or_default();
        let sink_url = sink_url.unwrap_or_default();
        let dead_url = dead_url.map(Option::unwrap_or_default);
        if r.name.trim().is_empty() {
            problems.push(format!("`{}`: must not be empty", at("name")));
        } else if !names.insert(r.name.clone()) {
            problems.push(format!(
                "`{}`: `{}` is used by another route",
                at("name"),
                r.name
            ));
        }
        for (field, value) in [
            ("source.stream", &r.source.stream),
            ("sink.stream", &r.sink.stream),
            ("source.group", &r.source.group),
        ] {
            if value.trim().is_empty() {
                problems.push(format!("`{}`: must not be empty", at(field)));
            }
        }
        let start = r.source.start.parse::<StartPosition>().unwrap_or_else(|e| {
            problems.push(format!("`{}`: {}", at("source.start"), e.message()));
            StartPosition::Earliest
        });
        if r.batch.max_events == 0 {
            problems.push(format!("`{}`: must be at least 1", at("batch.max_events")));
        }
        let max_bytes = parse_size(&r.batch.max_bytes).unwrap_or_else(|| {
            problems.push(format!(
                "`{}`: `{}` is not a size (e.g. 1MiB)",
                at("batch.max_bytes"),
                r.batch.max_bytes
            ));
            1 << 20
        }) as usize;
        let mut duration = |field: &str, raw: &str| {
            parse_duration(raw).unwrap_or_else(|| {
                problems.push(format!(
                    "`{}`: `{raw}` is not a duration (e.g. 100ms, 10s)",
                    at(field)
                ));
                Duration::ZERO
            })
        };
        let linger = duration("batch.linger", &r.batch.linger);
        let backoff = duration("retry.backoff", &r.retry.backoff);
        let max_backoff = duration("retry.max_backoff", &r.retry.max_backoff);
        if r.in_flight < r.batch.max_events.max(1) {
            problems.push(format!(
                "`{}`: {} is below batch.max_events ({})",
                at("in_flight"),
                r.in_flight,
                r.batch.max_events
            ));
        }
        if r.retry.attempts == 0 {
            problems.push(format!("`{}`: must be at least 1", at("retry.attempts")));
        }
        if !(0.0..=1.0).contains(&r.retry.jitter) {
            problems.push(format!(
                "`{}`: {} is not between 0 and 1",
                at("retry.jitter"),
                r.retry.jitter
            ));
        }
        let keep_key = match r.key.as_str() {
            "keep" => true,
            "drop" => false,
            other => {
                problems.push(format!(
                    "`{}`: `{other}` is not `keep` or `drop`",
                    at("key")
                ));
                true
            }
        };
        let transform_spec = crate::transform::TransformSpec {
            filter: r.filter.clone(),
            stream: r.transform.as_ref().and_then(|t| t.stream.clone()),
            key: r.transform.as_ref().and_then(|t| t.key.clone()),
            set_headers: r
                .transform
                .as_ref()
                .map(|t| t.set_headers.clone().into_iter().collect())
                .unwrap_or_default(),
            remove_headers: r
                .transform
                .as_ref()
                .map(|t| t.remove_headers.clone())
                .unwrap_or_default(),
        };
        let transform = if transform_spec.is_empty() {
            None
        } else {
            match crate::transform::Transform::compile(&transform_spec) {
                Ok(t) => Some(std::sync::Arc::new(t)),
                Err(errors) => {
                    // Each is `field: message`, the field relative to the route.
                    for error in errors {
                        let (field, message) =
                            error.split_once(": ").unwrap_or(("transform", &error));
                        problems.push(format!("`{}`: {message}", at(field)));
                    }
                    None
                }
            }
        };
        let source_identity = crate::route::stream_identity(
            &source_url,
            r.source.cluster.as_deref(),
            &r.source.stream,
        );
        let sink_identity =
            crate::route::stream_identity(&sink_url, r.sink.cluster.as_deref(), &r.sink.stream);
        if source_url == sink_url && r.source.stream == r.sink.stream {
            problems.push(format!(
                "`{}`: the sink is the source (`{}` on {})",
                at("sink"),
                r.sink.stream,
                redact_str(&sink_url)
            ));
        }
        routes.push(RoutePlan {
            name: r.name,
            source_url,
            source_stream: r.source.stream,
            group: r.source.group,
            start,
            sink_url,
            sink_stream: r.sink.stream,
            max_events: r.batch.max_events,
            max_bytes,
            linger,
            in_flight: r.in_flight,
            retry: crate::route::RetryPolicy {
                attempts: r.retry.attempts,
                backoff,
                max_backoff,
                jitter: r.retry.jitter,
            },
            dead_letter: dead_url.zip(r.dead_letter.map(|d| d.stream)),
            keep_key,
            transform,
            source_identity,
            sink_identity,
        });
    }
    if problems.is_empty() {
        Ok(Plan {
            listen,
            shutdown_timeout,
            routes,
            log_json,
        })
    } else {
        let count = problems.len();
        Err(Error::config(format!(
            "{count} problem{} in the configuration:\n  {}",
            if count == 1 { "" } else { "s" },
            problems.join("\n  ")
        )))
    }
}

fn redact_str(url: &str) -> String {
    parse_url(url)
        .map(|u| redact(&u))
        .unwrap_or_else(|_| "<unparseable URL>".into())
}

/// Replaces `${NAME}`; `Err(NAME)` for the first variable that is not set.
fn expand_env(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        out.push_str(&env(name).ok_or_else(|| name.to_string())?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "BROKERS").then(|| "127.0.0.1:9092".to_string())
    }

    #[test]
    fn a_full_file_parses() {
        let plan = parse(
            r#"
            [daemon]
            listen = "127.0.0.1:0"
            [[route]]
            name = "a"
            source = { url = "memory://x", stream = "in" }
            sink = { url = "kafka://${BROKERS}", stream = "out" }
            dead_letter = { url = "memory://x", stream = "dlq" }
            retry = { attempts = 3 }
            "#,
            &env,
        )
        .unwrap();
        assert_eq!(plan.routes.len(), 1);
        assert_eq!(plan.routes[0].sink_url, "kafka://127.0.0.1:9092");
        assert_eq!(plan.routes[0].retry.attempts, 3);
        assert_eq!(plan.routes[0].max_events, 2000);
        assert!(plan.routes[0].dead_letter.is_some());
    }

    #[test]
    fn every_problem_is_named_with_its_path() {
        let e = parse(
            r#"
            [daemon]
            listen = "nowhere"
            [[route]]
            name = "a"
            source = { url = "memory://x", stream = "in", start = "@yesterday" }
            sink = { url = "kafka://${MISSING}", stream = "out" }
            batch = { max_events = 0, linger = "soon" }
            retry = { jitter = 2.0 }
            [[route]]
            name = "a"
            source = { url = "not a url", stream = "in" }
            sink = { url = "memory://y", stream = "" }
            key = "hash"
            "#,
            &env,
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "`daemon.listen`",
            "`route[0].source.start`",
            "`route[0].sink.url`: environment variable `MISSING`",
            "`route[0].batch.max_events`",
            "`route[0].batch.linger`",
            "`route[0].retry.jitter`",
            "`route[1].name`: `a` is used by another route",
            "`route[1].source.url`",
            "`route[1].sink.stream`",
            "`route[1].key`",
        ] {
            assert!(e.contains(needle), "missing {needle} in:\n{e}");
        }
    }

    #[test]
    fn filter_and_transform_problems_name_their_path() {
        let e = parse(
            r#"
            [[route]]
            name = "a"
            source = { url = "memory://x", stream = "in" }
            sink = { url = "memory://x", stream = "out" }
            filter = "payload.n >"
            transform = { key = "paylod.user", set_headers = { tier = "1 +" } }
            "#,
            &env,
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "`route[0].filter`: `payload.n >` is not a valid CEL expression",
            "`route[0].transform.key`: `paylod.user` uses `paylod`",
            "`route[0].transform.set_headers.tier`",
        ] {
            assert!(e.contains(needle), "missing {needle} in:\n{e}");
        }
        let plan = parse(
            r#"
            [[route]]
            name = "a"
            source = { url = "kafka://10.0.0.1:9092,10.0.0.2:9092", stream = "in", cluster = "eu" }
            sink = { url = "memory://x", stream = "out" }
            filter = "has(payload.n)"
            transform = { stream = "'out-' + string(payload.n)" }
            "#,
            &env,
        )
        .unwrap();
        assert!(plan.routes[0].transform.is_some());
        assert_eq!(plan.routes[0].source_identity, "eu/in");
        assert_eq!(plan.routes[0].sink_identity, "memory://x/out");
    }

    #[test]
    fn unknown_and_mistyped_fields_name_their_path() {
        let e = parse("[[route]]\nname = \"a\"\nsource = { url = \"memory://\", stream = \"s\", grup = \"g\" }\nsink = { url = \"memory://\", stream = \"t\" }\n", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("route[0].source") && e.contains("grup"), "{e}");
        let e = parse("[[route]]\nname = \"a\"\nin_flight = \"many\"\nsource = { url = \"memory://\", stream = \"s\" }\nsink = { url = \"memory://\", stream = \"t\" }\n", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("route[0].in_flight"), "{e}");
        assert!(
            parse("this is = not toml [", &env)
                .unwrap_err()
                .to_string()
                .contains("TOML")
        );
    }

    #[test]
    fn yaml_describes_the_same_configuration() {
        let yaml = parse_as(
            Format::Yaml,
            r#"
daemon:
  listen: off
  log_format: json
route:
  - name: a
    source: { url: "memory://x", stream: in, start: "2024-01-01T00:00:00Z" }
    sink:
      url: kafka://${BROKERS}
      stream: out
    batch: { max_events: 100, max_bytes: 64KiB, linger: 2ms }
    retry: { attempts: 3 }
    filter: has(payload.n)
    transform:
      key: payload.user
      set_headers: { tier: "'gold'" }
"#,
            &env,
        )
        .unwrap();
        let toml = parse(
            r#"
            [daemon]
            listen = "off"
            log_format = "json"
            [[route]]
            name = "a"
            source = { url = "memory://x", stream = "in", start = "2024-01-01T00:00:00Z" }
            sink = { url = "kafka://${BROKERS}", stream = "out" }
            batch = { max_events = 100, max_bytes = "64KiB", linger = "2ms" }
            retry = { attempts = 3 }
            filter = "has(payload.n)"
            transform = { key = "payload.user", set_headers = { tier = "'gold'" } }
            "#,
            &env,
        )
        .unwrap();
        // Plans hold compiled expressions: compare what they decide, field by field.
        assert_eq!(yaml.listen, toml.listen);
        assert_eq!(yaml.listen, None);
        assert!(yaml.log_json && toml.log_json);
        let (y, t) = (&yaml.routes[0], &toml.routes[0]);
        assert_eq!(y.sink_url, "kafka://127.0.0.1:9092");
        assert_eq!(
            (
                &y.sink_url,
                &y.source_stream,
                y.max_events,
                y.max_bytes,
                y.linger
            ),
            (
                &t.sink_url,
                &t.source_stream,
                t.max_events,
                t.max_bytes,
                t.linger
            )
        );
        assert_eq!(format!("{:?}", y.start), format!("{:?}", t.start));
        assert_eq!(y.retry.attempts, 3);
        assert_eq!(
            y.transform.as_ref().map(|t| t.summary()),
            t.transform.as_ref().map(|t| t.summary())
        );
    }

    #[test]
    fn yaml_problems_name_their_path() {
        let e = parse_as(
            Format::Yaml,
            "route:\n  - name: a\n    source: { url: 'memory://', stream: s, grup: g }\n    sink: { url: 'memory://', stream: t }\n",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("route[0].source") && e.contains("grup"), "{e}");
        let e = parse_as(
            Format::Yaml,
            "route:\n  - name: a\n    in_flight: many\n    source: { url: 'memory://', stream: s }\n    sink: { url: 'memory://', stream: t }\n",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("route[0].in_flight"), "{e}");
        let e = parse_as(Format::Yaml, "", &env).unwrap_err().to_string();
        assert!(e.contains("no route"), "{e}");
        let e = parse_as(Format::Yaml, "route: [\n", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line"), "a syntax error says where: {e}");
        assert_eq!(Format::of(Path::new("bridge.yml")), Format::Yaml);
        assert_eq!(Format::of(Path::new("bridge.YAML")), Format::Yaml);
        assert_eq!(Format::of(Path::new("bridge.toml")), Format::Toml);
        assert_eq!(Format::of(Path::new("bridge")), Format::Toml);
    }

    #[test]
    fn secrets_in_urls_are_not_echoed() {
        let e = parse(
            "[[route]]\nname = \"a\"\nsource = { url = \"memory://u:hunter2@x\", stream = \"s\" }\nsink = { url = \"memory://u:hunter2@x\", stream = \"s\" }\n",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("the sink is the source"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
