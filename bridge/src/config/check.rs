//! From the file as written to a [`Plan`]: one checker per section, each reporting every
//! problem it finds with its path in the file, so that one run names them all.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tributary::backend::{parse_duration, parse_size, redact_text};
use tributary::{Error, Result, StartPosition};

use super::env::{Secrets, expand_env};
use super::file::{
    BatchSection, DaemonSection, FileConfig, RetrySection, RouteSection, SinkSection, SourceSection,
};
use super::plan::{Plan, RoutePlan};
use crate::route::{RetryPolicy, stream_identity};
use crate::transform::{Budget, Transform, TransformSpec};

/// Every problem found so far, each `` `path`: message ``.
struct Problems<'e> {
    found: Vec<String>,
    env: &'e dyn Fn(&str) -> Option<String>,
    /// Every value taken from `env`, kept out of the messages.
    secrets: Secrets,
}

impl Problems<'_> {
    fn add(&mut self, path: &str, message: impl std::fmt::Display) {
        self.found.push(format!("`{path}`: {message}"));
    }

    /// `value` with `${NAME}` expanded; `None` when a variable is not set (reported; the value
    /// is not checked further).
    fn expand(&mut self, path: &str, value: &str) -> Option<String> {
        match expand_env(value, self.env, &mut self.secrets) {
            Ok(v) => Some(v),
            Err(name) => {
                self.add(
                    path,
                    format_args!("environment variable `{name}` is not set"),
                );
                None
            }
        }
    }

    fn duration(&mut self, path: &str, raw: &str) -> Duration {
        parse_duration(raw).unwrap_or_else(|| {
            self.add(
                path,
                format_args!("`{raw}` is not a duration (e.g. 100ms, 10s)"),
            );
            Duration::ZERO
        })
    }

    /// The URL with `${NAME}` expanded; reported when it does not parse, names a backend
    /// this program lacks, or has options the backend refuses.
    fn url(&mut self, path: &str, raw: &str) -> Option<String> {
        let url = self.expand(path, raw)?;
        if let Err(e) = crate::backends::check_url(&url) {
            self.add(path, e.message());
        }
        Some(url)
    }
}

/// The plan of `file`, or every problem: `earlier` (found in the file's shape) and those of
/// each section.
pub(super) fn check(
    file: FileConfig,
    env: &dyn Fn(&str) -> Option<String>,
    earlier: Vec<String>,
) -> Result<Plan> {
    let mut problems = Problems {
        found: earlier,
        env,
        secrets: Secrets::default(),
    };
    let daemon = daemon(&file.daemon, &mut problems);
    let tracing = file.daemon.tracing.as_ref().and_then(|section| {
        // Values taken from the environment (export credentials) join the secrets.
        let secrets = std::cell::RefCell::new(std::mem::take(&mut problems.secrets));
        let checked = crate::telemetry::config::check(section, &|v| {
            expand_env(v, problems.env, &mut secrets.borrow_mut())
        });
        problems.secrets = secrets.into_inner();
        checked.map_err(|found| problems.found.extend(found)).ok()
    });
    let traced = tracing.is_some();
    if file.routes.is_empty() {
        problems.found.push(
            "no route (`[[route]]` in TOML, `route:` in YAML): the file must define at least one"
                .into(),
        );
    }
    let mut names = HashSet::new();
    let routes: Vec<RoutePlan> = file
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| RoutePlan {
            traced,
            ..route(i, r, &mut names, &mut problems)
        })
        .collect();
    if problems.found.is_empty() {
        Ok(Plan {
            listen: daemon.listen,
            shutdown_timeout: daemon.shutdown_timeout,
            routes,
            log_json: daemon.log_json,
            secrets: problems.secrets,
            tracing,
        })
    } else {
        let report = report(problems.found);
        Err(Error::config(problems.secrets.scrub(report.message())))
    }
}

/// One error listing every problem.
pub(super) fn report(problems: Vec<String>) -> Error {
    let count = problems.len();
    Error::config(format!(
        "{count} problem{} in the configuration:\n  {}",
        if count == 1 { "" } else { "s" },
        problems.join("\n  ")
    ))
}

struct Daemon {
    listen: Option<std::net::SocketAddr>,
    shutdown_timeout: Duration,
    log_json: bool,
}

