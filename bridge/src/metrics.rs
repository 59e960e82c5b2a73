//! Every metric the bridge exports, declared once (name, help, kind, labels, buckets), so a
//! name is never spelt twice and `/metrics` describes each one. Routes take their handles from
//! [`RouteMetrics`], made once per route rather than looked up at every batch.

use metrics::{Counter, Gauge, Histogram};

/// What kind of value a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution, exported as a Prometheus histogram with [`Metric::buckets`].
    Histogram,
}

/// One metric's declaration.
#[derive(Debug)]
pub struct Metric {
    /// The Prometheus name.
    pub name: &'static str,
    /// What it measures, shown as `# HELP`.
    pub help: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Label names, in order.
    pub labels: &'static [&'static str],
    /// Upper bounds of a histogram's buckets (empty for other kinds).
    pub buckets: &'static [f64],
}

const ROUTE: &[&str] = &["route"];

/// Seconds from a millisecond to ten minutes: replication latency spans both (a caught-up
/// route, a backlog after an outage).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Seconds a batch takes, from its first event to the sink's confirmation.
const BATCH_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const fn route_counter(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        help,
        kind: Kind::Counter,
        labels: ROUTE,
        buckets: &[],
    }
}

const fn route_gauge(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        help,
        kind: Kind::Gauge,
        labels: ROUTE,
        buckets: &[],
    }
}

/// Events taken from the source.
pub const EVENTS_IN: Metric = route_counter(
    "tributary_bridge_events_in_total",
    "Events taken from the route's source.",
);
/// Payload bytes taken from the source.
pub const BYTES_IN: Metric = route_counter(
    "tributary_bridge_bytes_in_total",
    "Payload bytes taken from the route's source.",
);
/// Events written to the sink and acked at the source.
pub const EVENTS_OUT: Metric = route_counter(
    "tributary_bridge_events_out_total",
    "Events written to the sink and acked at the source (dead-lettered ones not counted).",
);
/// Payload bytes written to the sink.
pub const BYTES_OUT: Metric = route_counter(
    "tributary_bridge_bytes_out_total",
    "Payload bytes written to the sink.",
);
/// Failures that stopped the route (it is reopened by the daemon).
pub const ERRORS: Metric = route_counter(
    "tributary_bridge_errors_total",
    "Failures that stopped the route; the daemon reopens it.",
);
/// Sink writes that failed and were retried.
pub const RETRIES: Metric = route_counter(
    "tributary_bridge_retries_total",
    "Sink writes that failed and were retried.",
);
/// Events sent to the dead-letter sink.
pub const DEAD_LETTERED: Metric = route_counter(
    "tributary_bridge_dead_lettered_total",
    "Events sent to the dead-letter sink (refused by the sink, or failed by the transform).",
);
/// Events the filter dropped.
pub const FILTERED: Metric = route_counter(
    "tributary_bridge_filtered_total",
    "Events the route's filter dropped (acked at the source, not replicated).",
);
/// Events not copied because they had been in the sink stream already.
pub const LOOP_DROPPED: Metric = route_counter(
    "tributary_bridge_loop_dropped_total",
    "Events not copied because their tributary-path shows they were in the sink stream already.",
);
/// Time per batch.
pub const BATCH_SECONDS: Metric = Metric {
    name: "tributary_bridge_batch_seconds",
    help: "Seconds from a batch's first event to the sink's confirmation of the whole batch.",
    kind: Kind::Histogram,
    labels: ROUTE,
    buckets: BATCH_BUCKETS,
};
/// Replication latency per event.
pub const REPLICATION_LATENCY: Metric = Metric {
    name: "tributary_bridge_replication_latency_seconds",
    help: "Seconds from an event's own timestamp to the sink's confirmation, per event with a timestamp.",
    kind: Kind::Histogram,
    labels: ROUTE,
    buckets: LATENCY_BUCKETS,
};
/// The latency of the last replicated event: stays put while the route is idle.
pub const LAST_EVENT_AGE: Metric = route_gauge(
    "tributary_bridge_last_event_age_seconds",
    "Replication latency of the most recently replicated event with a timestamp; keeps its value while the route is idle.",
);
/// The event time of the newest replicated event, for freshness alerts.
pub const LAST_EVENT_TIMESTAMP: Metric = route_gauge(
    "tributary_bridge_last_event_timestamp_seconds",
    "Event time (Unix seconds) of the most recently replicated event with a timestamp; time() minus it is how old the sink's newest data is.",
);
/// Whether the route runs.
pub const ROUTE_UP: Metric = route_gauge(
    "tributary_bridge_route_up",
    "1 while the route runs; 0 while it connects, or waits to reopen after a failure.",
);
/// The source's backlog for the route's group.
pub const SOURCE_LAG: Metric = route_gauge(
    "tributary_bridge_source_lag_events",
    "Events at the source the route's group has not acked yet, where the source can tell.",
);

