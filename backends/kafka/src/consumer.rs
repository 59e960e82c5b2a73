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

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
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

/// How often the driver reads the partitions' ends from librdkafka's cache, for `lag()`.
const ENDS_EVERY: Duration = Duration::from_millis(100);

/// Where the outcome of a commit or close goes.
type Reply = oneshot::Sender<Result<()>>;
/// A close request: `None` when nobody waits for the answer (the consumer was dropped).
type CloseReply = Option<Reply>;

/// What the rest of the process tells the driver thread. Outcomes do not go this way: they
/// are applied where they are made (see [`KafkaAck`]).
enum Message {
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

/// The acknowledgement handle behind each [`Delivery`]. The outcome is applied to the shared
/// state at once, on the caller's thread: a nacked event is then queued for redelivery before
/// the application can receive anything later from its partition, and an ack costs one short
/// lock instead of a message to the driver.
struct KafkaAck {
    settle: Option<Settle>,
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
}

impl Acknowledge for KafkaAck {
    fn settle(mut self: Box<Self>, outcome: Outcome) {
        if let Some(mut settle) = self.settle.take() {
            settle.outcome = outcome;
            let receivable = self.state.lock().apply(settle);
            if receivable {
                self.wake.notify_waiters();
            }
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
    /// The first offset this member reads (the group's commit, or the resolved start):
    /// everything before it counts as processed. `None` until known (when the broker could
    /// not say where "latest" was, the first event fetched tells).
    start: Option<i64>,
    /// The partition's end offset as last seen (the broker's high watermark, or past the last
    /// event fetched); `None` until known.
    end: Option<i64>,
}

impl PartitionState {
    /// Events from the first unacked one to the end.
    fn lag(&self) -> Option<u64> {
        let processed = match self.tracker.committed() {
            Some(&last) => last + 1,
            None => self.start?,
        };
        Some(self.end?.saturating_sub(processed).max(0) as u64)
    }
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
    /// Fetched events waiting for `receive()`, and their size in bytes.
    ready: VecDeque<Pending>,
    ready_bytes: usize,
    /// Nacked events, by partition and offset: handed out before anything in `ready`, so a
    /// nacked event comes back before any later event of its partition, and nacked events of
    /// one partition come back in offset order (the order they were first delivered).
    redeliveries: BTreeMap<(i32, i64), Pending>,
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
    /// An error for every later `receive()` (a deleted topic, a fatal client error).
    failure: Option<Error>,
    /// The driver has stopped: `receive()` reports the consumer closed.
    stopped: bool,
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

    /// Applies an outcome; `true` when it may let a waiting `receive()` proceed (a redelivery
    /// was queued, or the in-flight limit no longer holds it back).
    fn apply(&mut self, settle: Settle) -> bool {
        let was_full = self.in_flight >= self.max_in_flight;
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(partition) = self.partitions.get_mut(&settle.partition) else {
            return was_full; // revoked since: the new owner redelivers it
        };
        if partition.generation != settle.generation {
            return was_full;
        }
        match settle.outcome {
            Outcome::Ack => {
                partition.tracker.ack(settle.ticket);
                was_full
            }
            Outcome::Nack => {
                let generation = partition.generation;
                self.redeliveries.insert(
                    (settle.partition, settle.offset),
                    Pending {
                        partition: settle.partition,
                        offset: settle.offset,
                        event: settle.event,
                        redelivery: Some((generation, settle.ticket)),
                        attempt: settle.attempt + 1,
                    },
                );
                true
            }
        }
    }

    /// The group's backlog on this member's partitions: `None` while an end is unknown.
    fn lag(&self) -> Option<u64> {
        self.partitions.values().map(PartitionState::lag).sum()
    }

    /// Forgets queued events of partitions no longer assigned.
    fn withdraw_unassigned(&mut self) {
        let partitions = &self.partitions;
        self.ready.retain(|p| partitions.contains_key(&p.partition));
        self.redeliveries
            .retain(|(partition, _), _| partitions.contains_key(partition));
        self.ready_bytes = self.ready.iter().map(|p| pending_size(&p.event)).sum();
    }

    /// Takes the next event for the application (a redelivery first), registering it with
    /// its partition's tracker.
    fn take(&mut self, shared: &Arc<Mutex<State>>, wake: &Arc<Notify>) -> Option<Delivery> {
        while self.in_flight < self.max_in_flight {
            let pending = match self.redeliveries.pop_first() {
                Some((_, pending)) => pending,
                None => {
                    let pending = self.ready.pop_front()?;
                    self.ready_bytes = self
                        .ready_bytes
                        .saturating_sub(pending_size(&pending.event));
                    if self.ready.len() == self.low_water {
                        // The driver may be waiting for room (see `Driver::fetch`).
                        self.room.notify_one();
                    }
                    pending
                }
            };
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
                    state: shared.clone(),
                    wake: wake.clone(),
                })),
            });
        }
        None
    }
}

