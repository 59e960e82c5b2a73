//! The AMQP side: connections, sessions, and one task per link.
//!
//! Link roles by address:
//! - `$cbs` (client sender): `put-token` requests; replies go out on the link whose target is
//!   the request's `reply-to`.
//! - `<hub>/$management` or `$management` (client sender): READ requests, same reply scheme.
//! - `<hub>` or `<hub>/Partitions/<n>` (client sender): a producer.
//! - `<hub>/ConsumerGroups/<group>/Partitions/<n>` (client receiver): a consumer.
//!
//! Addresses may carry a scheme and host (`amqps://ns.servicebus.windows.net/hub`), which are
//! ignored. Refusals are link detaches carrying an AMQP error, never a dropped connection.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SaslAcceptor,
    SessionAcceptor, SupportedReceiverSettleModes, sasl_acceptor::SaslServerFrame,
};
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::{Receiver, RecvError, Sender};
use fe2o3_amqp::types::definitions::{
    self, AmqpError, ErrorCondition, LinkError, ReceiverSettleMode,
};
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageAnnotations, Properties,
};
use fe2o3_amqp::types::primitives::{Array, OrderedMap, SimpleValue, Symbol, Timestamp, Value};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};
use fe2o3_amqp::{Delivery, Sendable};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::auth::{covers, path_segments, verify_sas};
use crate::filter::{StartAt, parse_selector};
use crate::store::{
    AmqpMessage, Event, Hub, Incoming, Namespace, NotFound, decode, encode, now_millis,
    partition_key_of,
};
use crate::wire_compat::CompatStream;

/// Message format of an Event Hubs batch: the body's data sections are whole messages.
const BATCH_FORMAT: u32 = 0x8001_3700;
const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";
const EPOCH_PROPERTY: &str = "com.microsoft:epoch";
const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";
/// Events handed to a consumer link per read of the partition.
const READ_CHUNK: usize = 128;
/// How often a consumer blocked on link credit checks whether the client detached meanwhile.
const CREDIT_RECHECK: Duration = Duration::from_millis(250);
/// How long a `$cbs`/`$management` link waits before it can answer a detach. The Rust SDK drops
/// these links right after its request (detach without waiting) and then ends the session; a
/// detach reply that reaches fe2o3 before that `end` hits a link it already forgot, which ends
/// its session with `unattached-handle` and then closes the whole connection ("Session is not
/// found"), in about one of five connections on loopback. Answering a little later lets the
/// session `end` overtake the reply, which then is never sent because the session is over.
const NODE_DETACH_DELAY: Duration = Duration::from_millis(30);
/// Bound on waiting for the peer's answer to our detach.
const DETACH_TIMEOUT: Duration = Duration::from_secs(5);

/// State shared by every connection.
pub(crate) struct Shared {
    pub(crate) namespace: Namespace,
    pub(crate) keys: BTreeMap<String, String>,
    pub(crate) max_message_size: u64,
    pub(crate) container_id: String,
    next_link: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        namespace: Namespace,
        keys: BTreeMap<String, String>,
        max_message_size: u64,
        container_id: String,
    ) -> Shared {
        Shared {
            namespace,
            keys,
            max_message_size,
            container_id,
            next_link: AtomicU64::new(1),
        }
    }
}

