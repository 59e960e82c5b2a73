//! An in-process store: fast, shared by the consumers of one process, gone when it exits.

use super::state::GroupStreamState;
use super::{Checkpoint, CheckpointKey, CheckpointStore, Lease, PartitionTopology};
use crate::{PartitionId, Result};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

/// Checkpoints and leases in memory (the `memory://` backend's groups, tests).
#[derive(Debug, Default)]
pub struct MemoryCheckpointStore {
    state: Mutex<HashMap<(String, String), GroupStreamState>>,
}

impl MemoryCheckpointStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, group: &str, stream: &str, f: impl FnOnce(&mut GroupStreamState) -> R) -> R {
        let mut state = self.state.lock();
        f(state
            .entry((group.to_owned(), stream.to_owned()))
            .or_default())
    }
}

#[async_trait]
impl CheckpointStore for MemoryCheckpointStore {
    fn kind(&self) -> &'static str {
        "memory"
    }
    async fn prepare(&self, _: &str, _: &str, _: &[PartitionTopology]) -> Result<()> {
        Ok(())
    }
    async fn checkpoints(
        &self,
        group: &str,
        stream: &str,
    ) -> Result<HashMap<PartitionId, Checkpoint>> {
        Ok(self.with(group, stream, |s| s.checkpoint_map()))
    }
    async fn leases(&self, group: &str, stream: &str) -> Result<Vec<Lease>> {
        Ok(self.with(group, stream, |s| s.lease_list(group, stream)))
    }
    async fn claim(
        &self,
        key: &CheckpointKey,
        owner: &str,
        ttl: Duration,
        expected: Option<&Lease>,
    ) -> Result<Option<Lease>> {
        Ok(self.with(&key.group, &key.stream, |s| {
            s.claim(key, owner, ttl, expected)
        }))
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        Ok(self.with(&lease.key.group, &lease.key.stream, |s| s.renew(lease, ttl)))
    }
    async fn checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Option<Lease>> {
        Ok(self.with(&lease.key.group, &lease.key.stream, |s| {
            s.checkpoint(lease, checkpoint)
        }))
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        self.with(&lease.key.group, &lease.key.stream, |s| s.release(lease));
        Ok(())
    }
}
