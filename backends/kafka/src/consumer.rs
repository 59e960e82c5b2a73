//! Receiving: one consumer-group member per tributary consumer, driven by a dedicated thread.
//!
//! librdkafka is a blocking C library whose rebalance callbacks run inside `poll`; a thread of
//! its own keeps every blocking call (poll, commit, offset lookups during a rebalance) off the
//! async runtime. Fetched events wait in a bounded queue that `receive()` takes from, so a
//! revoked partition's events can be withdrawn before the application sees them; outcomes come
//! back through a channel that holds at most one message per delivery in flight.
//!
//! Commits come from the core [`AckTracker`]: per partition, the end of the longest acked
//! prefix, never past an unacked event. Auto-commit and the offset store stay off. They are
//! made synchronously (librdkafka reports the outcome of an asynchronous commit only to a C
//! callback that rdkafka does not install) on a committer thread of their own, so a broker slow
//! to answer, or a coordinator librdkafka waits for, never stops the driver from fetching and
//! serving rebalances.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, RebalanceProtocol,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{Notify, oneshot};
use tributary::{
    AckHandle, AckTracker, Acknowledge, Consumer, ConsumerOptions, Delivery, Error, Event, Headers,
    Outcome, PartitionId, Position, Result, StartPosition, Ticket, Timestamp,
};

use crate::config::KafkaConfig;
use crate::error::map;

/// What the rest of the process tells the driver thread.
enum Message {
    Settle(Settle),
    /// Stop: commit what is acked, leave the group, then answer (if anyone waits).
    Close(Option<oneshot::Sender<Result<()>>>),
    /// Commit what is acked now (synchronously), then answer.
    Commit(oneshot::Sender<Result<()>>),
}

struct Settle {
    partition: i32,
    generation: u64,
    ticket: Ticket,
    offset: i64,
    attempt: u32,
    outcome: Outcome,
    event: Event,
}

/// The acknowledgement handle behind each [`Delivery`].
struct KafkaAck {
    settle: Option<Settle>,
    to_driver: std::sync::mpsc::Sender<Message>,
}

impl Acknowledge for KafkaAck {
    fn settle(mut self: Box<Self>, outcome: Outcome) {
        if let Some(mut settle) = self.settle.take() {
            settle.outcome = outcome;
            // The driver may be gone (consumer closed): the outcome no longer matters then.
            let _ = self.to_driver.send(Message::Settle(settle));
        }
    }
}

/// An event waiting to be handed to the application.
struct Pending {
    partition: i32,
    offset: i64,
    event: Event,
    /// `Some` for a redelivery: the generation and ticket it already has.
    redelivery: Option<(u64, Ticket)>,
    attempt: u32,
}

struct PartitionState {
    /// Changes with every assignment, so outcomes of deliveries from an earlier assignment are
    /// recognised and ignored.
    generation: u64,
    tracker: AckTracker<i64>,
    /// The offset last committed (next to read), to skip commits that change nothing.
    committed: Option<i64>,
}

/// Shared by the driver thread, the rebalance callback (which runs inside `poll` on that same
/// thread) and `receive()`. Critical sections are short and the lock is never held across
/// `poll` or an await.
struct State {
    topic: String,
    start: StartPosition,
    timeout: Duration,
    partitions: HashMap<i32, PartitionState>,
    next_generation: u64,
    /// Fetched (or nacked) events waiting for `receive()`, and their size in bytes.
    ready: VecDeque<Pending>,
    ready_bytes: usize,
    /// Signalled when the ready queue drains to `low_water`, waking a driver that stopped
    /// fetching because it was full.
    room: Arc<parking_lot::Condvar>,
    /// A command (commit, close) is waiting in the driver's inbox: the driver must not sleep
    /// on `room` until it has read it. Without this a per-batch commit waited out the driver's
    /// 100 ms nap whenever the ready queue was full, which capped a bridge at ~5k events/s.
    command_waiting: bool,
    low_water: usize,
    /// Deliveries handed out and not yet settled.
    in_flight: usize,
    max_in_flight: usize,
    /// Set by a rebalance: the driver re-applies its pause decision to the new assignment.
    assignment_changed: bool,
    /// An error for the next `receive()` (a deleted topic, a fatal client error).
    failure: Option<Error>,
    /// The group's lag on the assigned partitions, from librdkafka's statistics (high
    /// watermark minus committed offset); `None` until every assigned partition is known.
    lag: Option<u64>,
    /// The driver has stopped: `receive()` reports the consumer closed.
    stopped: bool,
    close_request: Option<Option<oneshot::Sender<Result<()>>>>,
    commit_requests: Vec<oneshot::Sender<Result<()>>>,
    joined: Option<oneshot::Sender<Result<()>>>,
}