/// Accepts connections until `shutdown` changes; dropping the returned future's tasks closes
/// every connection.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(stream, peer, shared.clone()));
                }
                Err(error) => {
                    // Typically EMFILE; back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

/// SASL ANONYMOUS always; PLAIN with a configured key name and key as user name and password
/// (any credentials when no key is configured).
#[derive(Clone)]
struct Sasl {
    keys: Arc<BTreeMap<String, String>>,
}

impl SaslAcceptor for Sasl {
    fn mechanisms(&self) -> Array<Symbol> {
        Array::from(vec![Symbol::from("ANONYMOUS"), Symbol::from("PLAIN")])
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        let code = match init.mechanism.0.as_str() {
            "ANONYMOUS" => SaslCode::Ok,
            "PLAIN" if self.keys.is_empty() => SaslCode::Ok,
            "PLAIN" => {
                let response = init
                    .initial_response
                    .map(|b| b.into_vec())
                    .unwrap_or_default();
                let mut parts = response.split(|b| *b == 0);
                let _authzid = parts.next();
                let user = parts.next().and_then(|u| std::str::from_utf8(u).ok());
                let pass = parts.next().and_then(|p| std::str::from_utf8(p).ok());
                match (user, pass) {
                    (Some(user), Some(pass))
                        if self.keys.get(user).is_some_and(|key| key == pass) =>
                    {
                        SaslCode::Ok
                    }
                    _ => SaslCode::Auth,
                }
            }
            _ => SaslCode::Auth,
        };
        SaslServerFrame::Outcome(SaslOutcome {
            code,
            additional_data: None,
        })
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        // No mechanism offered here sends challenges, so a response is a protocol error.
        SaslServerFrame::Outcome(SaslOutcome {
            code: SaslCode::Auth,
            additional_data: None,
        })
    }
}

/// Per-connection state: reply links of `$cbs`/`$management` and the audiences CBS authorized.
#[derive(Default)]
struct ConnState {
    reply_links: Mutex<HashMap<String, mpsc::Sender<AmqpMessage>>>,
    grants: Mutex<Vec<(String, i64)>>,
}

impl ConnState {
    fn grant(&self, audience: &str, expiry: i64) {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_millis() / 1000;
        grants.retain(|(a, exp)| *exp > now && a != audience);
        grants.push((audience.to_string(), expiry));
    }

    fn authorized(&self, shared: &Shared, address: &str) -> bool {
        if shared.keys.is_empty() {
            return true;
        }
        let now = now_millis() / 1000;
        self.grants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(audience, expiry)| *expiry > now && covers(audience, address))
    }

    async fn reply(&self, reply_to: &str, message: AmqpMessage) {
        let link = self
            .reply_links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(reply_to)
            .cloned();
        match link {
            Some(link) => {
                if link.send(message).await.is_err() {
                    tracing::debug!(reply_to, "reply link went away before the reply");
                }
            }
            None => tracing::warn!(reply_to, "no link attached with this target; reply dropped"),
        }
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let acceptor = ConnectionAcceptor::builder()
        .container_id(shared.container_id.clone())
        .sasl_acceptor(Sasl {
            keys: Arc::new(shared.keys.clone()),
        })
        .build();
    // Full-length performatives for clients that read fields by position (azure-eventhub's
    // pure-Python transport); see wire_compat.
    let stream = CompatStream::new(stream);
    let mut connection =
        match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(stream)).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                tracing::info!(%peer, %error, "connection refused during open");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "connection did not open within 30 s");
                return;
            }
        };
    tracing::debug!(%peer, "connection open");
    let state = Arc::new(ConnState::default());
    let session_acceptor = SessionAcceptor::new();
    let mut sessions = JoinSet::new();
    while let Some(incoming) = connection.next_incoming_session().await {
        match session_acceptor
            .accept_incoming_session(incoming, &mut connection)
            .await
        {
            Ok(session) => {
                sessions.spawn(session_task(session, shared.clone(), state.clone()));
            }
            Err(error) => {
                tracing::info!(%peer, %error, "session refused");
                break;
            }
        }
        while sessions.try_join_next().is_some() {}
    }
    let _ = connection.close().await;
    tracing::debug!(%peer, "connection closed");
}

async fn session_task(
    mut session: ListenerSessionHandle,
    shared: Arc<Shared>,
    conn: Arc<ConnState>,
) {
    // Only `first` receiver settlement, as the service: a client asking for `second`
    // (azure-eventhub's Python producer does) gets `first` in the attach reply and settled
    // dispositions, which it waits for; with `second` it would wait forever.
    let acceptor = LinkAcceptor::builder()
        .max_message_size(shared.max_message_size)
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(ReceiverSettleMode::First)
        .build();
    let mut links = JoinSet::new();
    while let Some(attach) = session.next_incoming_attach().await {
        let name = attach.name.clone();
        match acceptor.accept_incoming_attach(attach, &mut session).await {
            Ok(LinkEndpoint::Receiver(receiver)) => {
                links.spawn(incoming_link(receiver, shared.clone(), conn.clone()));
            }
            Ok(LinkEndpoint::Sender(sender)) => {
                links.spawn(outgoing_link(sender, shared.clone(), conn.clone()));
            }
            Err(error) => tracing::info!(link = %name, %error, "attach refused"),
        }
        while links.try_join_next().is_some() {}
    }
    // The session is gone; links cannot outlive it.
    links.shutdown().await;
    let _ = session.end().await;
}

fn error(
    condition: impl Into<ErrorCondition>,
    description: impl Into<String>,
) -> definitions::Error {
    definitions::Error::new(condition, Some(description.into()), None)
}

fn not_found(e: NotFound) -> definitions::Error {
    error(AmqpError::NotFound, e.0)
}

