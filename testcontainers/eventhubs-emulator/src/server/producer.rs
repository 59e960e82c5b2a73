//! Producer links (the client sends): single events and batches into the hub, placed by
//! partition key or round robin, or into one partition.

use std::sync::Arc;

use fe2o3_amqp::Delivery;
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::{Receiver, RecvError};
use fe2o3_amqp::types::definitions::{self, AmqpError, LinkError};
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;

use super::connection::ConnState;
use super::{Shared, error, not_found, refuse_receiver};
use crate::auth::path_segments;
use crate::store::{AmqpMessage, Incoming, decode, encode, partition_key_of};

/// Message format of an Event Hubs batch: the body's data sections are whole messages.
const BATCH_FORMAT: u32 = 0x8001_3700;

/// `<hub>` or `<hub>/Partitions/<n>`.
pub(super) fn producer_target<'a>(segments: &[&'a str]) -> Option<(&'a str, Option<&'a str>)> {
    match segments {
        [hub] => Some((hub, None)),
        [hub, p, id] if p.eq_ignore_ascii_case("Partitions") => Some((hub, Some(id))),
        _ => None,
    }
}

pub(super) async fn producer(
    mut receiver: Receiver,
    address: &str,
    shared: Arc<Shared>,
    conn: Arc<ConnState>,
) {
    let segments = path_segments(address);
    let Some((hub_name, partition_id)) = producer_target(&segments) else {
        let e = error(
            AmqpError::NotFound,
            format!("'{address}' is not an event hub or partition address"),
        );
        return refuse_receiver(receiver, e).await;
    };
    if !conn.authorized(&shared, address) {
        let e = error(
            AmqpError::UnauthorizedAccess,
            format!("no valid token for '{address}' (send a CBS put-token first)"),
        );
        return refuse_receiver(receiver, e).await;
    }
    let hub = match shared.namespace.hub(hub_name) {
        Ok(hub) => hub,
        Err(e) => return refuse_receiver(receiver, not_found(e)).await,
    };
    let fixed = match partition_id.map(|id| hub.partition(id)).transpose() {
        Ok(p) => p,
        Err(e) => return refuse_receiver(receiver, not_found(e)).await,
    };
    tracing::debug!(link = receiver.name(), hub = %hub.name, partition = ?partition_id, "producer attached");
    loop {
        let delivery: Delivery<Body<Value>> = match receiver.recv().await {
            Ok(delivery) => delivery,
            Err(RecvError::LinkStateError(e)) => {
                tracing::debug!(error = %e, "producer link ended");
                return;
            }
            Err(e) => {
                return refuse_receiver(receiver, recv_error(e, shared.max_message_size)).await;
            }
        };
        let format = delivery.message_format().unwrap_or(0);
        let (info, message): (DeliveryInfo, AmqpMessage) = delivery.into_parts();
        let outcome = ingest(message, format, shared.max_message_size).and_then(|events| {
            let partition = match &fixed {
                Some(p) => p.clone(),
                None => hub.pick_partition(events.first().and_then(|e| e.partition_key.as_deref())),
            };
            partition
                .append(events)
                .map_err(|e| error(AmqpError::InternalError, format!("cannot persist: {e}")))
        });
        let settled = match outcome {
            Ok(()) => receiver.accept(info).await,
            Err(err) => {
                tracing::info!(condition = ?err.condition, description = ?err.description, "message rejected");
                receiver.reject(info, err).await
            }
        };
        if let Err(e) = settled {
            tracing::debug!(error = %e, "cannot settle; producer link ended");
            return;
        }
    }
}

/// The error a link is closed with when a delivery cannot be taken in. Such a delivery cannot be
/// rejected on its own because the failed receive yields no delivery to settle.
pub(super) fn recv_error(e: RecvError, max: u64) -> definitions::Error {
    match e {
        RecvError::MessageDecode(e) => error(AmqpError::DecodeError, e.to_string()),
        // fe2o3-amqp clients (the Rust SDK) cut messages larger than the advertised
        // max-message-size into transfers that fe2o3's receiver refuses to reassemble, so this
        // error means "too large" in practice; the service answers too-large messages with this
        // detach condition as well.
        RecvError::InconsistentFieldInMultiFrameDelivery => error(
            LinkError::MessageSizeExceeded,
            format!(
                "The received message exceeds the limit ({max} bytes) currently allowed on the link"
            ),
        ),
        RecvError::TransferLimitExceeded => error(
            LinkError::TransferLimitExceeded,
            "transfer without link credit".to_string(),
        ),
        other => error(AmqpError::NotAllowed, other.to_string()),
    }
}

/// Splits a transfer into events, checking its size.
fn ingest(
    message: AmqpMessage,
    format: u32,
    max: u64,
) -> Result<Vec<Incoming>, definitions::Error> {
    let encoded = encode(&message).map_err(|e| error(AmqpError::DecodeError, e.to_string()))?;
    if encoded.len() as u64 > max {
        return Err(error(
            LinkError::MessageSizeExceeded,
            format!(
                "The received message (size {} bytes) exceeds the limit ({max} bytes) currently allowed on the link",
                encoded.len()
            ),
        ));
    }
    let envelope_key = partition_key_of(&message);
    if format != BATCH_FORMAT {
        return Ok(vec![Incoming {
            partition_key: envelope_key,
            size: encoded.len(),
            message,
        }]);
    }
    let Body::Data(sections) = message.body else {
        return Err(error(
            AmqpError::DecodeError,
            "a batch (message format 0x80013700) must carry data sections",
        ));
    };
    let mut events = Vec::with_capacity(sections.len());
    for (i, data) in sections.into_iter().enumerate() {
        let bytes = data.0.into_vec();
        let inner = decode(&bytes).map_err(|e| {
            error(
                AmqpError::DecodeError,
                format!("batch entry {i} is not an AMQP message: {e}"),
            )
        })?;
        events.push(Incoming {
            partition_key: partition_key_of(&inner).or_else(|| envelope_key.clone()),
            size: bytes.len(),
            message: inner,
        });
    }
    if events.is_empty() {
        return Err(error(AmqpError::DecodeError, "empty batch"));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::definitions::ErrorCondition;
    use fe2o3_amqp::types::messaging::{AmqpValue, Message};

    #[test]
    fn malformed_batches_are_rejected_not_panics() {
        let message: AmqpMessage = Message::builder()
            .body(Body::Value(AmqpValue(Value::String("x".into()))))
            .build();
        let err = ingest(message, BATCH_FORMAT, 1 << 20).unwrap_err();
        assert_eq!(
            err.condition,
            ErrorCondition::AmqpError(AmqpError::DecodeError)
        );
        let junk: AmqpMessage = Message::builder()
            .body(Body::Data(
                vec![fe2o3_amqp::types::messaging::Data(vec![1u8, 2, 3].into())].into(),
            ))
            .build();
        assert!(ingest(junk, BATCH_FORMAT, 1 << 20).is_err());
        let big: AmqpMessage = Message::builder()
            .body(Body::Value(AmqpValue(Value::String("x".repeat(2000)))))
            .build();
        let err = ingest(big, 0, 1000).unwrap_err();
        assert_eq!(
            err.condition,
            ErrorCondition::LinkError(LinkError::MessageSizeExceeded)
        );
    }
}
