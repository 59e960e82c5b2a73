//! A member taking a partition over, when the broker's resend is slow to arrive, against a
//! real standalone behind a proxy that holds that resend back.
//!
//! The member asks the broker to rewind when the resend from the first unacknowledged entry
//! has not shown up ~0.5 s after the announcement (`consumer/takeover.rs`). If the broker had
//! already sent it (a loaded broker or client, a slow socket), the broker rewinds again and
//! sends the unacknowledged entries a second time: on a Failover subscription a redelivery
//! request rewinds the cursor to the mark-delete position and reads everything unacknowledged
//! again, whatever was dispatched before. Both copies reach the member; before the fix the
//! first ended the wait and both were delivered (each event of a 10-event batch twice, as
//! `semantics::a_partly_acked_batch_is_not_lost_in_a_crash` once saw under load). A lost
//! connection does the same: the crate subscribes again, the broker announces the member
//! again and resends everything unacknowledged, including what the member holds. The proxy
//! also cuts connections, for that case.
//!
//! The same proxy answers a subscribe with the error a loaded standalone once gave in CI
//! (`PersistenceError`, "Error while using MetaStore"): the subscribe is tried again, as the
//! Java client does, instead of failing the consumer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use pulsar::message::proto::{BaseCommand, CommandError, ServerError, base_command::Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tributary::{Backend, ConsumerExt, ConsumerOptions, Event, StartPosition, StreamSpec};
use tributary_testcontainers::{Peer, require_peer, unique_name};

const WAIT: Duration = Duration::from_secs(60);
/// The most the proxy holds what the broker sends a member after telling it it is active;
/// it lets it go as soon as the broker has sent the resend a second time (the member asks
/// for a rewind ~0.5 s after the announcement, here).
const HOLD: Duration = Duration::from_secs(20);

/// What the proxy saw, for the test's assertions and its printout.
#[derive(Default)]
struct Seen {
    /// Set by the test: hold messages after the next "you are active" announcement.
    armed: AtomicBool,
    /// Messages the broker sent the announced member while they were held.
    messages_after_announcement: AtomicUsize,
    /// Redelivery requests (rewinds) the client sent.
    rewinds: AtomicUsize,
    /// Bumped by the test to cut every connection open at that moment.
    cuts: tokio::sync::watch::Sender<u64>,
    /// Messages the broker sent, all consumers and connections together.
    messages: AtomicUsize,
    /// Set by the test: how many of the next subscribes are answered with a
    /// `PersistenceError` in place of the broker's success.
    refuse_subscribes: AtomicUsize,
    /// The request ids of subscribes to refuse, once the broker answers them.
    refusing: std::sync::Mutex<Vec<u64>>,
    /// Subscribes answered with the error.
    refused: AtomicUsize,
}

/// A TCP proxy in front of the broker's binary port. Lookups are answered with the proxy's
/// address, so every connection of the client goes through it. Once armed, the messages the
/// broker sends a consumer after announcing it active are held until the broker has sent two
/// (the single batched message, twice) or for `HOLD`, then forwarded in order; everything
/// else passes at once.
async fn proxy(broker: String, seen: Arc<Seen>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let own_url = format!("pulsar://{address}");
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let broker = broker.clone();
            let own_url = own_url.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(upstream) = TcpStream::connect(&broker).await else {
                    return;
                };
                let mut cut = seen.cuts.subscribe();
                let (client_read, client_write) = client.into_split();
                let (broker_read, broker_write) = upstream.into_split();
                // Cutting drops both directions, closing both sockets.
                tokio::select! {
                    _ = async {
                        tokio::join!(
                            client_to_broker(client_read, broker_write, seen.clone()),
                            broker_to_client(broker_read, client_write, own_url, seen.clone()),
                        )
                    } => {}
                    _ = cut.changed() => {}
                }
            });
        }
    });
    address
}

