//! `$cbs`: claims-based security. A `put-token` request grants the connection an audience
//! until the token expires; SAS tokens are verified when keys are configured.

use fe2o3_amqp::types::messaging::{AmqpValue, Body};
use fe2o3_amqp::types::primitives::Value;

use super::Shared;
use super::connection::ConnState;
use super::requests::app_string;
use crate::auth::verify_sas;
use crate::store::{AmqpMessage, now_millis};

const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";

pub(super) fn put_token(
    request: &AmqpMessage,
    shared: &Shared,
    conn: &ConnState,
) -> (i32, String, Value) {
    let operation = app_string(request, "operation").unwrap_or_default();
    if operation != "put-token" {
        return (
            400,
            format!("unsupported $cbs operation {operation:?}"),
            Value::Null,
        );
    }
    let Some(audience) = app_string(request, "name") else {
        return (
            400,
            "put-token without a name (audience)".into(),
            Value::Null,
        );
    };
    let token_type = app_string(request, "type").unwrap_or_default();
    let token = match &request.body {
        Body::Value(AmqpValue(Value::String(token))) => token.clone(),
        Body::Value(AmqpValue(Value::Binary(token))) => String::from_utf8_lossy(token).into_owned(),
        _ => {
            return (
                400,
                "put-token body must be the token string".into(),
                Value::Null,
            );
        }
    };
    let now = now_millis() / 1000;
    if shared.keys.is_empty() {
        // Without keys every token is good for an hour past the claimed expiry at most.
        conn.grant(&audience, now + 3600 * 24);
        return (202, "Accepted".into(), Value::Null);
    }
    if token_type != SAS_TOKEN_TYPE {
        return (
            401,
            format!(
                "the emulator verifies only {SAS_TOKEN_TYPE} tokens when shared access keys are configured, not {token_type:?}"
            ),
            Value::Null,
        );
    }
    match verify_sas(&token, &audience, &shared.keys, now) {
        Ok(expiry) => {
            conn.grant(&audience, expiry);
            (202, "Accepted".into(), Value::Null)
        }
        Err(refused) => {
            tracing::info!(%audience, reason = %refused.0, "token refused");
            (401, format!("Unauthorized: {}", refused.0), Value::Null)
        }
    }
}
