//! Receiving: a streaming pull on the group's subscription. The client library extends leases
//! and enforces flow control (`max_in_flight` outstanding messages); a task moves messages into
//! a one-slot channel so that `receive()` is cancellation safe.

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
    ) -> PubSubConsumer {
        let mut messages = subscriber
            .subscribe(subscription)
            .set_max_outstanding_messages(max_in_flight.max(1) as i64)
            .set_shutdown_behavior(ShutdownBehavior::NackImmediately)
            .build();
        let shutdown = messages.shutdown_token();
        let (tx, rx) = mpsc::channel(1);
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
                let sent = tokio::select! {
                    // The delivery not handed out is dropped, which nacks it.
                    done = &mut stop_rx => break done.ok(),
                    sent = tx.send(item) => sent,
                };
                if let Err(unsent) = sent {
                    // Nacked before the shutdown, while the stream can still carry the nack.
                    drop(unsent);
                    shutdown.shutdown().await;
                    return;
                }
                if failed {
                    return;
                }
            };
            // Leased but undelivered messages go back to the service at once.
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
        // Deliveries parked in the channel are nacked (dropping one nacks it) while the pull
        // still runs, so the service hands them to another member at once rather than after
        // their ack deadline. Closing the channel also ends a pull task waiting to hand one
        // over. A `receive` in progress holds the lock: then the stop below ends it first.
        if let Ok(mut deliveries) = self.deliveries.try_lock() {
            nack_parked(&mut deliveries);
        }
        let stop = self.stop.lock().ok().and_then(|mut s| s.take());
        if let Some(stop) = stop {
            let (done_tx, done_rx) = oneshot::channel();
            if stop.send(done_tx).is_ok() {
                // Answered, or dropped when the task ends, after its shutdown either way.
                let _ = done_rx.await;
            }
        }
        nack_parked(&mut *self.deliveries.lock().await);
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

fn nack_parked(deliveries: &mut mpsc::Receiver<Result<Delivery>>) {
    deliveries.close();
    while let Ok(parked) = deliveries.try_recv() {
        drop(parked);
    }
}