struct Context {
    state: Arc<Mutex<State>>,
}

impl Context {
    /// The assignment with an explicit offset for every partition: the committed one where the
    /// group has a commit, else the consumer's start position, resolved now so that "latest"
    /// means latest at the moment of joining, not at some later first fetch. Also reads each
    /// partition's end, so that `lag()` answers from the moment of joining.
    fn starting_offsets(
        &self,
        consumer: &BaseConsumer<Self>,
        assigned: &TopicPartitionList,
    ) -> Resolved {
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
        let mut resolved = Resolved::default();
        let mut by_time = TopicPartitionList::new();
        for element in committed.elements() {
            let partition = element.partition();
            let watermarks = consumer
                .fetch_watermarks(&topic, partition, timeout)
                .map_err(|e| {
                    map(
                        e,
                        &format!("find the ends of `{topic}` partition {partition}"),
                    )
                });
            let (low, high) = match watermarks {
                Ok((low, high)) => (Some(low.max(0)), Some(high.max(0))),
                Err(e) => {
                    failure.get_or_insert(e);
                    (None, None)
                }
            };
            let offset = match (element.offset(), &start) {
                (Offset::Offset(n), _) if n >= 0 => {
                    resolved.add(&topic, partition, Some(n), high, false);
                    continue;
                }
                (_, StartPosition::Earliest) => low,
                (_, StartPosition::Position(position)) => {
                    Some(position.as_offset().unwrap_or(0) as i64)
                }
                (_, StartPosition::Timestamp(t)) => {
                    let _ = by_time.add_partition_offset(
                        &topic,
                        partition,
                        Offset::Offset(t.as_millis()),
                    );
                    resolved.ends.insert(partition, high);
                    continue;
                }
                (_, _) => high,
            };
            match offset {
                Some(offset) => resolved.add(&topic, partition, Some(offset), high, true),
                // The ends are unknown: librdkafka resolves the start itself.
                None => {
                    let fallback = match start {
                        StartPosition::Earliest => Offset::Beginning,
                        _ => Offset::End,
                    };
                    let _ = resolved
                        .assignment
                        .add_partition_offset(&topic, partition, fallback);
                    resolved.ends.insert(partition, None);
                }
            }
        }
        if by_time.count() > 0 {
            match consumer.offsets_for_times(by_time.clone(), timeout) {
                Ok(found) => {
                    for element in found.elements() {
                        let partition = element.partition();
                        let end = resolved.ends.get(&partition).copied().flatten();
                        let offset = match element.offset() {
                            Offset::Offset(n) if n >= 0 => Some(n),
                            // No event at or after the time: start at the end.
                            _ => end,
                        };
                        match offset {
                            Some(offset) => {
                                resolved.add(&topic, partition, Some(offset), end, true)
                            }
                            None => {
                                let _ = resolved.assignment.add_partition_offset(
                                    &topic,
                                    partition,
                                    Offset::End,
                                );
                            }
                        }
                    }
                }
                Err(e) => {
                    failure.get_or_insert(map(e, &format!("look up offsets by time on `{topic}`")));
                    for element in by_time.elements() {
                        let _ = resolved.assignment.add_partition_offset(
                            &topic,
                            element.partition(),
                            Offset::End,
                        );
                    }
                }
            }
        }
        resolved.failure = failure;
        resolved
    }
}

/// Where each assigned partition starts, and what is known of its end.
#[derive(Default)]
struct Resolved {
    /// The partitions with the offset to read from.
    assignment: TopicPartitionList,
    /// Offsets resolved from the start position where the group had no commit: committed at
    /// once, so that a member that takes the partition over later (after a crash before any
    /// ack) starts at the same place instead of resolving "latest" again and skipping what
    /// arrived in between.
    pin: TopicPartitionList,
    /// Each partition's first offset to read, where known.
    starts: HashMap<i32, i64>,
    /// Each partition's end offset, where known.
    ends: HashMap<i32, Option<i64>>,
    failure: Option<Error>,
}

impl Resolved {
    fn add(
        &mut self,
        topic: &str,
        partition: i32,
        start: Option<i64>,
        end: Option<i64>,
        pin: bool,
    ) {
        let offset = start.map_or(Offset::End, Offset::Offset);
        let _ = self
            .assignment
            .add_partition_offset(topic, partition, offset);
        if let Some(start) = start {
            self.starts.insert(partition, start);
            if pin {
                let _ = self.pin.add_partition_offset(topic, partition, offset);
            }
        }
        self.ends.insert(partition, end);
    }
}