async fn refuse_receiver(receiver: Receiver, err: definitions::Error) {
    tracing::info!(link = receiver.name(), condition = ?err.condition, description = ?err.description, "closing link");
    let _ = tokio::time::timeout(DETACH_TIMEOUT, receiver.close_with_error(err)).await;
}

async fn refuse_sender(sender: Sender, err: definitions::Error) {
    tracing::info!(link = sender.name(), condition = ?err.condition, description = ?err.description, "closing link");
    let _ = tokio::time::timeout(DETACH_TIMEOUT, sender.close_with_error(err)).await;
}

fn is_management(segments: &[&str]) -> bool {
    segments
        .last()
        .is_some_and(|s| s.eq_ignore_ascii_case("$management"))
}

fn is_cbs(segments: &[&str]) -> bool {
    segments.len() == 1 && segments[0].eq_ignore_ascii_case("$cbs")
}

async fn incoming_link(receiver: Receiver, shared: Arc<Shared>, conn: Arc<ConnState>) {
    let address = receiver
        .target()
        .as_ref()
        .and_then(|t| t.address.clone())
        .unwrap_or_default();
    let segments = path_segments(&address);
    if is_cbs(&segments) {
        requests(receiver, Node::Cbs, shared, conn).await
    } else if is_management(&segments) {
        requests(receiver, Node::Management, shared, conn).await
    } else {
        producer(receiver, &address, shared, conn).await
    }
}

async fn outgoing_link(sender: Sender, shared: Arc<Shared>, conn: Arc<ConnState>) {
    let source = sender
        .source()
        .as_ref()
        .and_then(|s| s.address.clone())
        .unwrap_or_default();
    let segments = path_segments(&source);
    if is_cbs(&segments) || is_management(&segments) {
        reply_link(sender, &source, conn).await
    } else {
        consumer(sender, &source, shared, conn).await
    }
}

/// Carries replies of a `$cbs` or `$management` node to the client.
async fn reply_link(mut sender: Sender, source: &str, conn: Arc<ConnState>) {
    let target = sender
        .target()
        .as_ref()
        .and_then(|t| t.address.clone())
        .unwrap_or_else(|| source.to_string());
    let (tx, mut rx) = mpsc::channel::<AmqpMessage>(16);
    conn.reply_links
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(target.clone(), tx.clone());
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
                // Dropping the sender answers the detach; see NODE_DETACH_DELAY.
                tokio::time::sleep(NODE_DETACH_DELAY).await;
                break;
            }
        }
    }
    let mut links = conn.reply_links.lock().unwrap_or_else(|e| e.into_inner());
    // A newer link with the same target may have replaced this one already.
    if links.get(&target).is_some_and(|l| l.same_channel(&tx)) {
        links.remove(&target);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Node {
    Cbs,
    Management,
}

fn app_string(message: &AmqpMessage, key: &str) -> Option<String> {
    match message.application_properties.as_ref()?.0.get(key)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

/// Serves request/response nodes: answers every request on the connection's reply link.
async fn requests(mut receiver: Receiver, node: Node, shared: Arc<Shared>, conn: Arc<ConnState>) {
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
            Node::Cbs => put_token(request, &shared, &conn),
            Node::Management => management(request, &shared, &conn),
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

fn put_token(request: &AmqpMessage, shared: &Shared, conn: &ConnState) -> (i32, String, Value) {
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

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::String(k.to_string()), v))
            .collect(),
    )
}

fn management(request: &AmqpMessage, shared: &Shared, conn: &ConnState) -> (i32, String, Value) {
    let operation = app_string(request, "operation").unwrap_or_default();
    if operation != "READ" {
        return (
            501,
            format!("unsupported $management operation {operation:?}"),
            Value::Null,
        );
    }
    let Some(name) = app_string(request, "name") else {
        return (400, "READ without an entity name".into(), Value::Null);
    };
    if !shared.keys.is_empty() {
        let audience = format!("{name}/$management");
        let by_token = app_string(request, "security_token").is_some_and(|token| {
            verify_sas(&token, &audience, &shared.keys, now_millis() / 1000).is_ok()
        });
        if !by_token && !conn.authorized(shared, &audience) {
            return (401, format!("Unauthorized access to '{name}'"), Value::Null);
        }
    }
    let hub = match shared.namespace.hub(&name) {
        Ok(hub) => hub,
        Err(e) => return (404, e.0, Value::Null),
    };
    match app_string(request, "type").as_deref() {
        Some("com.microsoft:eventhub") => (200, "OK".into(), hub_properties(&hub)),
        Some("com.microsoft:partition") => {
            let id = app_string(request, "partition").unwrap_or_default();
            match hub.partition(&id) {
                Ok(partition) => {
                    let info = partition.info();
                    (
                        200,
                        "OK".into(),
                        map(vec![
                            ("name", Value::String(hub.name.clone())),
                            ("partition", Value::String(id)),
                            ("type", Value::String("com.microsoft:partition".into())),
                            ("begin_sequence_number", Value::Long(info.begin_sequence)),
                            (
                                "last_enqueued_sequence_number",
                                Value::Long(info.last_sequence),
                            ),
                            (
                                "last_enqueued_offset",
                                Value::String(info.last_offset.to_string()),
                            ),
                            (
                                "last_enqueued_time_utc",
                                Value::Timestamp(Timestamp::from_milliseconds(
                                    info.last_enqueued_ms,
                                )),
                            ),
                            ("is_partition_empty", Value::Bool(info.empty)),
                            ("last_enqueued_sequence_number_epoch", Value::Long(0)),
                        ]),
                    )
                }
                Err(e) => (404, e.0, Value::Null),
            }
        }
        other => (
            400,
            format!("unsupported entity type {other:?}"),
            Value::Null,
        ),
    }
}

