//! Consuming: Event Hubs partitions as a source for the core group engine.
//!
//! # Why the core group engine, not the SDK's `EventProcessor`
//! The engine gives tributary's promises the same shape on every backend without server-side
//! groups: fenced leases (a consumer that lost a partition can neither renew nor checkpoint
//! it, so its late acks are never committed), contiguous-ack commits with out-of-order acks,
//! nack and drop redelivery with attempt counts, the in-flight limit, commit-and-release on
//! close, and members of one process sharing a lease set. The SDK's processor (0.16) would
//! give Microsoft's exact balancing, but it checkpoints only what the application names, has
//! no notion of nack or in-flight limits, cannot set a receive timeout (Azure/azure-sdk-for-rust
//! PR 5337), and its checkpoint store crate targets SDK 0.15. Compatibility with Microsoft's
//! processors lives where it matters, in the blobs: the same names and metadata, the same
//! ownership semantics (ETag-conditional writes, expiry by `Last-Modified`, an empty owner
//! released), so a group moves between tributary and those processors without reprocessing.
//!
//! # Receivers
//! Each owned partition is read by an owner-level (epoch) receiver, `owner_level` 0 by
//! default like Microsoft's processors: when another member takes a partition, its receiver
//! detaches this one at once (`amqp:link:stolen`). The reader then stops producing events
//! (no error reaches the application) until the engine notices the lost lease at its next
//! renewal; if this process still holds the lease after a while (a foreign receiver with a
//! higher owner level), it opens a receiver again. Other receive errors reopen the receiver
//! after the last event read, with backoff.
//!
//! # The SDK's own recovery
//! A link the service detaches (`amqp:link:detach-forced`, as when it moves a partition) or a
//! lost connection reaches the application as no error: the SDK (0.16) recovers inside the
//! receiver's stream by attaching a new link, and that link asks for the start position the
//! receiver was *opened* with, so it reads again everything the receiver had read. The
//! receive task sees that as an event whose sequence number is not above the last one it
//! read: it drops it and reopens the receiver after the last event read, so each partition's
//! events still come once and in order (`tests/recovery.rs` forces the detach on the
//! emulator). A lost connection can also leave a partition unattachable on its client (a dead
//! session, or an attach that never finishes); the receive task then has the hub and group's
//! client replaced ([`ReceiveTask::renew_client`]), since a member that keeps renewing a
//! partition it cannot read keeps every other member from reading it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use azure_messaging_eventhubs::{
    EventReceiver, OpenReceiverOptions, ReceiveStop, StartLocation, StartPosition as SdkStart,
};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tributary::backend::Checkpoint;
use tributary::backend::PartitionTopology;
use tributary::backend::group::{PartitionReader, PartitionSource, SourceRecord};
use tributary::{Error, ErrorKind, PartitionId, Position, Result, StartPosition};

use crate::blob::{OffsetBook, PartitionOffsets};
use crate::clients::{Client, ConsumerConnection};
use crate::error::{deadline, is_dead_session, map};
use crate::mapping;
use poll_watch::{Watch, watch_poll};
use reader::{EventHubsReader, Item};

/// How long `read` waits for an event before it returns an empty batch (so the engine can
/// look at its leases).
const POLL: Duration = Duration::from_millis(500);
/// How often a receive task waiting in the SDK looks whether the SDK is waiting for an event
/// (fine) or attaching or recovering (bounded by the consumer's timeout): see [`watch_poll`].
const WAKE: Duration = Duration::from_millis(500);
/// How long a reader whose receiver was detached by a higher owner level waits before it
/// tries again (the engine normally drops it sooner, at its next renewal).
const STOLEN_PAUSE: Duration = Duration::from_secs(30);
/// How often a reader refreshes its partition's last sequence number, for lag.
const LAG_REFRESH: Duration = Duration::from_secs(5);
/// The most decoded events a partition's receive task hands the engine in one batch; it holds
/// at most one batch in the channel and one being filled.
const HANDOFF: usize = 64;
/// After this many attaches in a row failed with the client's state for the partition dead
/// ([`is_dead_session`]), the receive task asks for a fresh client. Two, not one: the first
/// can be the SDK's own recovery racing the reopen, which the next attempt no longer meets.
const DEAD_ATTACHES: u32 = 2;