impl State {
    fn commit_list(&self, only: Option<&TopicPartitionList>) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (&partition, state) in &self.partitions {
            if let Some(only) = only
                && only.find_partition(&self.topic, partition).is_none()
            {
                continue;
            }
            if let Some(&last) = state.tracker.committed() {
                let next = last + 1;
                if state.committed.is_none_or(|c| c < next) {
                    let _ = list.add_partition_offset(&self.topic, partition, Offset::Offset(next));
                }
            }
        }
        list
    }

    fn mark_committed(&mut self, list: &TopicPartitionList) {
        for element in list.elements() {
            if let (Some(state), Offset::Offset(next)) = (
                self.partitions.get_mut(&element.partition()),
                element.offset(),
            ) {
                state.committed = Some(state.committed.map_or(next, |c| c.max(next)));
            }
        }
    }

    fn apply(&mut self, settle: Settle) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(partition) = self.partitions.get_mut(&settle.partition) else {
            return; // revoked since: the new owner redelivers it
        };
        if partition.generation != settle.generation {
            return;
        }
        match settle.outcome {
            Outcome::Ack => {
                partition.tracker.ack(settle.ticket);
            }
            Outcome::Nack => {
                let generation = partition.generation;
                self.ready_bytes += pending_size(&settle.event);
                self.ready.push_front(Pending {
                    partition: settle.partition,
                    offset: settle.offset,
                    event: settle.event,
                    redelivery: Some((generation, settle.ticket)),
                    attempt: settle.attempt + 1,
                });
            }
        }
    }

    /// Takes the next event for the application, registering it with its partition's tracker.
    fn take(&mut self, to_driver: &std::sync::mpsc::Sender<Message>) -> Option<Delivery> {
        while self.in_flight < self.max_in_flight {
            let pending = self.ready.pop_front()?;
            self.ready_bytes = self
                .ready_bytes
                .saturating_sub(pending_size(&pending.event));
            if self.ready.len() == self.low_water {
                // The driver may be waiting for room (see `Driver::fetch`).
                self.room.notify_one();
            }
            let Some(partition) = self.partitions.get_mut(&pending.partition) else {
                continue;
            };
            let (generation, ticket) = match pending.redelivery {
                Some((generation, ticket)) if generation == partition.generation => {
                    (generation, ticket)
                }
                Some(_) => continue,
                None => (
                    partition.generation,
                    partition.tracker.track(pending.offset),
                ),
            };
            self.in_flight += 1;
            return Some(Delivery {
                event: pending.event.clone(),
                partition: Some(PartitionId::from(pending.partition as u32)),
                position: Some(Position::from_offset(pending.offset as u64)),
                attempt: Some(pending.attempt),
                handle: AckHandle::new(Box::new(KafkaAck {
                    settle: Some(Settle {
                        partition: pending.partition,
                        generation,
                        ticket,
                        offset: pending.offset,
                        attempt: pending.attempt,
                        outcome: Outcome::Nack,
                        event: pending.event,
                    }),
                    to_driver: to_driver.clone(),
                })),
            });
        }
        None
    }
}

struct Context {
    state: Arc<Mutex<State>>,
    /// Outcomes and commands; drained by the driver loop and by the revoke callback, so that
    /// acks made before a rebalance are committed by it.
    inbox: Mutex<std::sync::mpsc::Receiver<Message>>,
    /// Wakes `receive()` callers when events arrive or the consumer stops.
    wake: Arc<Notify>,
}

