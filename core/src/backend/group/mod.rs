//! The group engine: consumer groups for platforms without server-side groups.
//!
//! Kinesis and Event Hubs keep no group state on the server, and the local backend's file log
//! is shared by processes on one host. For them the engine does what Kafka's group coordinator
//! does for Kafka: it leases partitions to the members of a group, balances them, reads each
//! owned partition, tracks acks into checkpoints, hands partitions over when a member leaves or
//! dies, and keeps per-key order across resharding. A backend supplies two things:
//!
//! - a [`PartitionSource`]: list the stream's partitions (with the parents of split or merged
//!   ones), pin a start position, and open a reader at a checkpoint;
//! - a [`CheckpointStore`]: where leases and checkpoints live
//!   (memory, a directory, DynamoDB in KCL's layout, Blob Storage in the Azure SDKs' layout).
//!
//! and gets a [`crate::Consumer`] from [`GroupEngine::join`].
//!
//! # How a group runs
//! - **One runtime per group per engine.** All consumers of one group that a backend instance
//!   opens are members of one runtime. The runtime holds the leases (one owner id per runtime:
//!   host, process, start time, nonce) and spreads its partitions over its members; a partition
//!   moves between members of one runtime at once, and acks survive the move.
//! - **Leases, renewed and balanced.** The runtime renews its leases every third of the lease
//!   time, all that are due in one [`CheckpointStore::renew_many`] call and before any commit
//!   waiting beside them (a lapsed lease costs a partition, a late commit a little replay), and
//!   balances every [`GroupConfig::balance_interval`] by fair share across the owners
//!   it sees in the store: it claims free or expired partitions up to its share, steals at most
//!   one per round from the owner holding most (after giving that owner two balance intervals
//!   to shed; at once when the runtime holds nothing, since owners are counted from the leases
//!   and no one would shed for it), and sheds gracefully (stop delivering, let in-flight acks arrive for up to
//!   [`GroupConfig::shed_grace`], commit, release) when it holds more than its share and
//!   someone holds less. A lease held by a process of this host that has exited is free at
//!   once.
//! - **Fencing.** Every lease operation goes through one coordinator task per runtime, so a
//!   runtime never races itself. A lease that fails to renew, whose fenced checkpoint write
//!   is refused, or that the lease table read by a balance round names for another owner,
//!   stops that partition at once: its buffered events are dropped and deliveries
//!   already handed out settle into nothing (late acks are ignored, never committed); the next
//!   owner redelivers from the checkpoint.
//! - **Per partition:** the rule of an [`AckTracker`](super::AckTracker) (the checkpoint is the
//!   end of the longest acked prefix; `runtime/tracker.rs` keeps each unsettled delivery with
//!   it), commits every [`GroupConfig::commit_interval`] and on `Consumer::commit`/close,
//!   nacked and dropped deliveries redelivered before any later event of the partition in
//!   first-delivery order with the attempt count raised, a prefetch buffer filled by a reader
//!   task, and the member's in-flight limit.
//! - **Parent before child.** A partition whose parents are not all
//!   [`Checkpoint::Ended`] is not claimed; a partition read to its end
//!   is checkpointed `Ended` only after every event in it was acked, and then released; a child
//!   without a checkpoint starts at its beginning whatever the group's start position.
//! - **Start positions** apply only to partitions without a checkpoint, and are pinned (written
//!   as the partition's first checkpoint) by the first owner, so a later owner does not
//!   resolve `Latest` again and skip what arrived in between.
//! - **Leaving.** Closing a consumer returns its unsettled deliveries to the group; closing or
//!   dropping the last one, or [`GroupEngine::close`], commits and releases every lease at
//!   once.

mod consumer;
mod coordinator;
pub(crate) mod owner;
mod runtime;

pub use consumer::GroupConsumer;

