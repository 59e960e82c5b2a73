//! The figure behind a route's `tributary_bridge_source_lag_events` gauge.
//!
//! A consumer knows the backlog of the partitions it holds ([`Consumer::lag`]). When several
//! daemons share a route, or one of them died and its partitions wait for its session to
//! expire, that undercounts: the gauge must count every partition of the source stream. Where
//! the source can say so (Kafka: the broker's end offsets against the group's commits), the
//! gauge shows the group's backlog on the whole stream; elsewhere, the consumer's own figure.

use std::sync::Arc;

use tributary::{Backend, Consumer};

/// The source's backlog for the route's group, or `None` while it cannot be told (the last
/// figure then stays).
pub(crate) async fn source_lag(
    source: &Arc<dyn Backend>,
    stream: &str,
    group: &str,
    consumer: &dyn Consumer,
) -> Option<u64> {
    #[cfg(feature = "kafka")]
    if let Some(kafka) = source
        .as_any()
        .downcast_ref::<tributary_kafka::KafkaBackend>()
    {
        return match tokio::time::timeout(QUERY_TIMEOUT, kafka.group_lag(stream, group)).await {
            Ok(Ok(lag)) => Some(lag.total()),
            Ok(Err(e)) => {
                tracing::debug!(stream, group, error = %e, "cannot read the group's backlog");
                None
            }
            Err(_) => None,
        };
    }
    let _ = (source, stream, group);
    consumer.lag()
}

/// A broker slower than this to say where the group stands leaves the last figure standing.
#[cfg(feature = "kafka")]
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
