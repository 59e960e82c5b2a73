//! SDK errors to tributary's error kinds.
//!
//! The SDK wraps AMQP conditions in several layers (`EventHubsError` → `AmqpError` →
//! described error), and the condition is what decides the kind, so the whole chain's text is
//! matched against the service's condition names.

use std::future::Future;
use std::time::Duration;

use azure_messaging_eventhubs::EventHubsError;
use azure_messaging_eventhubs::error::ErrorKind as SdkKind;
use tributary::Error;

pub(crate) const BACKEND: &str = "eventhubs";

/// Maps an SDK error; `what` says what was being done ("send to `orders`").
pub(crate) fn map(error: &EventHubsError, what: &str) -> Error {
    let chain = chain_text(error);
    let message = format!("{what}: {}", summary(&error.to_string()));
    let lower = chain.to_ascii_lowercase();
    if matches!(error.kind, SdkKind::ConsumerDisconnected(_))
        || lower.contains("link:stolen")
        || lower.contains("linkstolen")
    {
        Error::closed(format!(
            "{message} (another receiver with a higher or equal owner level took the partition)"
        ))
    } else if lower.contains("not-found")
        || lower.contains("notfound")
        || lower.contains("could not be found")
    {
        Error::not_found(message)
    } else if lower.contains("message-size-exceeded")
        || lower.contains("messagesizeexceeded")
        || lower.contains("too large")
    {
        Error::too_large(message)
    } else if lower.contains("unauthorized")
        || lower.contains("status code 401")
        || lower.contains("401") && lower.contains("cbs")
        || lower.contains("credential")
    {
        Error::unauthorized(message)
    } else if lower.contains("server-busy")
        || lower.contains("serverbusy")
        || lower.contains("throttl")
    {
        Error::unavailable(message).with_retryable(true)
    } else if lower.contains("invalid-field")
        || lower.contains("argument")
        || lower.contains("not-allowed")
    {
        Error::config(message)
    } else {
        Error::unavailable(message).with_retryable(true)
    }
}

/// Whether an attach failed because the client's own state for the partition is dead, so
/// that the same client cannot attach it again: its session stopped ("Illegal session
/// state", which the SDK reports as a dropped connection), or its link name is still taken
/// ("Link name is not unique"). Conditions the service sends are not in this: a new
/// connection would not change them.
pub(crate) fn is_dead_session(error: &EventHubsError) -> bool {
    let lower = chain_text(error).to_ascii_lowercase();
    [
        "illegalsessionstate",
        "illegal session state",
        "duplicatedlinkname",
        "link name is not unique",
        "session has dropped",
        "connectiondropped",
    ]
    .iter()
    .any(|sign| lower.contains(sign))
}

/// The first line of an SDK error's text, each layer's label once: the SDK's layers each
/// prefix their own label, and two of them share one ("AMQP Error: AMQP Error: Azure Core
/// Error: Error authorizing management path").
pub(crate) fn summary(text: &str) -> String {
    let line = text.lines().next().unwrap_or(text);
    let mut parts: Vec<&str> = Vec::new();
    for part in line.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

fn chain_text(error: &EventHubsError) -> String {
    use std::error::Error as _;
    let mut text = format!("{error:?}");
    let mut cause = error.source();
    let mut depth = 0;
    while let Some(c) = cause {
        text.push_str(" | ");
        text.push_str(&format!("{c:?}"));
        cause = c.source();
        depth += 1;
        if depth > 16 {
            break;
        }
    }
    text
}

/// Runs an SDK call with the configured deadline, mapping its error.
pub(crate) async fn deadline<T>(
    timeout: Duration,
    what: impl FnOnce() -> String,
    call: impl Future<Output = azure_messaging_eventhubs::Result<T>>,
) -> tributary::Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(map(&error, &what())),
        Err(_) => Err(timed_out(timeout, &what())),
    }
}

/// The error of a call that got no answer within the `timeout` option.
pub(crate) fn timed_out(timeout: Duration, what: &str) -> Error {
    Error::timeout(format!(
        "{what}: no answer within {timeout:?} (option `timeout`)"
    ))
    .with_retryable(true)
}

#[cfg(test)]
mod tests {
    use super::summary;

    #[test]
    fn a_layer_label_repeated_by_the_sdk_is_said_once() {
        assert_eq!(
            summary("AMQP Error: AMQP Error: Azure Core Error: Error authorizing management path"),
            "AMQP Error: Azure Core Error: Error authorizing management path"
        );
    }

    #[test]
    fn the_first_line_is_kept_and_distinct_parts_stay() {
        assert_eq!(
            summary("AMQP Error: link detached: amqp:link:stolen\nbacktrace: ..."),
            "AMQP Error: link detached: amqp:link:stolen"
        );
        assert_eq!(summary(""), "");
    }
}
