//! librdkafka errors to tributary's error kinds.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tributary::Error;

/// Maps a librdkafka error; `what` says what was being done ("send to `orders`").
pub(crate) fn map(error: KafkaError, what: &str) -> Error {
    let code = error.rdkafka_error_code();
    let base = match &error {
        KafkaError::ClientConfig(result, description, name, value) => {
            // An option librdkafka does not know may be a misspelt secret: never show its value.
            let shown = if *result == rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN {
                tributary::backend::MASK.to_owned()
            } else {
                crate::config::shown_value(name, value)
            };
            return Error::config(format!(
                "{what}: librdkafka option `{name}` = `{shown}`: {description}"
            ));
        }
        KafkaError::ClientCreation(message) => {
            Error::config(format!("{what}: cannot create the client: {message}"))
        }
        KafkaError::Canceled => Error::closed(format!("{what}: the client is shutting down")),
        _ => match code {
            Some(code) => by_code(code, &format!("{what}: {error}")),
            None => Error::other(format!("{what}: {error}")),
        },
    };
    base.with_source(error)
}

pub(crate) fn by_code(code: RDKafkaErrorCode, message: &str) -> Error {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageSizeTooLarge | C::InvalidMessageSize => Error::too_large(message),
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition => {
            Error::not_found(message)
        }
        C::TopicAlreadyExists => Error::already_exists(message),
        C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut => {
            Error::timeout(message).with_retryable(true)
        }
        C::AllBrokersDown
        | C::BrokerTransportFailure
        | C::Resolve
        | C::QueueFull
        | C::BrokerNotAvailable
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::NetworkException
        | C::CoordinatorNotAvailable
        | C::NotCoordinator
        | C::CoordinatorLoadInProgress => Error::unavailable(message).with_retryable(true),
        C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::TransactionalIdAuthorizationFailed => Error::unauthorized(message),
        C::InvalidConfig
        | C::InvalidArgument
        | C::InvalidTopic
        | C::InvalidPartitions
        | C::InvalidReplicationFactor => Error::config(message),
        C::Fatal => Error::other(message),
        _ => Error::other(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary::ErrorKind;

    #[test]
    fn kinds_a_caller_can_match() {
        let e = map(
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
            "send to `t`",
        );
        assert_eq!(e.kind(), ErrorKind::TooLarge);
        assert!(e.to_string().contains("send to `t`"), "{e}");
        let e = map(
            KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition),
            "send",
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let e = map(
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
            "send",
        );
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.is_retryable());
        let e = map(
            KafkaError::MetadataFetch(RDKafkaErrorCode::AllBrokersDown),
            "connect",
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn config_errors_hide_secret_values() {
        let e = map(
            KafkaError::ClientConfig(
                rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
                "bad".into(),
                "sasl.password".into(),
                "hunter2".into(),
            ),
            "connect",
        );
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("sasl.password"), "{e}");
        let e = map(
            KafkaError::ClientConfig(
                rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN,
                "No such configuration property".into(),
                "bogus".into(),
                "12345".into(),
            ),
            "connect",
        );
        assert!(!e.to_string().contains("12345"), "{e}");
    }
}