/// Every metric, for [`describe`] and the documentation test.
pub const ALL: &[&Metric] = &[
    &EVENTS_IN,
    &BYTES_IN,
    &EVENTS_OUT,
    &BYTES_OUT,
    &ERRORS,
    &RETRIES,
    &DEAD_LETTERED,
    &FILTERED,
    &LOOP_DROPPED,
    &BATCH_SECONDS,
    &REPLICATION_LATENCY,
    &LAST_EVENT_AGE,
    &LAST_EVENT_TIMESTAMP,
    &ROUTE_UP,
    &SOURCE_LAG,
];

/// Registers every metric's help text with the installed recorder.
pub fn describe() {
    for m in ALL {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

impl Metric {
    /// The counter for one route.
    pub fn counter(&self, route: &str) -> Counter {
        debug_assert_eq!((self.kind, self.labels), (Kind::Counter, ROUTE));
        metrics::counter!(self.name, "route" => route.to_owned())
    }

    /// The gauge for one route.
    pub fn gauge(&self, route: &str) -> Gauge {
        debug_assert_eq!((self.kind, self.labels), (Kind::Gauge, ROUTE));
        metrics::gauge!(self.name, "route" => route.to_owned())
    }

    /// The histogram for one route.
    pub fn histogram(&self, route: &str) -> Histogram {
        debug_assert_eq!((self.kind, self.labels), (Kind::Histogram, ROUTE));
        metrics::histogram!(self.name, "route" => route.to_owned())
    }
}

/// One route's metric handles.
#[derive(Clone)]
pub struct RouteMetrics {
    /// [`EVENTS_IN`]
    pub events_in: Counter,
    /// [`BYTES_IN`]
    pub bytes_in: Counter,
    /// [`EVENTS_OUT`]
    pub events_out: Counter,
    /// [`BYTES_OUT`]
    pub bytes_out: Counter,
    /// [`ERRORS`]
    pub errors: Counter,
    /// [`RETRIES`]
    pub retries: Counter,
    /// [`DEAD_LETTERED`]
    pub dead_lettered: Counter,
    /// [`FILTERED`]
    pub filtered: Counter,
    /// [`LOOP_DROPPED`]
    pub loop_dropped: Counter,
    /// [`BATCH_SECONDS`]
    pub batch_seconds: Histogram,
    /// [`REPLICATION_LATENCY`]
    pub latency: Histogram,
    /// [`LAST_EVENT_AGE`]
    pub last_event_age: Gauge,
    /// [`LAST_EVENT_TIMESTAMP`]
    pub last_event_timestamp: Gauge,
}

impl RouteMetrics {
    /// The handles of route `route`.
    pub fn new(route: &str) -> Self {
        RouteMetrics {
            events_in: EVENTS_IN.counter(route),
            bytes_in: BYTES_IN.counter(route),
            events_out: EVENTS_OUT.counter(route),
            bytes_out: BYTES_OUT.counter(route),
            errors: ERRORS.counter(route),
            retries: RETRIES.counter(route),
            dead_lettered: DEAD_LETTERED.counter(route),
            filtered: FILTERED.counter(route),
            loop_dropped: LOOP_DROPPED.counter(route),
            batch_seconds: BATCH_SECONDS.histogram(route),
            latency: REPLICATION_LATENCY.histogram(route),
            last_event_age: LAST_EVENT_AGE.gauge(route),
            last_event_timestamp: LAST_EVENT_TIMESTAMP.gauge(route),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prometheus_names_and_histograms_have_buckets() {
        let mut names = std::collections::HashSet::new();
        for m in ALL {
            assert!(names.insert(m.name), "{} declared twice", m.name);
            assert!(m.name.starts_with("tributary_bridge_"), "{}", m.name);
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Histogram,
                !m.buckets.is_empty(),
                "{}",
                m.name
            );
            assert!(m.buckets.windows(2).all(|w| w[0] < w[1]), "{}", m.name);
        }
    }
}