impl Context {
    fn drain_inbox(&self) {
        let inbox = self.inbox.lock();
        let mut state = self.state.lock();
        while let Ok(message) = inbox.try_recv() {
            match message {
                Message::Settle(settle) => state.apply(settle),
                Message::Close(reply) => state.close_request = Some(reply),
                Message::Commit(reply) => state.commit_requests.push(reply),
            }
        }
        // Settles can free in-flight room or queue redeliveries.
        self.wake.notify_waiters();
    }

    /// The assignment with an explicit offset for every partition: the committed one where the
    /// group has a commit, else the consumer's start position, resolved now so that "latest"
    /// means latest at the moment of joining, not at some later first fetch.
    fn starting_offsets(
        &self,
        consumer: &BaseConsumer<Self>,
        assigned: &TopicPartitionList,
    ) -> (TopicPartitionList, Option<Error>) {
        let (topic, start, timeout) = {
            let state = self.state.lock();
            (state.topic.clone(), state.start.clone(), state.timeout)
        };
        let mut failure = None;
        let committed = match consumer.committed_offsets(assigned.clone(), timeout) {
            Ok(list) => list,
            Err(e) => {
                // Without the commits the fallback (auto.offset.reset) decides; say so loudly.
                tracing::warn!(topic = %topic, error = %e, "kafka: cannot read the group's commits");
                failure = Some(map(e, &format!("read the group's commits on `{topic}`")));
                assigned.clone()
            }
        };
        let end_of = |partition: i32| match consumer.fetch_watermarks(&topic, partition, timeout) {
            Ok((_, high)) => Ok(Offset::Offset(high)),
            Err(e) => Err(map(
                e,
                &format!("find the end of `{topic}` partition {partition}"),
            )),
        };
        let mut result = TopicPartitionList::new();
        let mut by_time = TopicPartitionList::new();
        for element in committed.elements() {
            let partition = element.partition();
            let offset = match (element.offset(), &start) {
                (Offset::Offset(n), _) if n >= 0 => Offset::Offset(n),
                (_, StartPosition::Earliest) => Offset::Beginning,
                (_, StartPosition::Position(position)) => {
                    Offset::Offset(position.as_offset().unwrap_or(0) as i64)
                }
                (_, StartPosition::Timestamp(t)) => {
                    let _ = by_time.add_partition_offset(
                        &topic,
                        partition,
                        Offset::Offset(t.as_millis()),
                    );
                    continue;
                }
                (_, _) => end_of(partition).unwrap_or_else(|e| {
                    failure.get_or_insert(e);
                    Offset::End
                }),
            };
            let _ = result.add_partition_offset(&topic, partition, offset);
        }
        if by_time.count() > 0 {
            match consumer.offsets_for_times(by_time.clone(), timeout) {
                Ok(found) => {
                    for element in found.elements() {
                        let offset = match element.offset() {
                            Offset::Offset(n) if n >= 0 => Offset::Offset(n),
                            // No event at or after the time: start at the end.
                            _ => end_of(element.partition()).unwrap_or(Offset::End),
                        };
                        let _ = result.add_partition_offset(&topic, element.partition(), offset);
                    }
                }
                Err(e) => {
                    failure.get_or_insert(map(e, &format!("look up offsets by time on `{topic}`")));
                    for element in by_time.elements() {
                        let _ =
                            result.add_partition_offset(&topic, element.partition(), Offset::End);
                    }
                }
            }
        }
        (result, failure)
    }
}

impl ClientContext for Context {
    /// Runs inside `poll` every `statistics.interval.ms` (1 s unless configured).
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut state = self.state.lock();
        let Some(topic) = statistics.topics.get(&state.topic) else {
            return;
        };
        let mut lag = 0u64;
        for partition in state.partitions.keys() {
            match topic.partitions.get(partition) {
                Some(p) if p.consumer_lag >= 0 => lag += p.consumer_lag as u64,
                // Not known yet: a partial sum would understate it.
                _ => return,
            }
        }
        state.lag = Some(lag);
    }
}

