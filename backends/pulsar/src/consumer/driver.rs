//! The task that owns a consumer's partition members: it moves their messages into the ready
//! queues, forwards acks, checks every member each second and replaces one that is gone.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use pulsar::consumer::InitialPosition;
use pulsar::error::ConsumerError;
use pulsar::message::proto::MessageIdData;
use pulsar::{Pulsar, SubType, TokioExecutor};
use tokio::sync::mpsc;
use tributary::{Error, Result};

use super::handover::Acknowledged;
use super::takeover::Repeats;
use super::{BatchAcks, Command, Pending, Shared};
use crate::admin::Admin;
use crate::error::{BACKEND, map, timed_out};
use crate::mapping;
use crate::position::MessagePosition;

type Message = pulsar::consumer::Message<Vec<u8>>;

/// One partition's subscription member.
pub(crate) struct Member {
    pub consumer: pulsar::Consumer<Vec<u8>, TokioExecutor>,
}

/// How to subscribe a partition's member (first, and again after one is lost).
pub(crate) struct Subscribe {
    pub client: Pulsar<TokioExecutor>,
    pub stream: String,
    /// Full topic name per slot (the partitions of a partitioned topic, or the topic).
    pub topics: Vec<String>,
    /// Pulsar's partition index per slot (-1 for a non-partitioned topic).
    pub indexes: Vec<i32>,
    pub subscription: String,
    pub sub_type: SubType,
    pub consumer_name: String,
    pub initial: InitialPosition,
    pub receiver_queue: u32,
    pub timeout: Duration,
    pub admin: Admin,
    /// How long a partition taken over from a connected member is held (`handover.rs`).
    pub handover_grace: Duration,
}

impl Subscribe {
    /// Whether the broker tells members when they become a partition's active one (Failover).
    pub(crate) fn announces_active(&self) -> bool {
        self.sub_type == SubType::Failover
    }

    pub(crate) async fn member(&self, slot: usize) -> Result<Member> {
        let options = pulsar::ConsumerOptions {
            initial_position: self.initial.clone(),
            receiver_queue_size: Some(self.receiver_queue),
            durable: Some(true),
            report_active_changes: true,
            ..Default::default()
        };
        let build = self
            .client
            .consumer()
            .with_topic(&self.topics[slot])
            .with_subscription(&self.subscription)
            .with_subscription_type(self.sub_type)
            .with_consumer_name(&self.consumer_name)
            .with_batch_size(self.receiver_queue)
            .with_options(options)
            .build::<Vec<u8>>();
        let what = format!(
            "subscribe `{}` to `{}`",
            self.subscription, self.topics[slot]
        );
        match tokio::time::timeout(self.timeout, build).await {
            Ok(Ok(consumer)) => Ok(Member { consumer }),
            Ok(Err(e)) => Err(map(e, &what)),
            Err(_) => Err(timed_out(&what, self.timeout, "operation_timeout")),
        }
    }
}

/// Most commands handled in one go before the select looks at the members again.
const DRAIN: usize = 64;