/// One hub read through one consumer group.
pub(crate) struct EventHubsSource {
    pub(crate) hub: String,
    /// The tributary group (the offset book's key, as the store sees it).
    pub(crate) group: String,
    /// The hub and consumer group's connection, shared by the group's readers.
    pub(crate) connection: Arc<ConsumerConnection>,
    pub(crate) prefetch: u32,
    pub(crate) owner_level: Option<i64>,
    pub(crate) timeout: Duration,
    pub(crate) book: OffsetBook,
    /// One turn per partition: a partition's receive tasks take it one after the other.
    pub(crate) turns: PartitionTurns,
}

/// Per partition, the lock its receive task holds for as long as it has a receiver open.
pub(crate) type PartitionTurns =
    Arc<parking_lot::Mutex<std::collections::HashMap<PartitionId, Arc<tokio::sync::Mutex<()>>>>>;

impl EventHubsSource {
    fn not_found(&self, error: Error) -> Error {
        if error.kind() == ErrorKind::NotFound {
            Error::not_found(format!(
                "event hub `{}` or its consumer group does not exist ({}); hubs and consumer groups are created in Azure, not by tributary",
                self.hub,
                error.message()
            ))
        } else {
            error
        }
    }
}

#[async_trait]
impl PartitionSource for EventHubsSource {
    async fn partitions(&self) -> Result<Vec<PartitionTopology>> {
        let properties = deadline(
            self.timeout,
            || format!("read the partitions of event hub `{}`", self.hub),
            self.connection.current()?.get_eventhub_properties(),
        )
        .await
        .map_err(|e| self.not_found(e))?;
        Ok(properties
            .partition_ids
            .into_iter()
            .map(|id| PartitionTopology::root(PartitionId::new(id)))
            .collect())
    }

    async fn resolve_start(
        &self,
        partition: &PartitionId,
        start: &StartPosition,
    ) -> Result<Checkpoint> {
        if *start != StartPosition::Latest {
            // Earliest is stable; a time or a position is kept as it is and read by filter.
            return Ok(Checkpoint::Start(start.clone()));
        }
        let properties = deadline(
            self.timeout,
            || format!("read partition {partition} of event hub `{}`", self.hub),
            self.connection
                .current()?
                .get_partition_properties(partition.as_str()),
        )
        .await
        .map_err(|e| self.not_found(e))?;
        if properties.is_empty {
            return Ok(Checkpoint::Start(StartPosition::Earliest));
        }
        let last = properties.last_enqueued_sequence_number;
        // The pinned checkpoint is written with the offset other SDKs start from.
        self.book.record(
            &self.group,
            &self.hub,
            partition.as_str(),
            last,
            properties.last_enqueued_offset,
        );
        Ok(Checkpoint::Processed(Position::new(last.to_string())))
    }

