//! The AMQP side: connections, sessions, and one task per link.
//!
//! Link roles by address, each in its own module:
//! - `$cbs` (client sender): `put-token` requests ([`cbs`]); replies go out on the link whose
//!   target is the request's `reply-to` ([`requests`]).
//! - `<hub>/$management` or `$management` (client sender): READ requests ([`management`]),
//!   same reply scheme.
//! - `<hub>` or `<hub>/Partitions/<n>` (client sender): a producer ([`producer`]).
//! - `<hub>/ConsumerGroups/<group>/Partitions/<n>` (client receiver): a consumer
//!   ([`consumer`]).
//!
//! [`connection`] accepts connections and sessions and hands each attached link to
//! [`incoming_link`] or [`outgoing_link`], which pick the role.
//!
//! Addresses may carry a scheme and host (`amqps://ns.servicebus.windows.net/hub`), which are
//! ignored. Refusals are link detaches carrying an AMQP error, never a dropped connection.

mod cbs;
mod connection;
mod consumer;
mod management;
mod producer;
mod requests;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::definitions::{self, AmqpError, ErrorCondition};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auth::path_segments;
use crate::store::{Namespace, NotFound};
use connection::{ConnState, connection};

/// Bound on waiting for the peer's answer to our detach.
const DETACH_TIMEOUT: Duration = Duration::from_secs(5);

/// State shared by every connection.
pub(crate) struct Shared {
    pub(crate) namespace: Namespace,
    pub(crate) keys: BTreeMap<String, String>,
    pub(crate) max_message_size: u64,
    pub(crate) container_id: String,
    /// Serve the HTTP admin API on this port too (see `admin.rs`), with this default
    /// partition count for hubs made without one.
    pub(crate) admin: Option<u32>,
    next_link: AtomicU64,
    /// A second handle on each open AMQP connection's socket, by connection number, so that
    /// [`Shared::drop_connections`] can cut them from outside their tasks.
    sockets: Mutex<HashMap<u64, std::net::TcpStream>>,
    next_socket: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        namespace: Namespace,
        keys: BTreeMap<String, String>,
        max_message_size: u64,
        container_id: String,
        admin: Option<u32>,
    ) -> Shared {
        Shared {
            namespace,
            keys,
            max_message_size,
            container_id,
            admin,
            next_link: AtomicU64::new(1),
            sockets: Mutex::new(HashMap::new()),
            next_socket: AtomicU64::new(1),
        }
    }

    /// Ends the receivers of `hub` (of one partition, or all) with `amqp:link:detach-forced`;
    /// how many were told. An unknown hub or partition has none.
    pub(crate) fn detach_receivers(&self, hub: &str, partition: Option<&str>) -> usize {
        self.namespace.detach_receivers(hub, partition).unwrap_or(0)
    }

    /// Registers an AMQP connection's socket for [`Shared::drop_connections`] until the
    /// returned guard drops. `None` when the socket cannot be duplicated (it is then served,
    /// only not cut).
    pub(super) fn register_socket(&self, stream: &TcpStream) -> Option<SocketGuard<'_>> {
        let handle = match duplicate(stream) {
            Ok(handle) => handle,
            Err(error) => {
                tracing::warn!(%error, "cannot duplicate a connection's socket; drop_connections will not reach it");
                return None;
            }
        };
        let id = self.next_socket.fetch_add(1, Ordering::Relaxed);
        self.sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, handle);
        Some(SocketGuard { shared: self, id })
    }

    /// Shuts down every open AMQP connection's socket in both directions, without an AMQP
    /// `close`, as a network failure or a gateway restart does; how many.
    pub(crate) fn drop_connections(&self) -> usize {
        let sockets = std::mem::take(&mut *self.sockets.lock().unwrap_or_else(|e| e.into_inner()));
        for socket in sockets.values() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        sockets.len()
    }
}

/// Unregisters a connection's socket (see [`Shared::register_socket`]).
pub(super) struct SocketGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for SocketGuard<'_> {
    fn drop(&mut self) {
        self.shared
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// A second handle on `stream`'s socket: shutting it down ends the connection's task too.
fn duplicate(stream: &TcpStream) -> std::io::Result<std::net::TcpStream> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        Ok(stream.as_fd().try_clone_to_owned()?.into())
    }
    #[cfg(windows)]
    {
        use std::os::windows::io::AsSocket;
        Ok(stream.as_socket().try_clone_to_owned()?.into())
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

/// A link on which the client sends: a `$cbs` or `$management` request link, or a producer.
async fn incoming_link(receiver: Receiver, shared: Arc<Shared>, conn: Arc<ConnState>) {
    let address = receiver
        .target()
        .as_ref()
        .and_then(|t| t.address.clone())
        .unwrap_or_default();
    let segments = path_segments(&address);
    if is_cbs(&segments) {
        requests::requests(receiver, requests::Node::Cbs, shared, conn).await
    } else if is_management(&segments) {
        requests::requests(receiver, requests::Node::Management, shared, conn).await
    } else {
        producer::producer(receiver, &address, shared, conn).await
    }
}

/// A link on which the client receives: a reply link of `$cbs`/`$management`, or a consumer.
async fn outgoing_link(sender: Sender, shared: Arc<Shared>, conn: Arc<ConnState>) {
    let source = sender
        .source()
        .as_ref()
        .and_then(|s| s.address.clone())
        .unwrap_or_default();
    let segments = path_segments(&source);
    if is_cbs(&segments) || is_management(&segments) {
        requests::reply_link(sender, &source, conn).await
    } else {
        consumer::consumer(sender, &source, shared, conn).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consumer::consumer_source;
    use producer::producer_target;

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
}