/// Reads one frame (`[total size][command size][command][payload…]`): the command and the
/// frame's bytes as read.
async fn read_frame(from: &mut tokio::net::tcp::OwnedReadHalf) -> Option<(BaseCommand, Bytes)> {
    let total = from.read_u32().await.ok()? as usize;
    let mut frame = vec![0u8; 4 + total];
    frame[..4].copy_from_slice(&(total as u32).to_be_bytes());
    from.read_exact(&mut frame[4..]).await.ok()?;
    let command_size = u32::from_be_bytes(frame[4..8].try_into().ok()?) as usize;
    let command = BaseCommand::decode(&frame[8..8 + command_size]).ok()?;
    Some((command, Bytes::from(frame)))
}

async fn client_to_broker(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Seen>,
) {
    while let Some((command, frame)) = read_frame(&mut from).await {
        if command.r#type == Type::RedeliverUnacknowledgedMessages as i32 {
            seen.rewinds.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(subscribe) = &command.subscribe
            && seen
                .refuse_subscribes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
        {
            seen.refusing.lock().unwrap().push(subscribe.request_id);
        }
        if to.write_all(&frame).await.is_err() {
            return;
        }
    }
}

async fn broker_to_client(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    own_url: String,
    seen: Arc<Seen>,
) {
    // The consumer told it is active, and until when its messages are held.
    let mut holding: Option<(u64, Instant)> = None;
    let mut held: Vec<Bytes> = Vec::new();
    loop {
        let release_at = holding.map(|(_, until)| until);
        let next = tokio::select! {
            next = read_frame(&mut from) => next,
            _ = tokio::time::sleep_until(release_at.unwrap_or_else(Instant::now)), if release_at.is_some() => {
                holding = None;
                for frame in held.drain(..) {
                    if to.write_all(&frame).await.is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        let Some((mut command, mut frame)) = next else {
            return;
        };
        if let Some(lookup) = &mut command.lookup_topic_response
            && lookup.broker_service_url.is_some()
        {
            lookup.broker_service_url = Some(own_url.clone());
            frame = encode_frame(&command);
        }
        if let Some(change) = &command.active_consumer_change
            && change.is_active == Some(true)
            && seen.armed.swap(false, Ordering::AcqRel)
        {
            holding = Some((change.consumer_id, Instant::now() + HOLD));
        }
        if let Some(success) = &command.success
            && let Some(refused) = {
                let mut refusing = seen.refusing.lock().unwrap();
                let at = refusing.iter().position(|id| *id == success.request_id);
                at.map(|at| refusing.remove(at))
            }
        {
            seen.refused.fetch_add(1, Ordering::Relaxed);
            frame = persistence_error(refused);
        }
        if command.message.is_some() {
            seen.messages.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(message) = &command.message
            && let Some((consumer, _)) = holding
            && message.consumer_id == consumer
        {
            seen.messages_after_announcement
                .fetch_add(1, Ordering::Relaxed);
            held.push(frame);
            if held.len() < 2 {
                continue;
            }
            holding = None;
            for frame in held.drain(..) {
                if to.write_all(&frame).await.is_err() {
                    return;
                }
            }
            continue;
        }
        if to.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// A command alone in a frame (`[total size][command size][command]`), as [`read_frame`]
/// reads it.
fn encode_frame(command: &BaseCommand) -> Bytes {
    let encoded = command.encode_to_vec();
    let mut frame = Vec::with_capacity(8 + encoded.len());
    frame.extend_from_slice(&(4 + encoded.len() as u32).to_be_bytes());
    frame.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    frame.extend_from_slice(&encoded);
    Bytes::from(frame)
}

/// The error frame a broker sends for request `request_id` when its metadata store fails.
fn persistence_error(request_id: u64) -> Bytes {
    encode_frame(&BaseCommand {
        r#type: Type::Error as i32,
        error: Some(CommandError {
            request_id,
            error: ServerError::PersistenceError as i32,
            message: "org.apache.bookkeeper.mledger.ManagedLedgerException: Error while using \
                      MetaStore error code: -18 (injected by the test's proxy)"
                .to_owned(),
        }),
        ..Default::default()
    })
}

/// A backend connected through [`proxy`] (batching producers), and a new 1-partition stream.
struct Proxied {
    backend: Arc<dyn Backend>,
    topic: String,
    seen: Arc<Seen>,
}

async fn through_proxy(url: &str) -> Proxied {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_writer(std::io::stderr)
        .try_init();
    let (service, query) = url.split_once('?').unwrap();
    let broker = service.trim_start_matches("pulsar://").to_owned();
    let seen = Arc::new(Seen::default());
    let address = proxy(broker, seen.clone()).await;
    tributary_pulsar::register();
    let backend: Arc<dyn Backend> = tributary::connect(&format!(
        "pulsar://{address}?{query}&batch_size=100&batch_delay=50ms"
    ))
    .await
    .expect("connect through the proxy");
    let topic = unique_name("takeover");
    backend
        .create_stream(&topic, StreamSpec::with_partitions(1))
        .await
        .expect("create stream");
    Proxied {
        backend,
        topic,
        seen,
    }
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The scenario of `semantics::a_partly_acked_batch_is_not_lost_in_a_crash`, with the
/// broker's resend to the second member held back until the broker has sent it again, which
/// it does when that member asks for a rewind:
/// the second member delivers each of the batch's events once, in order, and nothing is
/// lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewind_that_crosses_the_resend_delivers_nothing_twice() {
    let server = require_peer!(Peer::Pulsar);
    let Proxied {
        backend,
        topic,
        seen,
    } = through_proxy(server.url()).await;
    let group = unique_name("g");
    let options = || ConsumerOptions::new(&group).start(StartPosition::Earliest);

    let first = backend.consumer(&topic, options()).await.unwrap();
    let producer = backend.producer(&topic).await.unwrap();
    let sent: Vec<Event> = (0..10).map(|i| Event::new(format!("b{i}"))).collect();
    producer.send_batch(sent).await.unwrap();
    for i in 0..10 {
        let d = first.receive_timeout(WAIT).await.unwrap().unwrap();
        if i % 2 == 0 {
            d.ack();
        } else {
            std::mem::forget(d.handle); // never settled, as in a crash
        }
    }
    first.commit().await.unwrap();
    first.close().await.unwrap();

    seen.armed.store(true, Ordering::Release);
    let second = backend.consumer(&topic, options()).await.unwrap();
    let mut again = Vec::new();
    while again.len() < 10 {
        let Some(d) = second.receive_timeout(WAIT).await.unwrap() else {
            break;
        };
        again.push(text(&d.event.payload));
        d.ack();
    }
    while let Some(d) = second
        .receive_timeout(Duration::from_secs(3))
        .await
        .unwrap()
    {
        again.push(text(&d.event.payload));
        d.ack();
    }
    let rewinds = seen.rewinds.load(Ordering::Relaxed);
    let resent = seen.messages_after_announcement.load(Ordering::Relaxed);
    println!(
        "while the resend was held, the member asked for {rewinds} rewind(s) and the broker sent the batch {resent} time(s); the member delivered {} event(s)",
        again.len()
    );
    assert!(
        rewinds >= 1 && resent >= 2,
        "the interleaving was not forced: {rewinds} rewind(s), the batch sent {resent} time(s)"
    );
    let all: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    assert_eq!(
        again, all,
        "each event of the batch once, in order, though the broker sent it {resent} times"
    );
    second.commit().await.unwrap();
    second.close().await.unwrap();
    let third = backend.consumer(&topic, options()).await.unwrap();
    assert!(
        third
            .receive_timeout(Duration::from_secs(2))
            .await
            .unwrap()
            .is_none(),
        "a fully acked batch is not delivered again"
    );
}

/// The client's connection to the broker lost while a member holds a batch of ten (three
/// delivered and acked, seven queued): the crate subscribes again and the broker, making the
/// member active again, sends the whole batch again (acked in part, it is unacknowledged to
/// the broker). Each event is delivered once (before the fix, twice: 20 deliveries in 3 of 3
/// runs, the symptom of `semantics::a_partly_acked_batch_is_not_lost_in_a_crash`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_delivers_nothing_twice() {
    let server = require_peer!(Peer::Pulsar);
    let Proxied {
        backend,
        topic,
        seen,
    } = through_proxy(server.url()).await;
    let group = unique_name("g");
    let consumer = backend
        .consumer(
            &topic,
            ConsumerOptions::new(&group).start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let producer = backend.producer(&topic).await.unwrap();
    let sent: Vec<Event> = (0..10).map(|i| Event::new(format!("b{i}"))).collect();
    producer.send_batch(sent).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = consumer.receive_timeout(WAIT).await.unwrap().unwrap();
        got.push(text(&d.event.payload));
        d.ack();
    }
    consumer.commit().await.unwrap();
    let before = seen.messages.load(Ordering::Relaxed);
    let cut_at = Instant::now();
    seen.cuts.send_modify(|cuts| *cuts += 1);
    // Until the broker has sent the batch again (after the crate's new subscription and the
    // broker's 1 s failover delay), then until nothing more comes for 2 s. What comes is
    // acked only then: acked earlier, the batch could be acknowledged to the broker before
    // its resend, which would then not happen (1 run in 6).
    let deadline = cut_at + Duration::from_secs(60);
    let mut resent_after = None;
    let mut unsettled = Vec::new();
    loop {
        if resent_after.is_none() && seen.messages.load(Ordering::Relaxed) > before {
            resent_after = Some(cut_at.elapsed());
        }
        let wait = if resent_after.is_some() {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(100)
        };
        match consumer.receive_timeout(wait).await.unwrap() {
            Some(d) => {
                got.push(text(&d.event.payload));
                unsettled.push(d);
            }
            None if resent_after.is_some() => break,
            None => assert!(
                Instant::now() < deadline,
                "the broker did not send the batch again within 60 s of the cut ({} delivered)",
                got.len()
            ),
        }
    }
    println!(
        "the broker sent the batch again {resent_after:?} after the connection was cut; the member delivered {} event(s) in all",
        got.len()
    );
    let all: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    assert_eq!(got, all, "each event of the batch once, in order");
    for d in unsettled {
        d.ack();
    }
    consumer.commit().await.unwrap();
    consumer.close().await.unwrap();
}

/// A subscribe the broker answers with a `PersistenceError` (its metadata store failing for a
/// moment, as a loaded standalone did in CI) is tried again: the consumer opens and reads.
/// Before the crate's retry list had it, opening the consumer failed with the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_answered_with_a_persistence_error_is_tried_again() {
    let server = require_peer!(Peer::Pulsar);
    let Proxied {
        backend,
        topic,
        seen,
    } = through_proxy(server.url()).await;
    let producer = backend.producer(&topic).await.unwrap();
    producer
        .send(Event::new("after the refusal"))
        .await
        .unwrap();
    seen.refuse_subscribes.store(1, Ordering::Release);
    let group = unique_name("g");
    let opened = Instant::now();
    let consumer = backend
        .consumer(
            &topic,
            ConsumerOptions::new(&group).start(StartPosition::Earliest),
        )
        .await
        .expect("the consumer opens after its refused subscribe is tried again");
    let d = consumer
        .receive_timeout(WAIT)
        .await
        .unwrap()
        .expect("event");
    assert_eq!(text(&d.event.payload), "after the refusal");
    d.ack();
    assert_eq!(
        seen.refused.load(Ordering::Relaxed),
        1,
        "one subscribe refused"
    );
    println!(
        "one subscribe refused with PersistenceError; the consumer opened and read after {:?}",
        opened.elapsed()
    );
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
}