/// `[daemon]`
fn daemon(section: &DaemonSection, problems: &mut Problems<'_>) -> Daemon {
    let listen_raw = problems
        .expand("daemon.listen", &section.listen)
        .unwrap_or_else(|| "off".into());
    let listen = if listen_raw == "off" {
        None
    } else {
        match listen_raw.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.add(
                    "daemon.listen",
                    format_args!("`{listen_raw}` is not an address like 127.0.0.1:9464 (or `off`)"),
                );
                None
            }
        }
    };
    let shutdown_raw = problems
        .expand("daemon.shutdown_timeout", &section.shutdown_timeout)
        .unwrap_or_else(|| "30s".into());
    let shutdown_timeout = parse_duration(&shutdown_raw).unwrap_or_else(|| {
        problems.add(
            "daemon.shutdown_timeout",
            format_args!("`{shutdown_raw}` is not a duration (e.g. 30s)"),
        );
        Duration::from_secs(30)
    });
    let log_json = match section.log_format.as_str() {
        "text" => false,
        "json" => true,
        other => {
            problems.add(
                "daemon.log_format",
                format_args!("`{other}` is not `text` or `json`"),
            );
            false
        }
    };
    Daemon {
        listen,
        shutdown_timeout,
        log_json,
    }
}

/// `[[route]]` number `i`.
fn route(
    i: usize,
    r: RouteSection,
    names: &mut HashSet<String>,
    problems: &mut Problems<'_>,
) -> RoutePlan {
    let at = |field: &str| format!("route[{i}].{field}");
    if r.name.trim().is_empty() {
        problems.add(&at("name"), "must not be empty");
    } else if !names.insert(r.name.clone()) {
        problems.add(
            &at("name"),
            format_args!("`{}` is used by another route", r.name),
        );
    }
    let source = source(&at("source"), &r.source, problems);
    let sink = sink(&at("sink"), &r.sink, problems);
    let dead_letter = r
        .dead_letter
        .as_ref()
        .map(|d| sink_url(&at("dead_letter"), d, problems));
    let batch = batch(&at("batch"), &r.batch, problems);
    if r.in_flight < r.batch.max_events.max(1) {
        problems.add(
            &at("in_flight"),
            format_args!(
                "{} is below batch.max_events ({})",
                r.in_flight, r.batch.max_events
            ),
        );
    }
    let retry = retry(&at("retry"), &r.retry, problems);
    let keep_key = match r.key.as_str() {
        "keep" => true,
        "drop" => false,
        other => {
            problems.add(
                &at("key"),
                format_args!("`{other}` is not `keep` or `drop`"),
            );
            true
        }
    };
    let reset_lineage = match r.lineage.as_str() {
        "trust" => false,
        "reset" => true,
        other => {
            problems.add(
                &at("lineage"),
                format_args!("`{other}` is not `trust` or `reset`"),
            );
            false
        }
    };
    let transform = transform(i, &r, problems);
    let source_url = source.url;
    let sink_url = sink.url;
    if source_url == sink_url && r.source.stream == r.sink.stream {
        problems.add(
            &at("sink"),
            format_args!(
                "the sink is the source (`{}` on {})",
                r.sink.stream,
                redact_text(&r.sink.url)
            ),
        );
    }
    let cloudevents = r.cloudevents.as_deref().and_then(|option| {
        let scheme = |url: &str| {
            tributary::Url::parse(url)
                .map(|u| u.scheme().to_owned())
                .unwrap_or_default()
        };
        crate::cloudevents::Conversion::parse(option, &scheme(&source_url), &scheme(&sink_url))
            .map_err(|e| problems.add(&at("cloudevents"), e.message()))
            .ok()
    });
    let source_identity =
        stream_identity(&source_url, r.source.cluster.as_deref(), &r.source.stream);
    let sink_identity = stream_identity(&sink_url, r.sink.cluster.as_deref(), &r.sink.stream);
    RoutePlan {
        name: r.name,
        source_url,
        source_shown: redact_text(&r.source.url),
        source_stream: r.source.stream,
        group: r.source.group,
        start: source.start,
        sink_url,
        sink_shown: redact_text(&r.sink.url),
        sink_stream: r.sink.stream,
        max_events: r.batch.max_events,
        max_bytes: batch.max_bytes,
        linger: batch.linger,
        in_flight: r.in_flight,
        retry,
        dead_letter_shown: r.dead_letter.as_ref().map(|d| redact_text(&d.url)),
        dead_letter: dead_letter.zip(r.dead_letter.map(|d| d.stream)),
        keep_key,
        reset_lineage,
        transform,
        source_identity,
        sink_identity,
        traced: false,
        cloudevents,
    }
}

