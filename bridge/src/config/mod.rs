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
//! batch = { max_events = 2000, max_bytes = "1MiB", linger = "0ms" }
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
mod schema;

pub use env::{ScrubbedStderr, Secrets};
pub use file::{
    BatchSection, DaemonSection, ExpressionBudgetSection, FileConfig, RetrySection, RouteSection,
    SinkSection, SourceSection, TransformSection,
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

/// Largest configuration file read, in bytes: far above any real one (a route takes a few
/// hundred bytes), far below what would take long to parse.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Deepest nesting of tables and lists accepted (real files nest three or four deep).
pub const MAX_NESTING: usize = 32;

/// Reads and checks a configuration file without connecting to anything. Every problem is
/// reported, each with its path in the file (`route[1].retry.backoff`). Files over
/// [`MAX_FILE_BYTES`] are refused without being read further.
pub fn load(path: &Path) -> Result<Plan> {
    use std::io::Read;
    let reading = |e| Error::io(format!("reading {}", path.display()), e);
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(reading)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(reading)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::config(format!(
            "{} is larger than {} KiB; a configuration file is at most that",
            path.display(),
            MAX_FILE_BYTES >> 10
        )));
    }
    parse_as(Format::of(path), &text, &|name| std::env::var(name).ok())
        .map_err(|e| e.context(format!("{}", path.display())))
}

/// [`load`] on a TOML string, with `env` resolving `${NAME}` references.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Plan> {
    parse_as(Format::Toml, text, env)
}

/// [`load`] on a string in the given format, with `env` resolving `${NAME}` references.
pub fn parse_as(format: Format, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Plan> {
    if let Some((depth, line)) = too_deep(text) {
        return Err(Error::config(format!(
            "line {line}: tables and lists nested {depth} deep; a configuration nests at most {MAX_NESTING} deep"
        )));
    }
    let mut document: serde_json::Value = match format {
        Format::Toml => {
            let deserializer = toml::Deserializer::parse(text).map_err(|e| {
                let at = e
                    .span()
                    .map(|span| format!(" at {}", line_and_column(text, span.start)))
                    .unwrap_or_default();
                Error::config(format!("not valid TOML{at}: {}", e.message().trim()))
            })?;
            serde::Deserialize::deserialize(deserializer).map_err(|e: toml::de::Error| {
                Error::config(format!("not valid TOML: {}", e.message().trim()))
            })?
        }
        Format::Yaml => {
            // An empty document is an empty configuration (reported later as having no route),
            // as an empty TOML file is.
            let text = if text.trim().is_empty() { "{}" } else { text };
            yaml_serde::from_str(text).map_err(|e| Error::config(format!("not valid YAML: {e}")))?
        }
    };
    let shape_problems = schema::check(&mut document);
    let file: FileConfig = match serde_path_to_error::deserialize(document) {
        Ok(file) => file,
        Err(e) => {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            let mut problems = shape_problems;
            problems.push(if path == "." {
                message
            } else {
                format!("`{path}`: {message}")
            });
            return Err(check::report(problems));
        }
    };
    check::check(file, env, shape_problems)
}

/// `line L, column C` of a byte offset, both from 1.
fn line_and_column(text: &str, offset: usize) -> String {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    format!("line {line}, column {column}")
}

/// The nesting depth and line where `[`/`{` outside quotes first go deeper than
/// [`MAX_NESTING`]: both parsers take time (or stack) to nest, so the text is measured first.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut quote) = (0usize, 1usize, None::<u8>);
    let mut bytes = text.bytes().peekable();
    while let Some(b) = bytes.next() {
        match (quote, b) {
            (_, b'\n') => {
                line += 1;
                // Only multi-line (triple-quoted) strings go on; a stray quote ends here.
                if quote.is_some_and(|q| q != b'"' && q != b'\'') {
                    continue;
                }
                quote = None;
            }
            (Some(_), b'\\') => {
                bytes.next();
            }
            (Some(q), b) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'#') => {
                // A comment, to the end of the line.
                for b in bytes.by_ref() {
                    if b == b'\n' {
                        line += 1;
                        break;
                    }
                }
            }
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some((depth, line));
                }
            }
            (None, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests;
