//! Google client errors to tributary's error kinds.

use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::error::PublishError;
use tributary::Error;

/// Maps a client error; `what` says what was being done ("publish to `orders`").
pub(crate) fn map(error: &google_cloud_pubsub::Error, what: &str) -> Error {
    let message = format!("{what}: {error}");
    match error.status().map(|s| s.code) {
        Some(Code::NotFound) => Error::not_found(message),
        Some(Code::AlreadyExists) => Error::already_exists(message),
        Some(Code::PermissionDenied | Code::Unauthenticated) => Error::unauthorized(message),
        Some(Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange) => {
            Error::config(message)
        }
        Some(Code::DeadlineExceeded) => Error::timeout(message).with_retryable(true),
        Some(Code::Unavailable | Code::ResourceExhausted | Code::Aborted | Code::Internal) => {
            Error::unavailable(message).with_retryable(true)
        }
        Some(Code::Unimplemented) => Error::unsupported(message),
        Some(Code::Cancelled) => Error::closed(message),
        Some(_) => Error::other(message),
        None if error.is_timeout() => Error::timeout(message).with_retryable(true),
        None if error.is_transport()
            || error.is_connect()
            || error.is_io()
            || error.is_exhausted() =>
        {
            Error::unavailable(message).with_retryable(true)
        }
        None => Error::other(message),
    }
}

pub(crate) fn map_publish(error: &PublishError, what: &str) -> Error {
    match error {
        PublishError::Rpc(inner) => map(inner, what),
        PublishError::OrderingKeyPaused => Error::unavailable(format!(
            "{what}: publishing for this ordering key was paused by an earlier failure; it has been resumed, retry the send"
        ))
        .with_retryable(true),
        PublishError::Shutdown => Error::closed(format!("{what}: the publisher has shut down")),
        other => Error::other(format!("{what}: {other}")),
    }
}
