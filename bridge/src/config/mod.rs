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

use std::path::Path;

use tributary::{Error, Result};

mod check;
mod env;
mod file;
mod plan;

pub use env::{ScrubbedStderr, Secrets};
pub use file::{
    BatchSection, DaemonSection, FileConfig, RetrySection, RouteSection, SinkSection,
    SourceSection, TransformSection,
};
pub use plan::{Plan, RoutePlan};

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
    check::check(file, env)
}

#[cfg(test)]
mod tests;