use crate::backend::checkpoint::{Checkpoint, CheckpointStore, PartitionTopology};
use crate::{ConsumerOptions, Event, PartitionId, Position, Result, StartPosition};
use async_trait::async_trait;
use parking_lot::Mutex;
use runtime::Runtime;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// One event read from a partition.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    /// The event.
    pub event: Event,
    /// Its position in the partition (what a checkpoint stores).
    pub position: Position,
}

/// What one [`PartitionReader::read`] returns.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// Events in partition order (may be empty).
    pub records: Vec<SourceRecord>,
    /// The partition has ended (it was split or merged away) and `records` held its last
    /// events: there will be no more.
    pub ended: bool,
}

/// Reads one partition from a checkpoint on.
#[async_trait]
pub trait PartitionReader: Send {
    /// The next events in partition order, at most `max`. Returns when it has at least one
    /// event, when the partition has ended, or after the source's own poll interval with an
    /// empty batch. Cancel-safe: dropping the future loses nothing (the engine drops the
    /// reader of a partition whose lease was lost).
    async fn read(&mut self, max: usize) -> Result<ReadBatch>;
    /// Events after the last one returned, as last seen, where the source knows.
    fn behind(&self) -> Option<u64>;
}

/// A stream as the engine sees it: partitions, start positions, readers.
#[async_trait]
pub trait PartitionSource: Send + Sync + 'static {
    /// The stream's partitions now, open and closed, with the parents of split or merged ones.
    async fn partitions(&self) -> Result<Vec<PartitionTopology>>;
    /// Pins a start for a partition without a checkpoint: `Latest` becomes
    /// `Checkpoint::Processed(last event)`, or `Checkpoint::Start(Earliest)` when the partition
    /// is empty, where the source can tell; what it cannot pin comes back as
    /// `Checkpoint::Start(start)`.
    async fn resolve_start(
        &self,
        partition: &PartitionId,
        start: &StartPosition,
    ) -> Result<Checkpoint>;
    /// Opens a reader of `partition` after `from` (`Processed`: the event after it; `Start`:
    /// that start). Never called with [`Checkpoint::Ended`].
    async fn open(
        &self,
        partition: &PartitionId,
        from: &Checkpoint,
    ) -> Result<Box<dyn PartitionReader>>;
}

/// What happened to a partition's lease in a runtime, for logs, metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupEvent {
    /// The runtime took the partition (free, expired, from a dead process, or stolen).
    Acquired {
        /// The partition.
        partition: PartitionId,
        /// The runtime's owner id.
        owner: String,
        /// The checkpoint it starts after.
        from: Checkpoint,
    },
    /// The runtime lost the partition to another owner (renew or fenced checkpoint refused, or
    /// its lease ran out while the store was unreachable). It delivers no more of it.
    Lost {
        /// The partition.
        partition: PartitionId,
        /// The runtime's owner id.
        owner: String,
    },
    /// The runtime gave the partition up (shed to balance the group, or stopping).
    Released {
        /// The partition.
        partition: PartitionId,
        /// The runtime's owner id.
        owner: String,
    },
    /// The partition was read to its end and checkpointed `Ended`; its children may start.
    Ended {
        /// The partition.
        partition: PartitionId,
        /// The runtime's owner id.
        owner: String,
    },
    /// Every delivery, in the engine's own tests (the fencing and ordering checks need the
    /// order of deliveries and lease changes as the runtime saw them).
    #[cfg(test)]
    Delivered {
        /// The partition.
        partition: PartitionId,
        /// The runtime's owner id.
        owner: String,
        /// The event's position.
        position: Position,
    },
}

/// Called for every [`GroupEvent`]; must be quick (it runs under the runtime's lock, so the
/// order of events is the order in which the runtime changed).
pub type GroupObserver = Arc<dyn Fn(&GroupEvent) + Send + Sync>;

