//! The route option `cloudevents`: CloudEvents read in the source platform's binding are
//! written in the sink's, in the mode asked for.
//!
//! ```toml
//! [[route]]
//! name = "orders-to-pubsub"
//! source = { url = "kafka://${KAFKA_BROKERS}", stream = "orders" }   # ce_ headers
//! sink = { url = "pubsub://my-project", stream = "orders" }          # ce- attributes
//! cloudevents = "binary"     # or "structured", or "keep" (the mode each event is in)
//! ```
//!
//! Without the option events are copied as they are (so Kafka's `ce_` headers would reach
//! Pub/Sub unchanged). Events that are not CloudEvents pass through; a malformed CloudEvent
//! fails like a failed transform (dead-lettered when the route has a dead-letter sink).

use tributary::cloudevents::{Binding, Mode, convert};
use tributary::{Error, Event, Result};

/// How a route converts CloudEvents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conversion {
    /// The source's binding.
    pub from: Binding,
    /// The sink's binding.
    pub to: Binding,
    /// The mode written; `None` keeps each event's.
    pub mode: Option<Mode>,
}

impl Conversion {
    /// The conversion between two backends by scheme, for the option's value (`binary`,
    /// `structured` or `keep`).
    pub fn parse(option: &str, source_scheme: &str, sink_scheme: &str) -> Result<Conversion> {
        let mode = match option {
            "keep" => None,
            other => Some(other.parse::<Mode>().map_err(|_| {
                Error::config(format!("`{other}` is not `binary`, `structured` or `keep`"))
            })?),
        };
        Ok(Conversion {
            from: Binding::for_scheme(source_scheme),
            to: Binding::for_scheme(sink_scheme),
            mode,
        })
    }

    /// The event in the sink's binding and the chosen mode.
    pub fn apply(&self, event: Event) -> Result<Event> {
        convert(event, self.from, self.to, self.mode)
    }

    /// For route descriptions: `cloudevents kafka → pubsub (binary)`.
    pub fn summary(&self) -> String {
        format!(
            "cloudevents {:?} -> {:?} ({})",
            self.from,
            self.to,
            self.mode.map_or("mode kept".to_owned(), |m| m.to_string())
        )
        .to_lowercase()
    }
}
