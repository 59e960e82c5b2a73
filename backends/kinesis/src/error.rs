//! AWS SDK errors (Kinesis and DynamoDB) as tributary errors, classified where they are parsed.

use std::error::Error as StdError;

use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use tributary::{Error, ErrorKind};

/// The kind and retryability of an AWS error code (the same codes in both services).
pub(crate) fn classify(code: &str) -> (ErrorKind, bool) {
    match code {
        "ResourceNotFoundException" => (ErrorKind::NotFound, false),
        "ResourceInUseException" => (ErrorKind::AlreadyExists, false),
        "ProvisionedThroughputExceededException"
        | "LimitExceededException"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "KMSThrottlingException" => (ErrorKind::Unavailable, true),
        "InternalFailure"
        | "InternalFailureException"
        | "InternalServerError"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "KMSInternalException" => (ErrorKind::Unavailable, true),
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException"
        | "MissingAuthenticationToken"
        | "IncompleteSignature"
        | "InvalidClientTokenId"
        | "KMSAccessDeniedException" => (ErrorKind::Unauthorized, false),
        "KMSDisabledException"
        | "KMSInvalidStateException"
        | "KMSNotFoundException"
        | "KMSOptInRequired" => (ErrorKind::Unavailable, false),
        "InvalidArgumentException" | "ValidationException" | "SerializationException" => {
            (ErrorKind::Config, false)
        }
        "ExpiredIteratorException" | "ExpiredNextTokenException" => (ErrorKind::Other, true),
        _ => (ErrorKind::Other, false),
    }
}

/// Whether a per-record `PutRecords` error code is worth retrying.
pub(crate) fn record_error_retryable(code: &str) -> bool {
    classify(code).1
}

/// Maps an SDK error of any operation; `what` says what was being done ("put records on
/// stream `orders`"), `service` the service's name for messages.
pub(crate) fn map_sdk<E, R>(err: SdkError<E, R>, service: &str, what: &str) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(service_error) => {
            let inner = service_error.err();
            let code = inner.code().unwrap_or("Unknown");
            let message = inner.message().unwrap_or("");
            let (kind, retryable) = classify(code);
            let hint = match kind {
                ErrorKind::Unauthorized => {
                    " (credentials come from the AWS default chain: environment, profile, SSO, web identity, container or instance role)"
                }
                _ => "",
            };
            Error::new(
                kind,
                format!("{what}: {service} answered {code}: {message}{hint}"),
            )
            .with_retryable(retryable)
        }
        SdkError::TimeoutError(_) => Error::timeout(format!(
            "{what}: {service} did not answer in time (option `timeout`)"
        )),
        SdkError::DispatchFailure(failure) => {
            let detail = DisplayErrorContext(&err).to_string();
            // Credential resolution fails at dispatch, before anything reaches the service.
            if detail.contains("credentials") || detail.contains("Credentials") {
                return Error::unauthorized(format!(
                    "{what}: no AWS credentials: {detail} (set them in the environment, a profile (option `profile`), or a role)"
                ));
            }
            let retryable = failure.is_io() || failure.is_timeout() || failure.is_other();
            Error::unavailable(format!("{what}: cannot reach {service}: {detail}"))
                .with_retryable(retryable)
        }
        SdkError::ResponseError(_) => Error::unavailable(format!(
            "{what}: {service} sent a response that could not be read: {}",
            DisplayErrorContext(&err)
        )),
        _ => Error::other(format!("{what}: {}", DisplayErrorContext(&err))),
    }
}

/// Runs a Kinesis call with a deadline, mapping its error; `what` names the call for messages.
pub(crate) async fn timed<T, E, R>(
    timeout: std::time::Duration,
    what: &str,
    call: impl std::future::Future<Output = Result<T, SdkError<E, R>>>,
) -> tributary::Result<T>
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(|e| map_sdk(e, "Kinesis", what)),
        Err(_) => Err(timeout_error(what, timeout)),
    }
}

/// The error of a call that got no answer within the `timeout` option.
pub(crate) fn timeout_error(what: &str, timeout: std::time::Duration) -> Error {
    Error::timeout(format!(
        "{what}: no answer within {timeout:?} (option `timeout`)"
    ))
}

/// The AWS error code of an SDK error, when the service answered with one.
pub(crate) fn code_of<E, R>(err: &SdkError<E, R>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_retryable_and_validation_is_not() {
        assert_eq!(
            classify("ProvisionedThroughputExceededException"),
            (ErrorKind::Unavailable, true)
        );
        assert_eq!(
            classify("InvalidArgumentException"),
            (ErrorKind::Config, false)
        );
        assert_eq!(
            classify("ResourceNotFoundException"),
            (ErrorKind::NotFound, false)
        );
        assert!(record_error_retryable("InternalFailure"));
        assert!(!record_error_retryable("KMSAccessDeniedException"));
    }
}