/// Timing and sizes of the groups of one engine.
#[derive(Clone)]
#[non_exhaustive]
pub struct GroupConfig {
    /// How long a lease lasts unless renewed: how long a dead member's partitions wait when
    /// the store cannot tell that it died. Renewed every third of it.
    pub lease_ttl: Duration,
    /// How often the runtime looks at the store's leases to claim, steal or shed.
    pub balance_interval: Duration,
    /// How often acked progress is written to the store (also on `Consumer::commit` and close).
    pub commit_interval: Duration,
    /// How often the source's partitions are listed again (sooner when a partition ends).
    pub topology_interval: Duration,
    /// How long a partition being handed over waits for its in-flight deliveries to be settled
    /// before it is released anyway (their late acks are then ignored).
    pub shed_grace: Duration,
    /// Events buffered per owned partition ahead of `receive`.
    pub prefetch: usize,
    /// Reads pause on a partition whose delivered-but-uncommitted events reach this many (an
    /// unacked event holds back the commit of everything after it).
    pub max_window: usize,
    /// Called on every lease change.
    pub observer: Option<GroupObserver>,
    /// The backend's name in the engine's logs (`kinesis`, `eventhubs`, `local`), so that a
    /// process running several engine-based backends says which one a warning is about.
    pub backend: &'static str,
}

impl fmt::Debug for GroupConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupConfig")
            .field("lease_ttl", &self.lease_ttl)
            .field("balance_interval", &self.balance_interval)
            .field("commit_interval", &self.commit_interval)
            .field("topology_interval", &self.topology_interval)
            .field("shed_grace", &self.shed_grace)
            .field("prefetch", &self.prefetch)
            .field("max_window", &self.max_window)
            .field("observer", &self.observer.is_some())
            .field("backend", &self.backend)
            .finish()
    }
}

impl GroupConfig {
    /// Defaults for a lease time: balance every third of it (at most 2 s), commit every
    /// second, list partitions every 30 s, shed grace 5 s, 1024 events prefetched per
    /// partition.
    pub fn new(lease_ttl: Duration) -> Self {
        let lease_ttl = lease_ttl.max(Duration::from_millis(30));
        GroupConfig {
            lease_ttl,
            balance_interval: (lease_ttl / 3).min(Duration::from_secs(2)),
            commit_interval: Duration::from_secs(1),
            topology_interval: Duration::from_secs(30),
            shed_grace: Duration::from_secs(5),
            prefetch: 1024,
            max_window: 16_384,
            observer: None,
            backend: "group",
        }
    }
    /// Names the backend in the engine's logs.
    pub fn backend(mut self, name: &'static str) -> Self {
        self.backend = name;
        self
    }
    /// Sets the balance interval.
    pub fn balance_interval(mut self, every: Duration) -> Self {
        self.balance_interval = every.max(Duration::from_millis(10));
        self
    }
    /// Sets the commit interval.
    pub fn commit_interval(mut self, every: Duration) -> Self {
        self.commit_interval = every.max(Duration::from_millis(10));
        self
    }
    /// Sets how often partitions are listed again.
    pub fn topology_interval(mut self, every: Duration) -> Self {
        self.topology_interval = every.max(Duration::from_millis(10));
        self
    }
    /// Sets the shed grace.
    pub fn shed_grace(mut self, grace: Duration) -> Self {
        self.shed_grace = grace;
        self
    }
    /// Sets the per-partition prefetch (at least 1).
    pub fn prefetch(mut self, events: usize) -> Self {
        self.prefetch = events.max(1);
        self
    }
    /// Sets the per-partition window of uncommitted deliveries (at least 1).
    pub fn max_window(mut self, events: usize) -> Self {
        self.max_window = events.max(1);
        self
    }
    /// Calls `observer` on every lease change.
    pub fn observer(mut self, observer: impl Fn(&GroupEvent) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }
}