impl ConsumerContext for Context {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let (assignment, failure) = self.starting_offsets(consumer, tpl);
                let result = if cooperative {
                    consumer.incremental_assign(&assignment)
                } else {
                    consumer.assign(&assignment)
                };
                let mut state = self.state.lock();
                for element in assignment.elements() {
                    let generation = state.next_generation;
                    state.next_generation += 1;
                    let committed = match element.offset() {
                        Offset::Offset(next) => Some(next),
                        _ => None,
                    };
                    state.partitions.insert(
                        element.partition(),
                        PartitionState {
                            generation,
                            tracker: AckTracker::new(),
                            committed,
                        },
                    );
                }
                state.assignment_changed = true;
                tracing::debug!(topic = %state.topic, partitions = assignment.count(), "kafka: partitions assigned");
                if let Some(joined) = state.joined.take() {
                    let outcome = match (result, failure) {
                        (Err(e), _) => Err(map(e, &format!("join the group on `{}`", state.topic))),
                        (Ok(()), Some(e)) => Err(e),
                        (Ok(()), None) => Ok(()),
                    };
                    let _ = joined.send(outcome);
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Acks the application made before this moment count: apply them, then commit
                // for the partitions that go. Their unacked and not-yet-received events are
                // withdrawn here and redelivered by the next owner.
                self.drain_inbox();
                let mut state = self.state.lock();
                let list = state.commit_list(Some(tpl));
                if list.count() > 0 {
                    match consumer.commit(&list, CommitMode::Sync) {
                        Ok(()) => state.mark_committed(&list),
                        Err(e) => {
                            tracing::warn!(topic = %state.topic, error = %e, "kafka: commit on revoke failed")
                        }
                    }
                }
                for element in tpl.elements() {
                    state.partitions.remove(&element.partition());
                }
                let topic = state.topic.clone();
                state
                    .ready
                    .retain(|p| tpl.find_partition(&topic, p.partition).is_none());
                state.ready_bytes = state.ready.iter().map(|p| pending_size(&p.event)).sum();
                state.assignment_changed = true;
                tracing::debug!(topic = %topic, partitions = tpl.count(), "kafka: partitions revoked");
                drop(state);
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "kafka: unassign failed");
                }
            }
            other => {
                tracing::warn!(error = ?other, "kafka: rebalance error; dropping the assignment");
                let mut state = self.state.lock();
                state.partitions.clear();
                state.ready.clear();
                state.ready_bytes = 0;
                state.assignment_changed = true;
                drop(state);
                let _ = consumer.unassign();
            }
        }
    }
}

pub(crate) struct KafkaConsumer {
    topic: String,
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    to_driver: std::sync::mpsc::Sender<Message>,
    closed: AtomicBool,
}

impl KafkaConsumer {
    /// Joins the group and returns once the first assignment (with start offsets) is in place.
    pub(crate) async fn start(
        config: &KafkaConfig,
        topic: &str,
        options: ConsumerOptions,
    ) -> Result<KafkaConsumer> {
        if let StartPosition::Position(position) = &options.start
            && position.as_offset().is_none()
        {
            return Err(Error::config(format!(
                "start position `{}` is not a Kafka offset (expected a non-negative integer)",
                position.as_str()
            ))
            .with_backend("kafka"));
        }
        let (joined_tx, joined_rx) = oneshot::channel();
        let max_in_flight = options.max_in_flight.max(1);
        let state = Arc::new(Mutex::new(State {
            topic: topic.to_string(),
            start: options.start.clone(),
            timeout: config.timeout,
            partitions: HashMap::new(),
            next_generation: 0,
            ready: VecDeque::new(),
            ready_bytes: 0,
            room: Arc::new(parking_lot::Condvar::new()),
            command_waiting: false,
            low_water: max_in_flight.clamp(64, 4096) / 2,
            in_flight: 0,
            max_in_flight,
            assignment_changed: false,
            failure: None,
            lag: None,
            stopped: false,
            close_request: None,
            commit_requests: Vec::new(),
            joined: Some(joined_tx),
        }));
        let wake = Arc::new(Notify::new());
        let (to_driver, inbox) = std::sync::mpsc::channel();
        let context = Context {
            state: state.clone(),
            inbox: Mutex::new(inbox),
            wake: wake.clone(),
        };
        let earliest = matches!(options.start, StartPosition::Earliest);
        let consumer: BaseConsumer<Context> = config
            .consumer(&options.group, earliest)
            .create_with_context(context)
            .map_err(|e| map(e, &format!("create a consumer for `{topic}`")))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| map(e, &format!("subscribe to `{topic}`")))?;