struct Source {
    url: String,
    start: StartPosition,
}

/// `source = { … }`
fn source(at: &str, section: &SourceSection, problems: &mut Problems<'_>) -> Source {
    let url = problems
        .url(&format!("{at}.url"), &section.url)
        .unwrap_or_default();
    for (field, value) in [("stream", &section.stream), ("group", &section.group)] {
        if value.trim().is_empty() {
            problems.add(&format!("{at}.{field}"), "must not be empty");
        }
    }
    let start = section.start.parse::<StartPosition>().unwrap_or_else(|e| {
        problems.add(&format!("{at}.start"), e.message());
        StartPosition::Earliest
    });
    Source { url, start }
}

struct Sink {
    url: String,
}

/// `sink = { … }`
fn sink(at: &str, section: &SinkSection, problems: &mut Problems<'_>) -> Sink {
    let url = sink_url(at, section, problems);
    if section.stream.trim().is_empty() {
        problems.add(&format!("{at}.stream"), "must not be empty");
    }
    Sink { url }
}

/// The URL of a sink or of the dead-letter sink.
fn sink_url(at: &str, section: &SinkSection, problems: &mut Problems<'_>) -> String {
    problems
        .url(&format!("{at}.url"), &section.url)
        .unwrap_or_default()
}

struct Batch {
    max_bytes: usize,
    linger: Duration,
}

/// `batch = { … }`
fn batch(at: &str, section: &BatchSection, problems: &mut Problems<'_>) -> Batch {
    if section.max_events == 0 {
        problems.add(&format!("{at}.max_events"), "must be at least 1");
    }
    let max_bytes = parse_size(&section.max_bytes).unwrap_or_else(|| {
        problems.add(
            &format!("{at}.max_bytes"),
            format_args!("`{}` is not a size (e.g. 1MiB)", section.max_bytes),
        );
        1 << 20
    }) as usize;
    let linger = problems.duration(&format!("{at}.linger"), &section.linger);
    Batch { max_bytes, linger }
}

/// `retry = { … }`
fn retry(at: &str, section: &RetrySection, problems: &mut Problems<'_>) -> RetryPolicy {
    let backoff = problems.duration(&format!("{at}.backoff"), &section.backoff);
    let max_backoff = problems.duration(&format!("{at}.max_backoff"), &section.max_backoff);
    if section.attempts == 0 {
        problems.add(&format!("{at}.attempts"), "must be at least 1");
    }
    if !(0.0..=1.0).contains(&section.jitter) {
        problems.add(
            &format!("{at}.jitter"),
            format_args!("{} is not between 0 and 1", section.jitter),
        );
    }
    RetryPolicy {
        attempts: section.attempts,
        backoff,
        max_backoff,
        jitter: section.jitter,
    }
}

/// `filter` and `transform = { … }`, compiled.
fn transform(i: usize, r: &RouteSection, problems: &mut Problems<'_>) -> Option<Arc<Transform>> {
    let t = r.transform.as_ref();
    let spec = TransformSpec {
        filter: r.filter.clone(),
        stream: t.and_then(|t| t.stream.clone()),
        key: t.and_then(|t| t.key.clone()),
        set_headers: t
            .map(|t| t.set_headers.clone().into_iter().collect())
            .unwrap_or_default(),
        remove_headers: t.map(|t| t.remove_headers.clone()).unwrap_or_default(),
    };
    if spec.is_empty() {
        return None;
    }
    let budget = Budget {
        steps: r.expression_budget.steps,
        time: problems.duration(
            &format!("route[{i}].expression_budget.time"),
            &r.expression_budget.time,
        ),
    };
    if budget.steps == 0 || budget.time.is_zero() {
        problems.add(
            &format!("route[{i}].expression_budget"),
            "steps and time must be above zero",
        );
    }
    match Transform::compile(&spec) {
        Ok(t) => Some(Arc::new(t.with_budget(budget))),
        Err(errors) => {
            // Each is `field: message`, the field relative to the route.
            for error in errors {
                let (field, message) = error.split_once(": ").unwrap_or(("transform", &error));
                problems.add(&format!("route[{i}].{field}"), message);
            }
            None
        }
    }
}
