//! The state both in-process stores keep per group and stream, and the conditional rules on it.

use super::{Checkpoint, CheckpointKey, Lease, LeaseVersion, ttl_millis};
use crate::{PartitionId, Position, StartPosition, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct LeaseRecord {
    pub(super) owner: String,
    pub(super) expires_at_ms: i64,
    pub(super) version: u64,
}

/// A checkpoint as the file store writes it. Files written before checkpoints had kinds hold a
/// bare string, the last processed offset, and still read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum StoredCheckpoint {
    Tagged(TaggedCheckpoint),
    Legacy(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum TaggedCheckpoint {
    Processed(String),
    Ended,
    StartEarliest,
    StartLatest,
    StartTimestamp(i64),
    StartPosition(String),
}

impl From<&Checkpoint> for StoredCheckpoint {
    fn from(c: &Checkpoint) -> Self {
        StoredCheckpoint::Tagged(match c {
            Checkpoint::Processed(p) => TaggedCheckpoint::Processed(p.to_string()),
            Checkpoint::Ended => TaggedCheckpoint::Ended,
            Checkpoint::Start(StartPosition::Earliest) => TaggedCheckpoint::StartEarliest,
            Checkpoint::Start(StartPosition::Latest) => TaggedCheckpoint::StartLatest,
            Checkpoint::Start(StartPosition::Timestamp(t)) => {
                TaggedCheckpoint::StartTimestamp(t.as_millis())
            }
            Checkpoint::Start(StartPosition::Position(p)) => {
                TaggedCheckpoint::StartPosition(p.to_string())
            }
        })
    }
}

impl From<&StoredCheckpoint> for Checkpoint {
    fn from(c: &StoredCheckpoint) -> Self {
        match c {
            StoredCheckpoint::Legacy(p) => Checkpoint::Processed(Position::new(p)),
            StoredCheckpoint::Tagged(t) => match t {
                TaggedCheckpoint::Processed(p) => Checkpoint::Processed(Position::new(p)),
                TaggedCheckpoint::Ended => Checkpoint::Ended,
                TaggedCheckpoint::StartEarliest => Checkpoint::Start(StartPosition::Earliest),
                TaggedCheckpoint::StartLatest => Checkpoint::Start(StartPosition::Latest),
                TaggedCheckpoint::StartTimestamp(t) => {
                    Checkpoint::Start(StartPosition::Timestamp(Timestamp::from_millis(*t)))
                }
                TaggedCheckpoint::StartPosition(p) => {
                    Checkpoint::Start(StartPosition::Position(Position::new(p)))
                }
            },
        }
    }
}

/// Everything stored for one group on one stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct GroupStreamState {
    #[serde(default)]
    pub(super) checkpoints: BTreeMap<String, StoredCheckpoint>,
    #[serde(default)]
    pub(super) leases: BTreeMap<String, LeaseRecord>,
    /// Version counters survive a release, so a lease seen before a release never matches a
    /// later one (no ABA).
    #[serde(default)]
    pub(super) versions: BTreeMap<String, u64>,
}

fn version_of(lease: &Lease) -> Option<u64> {
    lease.version.0.parse().ok()
}

impl GroupStreamState {
    fn current(&self, partition: &str) -> Option<&LeaseRecord> {
        self.leases.get(partition).filter(|r| !r.owner.is_empty())
    }

    fn next_version(&mut self, partition: &str) -> u64 {
        let counter = self.versions.entry(partition.to_owned()).or_insert(0);
        *counter += 1;
        *counter
    }

    pub(super) fn claim(
        &mut self,
        key: &CheckpointKey,
        owner: &str,
        ttl: Duration,
        expected: Option<&Lease>,
    ) -> Option<Lease> {
        let partition = key.partition.as_str();
        let matches = match (self.current(partition), expected) {
            (None, None) => true,
            (Some(current), Some(seen)) => {
                version_of(seen) == Some(current.version) && seen.owner == current.owner
            }
            // A released lease seen by the caller is as good as none.
            (None, Some(seen)) => seen.owner.is_empty(),
            (Some(_), None) => false,
        };
        if !matches {
            return None;
        }
        let version = self.next_version(partition);
        let record = LeaseRecord {
            owner: owner.to_owned(),
            expires_at_ms: Timestamp::now().as_millis().saturating_add(ttl_millis(ttl)),
            version,
        };
        self.leases.insert(partition.to_owned(), record.clone());
        Some(to_lease(key, &record))
    }

    fn holds(&self, lease: &Lease) -> bool {
        self.current(lease.key.partition.as_str())
            .is_some_and(|r| Some(r.version) == version_of(lease) && r.owner == lease.owner)
    }

    pub(super) fn renew(&mut self, lease: &Lease, ttl: Duration) -> Option<Lease> {
        if !self.holds(lease) {
            return None;
        }
        let partition = lease.key.partition.as_str().to_owned();
        let version = self.next_version(&partition);
        let record = self.leases.get_mut(&partition)?;
        record.version = version;
        record.expires_at_ms = Timestamp::now().as_millis().saturating_add(ttl_millis(ttl));
        Some(to_lease(&lease.key, record))
    }

    pub(super) fn checkpoint(&mut self, lease: &Lease, checkpoint: &Checkpoint) -> Option<Lease> {
        if !self.holds(lease) {
            return None;
        }
        self.checkpoints.insert(
            lease.key.partition.as_str().to_owned(),
            StoredCheckpoint::from(checkpoint),
        );
        Some(lease.clone())
    }

    pub(super) fn release(&mut self, lease: &Lease) -> bool {
        if !self.holds(lease) {
            return false;
        }
        self.leases.remove(lease.key.partition.as_str());
        true
    }

    pub(super) fn checkpoint_map(&self) -> HashMap<PartitionId, Checkpoint> {
        self.checkpoints
            .iter()
            .map(|(p, c)| (PartitionId::new(p), Checkpoint::from(c)))
            .collect()
    }

    pub(super) fn lease_list(&self, group: &str, stream: &str) -> Vec<Lease> {
        self.leases
            .iter()
            .filter(|(_, r)| !r.owner.is_empty())
            .map(|(p, r)| to_lease(&CheckpointKey::new(group, stream, PartitionId::new(p)), r))
            .collect()
    }
}

fn to_lease(key: &CheckpointKey, r: &LeaseRecord) -> Lease {
    Lease {
        key: key.clone(),
        owner: r.owner.clone(),
        expires_at: Timestamp::from_millis(r.expires_at_ms),
        version: LeaseVersion(r.version.to_string()),
    }
}