fn hub_properties(hub: &Hub) -> Value {
    let ids: Vec<Value> = (0..hub.partitions.len())
        .map(|i| Value::String(i.to_string()))
        .collect();
    map(vec![
        ("name", Value::String(hub.name.clone())),
        ("type", Value::String("com.microsoft:eventhub".into())),
        (
            "created_at",
            Value::Timestamp(Timestamp::from_milliseconds(hub.created_ms)),
        ),
        ("partition_count", Value::Int(hub.partitions.len() as i32)),
        ("partition_ids", Value::Array(Array::from(ids))),
    ])
}

/// `<hub>` or `<hub>/Partitions/<n>`.
fn producer_target<'a>(segments: &[&'a str]) -> Option<(&'a str, Option<&'a str>)> {
    match segments {
        [hub] => Some((hub, None)),
        [hub, p, id] if p.eq_ignore_ascii_case("Partitions") => Some((hub, Some(id))),
        _ => None,
    }
}

async fn producer(
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
fn recv_error(e: RecvError, max: u64) -> definitions::Error {
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

/// `<hub>/ConsumerGroups/<group>/Partitions/<n>`.
fn consumer_source<'a>(segments: &[&'a str]) -> Option<(&'a str, &'a str, &'a str)> {
    match segments {
        [hub, cg, group, p, id]
            if cg.eq_ignore_ascii_case("ConsumerGroups")
                && p.eq_ignore_ascii_case("Partitions") =>
        {
            Some((hub, group, id))
        }
        _ => None,
    }
}

fn start_position(sender: &Sender) -> Result<StartAt, String> {
    let Some(filter) = sender.source().as_ref().and_then(|s| s.filter.as_ref()) else {
        return Ok(StartAt::Latest);
    };
    let Some(value) = filter.get(&Symbol::from(SELECTOR_FILTER)) else {
        return Ok(StartAt::Latest);
    };
    let expression = match value {
        Value::Described(described) => match &described.value {
            Value::String(s) => s,
            other => {
                return Err(format!(
                    "selector filter value must be a string, not {other:?}"
                ));
            }
        },
        Value::String(s) => s,
        other => {
            return Err(format!(
                "selector filter must be a described string, not {other:?}"
            ));
        }
    };
    parse_selector(expression)
}

fn epoch(sender: &Sender) -> Result<Option<i64>, String> {
    let value = sender.properties(|p| {
        p.as_ref()
            .and_then(|fields| fields.get(&Symbol::from(EPOCH_PROPERTY)))
            .cloned()
    });
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Long(v)) => Ok(Some(v)),
        Some(Value::Int(v)) => Ok(Some(v.into())),
        Some(Value::Short(v)) => Ok(Some(v.into())),
        Some(Value::Uint(v)) => Ok(Some(v.into())),
        Some(Value::Ulong(v)) => i64::try_from(v)
            .map(Some)
            .map_err(|_| format!("epoch {v} too large")),
        Some(other) => Err(format!("{EPOCH_PROPERTY} must be a long, not {other:?}")),
    }
}

