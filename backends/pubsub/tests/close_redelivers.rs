//! What a consumer holds when it closes goes back to its group: the deliveries in the
//! application's hands and the ones parked in the consumer reach the next consumer at once, and
//! what was still on its way from the server when the stream closed comes back after the ack
//! deadline the backend was given (not the client library's 60 s).
//!
//! Rounds of consumers take turns on one subscription. A round that takes every unacked event
//! leaves nothing on the wire, so the next round must get them all sooner than any lease could
//! run out. A round that stops after a few, with a one-message in-flight limit that pstest does
//! not enforce, closes with messages the server sent but the consumer never read (no client
//! can nack those), so the next round gets them within the ack deadline.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::{Instant, timeout_at};
use tributary::{ConsumerOptions, Delivery, Event, StreamSpec};
use tributary_testcontainers::{Peer, require_peer, unique_name};

/// Pub/Sub's shortest ack deadline, for the subscription and the streaming pull's leases.
const ACK_DEADLINE: Duration = Duration::from_secs(10);
/// Below the ack deadline: only a nack on close brings a message back this soon. pstest hands
/// a stream about 90 messages a second, so this is ten times what a round needs.
const AT_ONCE: Duration = Duration::from_secs(7);
/// The ack deadline and the same margin of ten times a round's time.
const WITHIN_DEADLINE: Duration = Duration::from_secs(10 + 7);
const EVENTS: usize = 60;
const ROUNDS: usize = 9;
/// How long a round that stops early leaves the server to push messages it will not read. Not
/// a synchronisation: the outcome does not depend on it, only how many messages are stranded.
const UNREAD_PAUSE: Duration = Duration::from_millis(300);

#[derive(Clone, Copy, PartialEq)]
enum Round {
    /// Takes every unacked event, acks two, holds the rest through the close.
    TakeAll,
    /// Takes three, acks two, holds one, then pauses; the rest are parked, or sent by the
    /// server and unread, at the close.
    StopEarly,
}

fn payload(delivery: &Delivery) -> String {
    String::from_utf8(delivery.event.payload.to_vec()).expect("utf-8 payload")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_consumers_events_reach_the_next_consumer() {
    let server = require_peer!(Peer::PubSub);
    tributary_pubsub::register();
    let backend = tributary::connect(&format!(
        "{}&ack_deadline={}s",
        server.url(),
        ACK_DEADLINE.as_secs()
    ))
    .await
    .expect("connect");
    let topic = unique_name("close-redelivers");
    backend
        .create_stream(&topic, StreamSpec::default())
        .await
        .expect("create");
    let group = "g";
    let open = async |round: Round| {
        let options = match round {
            Round::TakeAll => ConsumerOptions::new(group),
            Round::StopEarly => ConsumerOptions::new(group).max_in_flight(1),
        };
        backend.consumer(&topic, options).await.expect("consumer")
    };
    // The subscription exists before the events are sent: a new one starts at latest.
    let mut next = Some(open(Round::TakeAll).await);
    let producer = backend.producer(&topic).await.expect("producer");
    let sent: Vec<String> = (0..EVENTS).map(|i| format!("ev-{i}")).collect();
    producer
        .send_batch(sent.iter().map(|p| Event::new(p.clone())).collect())
        .await
        .expect("send");

    let mut acked: HashSet<String> = HashSet::new();
    let mut previous = Round::TakeAll;
    for n in 0..=ROUNDS {
        // Every third round stops early; the last one only checks.
        let round = if n % 3 == 2 && n < ROUNDS {
            Round::StopEarly
        } else {
            Round::TakeAll
        };
        let consumer = match next.take() {
            Some(consumer) => consumer,
            None => open(round).await,
        };
        let outstanding = EVENTS - acked.len();
        let want = match round {
            Round::TakeAll => outstanding,
            Round::StopEarly => outstanding.min(3),
        };
        let bound = match previous {
            Round::TakeAll => AT_ONCE,
            Round::StopEarly => WITHIN_DEADLINE,
        };
        let deadline = Instant::now() + bound;
        let mut held: Vec<Delivery> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        while seen.len() < want {
            let Ok(received) = timeout_at(deadline, consumer.receive()).await else {
                let mut missing: Vec<&String> = sent
                    .iter()
                    .filter(|p| !acked.contains(*p) && !seen.contains(*p))
                    .collect();
                missing.sort();
                panic!(
                    "round {n}: {} of the {want} wanted of {outstanding} unacked events within {bound:?} of the previous consumer's close; missing {missing:?}",
                    seen.len()
                );
            };
            let delivery = received.expect("receive");
            let p = payload(&delivery);
            assert!(
                !acked.contains(&p),
                "round {n}: {p} was acked before a close and delivered again"
            );
            if seen.insert(p) {
                held.push(delivery);
            }
        }
        if n == ROUNDS {
            for d in held {
                d.ack();
            }
            consumer.close().await.expect("close");
            break;
        }
        // Two acked for progress; the rest stay in hand, unsettled, through the close.
        for d in held.drain(..2.min(held.len())) {
            acked.insert(payload(&d));
            d.ack();
        }
        if round == Round::StopEarly {
            tokio::time::sleep(UNREAD_PAUSE).await;
        }
        consumer.close().await.expect("close");
        drop(held);
        previous = round;
    }
}
