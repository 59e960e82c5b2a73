//! Receiving: one consumer-group member per tributary consumer, driven by a dedicated thread.
//!
//! librdkafka is a blocking C library whose rebalance callbacks run inside `poll`; a thread of
//! its own ([`driver`]) keeps every blocking call (poll, commit, offset lookups during a
//! rebalance) off the async runtime. Fetched events wait in a bounded queue that `receive()`
//! takes from ([`state`]), so a revoked partition's events can be withdrawn before the
//! application sees them ([`rebalance`]); outcomes are applied to that state by whoever
//! settles a delivery.
//!
//! Commits come from the core [`AckTracker`](tributary::backend::AckTracker): per partition,
//! the end of the longest acked prefix, never past an unacked event. Auto-commit and the offset
//! store stay off; commits are made on a thread of their own ([`commit`]).

mod commit;
mod driver;
mod member;
mod rebalance;
mod state;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::{Condvar, Mutex};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use tokio::sync::{Notify, oneshot};
use tributary::{Consumer, ConsumerOptions, Delivery, Error, Result, StartPosition};

use crate::config::KafkaConfig;
use crate::error::map;
use commit::{Committer, commit_loop, same_error};
use driver::Driver;
pub(crate) use member::StaticMember;
use rebalance::Context;
use state::{Shared, State};

/// Where the outcome of a commit or close goes.
type Reply = oneshot::Sender<Result<()>>;
/// A close request: `None` when nobody waits for the answer (the consumer was dropped).
type CloseReply = Option<Reply>;

/// What the consumer tells the driver thread. Outcomes do not go this way: they are applied
/// where they are made (see [`state`]).
enum Message {
    /// Stop: commit what is acked, leave the group, then answer (if anyone waits).
    Close(CloseReply),
    /// Commit what is acked now (synchronously), then answer.
    Commit(Reply),
}

pub(crate) struct KafkaConsumer {
    topic: String,
    shared: Arc<Shared>,
    to_driver: std::sync::mpsc::Sender<Message>,
    closed: AtomicBool,
}