impl ClientContext for Context {}

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
                let resolved = self.starting_offsets(consumer, tpl);
                let result = if cooperative {
                    consumer.incremental_assign(&resolved.assignment)
                } else {
                    consumer.assign(&resolved.assignment)
                };
                if result.is_ok()
                    && resolved.pin.count() > 0
                    && let Err(e) = consumer.commit(&resolved.pin, CommitMode::Sync)
                {
                    // Only a later owner's start is at stake, and only until the first commit.
                    tracing::warn!(error = %e, "kafka: cannot commit the start position of newly assigned partitions");
                }
                let mut state = self.state.lock();
                for element in resolved.assignment.elements() {
                    let partition = element.partition();
                    let generation = state.next_generation;
                    state.next_generation += 1;
                    let start = resolved.starts.get(&partition).copied();
                    state.partitions.insert(
                        partition,
                        PartitionState {
                            generation,
                            tracker: AckTracker::new(),
                            committed: start,
                            start,
                            end: resolved.ends.get(&partition).copied().flatten(),
                        },
                    );
                }
                state.assignment_changed = true;
                tracing::debug!(topic = %state.topic, partitions = resolved.assignment.count(), "kafka: partitions assigned");
                if let Some(joined) = state.joined.take() {
                    let outcome = match (result, resolved.failure) {
                        (Err(e), _) => Err(map(e, &format!("join the group on `{}`", state.topic))),
                        (Ok(()), Some(e)) => Err(e),
                        (Ok(()), None) => Ok(()),
                    };
                    let _ = joined.send(outcome);
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Acks the application made before this moment count (they are applied as they
                // are made): commit them for the partitions that go. Their unacked and
                // not-yet-received events are withdrawn here and redelivered by the next owner.
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
                state.withdraw_unassigned();
                state.assignment_changed = true;
                let topic = state.topic.clone();
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
                state.withdraw_unassigned();
                state.assignment_changed = true;
                drop(state);
                let _ = consumer.unassign();
            }
        }
    }
}

/// A `group.instance.id` held by one live consumer: consumers of the same group and topic in
/// one process get `<instance_id>.<topic>`, `….2`, `….3` in the order they are opened, so that
/// each keeps its id across restarts of the process. The ids are held per process, not per
/// backend: two backends connected with the same `instance_id` (a route reconnecting while its
/// old backend lingers) must not fence each other.
pub(crate) struct StaticMember {
    id: String,
    group: String,
}

/// `(group, group.instance.id)` of every live static member in this process.
fn held() -> &'static Mutex<HashSet<(String, String)>> {
    static HELD: std::sync::OnceLock<Mutex<HashSet<(String, String)>>> = std::sync::OnceLock::new();
    HELD.get_or_init(Mutex::default)
}

impl StaticMember {
    /// Takes the first free id for `group` on `topic`.
    pub(crate) fn claim(instance_id: &str, group: &str, topic: &str) -> StaticMember {
        let base = format!("{instance_id}.{topic}");
        let mut taken = held().lock();
        let id = (1..)
            .map(|n| {
                if n == 1 {
                    base.clone()
                } else {
                    format!("{base}.{n}")
                }
            })
            .find(|id| !taken.contains(&(group.to_string(), id.clone())))
            .expect("an unbounded range has a free id");
        taken.insert((group.to_string(), id.clone()));
        StaticMember {
            id,
            group: group.to_string(),
        }
    }
}

impl Drop for StaticMember {
    fn drop(&mut self) {
        held().lock().remove(&(
            std::mem::take(&mut self.group),
            std::mem::take(&mut self.id),
        ));
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
        member: Option<StaticMember>,
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
            redeliveries: BTreeMap::new(),
            room: Arc::new(parking_lot::Condvar::new()),
            command_waiting: false,
            low_water: max_in_flight.clamp(64, 4096) / 2,
            in_flight: 0,
            max_in_flight,
            assignment_changed: false,
            failure: None,
            stopped: false,
            joined: Some(joined_tx),
        }));
        let wake = Arc::new(Notify::new());
        let (to_driver, inbox) = std::sync::mpsc::channel();
        let context = Context {
            state: state.clone(),
        };
        let earliest = matches!(options.start, StartPosition::Earliest);
        let mut client_config = config.consumer(&options.group, earliest);
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
            inbox,
            ends_refreshed: Instant::now(),
            _member: member,
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
        // The consumer cannot go on after such an error: every later receive reports it too.
        if let Some(error) = &state.failure {
            return Some(Err(same_error(error)));
        }
        if let Some(delivery) = state.take(&self.state, &self.wake) {
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
        self.state.lock().lag()
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
    /// Commands from the consumer (commit, close).
    inbox: std::sync::mpsc::Receiver<Message>,
    /// When the partitions' ends were last read from librdkafka's cache.
    ends_refreshed: Instant,
    /// The static member id this consumer holds, released when the driver (and with it the
    /// librdkafka consumer) is gone.
    _member: Option<StaticMember>,
}

