//! The request/response nodes `$cbs` and `$management`: requests come on a link the client
//! sends on, each reply goes out on the client's reply link of that connection.

use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::link::{Receiver, RecvError, Sender};
use fe2o3_amqp::types::messaging::{AmqpValue, ApplicationProperties, Body, Message, Properties};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Value};
use fe2o3_amqp::{Delivery, Sendable};
use tokio::sync::mpsc;

use super::connection::ConnState;
use super::producer::recv_error;
use super::{Shared, cbs, management, refuse_receiver};
use crate::store::AmqpMessage;

/// How long a `$cbs`/`$management` link waits before it can answer a detach. The Rust SDK drops
/// these links right after its request (detach without waiting) and then ends the session; a
/// detach reply that reaches fe2o3 before that `end` hits a link it already forgot, which ends
/// its session with `unattached-handle` and then closes the whole connection ("Session is not
/// found"), in about one of five connections on loopback. Answering a little later lets the
/// session `end` overtake the reply, which then is never sent because the session is over.
const NODE_DETACH_DELAY: Duration = Duration::from_millis(30);

/// Carries replies of a `$cbs` or `$management` node to the client.
pub(super) async fn reply_link(mut sender: Sender, source: &str, conn: Arc<ConnState>) {
    let target = sender
        .target()
        .as_ref()
        .and_then(|t| t.address.clone())
        .unwrap_or_else(|| source.to_string());
    let (tx, mut rx) = mpsc::channel::<AmqpMessage>(16);
    conn.register_reply_link(&target, tx.clone());
    tracing::debug!(link = sender.name(), %target, "reply link registered");
    loop {
        tokio::select! {
            message = rx.recv() => {
                let Some(message) = message else { break };
                let sendable = Sendable::builder().message(message).settled(true).build();
                if let Err(error) = sender.send_batchable(sendable).await {
                    tracing::debug!(%error, "reply link failed");
                    break;
                }
            }
            _ = sender.on_detach() => {
                // Replies from now on wait for the link that replaces this one.
                conn.unregister_reply_link(&target, &tx);
                tracing::debug!(link = sender.name(), %target, "reply link detached");
                // Dropping the sender answers the detach; see NODE_DETACH_DELAY.
                tokio::time::sleep(NODE_DETACH_DELAY).await;
                break;
            }
        }
    }
    conn.unregister_reply_link(&target, &tx);
    // A reply still queued here cannot go to the link that replaces this one: the client
    // takes the next message on its reply link as its answer, whatever its correlation id.
    rx.close();
    let mut dropped = 0;
    while rx.try_recv().is_ok() {
        dropped += 1;
    }
    if dropped > 0 {
        tracing::debug!(%target, dropped, "replies queued on a detached reply link dropped");
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Node {
    Cbs,
    Management,
}

pub(super) fn app_string(message: &AmqpMessage, key: &str) -> Option<String> {
    match message.application_properties.as_ref()?.0.get(key)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

/// Serves request/response nodes: answers every request on the connection's reply link.
pub(super) async fn requests(
    mut receiver: Receiver,
    node: Node,
    shared: Arc<Shared>,
    conn: Arc<ConnState>,
) {
    let default_reply_to = receiver
        .source()
        .as_ref()
        .and_then(|s| s.address.clone())
        .or_else(|| receiver.target().as_ref().and_then(|t| t.address.clone()));
    loop {
        let delivery: Delivery<Body<Value>> = match receiver.recv().await {
            Ok(delivery) => delivery,
            Err(RecvError::LinkStateError(e)) => {
                tracing::debug!(error = %e, ?node, "request link ended");
                return;
            }
            Err(e) => {
                return refuse_receiver(receiver, recv_error(e, shared.max_message_size)).await;
            }
        };
        if let Err(e) = receiver.accept(&delivery).await {
            tracing::debug!(error = %e, "cannot settle request");
            return;
        }
        let request = delivery.message();
        let properties = request.properties.as_ref();
        let message_id = properties.and_then(|p| p.message_id.clone());
        // azure-eventhub's Python transport sends no reply-to; its response link's target is
        // the address its request link has as source (and target), as the service accepts.
        let Some(reply_to) = properties
            .and_then(|p| p.reply_to.clone())
            .or_else(|| default_reply_to.clone())
        else {
            tracing::warn!(?node, "request without reply-to ignored");
            continue;
        };
        let (status, description, body) = match node {
            Node::Cbs => cbs::put_token(request, &shared, &conn),
            Node::Management => management::read(request, &shared, &conn),
        };
        tracing::debug!(?node, status, %description, "request answered");
        let mut app = OrderedMap::new();
        app.insert("status-code".to_string(), SimpleValue::Int(status));
        app.insert(
            "status-description".to_string(),
            SimpleValue::String(description),
        );
        let reply = Message::builder()
            .properties(Properties {
                correlation_id: message_id,
                ..Default::default()
            })
            .application_properties(ApplicationProperties(app))
            .body(Body::Value(AmqpValue(body)))
            .build();
        conn.reply(&reply_to, reply).await;
        // The next receive answers a detach at once; see NODE_DETACH_DELAY.
        tokio::time::sleep(NODE_DETACH_DELAY).await;
    }
}
