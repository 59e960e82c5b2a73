//! tributary's `CheckpointStore` on the Blob layout: a lease is an ownership blob, its version
//! the blob's ETag.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use tributary::backend::{
    Checkpoint, CheckpointKey, CheckpointStore, Lease, LeaseVersion, PartitionTopology,
};
use tributary::{PartitionId, Result, Timestamp};

use super::store::{BlobCheckpointStore, Ownership};

/// Versions this instance wrote are remembered this long past their expiry, then forgotten
/// (a listing then reads them by `Last-Modified`, which gives the same answer by then).
const FORGET_AFTER: i64 = 10 * 60 * 1000;

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl BlobCheckpointStore {
    fn remember(&self, blob: &str, ownership: &Ownership, ttl: Duration) -> Timestamp {
        let expires_at =
            Timestamp::from_millis(Timestamp::now().as_millis().saturating_add(millis(ttl)));
        let mut written = self.written.lock();
        let now = Timestamp::now().as_millis();
        written.retain(|_, (expiry, _)| expiry.as_millis().saturating_add(FORGET_AFTER) > now);
        written.insert(
            (blob.to_string(), ownership.etag.clone()),
            (expires_at, ttl),
        );
        expires_at
    }

    fn expiry(&self, blob: &str, ownership: &Ownership) -> Timestamp {
        if let Some((expiry, _)) = self
            .written
            .lock()
            .get(&(blob.to_string(), ownership.etag.clone()))
        {
            return *expiry;
        }
        Timestamp::from_millis(
            ownership
                .last_modified
                .as_millis()
                .saturating_add(millis(self.config().ownership_ttl)),
        )
    }

    fn lease(&self, key: &CheckpointKey, ownership: Ownership, expires_at: Timestamp) -> Lease {
        Lease {
            key: key.clone(),
            owner: ownership.owner,
            expires_at,
            version: LeaseVersion(ownership.etag),
        }
    }

    fn ownership_blob(&self, key: &CheckpointKey) -> String {
        self.blob_name(&key.group, &key.stream, "ownership", &key.partition)
    }

    /// Writes `owner` over the version `etag` (renew, steal, release).
    async fn overwrite(
        &self,
        key: &CheckpointKey,
        owner: &str,
        etag: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let written = self
            .write_ownership(&key.group, &key.stream, &key.partition, owner, Some(etag))
            .await?;
        Ok(written.map(|ownership| {
            let expires_at = self.remember(&self.ownership_blob(key), &ownership, ttl);
            self.lease(key, ownership, expires_at)
        }))
    }
}

#[async_trait]
impl CheckpointStore for BlobCheckpointStore {
    fn kind(&self) -> &'static str {
        "blob"
    }

    async fn prepare(
        &self,
        _group: &str,
        _stream: &str,
        _partitions: &[PartitionTopology],
    ) -> Result<()> {
        // Blobs are made on first claim and first checkpoint, as the SDKs do.
        self.ensure_container().await
    }

    async fn checkpoints(
        &self,
        group: &str,
        stream: &str,
    ) -> Result<HashMap<PartitionId, Checkpoint>> {
        self.list_checkpoints(group, stream).await
    }

    async fn leases(&self, group: &str, stream: &str) -> Result<Vec<Lease>> {
        let ownerships = self.list_ownership(group, stream).await?;
        Ok(ownerships
            .into_iter()
            .map(|ownership| {
                let key = CheckpointKey::new(group, stream, ownership.partition.clone());
                let expires_at = self.expiry(&self.ownership_blob(&key), &ownership);
                self.lease(&key, ownership, expires_at)
            })
            .collect())
    }

    async fn claim(
        &self,
        key: &CheckpointKey,
        owner: &str,
        ttl: Duration,
        expected: Option<&Lease>,
    ) -> Result<Option<Lease>> {
        if let Some(expected) = expected {
            return self.overwrite(key, owner, &expected.version.0, ttl).await;
        }
        // "No lease": the blob does not exist yet, or holds a released (empty) owner.
        if let Some(ownership) = self
            .write_ownership(&key.group, &key.stream, &key.partition, owner, None)
            .await?
        {
            let expires_at = self.remember(&self.ownership_blob(key), &ownership, ttl);
            return Ok(Some(self.lease(key, ownership, expires_at)));
        }
        let blob = self.ownership_blob(key);
        let current = self.container.properties(&blob).await.map_err(|e| {
            e.context(format!(
                "ownership of partition {} of `{}`",
                key.partition, key.stream
            ))
        })?;
        match current {
            Some(item) if item.metadata.get("ownerid").is_none_or(|o| o.is_empty()) => {
                self.overwrite(key, owner, &item.etag, ttl).await
            }
            _ => Ok(None),
        }
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        if lease.owner.is_empty() {
            return Ok(None);
        }
        self.overwrite(&lease.key, &lease.owner, &lease.version.0, ttl)
            .await
    }

    async fn checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Option<Lease>> {
        // The checkpoint blob cannot be written conditionally on the ownership blob: renewing
        // the ownership (a conditional write) first proves the lease is still current.
        let ttl = self
            .written
            .lock()
            .get(&(self.ownership_blob(&lease.key), lease.version.0.clone()))
            .map(|(_, ttl)| *ttl)
            .unwrap_or(self.config().ownership_ttl);
        let Some(renewed) = self.renew(lease, ttl).await? else {
            return Ok(None);
        };
        self.write_checkpoint(
            &lease.key.group,
            &lease.key.stream,
            &lease.key.partition,
            checkpoint,
        )
        .await?;
        Ok(Some(renewed))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.write_ownership(
            &lease.key.group,
            &lease.key.stream,
            &lease.key.partition,
            "",
            Some(&lease.version.0),
        )
        .await
        .map(|_| ())
    }
}