impl Driver {
    /// Reads the commands waiting in the inbox: a close request (if any) and commits to make.
    fn read_inbox(&self) -> (Option<CloseReply>, Vec<Reply>) {
        let mut close = None;
        let mut commits = Vec::new();
        while let Ok(message) = self.inbox.try_recv() {
            match message {
                Message::Close(reply) => close = Some(reply),
                Message::Commit(reply) => commits.push(reply),
            }
        }
        (close, commits)
    }

    fn run(mut self) {
        let mut last_commit = Instant::now();
        let (reply, mut late_commits) = loop {
            // Cleared before the inbox is read, so a command sent after this point is seen.
            self.state.lock().command_waiting = false;
            let (close, commits) = self.read_inbox();
            if let Some(reply) = close {
                break (reply, commits);
            }
            if !commits.is_empty() {
                self.request_commit(commits);
            }
            let fetched = self.fetch();
            if fetched > 0 {
                self.wake.notify_waiters();
            }
            self.refresh_ends();
            if last_commit.elapsed() >= self.commit_interval {
                // A failure is retried at the next tick.
                self.request_commit(Vec::new());
                last_commit = Instant::now();
            }
        };
        late_commits.extend(self.read_inbox().1);
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
            for reply in late_commits {
                let _ = reply.send(match &last {
                    Ok(()) => Ok(()),
                    Err(e) => Err(same_error(e)),
                });
            }
            // Events never handed out go back to Kafka: the next owner reads them again.
            state.ready.clear();
            state.ready_bytes = 0;
            state.redeliveries.clear();
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

    /// Reads each assigned partition's high watermark from librdkafka's cache (what the last
    /// fetch response said; no request to the broker), so `lag()` follows new events even
    /// while the application is not receiving. At most every [`ENDS_EVERY`].
    fn refresh_ends(&mut self) {
        if self.ends_refreshed.elapsed() < ENDS_EVERY {
            return;
        }
        self.ends_refreshed = Instant::now();
        let (topic, partitions): (String, Vec<i32>) = {
            let state = self.state.lock();
            (
                state.topic.clone(),
                state.partitions.keys().copied().collect(),
            )
        };
        let Ok(c_topic) = std::ffi::CString::new(topic) else {
            return;
        };
        let highs: Vec<(i32, i64)> = partitions
            .into_iter()
            .filter_map(|partition| {
                let (mut low, mut high) = (-1i64, -1i64);
                // SAFETY: the client outlives this call (the driver holds it), the topic is a
                // valid C string, and the two out-pointers are valid for writes.
                let err = unsafe {
                    rdkafka::bindings::rd_kafka_get_watermark_offsets(
                        self.consumer.client().native_ptr(),
                        c_topic.as_ptr(),
                        partition,
                        &mut low,
                        &mut high,
                    )
                };
                (err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
                    .then_some((partition, high))
            })
            .collect();
        let mut state = self.state.lock();
        for (partition, high) in highs {
            if let Some(p) = state.partitions.get_mut(&partition) {
                p.end = Some(p.end.map_or(high, |end| end.max(high)));
            }
        }
    }

    fn poll_error(&mut self, error: KafkaError) {
        let mut state = self.state.lock();
        // librdkafka marks errors it cannot recover from as fatal (rdkafka reports them as
        // `MessageConsumptionFatal` with the underlying code, such as a fenced static member).
        let fatal = matches!(error, KafkaError::MessageConsumptionFatal(_))
            || matches!(
                error.rdkafka_error_code(),
                Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::Fatal)
            );
        if fatal {
            let topic = state.topic.clone();
            let fenced = error.rdkafka_error_code() == Some(RDKafkaErrorCode::FencedInstanceId)
                || matches!(
                    self.consumer.client().fatal_error(),
                    Some((RDKafkaErrorCode::FencedInstanceId, _))
                );
            state.failure = Some(if fenced {
                Error::config(format!(
                    "another live consumer of `{topic}` joined group `{}` with this process's group.instance.id (option `instance_id`): give every process its own",
                    self.group
                ))
                .with_backend("kafka")
            } else {
                map(
                    error,
                    &format!("consume `{topic}` in group `{}`", self.group),
                )
            });
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
        let Some(partition) = state.partitions.get_mut(&pending.partition) else {
            continue; // fetched just before a revoke
        };
        partition.start.get_or_insert(pending.offset);
        partition.end = Some(
            partition
                .end
                .map_or(pending.offset + 1, |end| end.max(pending.offset + 1)),
        );
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