    async fn open(
        &self,
        partition: &PartitionId,
        from: &Checkpoint,
    ) -> Result<Box<dyn PartitionReader>> {
        let start = match from {
            Checkpoint::Processed(position) => SdkStart {
                location: StartLocation::SequenceNumber(sequence(position)?),
                inclusive: false,
            },
            Checkpoint::Start(StartPosition::Earliest) => SdkStart {
                location: StartLocation::Earliest,
                inclusive: false,
            },
            Checkpoint::Start(StartPosition::Latest) => SdkStart {
                location: StartLocation::Latest,
                inclusive: false,
            },
            Checkpoint::Start(StartPosition::Timestamp(t)) => SdkStart {
                location: StartLocation::EnqueuedTime(SystemTime::from(*t)),
                inclusive: true,
            },
            Checkpoint::Start(StartPosition::Position(position)) => SdkStart {
                location: StartLocation::SequenceNumber(sequence(position)?),
                inclusive: true,
            },
            other => {
                return Err(Error::unsupported(format!(
                    "cannot read partition {partition} of `{}` from {other:?}",
                    self.hub
                )));
            }
        };
        let offsets = self.book.open(&self.group, &self.hub, partition.as_str());
        // A hand-off, not a second prefetch: the engine keeps its own buffer of `prefetch`
        // events and the SDK its credit of as many; events held decoded here as well were
        // freed in bursts long after they were allocated. One batch at a time: a channel slot
        // per event cost a semaphore round per event on both sides.
        let (events, rx) = mpsc::channel(1);
        let (stop, stopped) = watch::channel(false);
        let receive_stop = ReceiveStop::new();
        let last_enqueued = Arc::new(AtomicI64::new(-1));
        let last_read = Arc::new(AtomicI64::new(-1));
        let task = ReceiveTask {
            decoder: mapping::Decoder::new(offsets.keeping()),
            handoff: (self.prefetch.max(1) as usize).min(HANDOFF),
            client: self.connection.current()?,
            connection: self.connection.clone(),
            generations: self.connection.generations(),
            dead_attaches: 0,
            hub: self.hub.clone(),
            partition: partition.clone(),
            prefetch: self.prefetch,
            owner_level: self.owner_level,
            timeout: self.timeout,
            offsets,
            events,
            stopped: stopped.clone(),
            receive_stop: receive_stop.clone(),
            last_read: last_read.clone(),
            floor: -1,
        };
        let turn = self
            .turns
            .lock()
            .entry(partition.clone())
            .or_default()
            .clone();
        tokio::spawn(task.run(start, turn));
        tokio::spawn(refresh_lag(
            self.connection.clone(),
            partition.clone(),
            stopped,
            last_enqueued.clone(),
        ));
        Ok(Box::new(EventHubsReader {
            rx,
            stop,
            receive_stop,
            last_enqueued,
            last_read,
            pending_error: None,
            leftover: Vec::new(),
            poll: Box::pin(tokio::time::sleep(POLL)),
        }))
    }
}

fn sequence(position: &Position) -> Result<i64> {
    position.as_str().parse().map_err(|_| {
        Error::config(format!(
            "position `{position}` is not an Event Hubs sequence number"
        ))
    })
}

/// Owns one partition's receiver: reads it into the reader's channel, reopens it after errors.
struct ReceiveTask {
    connection: Arc<ConsumerConnection>,
    /// The client the receiver is open on: the connection's current one when it was opened.
    client: Arc<Client>,
    /// Attaches in a row that failed with the client's state for the partition dead.
    dead_attaches: u32,
    /// The connection's current generation.
    generations: watch::Receiver<u64>,
    hub: String,
    partition: PartitionId,
    prefetch: u32,
    owner_level: Option<i64>,
    timeout: Duration,
    offsets: PartitionOffsets,
    events: mpsc::Sender<Item>,
    stopped: watch::Receiver<bool>,
    /// Given to every receiver this task opens: the reader's drop ends the receiver's stream
    /// where the SDK waits for an event, never inside an attach or a recovery.
    receive_stop: ReceiveStop,
    last_read: Arc<AtomicI64>,
    decoder: mapping::Decoder,
    /// The most events handed to the reader in one batch.
    handoff: usize,
    /// The open receiver's events must have higher sequence numbers than this: the last one
    /// read, or the bound its start position sets. The SDK recovers a lost link or
    /// connection inside a stream by attaching a new link with the start position the
    /// receiver was opened with, which then reads again from there; an event at or below
    /// this shows that happened.
    floor: i64,
}

/// Why a stream stopped being read.
enum Stop {
    Ended(Ended),
    /// The SDK went back to the receiver's opening position: this event came again.
    Rewound(i64),
    /// To be sorted by [`ReceiveTask::failed`].
    Failed(Error),
}

