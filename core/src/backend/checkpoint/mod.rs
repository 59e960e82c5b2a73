//! Checkpoints (how far a group has processed each partition) and leases (which consumer owns
//! a partition until when), for backends that keep progress outside the server: Kinesis
//! (DynamoDB, in KCL's layout), Event Hubs (Blob Storage, in the Azure SDKs' layout) and the
//! local backend (a directory, or memory).
//!
//! The trait is shaped for conditional-write stores: every lease carries a version (a counter
//! or an ETag), and every claim, renew, checkpoint and release only takes effect on the version
//! the caller holds. That is what makes fencing work: a consumer whose partition was taken over
//! cannot renew it or write a checkpoint for it any more, so its late acks are never committed.
//!
//! Every implementation must pass the published contract test,
//! `tributary_conformance::checkpoint_store_contract`.

mod file;
mod memory;
mod state;

pub use file::FileCheckpointStore;
pub(crate) use file::escape_component;
pub use memory::MemoryCheckpointStore;

use crate::{PartitionId, Position, Result, StartPosition, Timestamp};
use async_trait::async_trait;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// Which partition of which stream a checkpoint or lease is about, for which group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckpointKey {
    /// Consumer group.
    pub group: String,
    /// Stream.
    pub stream: String,
    /// Partition.
    pub partition: PartitionId,
}

impl CheckpointKey {
    /// A key for `group` / `stream` / `partition`.
    pub fn new(group: &str, stream: &str, partition: PartitionId) -> Self {
        CheckpointKey {
            group: group.to_owned(),
            stream: stream.to_owned(),
            partition,
        }
    }
}

/// The progress of one partition for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Checkpoint {
    /// Nothing processed yet; the group starts here. Written by the partition's first owner so
    /// that a later owner does not resolve `Latest` again and skip what arrived in between.
    /// Sources pin `Latest` to `Processed(last event)` (or `Start(Earliest)` for an empty
    /// partition) where they can; what they cannot pin stays a start.
    Start(StartPosition),
    /// Every event up to and including this position is processed.
    Processed(Position),
    /// The partition was read to its end (it was split or merged away) and every event in it
    /// is processed: its children may start.
    Ended,
}

/// An opaque lease version: a counter (memory, file, DynamoDB's `leaseCounter`) or an ETag
/// (Blob Storage). Every successful claim and renew returns a lease with a new one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseVersion(pub String);

impl fmt::Display for LeaseVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Ownership of one partition by one consumer until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The partition owned.
    pub key: CheckpointKey,
    /// Who owns it (a unique consumer id). Empty: nobody (a released lease, in stores that
    /// keep an entry per partition).
    pub owner: String,
    /// When the lease lapses unless renewed, by this store instance's clock. A store whose
    /// server keeps no expiry (KCL's lease table) computes it from when it first saw the
    /// current version plus the lease time.
    pub expires_at: Timestamp,
    /// Changes on every claim and renew; renew, checkpoint and release must present it.
    pub version: LeaseVersion,
}

impl Lease {
    /// Whether the lease has lapsed at `now`, or has no owner.
    pub fn is_free(&self, now: Timestamp) -> bool {
        self.owner.is_empty() || self.expires_at <= now
    }
}

/// A partition as a source lists it, with the partitions it was split or merged from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTopology {
    /// The partition.
    pub id: PartitionId,
    /// The partitions it was split or merged from (empty for an original partition).
    pub parents: Vec<PartitionId>,
}

impl PartitionTopology {
    /// A partition with no parents.
    pub fn root(id: PartitionId) -> Self {
        PartitionTopology {
            id,
            parents: Vec::new(),
        }
    }
}

/// Where a group's checkpoints and leases live.
///
/// # Behavior
/// - [`claim`](CheckpointStore::claim) succeeds only if the stored lease is still exactly the
///   one the caller saw (`expected`, compared by version; `None` = no lease or a released one),
///   so of several claimants racing for one partition exactly one wins. Whether taking an
///   unexpired lease of another owner (a steal) is allowed is the caller's decision.
/// - [`renew`](CheckpointStore::renew), [`checkpoint`](CheckpointStore::checkpoint) and
///   [`release`](CheckpointStore::release) succeed only on the current version; after a
///   takeover they return `Ok(None)` (or do nothing) and the caller must stop delivering that
///   partition.
/// - Errors are for the store itself being unreachable or corrupt, never for a lost race.
#[async_trait]
pub trait CheckpointStore: Send + Sync + fmt::Debug {
    /// A short name for messages and metrics (`"memory"`, `"file"`, `"dynamodb"`, `"blob"`).
    fn kind(&self) -> &'static str;