impl KafkaConsumer {
    /// Joins the group and returns once the first assignment (with start offsets) is in place.
    pub(crate) async fn start(
        config: &KafkaConfig,
        topic: &str,
        options: ConsumerOptions,
        member: Option<StaticMember>,
    ) -> Result<KafkaConsumer> {
        if let StartPosition::Position(position) = &options.start
            && position.as_offset().is_none()
        {
            return Err(Error::config(format!(
                "start position `{}` is not a Kafka offset (expected a non-negative integer)",
                position.as_str()
            )));
        }
        let (joined_tx, joined_rx) = oneshot::channel();
        let max_in_flight = options.max_in_flight.max(1);
        // How far the driver reads ahead of the application.
        let max_ready = max_in_flight.clamp(64, 4096);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(
                topic,
                options.start.clone(),
                config.timeout,
                max_in_flight,
                max_ready,
                joined_tx,
            )),
            wake: Notify::new(),
            room: Condvar::new(),
            settled: Condvar::new(),
            revoke_grace: config.revoke_grace,
        });
        let (to_driver, inbox) = std::sync::mpsc::channel();
        let context = Context {
            shared: shared.clone(),
        };
        let earliest = matches!(options.start, StartPosition::Earliest);
        let mut client_config = config.consumer_config(&options.group, earliest);
        if let Some(member) = &member {
            client_config.set("group.instance.id", &member.id);
        }
        let consumer: BaseConsumer<Context> = client_config
            .create_with_context(context)
            .map_err(|e| map(e, &format!("create a consumer for `{topic}`")))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| map(e, &format!("subscribe to `{topic}`")))?;

        let consumer = Arc::new(consumer);
        let (jobs, queued) = std::sync::mpsc::channel();
        let periodic_queued = Arc::new(AtomicBool::new(false));
        let committer = {
            let (consumer, shared) = (consumer.clone(), shared.clone());
            let periodic_queued = periodic_queued.clone();
            std::thread::Builder::new()
                .name(format!("kafka-commit-{topic}"))
                .spawn(move || commit_loop(&consumer, &shared, &queued, &periodic_queued))
                .map_err(|e| {
                    Error::other(format!("cannot start the commit thread for `{topic}`: {e}"))
                })?
        };
        let driver = Driver {
            consumer,
            committer: Some(Committer {
                jobs,
                thread: committer,
                periodic_queued,
            }),
            shared: shared.clone(),
            max_ready,
            max_ready_bytes: 16 << 20,
            paused: false,
            batch: Vec::with_capacity(512),
            arena: crate::fetched::Arena::new(),
            commit_interval: config.commit_interval,
            group: options.group.clone(),
            inbox,
            ends_refreshed: Instant::now(),
            _member: member,
        };
        std::thread::Builder::new()
            .name(format!("kafka-consumer-{topic}"))
            .spawn(move || driver.run())
            .map_err(|e| {
                Error::other(format!(
                    "cannot start the consumer thread for `{topic}`: {e}"
                ))
            })?;

        let consumer = KafkaConsumer {
            topic: topic.to_string(),
            shared,
            to_driver,
            closed: AtomicBool::new(false),
        };
        match tokio::time::timeout(config.join_timeout, joined_rx).await {
            Ok(Ok(Ok(()))) => Ok(consumer),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::other(format!(
                "the consumer thread for `{topic}` stopped while joining"
            ))),
            Err(_) => Err(Error::timeout(format!(
                "group `{}` got no partitions of `{topic}` within {:?} (join_timeout)",
                options.group, config.join_timeout
            ))),
        }
    }

    /// Makes the driver read its inbox now rather than after waiting for queue room.
    fn wake_driver(&self) {
        self.shared.state.lock().command_waiting = true;
        self.shared.room.notify_one();
    }

    /// Takes up to `max` ready deliveries into `into` under one lock; `Some` when the caller
    /// should stop waiting: deliveries were taken (`Ok(())`), or the consumer cannot deliver.
    fn try_take(&self, max: usize, into: &mut Vec<Delivery>) -> Option<Result<()>> {
        if self.closed.load(Ordering::Acquire) {
            return Some(Err(self.closed_error()));
        }
        let mut state = self.shared.state.lock();
        // The consumer cannot go on after such an error: every later receive reports it too.
        if let Some(error) = &state.failure {
            return Some(Err(same_error(error)));
        }
        if state.take(max, &self.shared, into) > 0 {
            return Some(Ok(()));
        }
        state.stopped.then(|| Err(self.closed_error()))
    }

    /// Waits until at least one delivery is taken into `into` (at most `max`), or `deadline`.
    async fn take_some(
        &self,
        max: usize,
        into: &mut Vec<Delivery>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<()> {
        loop {
            if let Some(outcome) = self.try_take(max, into) {
                return outcome;
            }
            // Register interest, then look again, so a wake-up between the first look and the
            // wait is not lost (and the common case, an event ready, skips the registration).
            let notified = self.shared.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(outcome) = self.try_take(max, into) {
                return outcome;
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Ok(());
                    }
                }
                None => notified.await,
            }
        }
    }

    fn closed_error(&self) -> Error {
        Error::closed(format!("consumer of `{}` is closed", self.topic))
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn receive(&self) -> Result<Delivery> {
        let mut one = Vec::with_capacity(1);
        self.take_some(1, &mut one, None).await?;
        Ok(one.pop().expect("take_some returns with a delivery"))
    }

    /// What `receive` would return at once, without its boxed future: the stamping layer every
    /// consumer sits in asks this first.
    fn try_receive(&self) -> Option<Result<Delivery>> {
        // `try_take` without its vector: one allocation per event fewer.
        if self.closed.load(Ordering::Acquire) {
            return Some(Err(self.closed_error()));
        }
        let mut state = self.shared.state.lock();
        if let Some(error) = &state.failure {
            return Some(Err(same_error(error)));
        }
        if let Some(delivery) = state.next(&self.shared) {
            return Some(Ok(delivery));
        }
        state.stopped.then(|| Err(self.closed_error()))
    }

    /// Drains the ready queue under one lock per call, rather than one lock and one wake-up
    /// per event.
    async fn receive_batch(&self, max: usize, linger: Duration) -> Result<Vec<Delivery>> {
        let max = max.max(1);
        let mut batch = Vec::new();
        self.take_some(max, &mut batch, None).await?;
        if batch.len() < max && !linger.is_zero() {
            let deadline = tokio::time::Instant::now() + linger;
            while batch.len() < max && tokio::time::Instant::now() < deadline {
                // An error now is reported on the next call: the batch in hand goes out.
                if self
                    .take_some(max - batch.len(), &mut batch, Some(deadline))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        Ok(batch)
    }

    async fn commit(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        self.to_driver
            .send(Message::Commit(reply_tx))
            .map_err(|_| self.closed_error())?;
        self.wake_driver();
        reply_rx.await.map_err(|_| self.closed_error())?
    }

    fn lag(&self) -> Option<u64> {
        self.shared.state.lock().lag()
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.shared.wake.notify_waiters();
        let (reply_tx, reply_rx) = oneshot::channel();
        if self.to_driver.send(Message::Close(Some(reply_tx))).is_err() {
            return Ok(());
        }
        self.wake_driver();
        reply_rx.await.unwrap_or(Ok(()))
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            // Like a crash of this member: acked work is committed, the rest is redelivered to
            // whoever takes the partitions over.
            let _ = self.to_driver.send(Message::Close(None));
        }
    }
}