fn annotate(event: &Event) -> AmqpMessage {
    let mut message = event.message.clone();
    let annotations = message
        .message_annotations
        .get_or_insert_with(|| MessageAnnotations(OrderedMap::new()));
    let mut put = |key: &str, value: Value| {
        annotations
            .0
            .insert(OwnedKey::Symbol(Symbol::from(key)), value);
    };
    put("x-opt-sequence-number", Value::Long(event.sequence));
    put("x-opt-offset", Value::String(event.offset.to_string()));
    put(
        "x-opt-enqueued-time",
        Value::Timestamp(Timestamp::from_milliseconds(event.enqueued_ms)),
    );
    if let Some(key) = &event.partition_key {
        put("x-opt-partition-key", Value::String(key.clone()));
    }
    message
}

async fn consumer(mut sender: Sender, address: &str, shared: Arc<Shared>, conn: Arc<ConnState>) {
    let segments = path_segments(address);
    let Some((hub_name, group, partition_id)) = consumer_source(&segments) else {
        let e = error(
            AmqpError::NotFound,
            format!("'{address}' is not a consumer group partition address"),
        );
        return refuse_sender(sender, e).await;
    };
    if !conn.authorized(&shared, address) {
        let e = error(
            AmqpError::UnauthorizedAccess,
            format!("no valid token for '{address}' (send a CBS put-token first)"),
        );
        return refuse_sender(sender, e).await;
    }
    let partition = match shared
        .namespace
        .hub(hub_name)
        .and_then(|hub| shared.namespace.check_group(&hub, group).map(|_| hub))
        .and_then(|hub| hub.partition(partition_id))
    {
        Ok(p) => p,
        Err(e) => return refuse_sender(sender, not_found(e)).await,
    };
    let start = match start_position(&sender) {
        Ok(start) => start,
        Err(e) => return refuse_sender(sender, error(AmqpError::InvalidField, e)).await,
    };
    let epoch = match epoch(&sender) {
        Ok(epoch) => epoch,
        Err(e) => return refuse_sender(sender, error(AmqpError::InvalidField, e)).await,
    };
    let link_id = shared.next_link.fetch_add(1, Ordering::Relaxed);
    let mut claim = match partition.claim(group, epoch, link_id) {
        Ok(claim) => claim,
        Err(e) => return refuse_sender(sender, error(LinkError::Stolen, e)).await,
    };
    let mut tail = partition.subscribe();
    let mut next = partition.resolve(&start);
    tracing::debug!(
        link = sender.name(),
        hub = hub_name,
        group,
        partition = partition_id,
        ?start,
        next,
        ?epoch,
        "consumer attached"
    );
    loop {
        // Mark the current tail as seen before reading, so an append after the read wakes us.
        tail.borrow_and_update();
        let events = partition.read(next, READ_CHUNK);
        if events.is_empty() {
            tokio::select! {
                changed = tail.changed() => if changed.is_err() { return },
                reason = &mut claim.stolen => {
                    let reason = reason.unwrap_or_else(|_| "receiver displaced".into());
                    return refuse_sender(sender, error(LinkError::Stolen, reason)).await;
                }
                _ = sender.on_detach() => return,
            }
            continue;
        }
        for event in events {
            let sendable = Sendable::builder()
                .message(annotate(&event))
                .settled(true)
                .build();
            // Sending waits for link credit, which bounds what is in flight per consumer.
            loop {
                tokio::select! {
                    biased;
                    reason = &mut claim.stolen => {
                        let reason = reason.unwrap_or_else(|_| "receiver displaced".into());
                        return refuse_sender(sender, error(LinkError::Stolen, reason)).await;
                    }
                    sent = sender.send_batchable_ref(&sendable) => match sent {
                        Ok(_outcome) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "consumer link ended");
                            return;
                        }
                    },
                    _ = tokio::time::sleep(CREDIT_RECHECK) => {
                        // Out of credit for a while: the client may be detaching, and its detach
                        // is only seen when we look for it.
                        if tokio::time::timeout(Duration::from_millis(20), sender.on_detach()).await.is_ok() {
                            return;
                        }
                    }
                }
            }
            next = event.sequence + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(producer_target(&["hub"]), Some(("hub", None)));
        assert_eq!(
            producer_target(&["hub", "partitions", "2"]),
            Some(("hub", Some("2")))
        );
        assert_eq!(producer_target(&["hub", "x", "2"]), None);
        assert_eq!(producer_target(&[]), None);
        assert_eq!(
            consumer_source(&path_segments(
                "amqps://h/hub/ConsumerGroups/$Default/Partitions/3"
            )),
            Some(("hub", "$Default", "3"))
        );
        assert_eq!(consumer_source(&["hub"]), None);
        assert!(is_management(&path_segments("amqps://h/hub/$management")));
        assert!(is_cbs(&path_segments("$cbs")));
    }

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
