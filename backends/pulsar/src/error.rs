//! `pulsar` crate and REST admin errors to tributary's error kinds.

use std::io::ErrorKind as Io;

use pulsar::error::{ConnectionError, ConsumerError, ProducerError, ServiceDiscoveryError};
use pulsar::message::proto::ServerError;
use tributary::Error;

pub(crate) const BACKEND: &str = "pulsar";

/// Maps a client error; `what` says what was being done ("send to `orders`").
pub(crate) fn map(error: pulsar::Error, what: &str) -> Error {
    let message = format!("{what}: {error}");
    let mapped = match &error {
        pulsar::Error::Connection(e) => connection(e, message),
        pulsar::Error::Consumer(ConsumerError::Connection(e)) => connection(e, message),
        pulsar::Error::Consumer(ConsumerError::Closed) => Error::closed(message),
        pulsar::Error::Consumer(ConsumerError::Io(e)) if e.kind() == Io::Other => {
            // The crate's word for a message it cannot decode (a compression it was built
            // without, most often).
            Error::unsupported(message)
        }
        pulsar::Error::Producer(ProducerError::Connection(e)) => connection(e, message),
        pulsar::Error::Producer(ProducerError::Closed) => Error::closed(message),
        pulsar::Error::Producer(ProducerError::Fenced) => Error::closed(message),
        pulsar::Error::Producer(ProducerError::Batch(inner)) => {
            return match inner.as_ref() {
                pulsar::Error::Producer(ProducerError::Connection(e))
                | pulsar::Error::Connection(e) => connection(e, message),
                _ => Error::unavailable(message).with_retryable(true),
            };
        }
        pulsar::Error::ServiceDiscovery(e) => match e {
            ServiceDiscoveryError::Connection(e) => connection(e, message),
            ServiceDiscoveryError::Query(kind, _) => server(*kind, message),
            ServiceDiscoveryError::NotFound => Error::not_found(message),
            ServiceDiscoveryError::DnsLookupError => Error::unavailable(message),
            ServiceDiscoveryError::Canceled | ServiceDiscoveryError::Shutdown => {
                Error::unavailable(message).with_retryable(true)
            }
            _ => Error::other(message),
        },
        pulsar::Error::Authentication(_) => Error::unauthorized(message),
        pulsar::Error::Executor => Error::closed(message),
        _ => Error::other(message),
    };
    mapped.with_source(error)
}

fn connection(error: &ConnectionError, message: String) -> Error {
    match error {
        ConnectionError::Io(e) => match e.kind() {
            Io::TimedOut => Error::timeout(message).with_retryable(true),
            Io::PermissionDenied => Error::unauthorized(message),
            _ => Error::unavailable(message).with_retryable(true),
        },
        ConnectionError::PulsarError(kind, _) => server(*kind, message),
        ConnectionError::Authentication(_) => Error::unauthorized(message),
        ConnectionError::Tls(_) | ConnectionError::DnsName(_) => Error::config(message),
        ConnectionError::NotFound => Error::not_found(message),
        ConnectionError::SlowDown
        | ConnectionError::Disconnected
        | ConnectionError::Canceled
        | ConnectionError::Shutdown
        | ConnectionError::SocketAddr(_) => Error::unavailable(message).with_retryable(true),
        _ => Error::other(message),
    }
}

fn server(kind: Option<ServerError>, message: String) -> Error {
    use ServerError as E;
    match kind {
        Some(E::TopicNotFound | E::SubscriptionNotFound | E::ConsumerNotFound) => {
            Error::not_found(message)
        }
        Some(E::AuthenticationError | E::AuthorizationError) => Error::unauthorized(message),
        Some(E::InvalidTopicName | E::IncompatibleSchema | E::NotAllowedError) => {
            Error::config(message)
        }
        Some(E::TopicTerminatedError | E::ProducerFenced) => Error::closed(message),
        Some(
            E::ServiceNotReady
            | E::ProducerBusy
            | E::ConsumerBusy
            | E::TooManyRequests
            | E::ProducerBlockedQuotaExceededError
            | E::ProducerBlockedQuotaExceededException
            | E::PersistenceError
            | E::MetadataError,
        ) => Error::unavailable(message).with_retryable(true),
        _ => Error::other(message),
    }
}

/// The error for a wait that passed its deadline.
pub(crate) fn timed_out(what: &str, after: std::time::Duration, option: &str) -> Error {
    Error::timeout(format!(
        "{what}: no answer within {after:?} (option `{option}`)"
    ))
    .with_retryable(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary::ErrorKind;

    #[test]
    fn kinds_a_caller_can_match() {
        let e = map(
            pulsar::Error::Connection(ConnectionError::PulsarError(
                Some(ServerError::TopicNotFound),
                Some("gone".into()),
            )),
            "subscribe to `t`",
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        // The backend's name is added by the stamping layer (`tributary::backend::stamped`).
        assert!(
            e.to_string().starts_with("not found: subscribe to `t`"),
            "{e}"
        );
        let e = map(
            pulsar::Error::Producer(ProducerError::Connection(ConnectionError::Io(
                std::io::Error::from(Io::TimedOut),
            ))),
            "send",
        );
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.is_retryable());
        let e = map(
            pulsar::Error::Connection(ConnectionError::Io(std::io::Error::from(
                Io::ConnectionRefused,
            ))),
            "connect",
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        let e = map(pulsar::Error::Producer(ProducerError::Closed), "send");
        assert_eq!(e.kind(), ErrorKind::Closed);
        let e = map(
            pulsar::Error::Connection(ConnectionError::PulsarError(
                Some(ServerError::AuthorizationError),
                None,
            )),
            "create producer",
        );
        assert_eq!(e.kind(), ErrorKind::Unauthorized);
    }
}