enum Ended {
    /// The reader is gone.
    Stopped,
    /// Detached by a receiver of a higher or equal owner level.
    Stolen,
    /// The SDK's recovery went back to where the receiver was opened: reopen it at once
    /// after the last event read.
    Rewound,
    /// Anything else: reopen after a pause.
    Failed,
    /// A poll of the stream (the attach, or the SDK's recovery inside it) did not finish
    /// within the consumer's timeout: the client is replaced (at most every few seconds) and
    /// the receiver, left without its close (which would wait on the same client), reopened
    /// on the new one.
    Wedged,
}

impl ReceiveTask {
    async fn run(mut self, mut start: SdkStart, turn: Arc<tokio::sync::Mutex<()>>) {
        // The client keeps one receiver link per partition and hands it to whoever opens that
        // partition next: an earlier reader of this partition must have closed its link
        // before this one opens (or it would read on from the earlier link's position, and its
        // close would detach this one's link).
        let _turn = {
            let mut stopped = self.stopped.clone();
            tokio::select! {
                turn = turn.lock_owned() => turn,
                _ = stopped.wait_for(|s| *s) => return,
            }
        };
        let mut backoff = Duration::from_millis(200);
        let mut last_rewind: Option<tokio::time::Instant> = None;
        loop {
            let pause = match self.receive(&mut start).await {
                Ended::Stopped => return,
                Ended::Stolen => {
                    tracing::info!(hub = %self.hub, partition = %self.partition,
                        "receiver detached by another owner (amqp:link:stolen); waiting for the hand-over");
                    STOLEN_PAUSE
                }
                // At once, unless a receiver reopened after the last event read went back
                // again within a second (not seen: the service reads after the position it is
                // given); then like a failure, so that nothing spins.
                Ended::Rewound
                    if last_rewind
                        .replace(tokio::time::Instant::now())
                        .is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) =>
                {
                    Duration::ZERO
                }
                // The wait was the pause: no backoff before the attach on the new client.
                Ended::Wedged => {
                    let why = format!(
                        "a receiver's attach or recovery on partition {} did not finish within {:?}",
                        self.partition,
                        self.timeout + WAKE
                    );
                    if !self.renew_client(&why).await {
                        return;
                    }
                    Duration::ZERO
                }
                Ended::Rewound | Ended::Failed => {
                    if self.dead_attaches >= DEAD_ATTACHES {
                        let why = format!(
                            "{} attaches in a row of partition {} found the client's session for it dead",
                            self.dead_attaches, self.partition
                        );
                        if !self.renew_client(&why).await {
                            return;
                        }
                    }
                    let pause = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    pause
                }
            };
            let mut stopped = self.stopped.clone();
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    }

    async fn receive(&mut self, start: &mut SdkStart) -> Ended {
        // A client replaced since the last receiver: this partition moves to the new one.
        match self.connection.current() {
            Ok(client) => self.client = client,
            Err(_) => return Ended::Stopped,
        }
        // No receive timeout: the stop ends the wait instead (one SDK timer per call cost
        // about 2k instructions per event).
        let options = OpenReceiverOptions {
            owner_level: self.owner_level,
            prefetch: Some(self.prefetch),
            start_position: Some(start.clone()),
            receive_timeout: None,
        };
        let what = || {
            format!(
                "open a receiver on partition {} of `{}`",
                self.partition, self.hub
            )
        };
        let opened = deadline(
            self.timeout,
            what,
            self.client
                .open_receiver_on_partition(self.partition.as_str().to_string(), Some(options)),
        )
        .await;
        let receiver = match opened {
            Ok(receiver) => receiver.with_stop(self.receive_stop.clone()),
            Err(error) => return self.failed(error).await,
        };
        self.floor = match start.location {
            StartLocation::SequenceNumber(n) if start.inclusive => n.saturating_sub(1),
            StartLocation::SequenceNumber(n) => n,
            // Sequence numbers start at 0.
            _ => -1,
        };
        let opened_at = self.floor;
        let ended = self.pump(&receiver, start).await;
        if self.floor > opened_at {
            self.dead_attaches = 0;
        }
        if !matches!(ended, Ended::Wedged) {
            let _ = tokio::time::timeout(self.timeout, receiver.close()).await;
        }
        ended
    }