    /// Tells the store which partitions exist, so a store whose layout keeps an entry per
    /// partition (KCL lease items with `parentShardId`) can create the missing ones; creating
    /// is conditional, never an overwrite. Stores without such entries do nothing.
    async fn prepare(
        &self,
        group: &str,
        stream: &str,
        partitions: &[PartitionTopology],
    ) -> Result<()>;

    /// Checkpoints of every partition of `group` on `stream` that has one.
    async fn checkpoints(
        &self,
        group: &str,
        stream: &str,
    ) -> Result<HashMap<PartitionId, Checkpoint>>;

    /// Current leases of `group` on `stream`, expired ones included. A partition that nobody
    /// owns may have no lease or one with an empty owner.
    async fn leases(&self, group: &str, stream: &str) -> Result<Vec<Lease>>;

    /// Takes `key` for `owner` for `ttl`, if the stored lease is still `expected`.
    /// `Ok(None)`: lost the race (or `expected` is stale).
    async fn claim(
        &self,
        key: &CheckpointKey,
        owner: &str,
        ttl: Duration,
        expected: Option<&Lease>,
    ) -> Result<Option<Lease>>;

    /// Extends a lease the caller holds. `Ok(None)`: it is no longer the current lease.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>>;

    /// Saves a checkpoint, fenced by `lease`: `Ok(None)` and nothing written when the lease is
    /// no longer current. Returns the lease to hold from now on (a store whose checkpoint write
    /// bumps the version, like KCL's `leaseCounter`, returns the new version).
    async fn checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Option<Lease>>;

    /// Gives a lease up so another consumer can claim it at once. Does nothing when the lease
    /// is no longer current.
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// Extends several leases at once, each exactly as [`renew`](CheckpointStore::renew)
    /// would: one result per lease, in order, a stale lease's `Ok(None)` beside the others'
    /// renewals.
    ///
    /// A group renews all its due leases in one call. The default sends the renewals
    /// concurrently, up to 16 at a time (a network store pays one round trip, not one per
    /// partition). A store that keeps a group's leases in one place overrides it to write them
    /// once: the file store does one locked, fsynced replace instead of one per partition, so
    /// a busy disk delays a renewal by one write, not by one per partition held.
    async fn renew_many(&self, leases: &[Lease], ttl: Duration) -> Vec<Result<Option<Lease>>> {
        use futures::StreamExt;
        // Made before the first await: a lazy `map` held across it is a closure the `Send`
        // bound of `async_trait` cannot prove for every lifetime.
        let calls: Vec<_> = leases.iter().map(|lease| self.renew(lease, ttl)).collect();
        futures::stream::iter(calls)
            .buffered(CONCURRENT_STORE_CALLS)
            .collect()
            .await
    }

    /// Saves several checkpoints at once, each exactly as
    /// [`checkpoint`](CheckpointStore::checkpoint) would, fenced by its own lease: one result
    /// per pair, in order. The default sends them concurrently, up to 16 at a time; the file
    /// store writes them in one replace.
    async fn checkpoint_many(
        &self,
        checkpoints: &[(Lease, Checkpoint)],
    ) -> Vec<Result<Option<Lease>>> {
        use futures::StreamExt;
        let calls: Vec<_> = checkpoints
            .iter()
            .map(|(lease, checkpoint)| self.checkpoint(lease, checkpoint))
            .collect();
        futures::stream::iter(calls)
            .buffered(CONCURRENT_STORE_CALLS)
            .collect()
            .await
    }
}

/// How many calls the default [`CheckpointStore::renew_many`] and
/// [`CheckpointStore::checkpoint_many`] keep in flight: a member holding 64 Kinesis shards
/// renews in four round trips, without 64 requests at once against a table's capacity.
const CONCURRENT_STORE_CALLS: usize = 16;

/// A lease time in milliseconds, saturating.
pub(crate) fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}
