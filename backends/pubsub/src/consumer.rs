//! Receiving: a streaming pull on the group's subscription. The client library extends leases
//! and asks the service for flow control (`max_in_flight` outstanding messages); a task reads
//! the stream as messages arrive into a channel of `max_in_flight` slots, so `receive()` is
//! cancellation safe and a message the service sent does not wait unread in the transport,
//! where the library has not leased it and a close cannot nack it.
//!
//! Closing ends the stream first, then nacks everything leased (parked in the channel, in the
//! application's hands, in the library's pool) and waits for those calls. Nacked while the
//! stream is still open, a message can be handed straight back to the closing consumer (pstest
//! gives it to the only stream, or to the next in its round robin), where nobody reads it. A
//! message the service sent just as the stream ended is known to no client and comes back
//! after the stream's ack deadline, the `ack_deadline` option: the library cannot half-close a
//! stream and read it to its end, which would close that gap too.

use std::time::Duration;

use async_trait::async_trait;
use google_cloud_pubsub::client::Subscriber;
use google_cloud_pubsub::subscriber::ShutdownBehavior;
use google_cloud_pubsub::subscriber::handler::Handler;
use tokio::sync::{Mutex, mpsc, oneshot};
use tributary::backend::CloseGate;
use tributary::{AckHandle, Acknowledge, Consumer, Delivery, Error, Outcome, Result};

use crate::envelope;
use crate::error::map;

struct PubSubAck(Option<Handler>);

impl Acknowledge for PubSubAck {
    fn settle(mut self: Box<Self>, outcome: Outcome) {
        if let Some(handler) = self.0.take() {
            match outcome {
                Outcome::Ack => handler.ack(),
                // modifyAckDeadline 0: the service redelivers at once.
                Outcome::Nack => handler.nack(),
            }
        }
    }
}

pub(crate) struct PubSubConsumer {
    stream: String,
    deliveries: Mutex<mpsc::Receiver<Result<Delivery>>>,
    stop: std::sync::Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
    /// Only its closed flag is used: a `receive` waiting for a message must not hold off
    /// `close`.
    gate: CloseGate,
}

impl PubSubConsumer {
    pub(crate) fn start(
        subscriber: &Subscriber,
        stream: &str,
        subscription: &str,
        max_in_flight: usize,
        ack_deadline: Duration,
    ) -> PubSubConsumer {
        let max_in_flight = max_in_flight.max(1);
        let mut messages = subscriber
            .subscribe(subscription)
            .set_max_outstanding_messages(max_in_flight as i64)
            // The stream's ack deadline, which for a streaming pull replaces the
            // subscription's (pstest: fake.go sets a delivered message's deadline from the
            // stream's): a message still on the wire when the stream closed comes back after
            // this rather than the library's default of 60 s.
            .set_max_lease_extension(ack_deadline)
            .set_shutdown_behavior(ShutdownBehavior::NackImmediately)
            .build();
        // As many slots as the service may hand out, so the task keeps reading the stream.
        let (tx, rx) = mpsc::channel(max_in_flight);
        let (stop_tx, mut stop_rx) = oneshot::channel::<oneshot::Sender<()>>();
        let name = stream.to_string();
        let subscription = subscription.to_string();
        tokio::spawn(async move {
            // Both waits (for the next message, and for room in the channel) give way to a
            // stop, or `close` would wait forever on a pull parked behind an unread delivery.
            let done = loop {
                let next = tokio::select! {
                    done = &mut stop_rx => break done.ok(),
                    next = messages.next() => next,
                };
                let item = match next {
                    Some(Ok((message, handler))) => {
                        let publish_ms = message
                            .publish_time
                            .as_ref()
                            .map(|t| t.seconds() * 1000 + i64::from(t.nanos()) / 1_000_000);
                        let (event, problem) = envelope::decode(
                            message.data,
                            message.attributes,
                            message.ordering_key,
                            publish_ms,
                        );
                        if let Some(problem) = problem {
                            tracing::warn!(stream = %name, message_id = %message.message_id, %problem, "pubsub: message read as a plain event");
                        }
                        let attempt = handler
                            .delivery_attempt()
                            .and_then(|a| u32::try_from(a).ok());
                        Ok(Delivery {
                            event,
                            partition: None,
                            position: None,
                            attempt,
                            handle: AckHandle::new(Box::new(PubSubAck(Some(handler)))),
                        })
                    }
                    Some(Err(error)) => Err(map(
                        &error,
                        &format!("pull from subscription `{subscription}`"),
                    )),
                    None => return,
                };
                let failed = item.is_err();
                // The channel has room for every outstanding message, so this waits only if
                // the service sends more than `max_in_flight` (pstest has no flow control).
                let sent = tokio::select! {
                    done = &mut stop_rx => break done.ok(),
                    sent = tx.send(item) => sent,
                };
                if sent.is_err() {
                    // The consumer is gone or closing.
                    break None;
                }
                if failed {
                    return;
                }
            };
            // The stream ends first (dropping it cancels the call, so the service stops
            // handing this consumer messages), then the lease loop sends pending acks, nacks
            // every message still leased, and stops extending leases. The shutdown waits for
            // those calls.
            let shutdown = messages.shutdown_token();
            drop(messages);
            shutdown.shutdown().await;
            if let Some(done) = done {
                let _ = done.send(());
            }
        });
        PubSubConsumer {
            stream: stream.to_string(),
            deliveries: Mutex::new(rx),
            stop: std::sync::Mutex::new(Some(stop_tx)),
            gate: CloseGate::new(format!("consumer of `{stream}`")),
        }
    }