    /// Reads `receiver`'s stream into the reader's channel until it ends.
    ///
    /// Nothing here drops the stream while it is inside an SDK call: the SDK's attach (session
    /// begin, link attach), which the stream's first call makes, is not cancel-safe. One cut
    /// short by a reader dropped moments after it was opened (a partition shed right after its
    /// claim) made the client close the whole connection ("Session is not found"), and left a
    /// partition of it unreadable for good ("Link name is not unique", then "Illegal session
    /// state" on every reopen) while this member kept renewing its lease. A stop is seen when
    /// the reader's drop ends the stream (the SDK acts on it only where it waits for an event,
    /// see [`ReceiveStop`]), or when handing an event to the closed channel. The one exception
    /// is a poll that attaches or recovers for longer than the consumer's timeout
    /// ([`watch_poll`]), given up together with its client.
    async fn pump(&mut self, receiver: &EventReceiver, start: &mut SdkStart) -> Ended {
        let stream = receiver.stream_events();
        futures::pin_mut!(stream);
        // The first poll attaches the link.
        let mut attach = true;
        // The link attached (an event came, or the SDK was seen waiting for one): the client's
        // state for the partition lives.
        let mut alive = false;
        // Decoded and not yet handed to the reader: handed over when the stream has nothing
        // more ready (or a batch is full), so the channel sees a batch where it saw each event.
        let mut records: Vec<SourceRecord> = Vec::new();
        let stop = loop {
            let next = if !records.is_empty() {
                // Only what is ready: a poll that finds nothing cancels nothing (the stream
                // keeps its state, and the wait goes on at the next `next().await`).
                match futures::poll!(stream.next()) {
                    Poll::Ready(next) => next,
                    Poll::Pending => {
                        if let Err(ended) = self.hand_off(&mut records).await {
                            return ended;
                        }
                        continue;
                    }
                }
            } else {
                // A wait for events as long as it takes; an attach or a recovery inside the
                // stream, which the SDK runs without a deadline, bounded.
                let watch = Watch {
                    hub: &self.hub,
                    partition: &self.partition,
                    patience: self.timeout + WAKE,
                    attach: std::mem::take(&mut attach),
                    client: self.client.generation,
                    generations: Some(&self.generations),
                    stop: Some(&self.receive_stop),
                    waited: &mut alive,
                };
                match watch_poll(watch, stream.next()).await {
                    Some(next) => next,
                    None => return Ended::Wedged,
                }
            };
            let Some(next) = next else {
                break Stop::Ended(if self.receive_stop.is_stopped() {
                    Ended::Stopped
                } else {
                    Ended::Failed
                });
            };
            let received = match next {
                Ok(received) => received,
                Err(error) => {
                    if alive {
                        self.dead_attaches = 0;
                    }
                    if is_dead_session(&error) {
                        self.dead_attaches += 1;
                    } else {
                        self.dead_attaches = 0;
                    }
                    break Stop::Failed(map(
                        &error,
                        &format!(
                            "receive from partition {} of `{}`",
                            self.partition, self.hub
                        ),
                    ));
                }
            };
            alive = true;
            let decoded = match self.decoder.decode(received.raw_amqp_message()) {
                Ok(decoded) => decoded,
                Err(error) => break Stop::Failed(error),
            };
            let Some(sequence) = decoded.sequence_number else {
                break Stop::Failed(Error::corrupt(format!(
                    "an event of partition {} of `{}` has no sequence number",
                    self.partition, self.hub
                )));
            };
            if sequence <= self.floor {
                break Stop::Rewound(sequence);
            }
            self.floor = sequence;
            if let Some(offset) = decoded.offset {
                self.offsets.record(sequence, offset);
            }
            start.location = StartLocation::SequenceNumber(sequence);
            start.inclusive = false;
            self.last_read.store(sequence, Ordering::Relaxed);
            records.push(SourceRecord {
                event: decoded.event,
                // Written in place, without a `String` per event; sequence numbers are never
                // negative, but one that was would keep its text.
                position: u64::try_from(sequence).map_or_else(
                    |_| Position::new(sequence.to_string()),
                    Position::from_offset,
                ),
            });
            if records.len() >= self.handoff
                && let Err(ended) = self.hand_off(&mut records).await
            {
                return ended;
            }
        };
        // What was read before the stream stopped goes to the reader first: `start` is past it.
        if let Err(ended) = self.hand_off(&mut records).await {
            return ended;
        }
        match stop {
            Stop::Ended(ended) => ended,
            Stop::Rewound(sequence) => {
                tracing::info!(hub = %self.hub, partition = %self.partition, sequence, last = self.floor,
                    "the SDK recovered the receiver's link from its opening position; reopening it after the last event read");
                Ended::Rewound
            }
            Stop::Failed(error) => self.failed(error).await,
        }
    }

