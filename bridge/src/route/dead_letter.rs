//! Events the sink keeps refusing, or a transform fails on, go to the dead-letter sink with
//! the reason in headers, instead of blocking their partition.

use std::sync::atomic::Ordering;

use tributary::{Error, Event, Result};

use super::Running;
use super::retry::send_with_retries;
use super::run::Groups;

/// Why the sink refused it (the last error).
pub const REASON: &str = "tributary-dlq-reason";
/// Route that gave up.
pub const ROUTE: &str = "tributary-dlq-route";
/// The stream it was meant for.
pub const SINK_STREAM: &str = "tributary-dlq-sink-stream";
/// Attempts made.
pub const ATTEMPTS: &str = "tributary-dlq-attempts";

/// Sends `event` to the dead-letter sink, with why, where it was going and how often it was
/// tried in headers.
pub(super) async fn send_to_dead_letter(
    route: &Running<'_>,
    (dlq, dlq_stream): &(Box<dyn tributary::Producer>, String),
    mut dead: Event,
    error: &Error,
    attempts: u32,
    meant_for: &str,
) -> Result<()> {
    let spec = route.spec;
    dead.headers.insert(REASON, error.to_string().into_bytes());
    dead.headers.insert(ROUTE, spec.name.clone().into_bytes());
    dead.headers
        .insert(SINK_STREAM, meant_for.as_bytes().to_vec());
    dead.headers
        .insert(ATTEMPTS, attempts.to_string().into_bytes());
    tracing::error!(route = %spec.name, error = %error, dead_letter = %dlq_stream, "event refused; dead-lettered");
    send_with_retries(route, dlq.as_ref(), std::slice::from_ref(&dead))
        .await
        .map_err(|(e, _)| {
            e.context(format!(
                "dead-letter stream `{dlq_stream}` refused an event too"
            ))
        })?;
    route.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
    route.metrics.dead_lettered.increment(1);
    Ok(())
}

/// Dead-letters the events the transform failed on and passes the groups on; without a
/// dead-letter sink, the first failure stops the route (the source keeps the batch).
pub(super) async fn prepare(
    route: &Running<'_>,
    (groups, failed): (Groups, Vec<(Event, Error)>),
    dead_letter: Option<&(Box<dyn tributary::Producer>, String)>,
) -> Result<Groups> {
    for (event, error) in failed {
        let Some(dlq) = dead_letter else {
            return Err(error);
        };
        send_to_dead_letter(route, dlq, event, &error, 0, &route.spec.sink_stream).await?;
    }
    Ok(groups)
}