    /// The pull ended (after a pull error was delivered, or on close).
    fn ended_error(&self) -> Error {
        Error::closed(format!("consumer of `{}` is closed", self.stream))
    }
}

#[async_trait]
impl Consumer for PubSubConsumer {
    async fn receive(&self) -> Result<Delivery> {
        self.gate.check()?;
        let mut deliveries = self.deliveries.lock().await;
        match deliveries.recv().await {
            Some(item) => item,
            None => Err(self.ended_error()),
        }
    }

    async fn close(&self) -> Result<()> {
        if !self.gate.close().await {
            return Ok(());
        }
        // Nothing is nacked before the pull's stream ends (see the module's docs): the stop
        // ends the stream, then nacks everything still leased, the deliveries parked in the
        // channel included, and answers once those calls are done.
        let stop = self.stop.lock().ok().and_then(|mut s| s.take());
        if let Some(stop) = stop {
            let (done_tx, done_rx) = oneshot::channel();
            if stop.send(done_tx).is_ok() {
                // Answered, or dropped when the task ends, after its shutdown either way.
                let _ = done_rx.await;
            }
        }
        // Already nacked by the shutdown; what a `receive` in progress did not take goes.
        discard_parked(&mut *self.deliveries.lock().await);
        Ok(())
    }

    /// Pub/Sub acks are individually durable on the server: nothing to persist here.
    async fn commit(&self) -> Result<()> {
        Ok(())
    }

    /// The backlog of a subscription is known only to Cloud Monitoring.
    fn lag(&self) -> Option<u64> {
        None
    }
}

impl Drop for PubSubConsumer {
    fn drop(&mut self) {
        // The task sees the stop signal (or the closed channel) and shuts the stream down.
        if let Ok(mut stop) = self.stop.lock()
            && let Some(stop) = stop.take()
        {
            let (done_tx, _) = oneshot::channel();
            let _ = stop.send(done_tx);
        }
    }
}

fn discard_parked(deliveries: &mut mpsc::Receiver<Result<Delivery>>) {
    deliveries.close();
    while let Ok(parked) = deliveries.try_recv() {
        drop(parked);
    }
}