        let consumer = Arc::new(consumer);
        let (jobs, queued) = std::sync::mpsc::channel();
        let periodic_queued = Arc::new(AtomicBool::new(false));
        let committer = {
            let (consumer, state) = (consumer.clone(), state.clone());
            let periodic_queued = periodic_queued.clone();
            std::thread::Builder::new()
                .name(format!("kafka-commit-{topic}"))
                .spawn(move || commit_loop(&consumer, &state, &queued, &periodic_queued))
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
            state: state.clone(),
            wake: wake.clone(),
            // How far the driver reads ahead of the application.
            max_ready: max_in_flight.clamp(64, 4096),
            max_ready_bytes: 16 << 20,
            batch: Vec::with_capacity(512),
            paused: false,
            commit_interval: config.commit_interval,
            group: options.group.clone(),
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
            state,
            wake,
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
            ))
            .with_backend("kafka")),
        }
    }

    /// Makes the driver read its inbox now rather than after waiting for queue room.
    fn wake_driver(&self) {
        let mut state = self.state.lock();
        state.command_waiting = true;
        state.room.notify_one();
    }

    fn try_receive(&self) -> Option<Result<Delivery>> {
        if self.closed.load(Ordering::Acquire) {
            return Some(Err(self.closed_error()));
        }
        let mut state = self.state.lock();
        if let Some(error) = state.failure.take() {
            return Some(Err(error));
        }
        if let Some(delivery) = state.take(&self.to_driver) {
            return Some(Ok(delivery));
        }
        state.stopped.then(|| Err(self.closed_error()))
    }

    fn closed_error(&self) -> Error {
        Error::closed(format!("consumer of `{}` is closed", self.topic)).with_backend("kafka")
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn receive(&self) -> Result<Delivery> {
        loop {
            if let Some(outcome) = self.try_receive() {
                return outcome;
            }
            // Register interest, then look again, so a wake-up between the first look and the
            // wait is not lost (and the common case, an event ready, skips the registration).
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(outcome) = self.try_receive() {
                return outcome;
            }
            notified.await;
        }
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
        self.state.lock().lag
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.wake.notify_waiters();
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

/// The driver's handle on the committer thread.
struct Committer {
    /// `commit()` callers to answer; an empty job is a periodic commit.
    jobs: std::sync::mpsc::Sender<Vec<oneshot::Sender<Result<()>>>>,
    thread: std::thread::JoinHandle<()>,
    /// A periodic commit is queued and not yet taken up by the thread: the next tick adds
    /// none, so ticks do not pile up behind a commit the broker is slow to answer.
    periodic_queued: Arc<AtomicBool>,
}

/// The committer thread: commits what is acked whenever asked, synchronously, and answers the
/// callers. Requests that queued up while a commit was under way share the next one. Stops
/// when the driver drops its end of the queue.
fn commit_loop(
    consumer: &BaseConsumer<Context>,
    state: &Mutex<State>,
    queued: &std::sync::mpsc::Receiver<Vec<oneshot::Sender<Result<()>>>>,
    periodic_queued: &AtomicBool,
) {
    while let Ok(mut replies) = queued.recv() {
        while let Ok(more) = queued.try_recv() {
            replies.extend(more);
        }
        periodic_queued.store(false, Ordering::Release);
        let result = commit_acked(consumer, state);
        if let Err(e) = &result {
            // Typically a rebalance in progress: the next commit carries these offsets.
            tracing::debug!(error = %e, "kafka: commit failed");
        }
        for reply in replies {
            let _ = reply.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(same_error(e)),
            });
        }
    }
}