pub(crate) struct Driver {
    pub shared: Arc<Shared>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    /// For replacement tasks; weak, so the channel closes when the consumer and every
    /// delivery are gone.
    pub to_self: mpsc::WeakUnboundedSender<Command>,
    pub members: Vec<Option<Member>>,
    pub subscribe: Arc<Subscribe>,
    pub batches: Vec<BatchAcks>,
    /// Acks for a slot whose member is being replaced, sent once the new one is in.
    pub held_acks: Vec<Vec<MessageIdData>>,
    pub failing_since: Vec<Option<Instant>>,
    /// Per slot, whether the member's stream yielded anything since the last check: it is
    /// alive, and is not probed (see `check`).
    pub flowing: Vec<bool>,
    pub lags: Vec<Option<u64>>,
    /// Per slot, what the subscription had acknowledged when the member took the partition
    /// over: events the broker sent before those acks landed are dropped on arrival.
    pub acknowledged: Vec<Option<Acknowledged>>,
    /// Per slot, whether the broker has told the member it is the partition's active one
    /// (always true on a Shared subscription, which has none). On Failover the broker can
    /// send the member it picked entries before it tells it and rewinds the cursor (see
    /// `hold_for_handover`): what arrives before the announcement is dropped, and comes again
    /// after it.
    pub announced: Vec<bool>,
    /// Per slot, entries dropped because they came before the announcement, for the logs.
    pub unannounced_dropped: Vec<u64>,
    /// Per slot, while a taken-over partition waits for the broker's resend: when to ask the
    /// broker to rewind (again).
    pub rewind_at: Vec<Option<Instant>>,
    /// Per slot, while a taken-over partition waits for the broker's resend: its generation
    /// and what the cursor read found acknowledged, so each arriving event can end the wait
    /// (`settle_on_arrival`) instead of the next timed re-read of the cursor.
    pub awaiting_resend: Vec<Option<(u64, Option<Acknowledged>)>>,
    /// Per slot, once a takeover has settled on the broker's resend: how far the member has
    /// queued, so that what the broker sends again is dropped (`Repeats`).
    pub repeats: Vec<Option<Repeats>>,
    pub stopping: Arc<AtomicBool>,
    pub next_slot: usize,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        commands: mpsc::UnboundedReceiver<Command>,
        to_self: mpsc::WeakUnboundedSender<Command>,
        members: Vec<Member>,
        subscribe: Arc<Subscribe>,
    ) -> Driver {
        let n = members.len();
        let announced = !subscribe.announces_active();
        Driver {
            shared,
            commands,
            to_self,
            members: members.into_iter().map(Some).collect(),
            subscribe,
            batches: (0..n).map(|_| BatchAcks::default()).collect(),
            held_acks: vec![Vec::new(); n],
            failing_since: vec![None; n],
            flowing: vec![false; n],
            lags: vec![None; n],
            acknowledged: vec![None; n],
            announced: vec![announced; n],
            unannounced_dropped: vec![0; n],
            rewind_at: vec![None; n],
            awaiting_resend: vec![None; n],
            repeats: (0..n).map(|_| None).collect(),
            stopping: Arc::new(AtomicBool::new(false)),
            next_slot: 0,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let has_room = {
                let state = self.shared.state.lock();
                state.queued < state.ready_cap
            };
            self.next_slot = self.next_slot.wrapping_add(1);
            let start = self.next_slot;
            tokio::select! {
                biased;
                command = self.commands.recv() => {
                    if self.command(command).await {
                        return;
                    }
                    // Acks come one per event: take the ones already sent without a trip
                    // through the select each (a bounded number, so messages keep flowing).
                    for _ in 0..DRAIN {
                        let Ok(command) = self.commands.try_recv() else { break };
                        if self.command(Some(command)).await {
                            return;
                        }
                    }
                }
                (slot, item) = next_message(&mut self.members, start), if has_room => {
                    self.handle(slot, item);
                    self.settle_on_arrival(slot);
                    self.take_arrived();
                }
                _ = self.shared.room.notified(), if !has_room => {}
                _ = tick.tick() => self.check().await,
            }
        }
    }

    /// Takes the messages that have already arrived (a bounded number, so that commands and the
    /// check are not kept waiting) without a trip through the select each: they come in runs,
    /// and each trip locks the state, polls the commands and the timer, and makes its futures.
    fn take_arrived(&mut self) {
        for _ in 0..DRAIN {
            let has_room = {
                let state = self.shared.state.lock();
                state.queued < state.ready_cap
            };
            if !has_room {
                return;
            }
            self.next_slot = self.next_slot.wrapping_add(1);
            // Polled without a waker: when nothing is there, the select polls the members
            // again (with its own) before it waits.
            let Some((slot, item)) = next_message(&mut self.members, self.next_slot).now_or_never()
            else {
                return;
            };
            self.handle(slot, item);
            self.settle_on_arrival(slot);
        }
    }

    /// Handles one command; `true` when the driver is done.
    async fn command(&mut self, command: Option<Command>) -> bool {
        match command {
            None => {
                self.close().await;
                return true;
            }
            Some(Command::Close(reply)) => {
                self.close().await;
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(()));
                }
                return true;
            }
            Some(Command::Ack {
                slot,
                id,
                batch_size,
            }) => self.ack(slot, id, batch_size).await,
            Some(Command::Commit(reply)) => {
                let result = self.commit().await;
                let _ = reply.send(result);
            }
            Some(Command::Replaced(slot, member)) => self.install(slot, *member).await,
            Some(Command::Settled {
                slot,
                generation,
                acknowledged,
                deadline,
            }) => {
                self.settled(slot, generation, acknowledged, deadline).await;
            }
        }
        false
    }

    fn handle(&mut self, slot: usize, item: Option<std::result::Result<Message, pulsar::Error>>) {
        self.flowing[slot] = item.is_some();
        match item {
            Some(Ok(message)) if self.announced[slot] => self.enqueue(slot, message),
            Some(Ok(message)) => {
                self.unannounced_dropped[slot] += 1;
                let id = &message.message_id.id;
                tracing::trace!(slot, member = %self.subscribe.consumer_name, ledger = id.ledger_id, entry = id.entry_id, "pulsar: arrived before the member was told it is active, dropped");
            }
            Some(Err(pulsar::Error::Consumer(ConsumerError::ActiveConsumerChange(active)))) => {
                let dropped_before = std::mem::take(&mut self.unannounced_dropped[slot]);
                tracing::debug!(topic = %self.subscribe.topics[slot], member = %self.subscribe.consumer_name, active, dropped_before, "pulsar: active member change");
                if active && self.announced[slot] {
                    // Told again (the broker rewound once more): the resend from the first
                    // unacknowledged entry repeats what this member already has, which
                    // `Repeats` drops on arrival.
                    return;
                }
                self.announced[slot] = active;
                if active {
                    self.hold_for_handover(slot);
                } else {
                    // The broker has handed the partition to another member, from the first
                    // unacked event: what is queued here goes there.
                    self.drop_queued(slot);
                }
            }
            Some(Err(error)) => {
                let error = map(
                    error,
                    &format!("receive from `{}`", self.subscribe.topics[slot]),
                );
                tracing::warn!(%error, "pulsar: a message could not be read");
                let mut state = self.shared.state.lock();
                state.failure.get_or_insert(error);
                drop(state);
                self.shared.wake.notify_waiters();
            }
            None => {
                tracing::warn!(
                    topic = %self.subscribe.topics[slot],
                    "pulsar: the partition's consumer stopped; subscribing a new one"
                );
                self.replace(slot);
            }
        }
    }

    fn enqueue(&mut self, slot: usize, message: Message) {
        let id = message.message_id.id;
        let batch_size = message.message_id.batch_size;
        let data = Bytes::from(message.payload.data);
        let (event, problem) = mapping::decode(data, message.payload.metadata);
        if let Some(problem) = problem {
            tracing::warn!(topic = %message.topic, %problem, "pulsar: message read as a plain event");
        }
        let position = MessagePosition {
            ledger: id.ledger_id,
            entry: id.entry_id,
            partition: self.subscribe.indexes[slot],
            batch: id.batch_index.filter(|&b| b >= 0),
        };
        if self.acknowledged[slot]
            .as_ref()
            .is_some_and(|acked| acked.covers(&id))
        {
            tracing::trace!(slot, member = %self.subscribe.consumer_name, ?position, "pulsar: arrived acknowledged, dropped");
            return;
        }
        if let Some(repeats) = &mut self.repeats[slot]
            && !repeats.admit(position)
        {
            tracing::trace!(slot, member = %self.subscribe.consumer_name, ?position, "pulsar: sent again after a rewind, dropped");
            return;
        }
        let mut state = self.shared.state.lock();
        let generation = state.partitions[slot].generation;
        tracing::trace!(slot, member = %self.subscribe.consumer_name, ?position, held = state.partitions[slot].held, "pulsar: enqueued");
        state.partitions[slot].queue.push_back(Pending {
            slot,
            event,
            id,
            position,
            batch_size,
            generation,
            attempt: 1,
            not_before: None,
        });
        state.queued += 1;
        let sleepers = state.sleepers;
        drop(state);
        if sleepers > 0 {
            self.shared.wake.notify_waiters();
        }
    }

    async fn ack(&mut self, slot: usize, id: MessageIdData, batch_size: Option<i32>) {
        let whole = match batch_size {
            Some(n) if n > 1 => {
                if !self.batches[slot].ack(&id, n) {
                    return;
                }
                MessageIdData {
                    ledger_id: id.ledger_id,
                    entry_id: id.entry_id,
                    partition: id.partition,
                    ..Default::default()
                }
            }
            _ => id,
        };
        match &mut self.members[slot] {
            Some(member) => {
                if let Err(error) = member.consumer.ack_with_id("", whole).await {
                    tracing::debug!(%error, "pulsar: an ack could not be handed to the client");
                }
            }
            None => self.held_acks[slot].push(whole),
        }
    }

    /// Every ack handed to a member so far went to its engine before this request; the engine
    /// answers it in order and the broker answers the ping after the acks on that connection.
    async fn commit(&mut self) -> Result<()> {
        let timeout = self.subscribe.timeout;
        let topics = &self.subscribe.topics;
        for (slot, member) in self.members.iter_mut().enumerate() {
            match member {
                Some(member) => {
                    match tokio::time::timeout(timeout, member.consumer.check_connection()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            return Err(map(e, &format!("commit acks on `{}`", topics[slot])));
                        }
                        Err(_) => {
                            return Err(timed_out(
                                &format!("commit acks on `{}`", topics[slot]),
                                timeout,
                                "operation_timeout",
                            ));
                        }
                    }
                }
                None if !self.held_acks[slot].is_empty() => {
                    return Err(Error::unavailable(format!(
                        "commit acks on `{}`: its consumer is being re-subscribed; the acks are sent once it is",
                        topics[slot]
                    ))
                    .with_backend(BACKEND)
                    .with_retryable(true));
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Asks each member for its statistics (a round trip through its engine and connection):
    /// the backlog for `lag()`, and proof that it is alive.
    ///
    /// A member whose stream yielded something since the last check is alive and is skipped
    /// (its backlog figure stays as last read): the probe goes through the crate's engine,
    /// which, while it waits to hand this task the rest of a large batch, answers nothing,
    /// and this task, waiting for the answer, would take nothing (a stall of the probe's
    /// timeout every second: 1,062 events/s instead of 110,070 in a batched benchmark round).
    async fn check(&mut self) {
        let probe = Duration::from_secs(2).min(self.subscribe.timeout);
        let flowing = std::mem::replace(&mut self.flowing, vec![false; self.members.len()]);
        let results = futures::future::join_all(self.members.iter_mut().zip(&flowing).map(
            |(member, &flowing)| async move {
                match member {
                    Some(_) if flowing => Some(None),
                    Some(member) => Some(Some(
                        tokio::time::timeout(probe, member.consumer.get_stats()).await,
                    )),
                    None => None,
                }
            },
        ))
        .await;
        let now = Instant::now();
        let mut lost = Vec::new();
        for (slot, result) in results.into_iter().enumerate() {
            let result = match result {
                None => None,
                Some(None) => {
                    self.failing_since[slot] = None;
                    continue;
                }
                Some(Some(result)) => Some(result),
            };
            match result {
                None => self.lags[slot] = None,
                Some(Ok(Ok(stats))) => {
                    self.failing_since[slot] = None;
                    self.lags[slot] = Some(stats.iter().filter_map(|s| s.msg_backlog).sum());
                }
                Some(_) => {
                    self.lags[slot] = None;
                    let since = *self.failing_since[slot].get_or_insert(now);
                    if now.duration_since(since) >= self.subscribe.timeout {
                        tracing::warn!(
                            topic = %self.subscribe.topics[slot],
                            silent = ?now.duration_since(since),
                            "pulsar: the partition's consumer does not answer; subscribing a new one"
                        );
                        lost.push(slot);
                    }
                }
            }
        }
        for slot in lost {
            self.replace(slot);
        }
        let lag = self.lags.iter().copied().sum::<Option<u64>>();
        self.shared.state.lock().lag = lag;
    }

    /// Drops a lost member and subscribes a new one in the background, with backoff, until
    /// the broker takes it or the consumer closes.
    fn replace(&mut self, slot: usize) {
        if let Some(old) = self.members[slot].take() {
            // Acks go to the driver now, which holds them for the new member.
            self.shared.state.lock().partitions[slot].acker = None;
            // Closing may wait on a dead connection: not here.
            tokio::spawn(async move {
                let mut old = old;
                let _ = tokio::time::timeout(Duration::from_secs(5), old.consumer.close()).await;
            });
        } else {
            return; // already being replaced
        }
        self.failing_since[slot] = None;
        self.batches[slot].clear();
        self.announced[slot] = !self.subscribe.announces_active();
        self.unannounced_dropped[slot] = 0;
        self.drop_queued(slot);
        let subscribe = self.subscribe.clone();
        let to_self = self.to_self.clone();
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            while !stopping.load(Ordering::Acquire) {
                match subscribe.member(slot).await {
                    Ok(member) => {
                        if let Some(to_driver) = to_self.upgrade() {
                            let _ = to_driver.send(Command::Replaced(slot, Box::new(member)));
                        }
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(stream = %subscribe.stream, %error, ?backoff, "pulsar: re-subscribing failed; trying again");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    /// Forgets the events queued for a partition (the broker delivers them again, here or to
    /// another member); nacks of its deliveries in flight are no longer requeued here.
    fn drop_queued(&mut self, slot: usize) {
        self.acknowledged[slot] = None;
        self.repeats[slot] = None;
        {
            let mut state = self.shared.state.lock();
            let partition = &mut state.partitions[slot];
            partition.generation += 1;
            partition.held = false;
            let dropped = partition.queue.len();
            tracing::debug!(topic = %self.subscribe.topics[slot], member = %self.subscribe.consumer_name, dropped, first = ?partition.queue.front().map(|p| p.position), "pulsar: queued events dropped");
            partition.queue.clear();
            state.queued -= dropped;
        }
        self.shared.room.notify_one();
    }

    async fn install(&mut self, slot: usize, mut member: Member) {
        if self.stopping.load(Ordering::Acquire) {
            let _ = tokio::time::timeout(self.subscribe.timeout, member.consumer.close()).await;
            return;
        }
        for id in std::mem::take(&mut self.held_acks[slot]) {
            let _ = member.consumer.ack_with_id("", id).await;
        }
        // After the held acks: acks from here on reach the new member's engine behind them.
        self.shared.state.lock().partitions[slot].acker = member.consumer.acker();
        tracing::info!(topic = %self.subscribe.topics[slot], "pulsar: the partition's consumer is back");
        self.members[slot] = Some(member);
    }

    async fn close(&mut self) {
        self.stopping.store(true, Ordering::Release);
        let timeout = self.subscribe.timeout;
        // Every ack received so far was handed to the members' engines, which send them
        // before the close that follows.
        futures::future::join_all(self.members.iter_mut().flatten().map(|member| async move {
            let _ = tokio::time::timeout(timeout, member.consumer.close()).await;
        }))
        .await;
        self.members.clear();
        {
            let mut state = self.shared.state.lock();
            state.stopped = true;
            for partition in &mut state.partitions {
                partition.queue.clear();
                // The members' engines end once nothing can send to them.
                partition.acker = None;
            }
            state.queued = 0;
        }
        self.shared.wake.notify_waiters();
    }
}

/// The next message of any member, starting the scan at a rotating slot for fairness.
async fn next_message(
    members: &mut [Option<Member>],
    start: usize,
) -> (usize, Option<std::result::Result<Message, pulsar::Error>>) {
    let n = members.len();
    poll_fn(move |cx| {
        for step in 0..n {
            let slot = (start + step) % n;
            if let Some(member) = &mut members[slot]
                && let Poll::Ready(item) = member.consumer.poll_next_unpin(cx)
            {
                return Poll::Ready((slot, item));
            }
        }
        Poll::Pending
    })
    .await
}