    /// Hands `records` to the reader's channel, waiting (for the engine to take the batch before)
    /// only when it is full; `Stopped` when the reader is gone, whose drop also ends the wait.
    async fn hand_off(
        &mut self,
        records: &mut Vec<SourceRecord>,
    ) -> std::result::Result<(), Ended> {
        if records.is_empty() {
            return Ok(());
        }
        // The next batch is sized like this one: batches of a busy partition fill without
        // growing, and a quiet one's single events do not ask for a full batch's room.
        let batch = std::mem::replace(records, Vec::with_capacity(records.len()));
        match self.events.try_send(Item::Records(batch)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Ended::Stopped),
            Err(mpsc::error::TrySendError::Full(item)) => {
                self.events.send(item).await.map_err(|_| Ended::Stopped)
            }
        }
    }

    /// Asks the connection for a fresh client after [`DEAD_ATTACHES`] attaches in a row found
    /// this one's state for the partition dead (see [`ConsumerConnection`]), or a poll did not
    /// finish in time ([`Ended::Wedged`]): this partition cannot be read on it again, and a
    /// member that keeps renewing a partition it cannot read breaks the group's promise. The connection makes one at most every few seconds; the
    /// other partitions move to it as their receivers next reopen, not at once, since they
    /// may be reading well on the old one (a dead session is per partition), and closing it
    /// under them would make each of them attach again at the same moment, the race this
    /// recovers from. `false` when the connection is closed.
    async fn renew_client(&mut self, why: &str) -> bool {
        match self.connection.replace(self.client.generation, why).await {
            Ok(client) => {
                if client.generation != self.client.generation {
                    self.dead_attaches = 0;
                }
                self.client = client;
                true
            }
            Err(_) => false,
        }
    }

    /// Sorts an error: a stolen link is a hand-over, "not found" is for the engine (fatal),
    /// anything else is logged and retried.
    async fn failed(&self, error: Error) -> Ended {
        if error.kind() == ErrorKind::Closed {
            return Ended::Stolen;
        }
        if error.kind() == ErrorKind::NotFound || error.kind() == ErrorKind::Unauthorized {
            let _ = self.events.send(Item::Failed(error)).await;
            return Ended::Failed;
        }
        tracing::warn!(hub = %self.hub, partition = %self.partition, error = %error,
            "receiving failed; reopening the receiver after the last event read");
        Ended::Failed
    }
}

/// Keeps a partition's last enqueued sequence number fresh while its reader lives.
async fn refresh_lag(
    connection: Arc<ConsumerConnection>,
    partition: PartitionId,
    mut stopped: watch::Receiver<bool>,
    last_enqueued: Arc<AtomicI64>,
) {
    loop {
        let Ok(client) = connection.current() else {
            return;
        };
        if let Ok(Ok(properties)) = tokio::time::timeout(
            LAG_REFRESH,
            client.get_partition_properties(partition.as_str()),
        )
        .await
        {
            last_enqueued.store(properties.last_enqueued_sequence_number, Ordering::Relaxed);
        }
        tokio::select! {
            _ = tokio::time::sleep(LAG_REFRESH) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod attach_tests;
mod poll_watch;
mod reader;