/// Commits the acked prefixes synchronously. The list is taken when the commit is made, so it
/// holds every ack applied so far.
fn commit_acked(consumer: &BaseConsumer<Context>, state: &Mutex<State>) -> Result<()> {
    let (list, topic) = {
        let state = state.lock();
        (state.commit_list(None), state.topic.clone())
    };
    if list.count() == 0 {
        return Ok(());
    }
    consumer
        .commit(&list, CommitMode::Sync)
        .map_err(|e| map(e, &format!("commit on `{topic}`")))?;
    state.lock().mark_committed(&list);
    Ok(())
}

struct Driver {
    consumer: Arc<BaseConsumer<Context>>,
    /// `None` once the driver has stopped it, at close.
    committer: Option<Committer>,
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    max_ready: usize,
    max_ready_bytes: usize,
    paused: bool,
    /// Reused buffer for one round of fetched messages.
    batch: Vec<Pending>,
    commit_interval: Duration,
    group: String,
}

impl Driver {
    fn run(mut self) {
        let mut last_commit = Instant::now();
        let reply = loop {
            // Cleared before the inbox is read, so a command sent after this point is seen.
            self.state.lock().command_waiting = false;
            self.consumer.context().drain_inbox();
            if let Some(reply) = self.state.lock().close_request.take() {
                break reply;
            }
            let requests = std::mem::take(&mut self.state.lock().commit_requests);
            if !requests.is_empty() {
                self.request_commit(requests);
            }
            let fetched = self.fetch();
            if fetched > 0 {
                self.wake.notify_waiters();
            }
            if last_commit.elapsed() >= self.commit_interval {
                // A failure is retried at the next tick.
                self.request_commit(Vec::new());
                last_commit = Instant::now();
            }
        };
        self.consumer.context().drain_inbox();
        if let Some(committer) = self.committer.take() {
            // Requests already queued are still served; then the thread ends.
            drop(committer.jobs);
            let _ = committer.thread.join();
        }
        let last = commit_acked(&self.consumer, &self.state);
        if let Err(e) = &last {
            tracing::warn!(error = %e, "kafka: final commit failed; the next member re-reads from the last commit");
        }
        {
            let mut state = self.state.lock();
            // Commits asked for during the close are answered by the final one.
            for reply in std::mem::take(&mut state.commit_requests) {
                let _ = reply.send(match &last {
                    Ok(()) => Ok(()),
                    Err(e) => Err(same_error(e)),
                });
            }
            // Events never handed out go back to Kafka: the next owner reads them again.
            state.ready.clear();
            state.ready_bytes = 0;
            state.stopped = true;
        }
        self.wake.notify_waiters();
        // Leaves the group (the revoke callback commits once more) before answering. The
        // committer thread has ended, so this is the last reference and the close happens here.
        drop(self.consumer);
        if let Some(reply) = reply {
            let _ = reply.send(Ok(()));
        }
    }

