//! A connection: SASL, the connection's own state (the audiences CBS authorized, the reply
//! links of `$cbs`/`$management`), and its sessions, each handing attached links on.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SaslAcceptor,
    SessionAcceptor, SupportedReceiverSettleModes, sasl_acceptor::SaslServerFrame,
};
use fe2o3_amqp::types::definitions::ReceiverSettleMode;
use fe2o3_amqp::types::primitives::{Array, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{Shared, incoming_link, outgoing_link};
use crate::admin::Replay;
use crate::auth::covers;
use crate::store::{AmqpMessage, now_millis};
use crate::wire_compat::CompatStream;

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

/// How long a reply waits for its reply link. The Rust SDK attaches a new `$cbs` link pair,
/// with the same reply address, for every authorization, and sends its request as soon as
/// both attaches are answered; this server answers an attach before the task serving the link
/// has registered it, so a request can arrive first. The service delivers the reply on the
/// new link; dropping it instead left the client waiting forever, holding its CBS lock, so
/// no other receiver of that connection could attach again.
const REPLY_LINK_WAIT: Duration = Duration::from_secs(5);

/// Per-connection state: reply links of `$cbs`/`$management` and the audiences CBS authorized.
#[derive(Default)]
pub(super) struct ConnState {
    reply_links: Mutex<HashMap<String, mpsc::Sender<AmqpMessage>>>,
    /// Woken whenever a reply link registers, for replies that arrived before their link.
    reply_link_registered: tokio::sync::Notify,
    grants: Mutex<Vec<(String, i64)>>,
}

impl ConnState {
    pub(super) fn grant(&self, audience: &str, expiry: i64) {
        let mut grants = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_millis() / 1000;
        grants.retain(|(a, exp)| *exp > now && a != audience);
        grants.push((audience.to_string(), expiry));
    }

    pub(super) fn authorized(&self, shared: &Shared, address: &str) -> bool {
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

    /// Makes `link` the reply link for `target` (replacing an older one with that target).
    pub(super) fn register_reply_link(&self, target: &str, link: mpsc::Sender<AmqpMessage>) {
        self.reply_links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(target.to_string(), link);
        self.reply_link_registered.notify_waiters();
    }

    /// Forgets `link` as the reply link for `target`, unless a newer link replaced it already.
    pub(super) fn unregister_reply_link(&self, target: &str, link: &mpsc::Sender<AmqpMessage>) {
        let mut links = self.reply_links.lock().unwrap_or_else(|e| e.into_inner());
        if links.get(target).is_some_and(|l| l.same_channel(link)) {
            links.remove(target);
        }
    }

    /// Sends a reply on the link attached with target `reply_to`, waiting up to
    /// [`REPLY_LINK_WAIT`] for that link if it is not registered (or is going away) yet.
    pub(super) async fn reply(&self, reply_to: &str, mut message: AmqpMessage) {
        let deadline = tokio::time::Instant::now() + REPLY_LINK_WAIT;
        loop {
            // Created before the look-up, so a registration in between still wakes it.
            let registered = self.reply_link_registered.notified();
            let link = self
                .reply_links
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(reply_to)
                .cloned();
            if let Some(link) = link {
                match link.send(message).await {
                    Ok(()) => return,
                    Err(mpsc::error::SendError(returned)) => message = returned,
                }
            }
            if tokio::time::timeout_at(deadline, registered).await.is_err() {
                tracing::warn!(
                    reply_to,
                    "no live link attached with this target within {REPLY_LINK_WAIT:?}; reply dropped"
                );
                return;
            }
        }
    }
}

pub(super) async fn connection(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    // With the admin API on, the first bytes tell AMQP from HTTP; they are read here and
    // replayed to whichever protocol gets the connection.
    let mut first = Vec::new();
    if let Some(default_partitions) = shared.admin {
        first = match tokio::time::timeout(Duration::from_secs(30), read_prefix(&mut stream)).await
        {
            Ok(Ok(first)) => first,
            _ => return,
        };
        if !crate::admin::is_amqp(&first) {
            crate::admin::serve(
                Replay::new(first, stream),
                &shared.namespace,
                default_partitions,
            )
            .await;
            return;
        }
    }
    // Held until the connection ends: `drop_connections` cuts the socket through it.
    let _registered = shared.register_socket(&stream);
    let stream = Replay::new(first, stream);
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

/// Up to four bytes, fewer only where the client's first bytes already differ from `AMQP` or
/// it closed the connection.
async fn read_prefix(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut first = Vec::with_capacity(4);
    let mut byte = [0u8; 4];
    while first.len() < 4 && b"AMQP".starts_with(&first) {
        let n = stream.read(&mut byte[..4 - first.len()]).await?;
        if n == 0 {
            break;
        }
        first.extend_from_slice(&byte[..n]);
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::messaging::{AmqpValue, Body, Message};
    use fe2o3_amqp::types::primitives::Value;

    const CBS_REPLY_TO: &str = "rust_amqp_cbs";

    /// Answers a request while no live link has `CBS_REPLY_TO`, registers the replacing link
    /// only once the reply is waiting (time is paused: the sleep ends when every task is
    /// idle, so the reply task has reached its wait), and expects the reply on that link.
    async fn reply_reaches_the_link_registered_after_it(conn: Arc<ConnState>) {
        let replying = tokio::spawn({
            let conn = conn.clone();
            async move {
                let reply = Message::builder()
                    .body(Body::Value(AmqpValue(Value::String("accepted".into()))))
                    .build();
                conn.reply(CBS_REPLY_TO, reply).await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!replying.is_finished(), "the reply waits for its link");
        let (new, mut new_rx) = mpsc::channel(4);
        conn.register_reply_link(CBS_REPLY_TO, new);
        let got = tokio::time::timeout(Duration::from_secs(2), new_rx.recv())
            .await
            .expect("the reply reaches the new link")
            .expect("a reply");
        assert!(
            matches!(got.body, Body::Value(AmqpValue(Value::String(ref s))) if s == "accepted")
        );
        replying.await.expect("reply task");
    }

    /// The SDK sends its `$cbs` request as soon as its new reply link's attach is answered,
    /// which can be before the task serving that link registered it; the reply must wait for
    /// the link, not be dropped (the client would wait for it forever).
    #[tokio::test(start_paused = true)]
    async fn a_reply_waits_for_its_link_to_register() {
        let conn = Arc::new(ConnState::default());
        let (old, old_rx) = mpsc::channel(4);
        conn.register_reply_link(CBS_REPLY_TO, old.clone());
        // The previous authorization's link went away before the next request.
        conn.unregister_reply_link(CBS_REPLY_TO, &old);
        drop(old_rx);
        reply_reaches_the_link_registered_after_it(conn).await;
    }

    /// A link that is still registered but whose task ended (its receiver dropped) does not
    /// swallow the reply either.
    #[tokio::test(start_paused = true)]
    async fn a_reply_to_a_link_that_went_away_goes_to_its_replacement() {
        let conn = Arc::new(ConnState::default());
        let (old, old_rx) = mpsc::channel(4);
        conn.register_reply_link(CBS_REPLY_TO, old);
        drop(old_rx);
        reply_reaches_the_link_registered_after_it(conn).await;
    }
}