/// The groups of one backend instance over one checkpoint store.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tributary::Result<()> {
/// use std::time::Duration;
/// use tributary::backend::group::{GroupConfig, GroupEngine};
/// use tributary::backend::MemoryCheckpointStore;
/// let engine = GroupEngine::new(
///     std::sync::Arc::new(MemoryCheckpointStore::new()),
///     GroupConfig::new(Duration::from_secs(10)),
/// );
/// // A backend's `consumer()` then returns `engine.join(stream, source, options).await?`.
/// engine.close().await?;
/// # Ok(()) }
/// ```
pub struct GroupEngine {
    store: Arc<dyn CheckpointStore>,
    config: GroupConfig,
    runtimes: Mutex<HashMap<(String, String), Weak<Runtime>>>,
}

impl fmt::Debug for GroupEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupEngine")
            .field("store", &self.store.kind())
            .field("config", &self.config)
            .finish()
    }
}

impl GroupEngine {
    /// An engine keeping its groups in `store`.
    pub fn new(store: Arc<dyn CheckpointStore>, config: GroupConfig) -> Self {
        GroupEngine {
            store,
            config,
            runtimes: Mutex::new(HashMap::new()),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn CheckpointStore> {
        &self.store
    }

    /// Joins `options.group` on `stream`, reading through `source` (used when this engine has
    /// no runtime for the group yet). Returns once the member holds its first partitions, or
    /// knows that others hold them, with the group's start positions pinned: an event sent
    /// after this returns is delivered to the group even with `StartPosition::Latest`.
    pub async fn join(
        &self,
        stream: &str,
        source: Arc<dyn PartitionSource>,
        options: ConsumerOptions,
    ) -> Result<GroupConsumer> {
        options.validate()?;
        let key = (stream.to_owned(), options.group.clone());
        loop {
            enum Found {
                Running(Arc<Runtime>),
                Stopping(Arc<Runtime>),
                Fresh(Arc<Runtime>),
            }
            let found = {
                let mut runtimes = self.runtimes.lock();
                match runtimes
                    .get(&key)
                    .and_then(Weak::upgrade)
                    .filter(|rt| !rt.is_stopped())
                {
                    Some(rt) if !rt.is_stopping() => Found::Running(rt),
                    Some(rt) => Found::Stopping(rt),
                    None => {
                        let rt = Runtime::new(
                            stream,
                            &options.group,
                            options.start.clone(),
                            self.config.clone(),
                            source.clone(),
                            self.store.clone(),
                        );
                        runtimes.insert(key.clone(), Arc::downgrade(&rt));
                        Found::Fresh(rt)
                    }
                }
            };
            let (runtime, fresh) = match found {
                Found::Running(rt) => (rt, false),
                Found::Fresh(rt) => (rt, true),
                Found::Stopping(rt) => {
                    // A runtime of this group is releasing its leases: wait for it, so the new
                    // one finds them free instead of waiting a balance round.
                    rt.stopped().await;
                    continue;
                }
            };
            if let Some(member) = runtime.join(options.max_in_flight) {
                if fresh {
                    runtime.start();
                }
                if let Err(e) = runtime.started().await {
                    runtime.leave(member);
                    return Err(e);
                }
                return Ok(GroupConsumer::new(runtime, member));
            }
            // The runtime began stopping between the lookup and the join: try again.
        }
    }

    /// Closes every group of this engine: members stop receiving, acked progress is committed
    /// and every lease is released.
    pub async fn close(&self) -> crate::Result<()> {
        let runtimes: Vec<Arc<Runtime>> = self
            .runtimes
            .lock()
            .drain()
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        let mut first_error = None;
        for runtime in runtimes {
            if let Err(e) = runtime.shutdown().await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops every runtime the way a crash does: nothing committed, nothing released, members
    /// get `Closed`. The leases stay in the store until they expire.
    #[cfg(test)]
    pub(crate) fn crash(&self) {
        for (_, runtime) in self.runtimes.lock().drain() {
            if let Some(runtime) = runtime.upgrade() {
                runtime.crash();
            }
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_perf;