    /// Moves fetched messages into the ready queue while it has room; returns how many.
    ///
    /// Backpressure without losing prefetched data: while the ready queue is full the driver
    /// stops draining librdkafka, whose own queue then fills to `queued.max.messages.kbytes`
    /// and stops fetching. It still polls every 100 ms, because rebalances and the group's
    /// liveness check happen inside `poll`; each such poll may bring one more message, so
    /// should the application stall for long, the partitions are paused outright (pausing
    /// discards librdkafka's prefetch, which is why it is not the normal path).
    fn fetch(&mut self) -> usize {
        let (count, bytes, changed) = {
            let mut state = self.state.lock();
            (
                state.ready.len(),
                state.ready_bytes,
                std::mem::take(&mut state.assignment_changed),
            )
        };
        let full = count >= self.max_ready || bytes >= self.max_ready_bytes;
        let overfull = count >= 2 * self.max_ready || bytes >= 2 * self.max_ready_bytes;
        if (overfull != self.paused || (changed && self.paused))
            && let Ok(assignment) = self.consumer.assignment()
        {
            let result = if overfull {
                self.consumer.pause(&assignment)
            } else {
                self.consumer.resume(&assignment)
            };
            match result {
                Ok(()) => self.paused = overfull,
                Err(e) => tracing::warn!(error = %e, "kafka: pause/resume failed"),
            }
        }
        let (budget, mut wait) = if full {
            // Wait for the application to make room (or 100 ms, to keep serving rebalances),
            // then take at most one message.
            let mut state = self.state.lock();
            let room = state.room.clone();
            if state.ready.len() > state.low_water && !state.command_waiting {
                room.wait_for(&mut state, Duration::from_millis(100));
            }
            (1, Duration::ZERO)
        } else {
            (512, Duration::from_millis(20))
        };
        let mut batch = std::mem::take(&mut self.batch);
        while batch.len() < budget {
            match self.consumer.poll(wait) {
                Some(Ok(message)) => {
                    batch.push(to_pending(&message));
                    // Take what is already buffered in one go; wait only for the first.
                    wait = Duration::ZERO;
                }
                Some(Err(error)) => {
                    self.poll_error(error);
                    break;
                }
                None => break,
            }
        }
        let fetched = batch.len();
        if fetched > 0 {
            enqueue(&self.state, &mut batch);
        }
        self.batch = batch;
        fetched
    }

    fn poll_error(&mut self, error: KafkaError) {
        let mut state = self.state.lock();
        let fatal = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::Fatal)
        );
        if fatal {
            let topic = state.topic.clone();
            state.failure = Some(map(
                error,
                &format!("consume `{topic}` in group `{}`", self.group),
            ));
            drop(state);
            self.wake.notify_waiters();
        } else {
            // librdkafka reconnects by itself; the application keeps waiting.
            tracing::warn!(topic = %state.topic, error = %error, "kafka: transient consumer error");
        }
    }

    /// Hands a commit to the committer thread: `replies` are answered once it is confirmed.
    /// An empty `replies` is a periodic commit, skipped while the previous one is pending.
    fn request_commit(&self, replies: Vec<oneshot::Sender<Result<()>>>) {
        let Some(committer) = &self.committer else {
            return;
        };
        if replies.is_empty() && committer.periodic_queued.swap(true, Ordering::AcqRel) {
            return;
        }
        // The thread only stops when `jobs` is dropped, at close.
        let _ = committer.jobs.send(replies);
    }
}

/// Turns a fetched message into an event waiting for the application.
fn to_pending(message: &BorrowedMessage<'_>) -> Pending {
    let mut event = Event::new(
        message
            .payload()
            .map(Bytes::copy_from_slice)
            .unwrap_or_default(),
    );
    event.key = message.key().map(Bytes::copy_from_slice);
    if let Some(headers) = message.headers() {
        let mut converted = Headers::default();
        for header in headers.iter() {
            converted.append(
                header.key,
                header.value.map(Bytes::copy_from_slice).unwrap_or_default(),
            );
        }
        event.headers = converted;
    }
    event.timestamp = message.timestamp().to_millis().map(Timestamp::from_millis);
    Pending {
        partition: message.partition(),
        offset: message.offset(),
        event,
        redelivery: None,
        attempt: 1,
    }
}

/// Queues fetched events for the application under one lock.
fn enqueue(state: &Mutex<State>, batch: &mut Vec<Pending>) {
    let mut state = state.lock();
    for pending in batch.drain(..) {
        if !state.partitions.contains_key(&pending.partition) {
            continue; // fetched just before a revoke
        }
        state.ready_bytes += pending_size(&pending.event);
        state.ready.push_back(pending);
    }
}

/// One failure told to several callers (errors are not `Clone`: they may carry a source).
fn same_error(e: &Error) -> Error {
    Error::new(e.kind(), e.message().to_string()).with_backend("kafka")
}

/// Bytes an event holds, for the ready queue's bound.
fn pending_size(event: &Event) -> usize {
    event.payload.len() + event.key.as_ref().map_or(0, |k| k.len()) + event.headers.encoded_len()
}
