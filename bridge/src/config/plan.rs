//! What a checked configuration says, every value parsed.

use std::time::Duration;

use tributary::StartPosition;

/// A checked route, with every value parsed.
#[derive(Debug, Clone)]
pub struct RoutePlan {
    /// Route name.
    pub name: String,
    /// Source URL, `${VAR}` expanded: it holds secrets, never show it; show `source_shown`.
    pub source_url: String,
    /// The source URL as written (`${VAR}` references kept), redacted: safe to show.
    pub source_shown: String,
    /// Source stream.
    pub source_stream: String,
    /// Consumer group.
    pub group: String,
    /// Start position for a new group.
    pub start: StartPosition,
    /// Sink URL (as `source_url`, never shown).
    pub sink_url: String,
    /// The sink URL as written, redacted.
    pub sink_shown: String,
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
    /// The dead-letter URL as written, redacted.
    pub dead_letter_shown: Option<String>,
    /// Whether keys are kept.
    pub keep_key: bool,
    /// Whether the lineage found on source events is ignored (`lineage = "reset"`).
    pub reset_lineage: bool,
    /// Compiled filter and transform.
    pub transform: Option<std::sync::Arc<crate::transform::Transform>>,
    /// The source stream's identity for loop prevention.
    pub source_identity: String,
    /// The sink stream's identity for loop prevention.
    pub sink_identity: String,
    /// Whether the route makes trace spans (`[daemon.tracing]` is configured).
    pub traced: bool,
    /// CloudEvents conversion to the sink's binding.
    pub cloudevents: Option<crate::cloudevents::Conversion>,
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
    /// OTLP export of the routes' spans, when configured.
    pub tracing: Option<crate::telemetry::config::TracingPlan>,
    /// What the file took from the environment, to keep out of messages.
    pub secrets: super::Secrets,
}
