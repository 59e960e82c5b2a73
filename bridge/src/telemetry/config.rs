//! `[daemon.tracing]`: where the routes' spans are exported (OTLP), checked with the rest of
//! the configuration file.
//!
//! ```toml
//! [daemon.tracing]
//! endpoint = "http://collector:4318"   # OTLP base URL; default: OTEL_EXPORTER_OTLP_ENDPOINT, else localhost
//! protocol = "http/protobuf"           # or "grpc" (port 4317 by convention)
//! service_name = "tributary-bridge"
//! sampling = 1.0                       # share of new traces recorded; traces an event brings are followed
//! timeout = "10s"                      # per export
//! headers = { authorization = "Bearer ${OTLP_TOKEN}" }
//! ```
//!
//! Without the section the daemon makes no span and exports nothing.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tributary::parse_duration;

/// The section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSection {
    /// OTLP endpoint: the base URL (`/v1/traces` is added for HTTP).
    pub endpoint: Option<String>,
    /// `http/protobuf` (default) or `grpc`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// `service.name` of the exported spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of new traces recorded, 0 to 1.
    #[serde(default = "default_sampling")]
    pub sampling: f64,
    /// Deadline of one export.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Headers sent with every export (credentials: use `${VAR}`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_protocol() -> String {
    "http/protobuf".into()
}
fn default_service_name() -> String {
    "tributary-bridge".into()
}
fn default_sampling() -> f64 {
    1.0
}
fn default_timeout() -> String {
    "10s".into()
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Protobuf over HTTP (`/v1/traces`).
    HttpProtobuf,
    /// gRPC.
    Grpc,
}

/// A checked `[daemon.tracing]`.
#[derive(Clone, PartialEq)]
pub struct TracingPlan {
    /// Endpoint, when given (else the exporter's environment variables and defaults apply).
    pub endpoint: Option<String>,
    /// Transport.
    pub protocol: Protocol,
    /// `service.name`.
    pub service_name: String,
    /// Share of new traces recorded.
    pub sampling: f64,
    /// Deadline of one export.
    pub timeout: Duration,
    /// Export headers (may hold credentials: never printed).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for TracingPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingPlan")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("service_name", &self.service_name)
            .field("sampling", &self.sampling)
            .field("timeout", &self.timeout)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl TracingPlan {
    /// The URL spans are posted to: the endpoint itself for gRPC, with `/v1/traces` for HTTP.
    pub fn traces_url(&self) -> Option<String> {
        let endpoint = self.endpoint.as_deref()?;
        Some(match self.protocol {
            Protocol::Grpc => endpoint.to_owned(),
            Protocol::HttpProtobuf => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
        })
    }
}

/// Checks the section; `expand` resolves `${VAR}` (its `Err` names the missing variable).
/// Every problem is returned, each with its path.
pub fn check(
    section: &TracingSection,
    expand: &dyn Fn(&str) -> Result<String, String>,
) -> Result<TracingPlan, Vec<String>> {
    let mut problems = Vec::new();
    let mut expanded = |path: &str, value: &str| match expand(value) {
        Ok(v) => Some(v),
        Err(name) => {
            problems.push(format!(
                "`daemon.tracing.{path}`: environment variable `{name}` is not set"
            ));
            None
        }
    };
    let endpoint = section
        .endpoint
        .as_deref()
        .and_then(|e| expanded("endpoint", e));
    let mut headers = Vec::new();
    for (name, value) in &section.headers {
        if let Some(value) = expanded(&format!("headers.{name}"), value) {
            headers.push((name.clone(), value));
        }
    }
    if let Some(endpoint) = &endpoint {
        match tributary::Url::parse(endpoint) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => problems.push(format!(
                "`daemon.tracing.endpoint`: `{endpoint}` is not an http:// or https:// URL"
            )),
        }
    }
    let protocol = match section.protocol.as_str() {
        "http/protobuf" | "http" => Protocol::HttpProtobuf,
        "grpc" => Protocol::Grpc,
        other => {
            problems.push(format!(
                "`daemon.tracing.protocol`: `{other}` is not `http/protobuf` or `grpc`"
            ));
            Protocol::HttpProtobuf
        }
    };
    if protocol == Protocol::Grpc && endpoint.as_deref().is_some_and(|e| e.starts_with("https:")) {
        problems.push(
            "`daemon.tracing.endpoint`: gRPC export is plain-text only; for TLS use `protocol = \"http/protobuf\"`".into(),
        );
    }
    if section.service_name.trim().is_empty() {
        problems.push("`daemon.tracing.service_name`: must not be empty".into());
    }
    if !(0.0..=1.0).contains(&section.sampling) {
        problems.push(format!(
            "`daemon.tracing.sampling`: {} is not between 0 and 1",
            section.sampling
        ));
    }
    let timeout = parse_duration(&section.timeout)
        .filter(|t| !t.is_zero())
        .unwrap_or_else(|| {
            problems.push(format!(
                "`daemon.tracing.timeout`: `{}` is not a duration above zero (e.g. 10s)",
                section.timeout
            ));
            Duration::from_secs(10)
        });
    for name in section.headers.keys() {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            problems.push(format!(
                "`daemon.tracing.headers`: `{name}` is not a header name"
            ));
        }
    }
    if problems.is_empty() {
        Ok(TracingPlan {
            endpoint,
            protocol,
            service_name: section.service_name.clone(),
            sampling: section.sampling,
            timeout,
            headers,
        })
    } else {
        Err(problems)
    }
}
