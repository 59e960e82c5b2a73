//! The Blob checkpoint store: ownership and checkpoint blobs (layout in the module above).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tributary::backend::Checkpoint;
use tributary::{Error, PartitionId, Position, Result, StartPosition, Timestamp};

use super::client::{BlobContainer, BlobItem, Condition, WriteError, Written};
use super::config::BlobStoreConfig;
use super::offsets::OffsetBook;

const OWNER_ID: &str = "ownerid";
const OFFSET: &str = "offset";
const SEQUENCE_NUMBER: &str = "sequencenumber";
const TRIBUTARY: &str = "tributarycheckpoint";
/// What other SDKs read as "before the first event".
const BEGINNING: &str = "-1";

/// A partition's ownership as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ownership {
    pub partition: PartitionId,
    /// Empty when released.
    pub owner: String,
    pub etag: String,
    pub last_modified: Timestamp,
}

/// (ownership blob, ETag).
pub(super) type WrittenVersion = (String, String);

/// Ownership and checkpoints in Blob Storage (see the module documentation for the layout).
#[derive(Clone)]
pub struct BlobCheckpointStore {
    pub(super) container: BlobContainer,
    config: BlobStoreConfig,
    pub(crate) offsets: OffsetBook,
    prepared: Arc<tokio::sync::OnceCell<()>>,
    /// When the ownership versions this instance wrote lapse, and for how long they were
    /// taken: (blob, ETag) → (expiry by this clock, lease time). A version written elsewhere lapses at its `Last-Modified` + `ownership_ttl`.
    pub(super) written: Arc<Mutex<HashMap<WrittenVersion, (Timestamp, Duration)>>>,
}

impl fmt::Debug for BlobCheckpointStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobCheckpointStore")
            .field("container", &self.container)
            .field("namespace", &self.config.namespace)
            .finish_non_exhaustive()
    }
}

impl BlobCheckpointStore {
    /// A store on `config`'s container; nothing is contacted until first use.
    pub fn new(config: BlobStoreConfig) -> Result<Self> {
        let container = BlobContainer::new(
            &config.account_url,
            &config.container,
            config.auth.to_client_auth()?,
            config.timeout,
        )?;
        Ok(BlobCheckpointStore {
            container,
            config,
            offsets: OffsetBook::keeping(),
            prepared: Arc::new(tokio::sync::OnceCell::new()),
            written: Arc::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BlobStoreConfig {
        &self.config
    }

    /// Creates the container if it does not exist (done once, on first use).
    pub async fn ensure_container(&self) -> Result<()> {
        self.prepared
            .get_or_try_init(|| self.container.ensure_container())
            .await
            .map(|_| ())
    }

    pub(super) fn consumer_group<'a>(&'a self, group: &'a str) -> &'a str {
        self.config.consumer_group.as_deref().unwrap_or(group)
    }

    fn prefix(&self, group: &str, hub: &str, kind: &str) -> String {
        format!(
            "{}/{}/{}/{kind}/",
            self.config.namespace,
            hub,
            self.consumer_group(group)
        )
        .to_lowercase()
    }

    pub(super) fn blob_name(
        &self,
        group: &str,
        hub: &str,
        kind: &str,
        partition: &PartitionId,
    ) -> String {
        // Event Hubs partition ids are digits, which lower-casing leaves alone; other ids (the
        // contract test's) keep their case so they read back as written.
        format!("{}{}", self.prefix(group, hub, kind), partition.as_str())
    }

    fn partition_of(name: &str) -> PartitionId {
        PartitionId::new(name.rsplit('/').next().unwrap_or(name))
    }

    pub(crate) async fn list_ownership(&self, group: &str, hub: &str) -> Result<Vec<Ownership>> {
        self.ensure_container().await?;
        let items = self
            .container
            .list(&self.prefix(group, hub, "ownership"))
            .await
            .map_err(|e| e.context(format!("ownership of `{hub}` for group `{group}`")))?;
        Ok(items
            .into_iter()
            .map(|item: BlobItem| Ownership {
                partition: Self::partition_of(&item.name),
                owner: item.metadata.get(OWNER_ID).cloned().unwrap_or_default(),
                etag: item.etag,
                last_modified: item.last_modified,
            })
            .collect())
    }

    /// Writes `owner` into the ownership blob if its ETag is still `expected` (`None`: only if
    /// the blob does not exist). `Ok(None)`: someone else wrote first.
    pub(crate) async fn write_ownership(
        &self,
        group: &str,
        hub: &str,
        partition: &PartitionId,
        owner: &str,
        expected: Option<&str>,
    ) -> Result<Option<Ownership>> {
        self.ensure_container().await?;
        let blob = self.blob_name(group, hub, "ownership", partition);
        let metadata = [(OWNER_ID, owner)];
        let written = match expected {
            Some(etag) => {
                self.container
                    .set_metadata(&blob, &metadata, Condition::Matches(etag))
                    .await
            }
            None => {
                self.container
                    .put_empty(&blob, &metadata, Condition::Absent)
                    .await
            }
        };
        match written {
            Ok(Written {
                etag,
                last_modified,
            }) => Ok(Some(Ownership {
                partition: partition.clone(),
                owner: owner.to_string(),
                etag,
                last_modified,
            })),
            // Deleted under us: whatever the caller saw is gone, so it lost.
            Err(WriteError::Conflict | WriteError::Missing) => Ok(None),
            Err(WriteError::Other(e)) => Err(e.context(format!(
                "ownership of partition {partition} of `{hub}` for group `{group}`"
            ))),
        }
    }

    pub(crate) async fn list_checkpoints(
        &self,
        group: &str,
        hub: &str,
    ) -> Result<HashMap<PartitionId, Checkpoint>> {
        self.ensure_container().await?;
        let items = self
            .container
            .list(&self.prefix(group, hub, "checkpoint"))
            .await
            .map_err(|e| e.context(format!("checkpoints of `{hub}` for group `{group}`")))?;
        let mut checkpoints = HashMap::new();
        for item in items {
            let partition = Self::partition_of(&item.name);
            if let Some(stored) = decode(&item.metadata) {
                checkpoints.insert(partition, stored);
            } else {
                tracing::warn!(
                    blob = %item.name,
                    "checkpoint blob without a readable sequencenumber; ignored"
                );
            }
        }
        Ok(checkpoints)
    }

    pub(crate) async fn write_checkpoint(
        &self,
        group: &str,
        hub: &str,
        partition: &PartitionId,
        checkpoint: &Checkpoint,
    ) -> Result<()> {
        self.ensure_container().await?;
        let blob = self.blob_name(group, hub, "checkpoint", partition);
        let (offset, sequence, tributary) = match checkpoint {
            Checkpoint::Processed(position) => {
                let sequence: i64 = position.as_str().parse().map_err(|_| {
                    Error::config(format!(
                        "position `{position}` of partition {partition} of `{hub}` is not an Event Hubs sequence number"
                    ))
                })?;
                let offset = self
                    .offsets
                    .take(group, hub, partition.as_str(), sequence)
                    .unwrap_or_default();
                (offset, sequence.to_string(), None)
            }
            Checkpoint::Start(StartPosition::Earliest) => {
                (BEGINNING.to_string(), BEGINNING.to_string(), None)
            }
            Checkpoint::Start(start) => (
                BEGINNING.to_string(),
                BEGINNING.to_string(),
                Some(match start {
                    StartPosition::Latest => "start:latest".to_string(),
                    StartPosition::Timestamp(t) => format!("start:@{}", t.as_millis()),
                    StartPosition::Position(p) => format!("start:position:{p}"),
                    StartPosition::Earliest => unreachable!("matched above"),
                }),
            ),
            Checkpoint::Ended => (
                BEGINNING.to_string(),
                BEGINNING.to_string(),
                Some("ended".to_string()),
            ),
            other => {
                return Err(Error::unsupported(format!(
                    "the Blob checkpoint store cannot keep {other:?}"
                )));
            }
        };
        let mut metadata = vec![
            (OFFSET, offset.as_str()),
            (SEQUENCE_NUMBER, sequence.as_str()),
        ];
        if let Some(value) = &tributary {
            metadata.push((TRIBUTARY, value.as_str()));
        }
        let mut written = self
            .container
            .set_metadata(&blob, &metadata, Condition::None)
            .await;
        if let Err(WriteError::Missing) = written {
            written = self
                .container
                .put_empty(&blob, &metadata, Condition::None)
                .await;
        }
        match written {
            Ok(_) => Ok(()),
            Err(WriteError::Conflict | WriteError::Missing) => Err(Error::unavailable(format!(
                "checkpoint of partition {partition} of `{hub}` for group `{group}`: the blob changed during the write"
            ))
            .with_retryable(true)),
            Err(WriteError::Other(e)) => Err(e
                .context(format!(
                    "checkpoint of partition {partition} of `{hub}` for group `{group}`"
                ))),
        }
    }
}

/// Reads a checkpoint blob's metadata: tributary's own entry first, else the SDKs'
/// `sequencenumber` (`-1`: from the beginning).
fn decode(metadata: &BTreeMap<String, String>) -> Option<Checkpoint> {
    if let Some(value) = metadata.get(TRIBUTARY) {
        if value == "ended" {
            return Some(Checkpoint::Ended);
        }
        let start = value.strip_prefix("start:")?;
        return Some(Checkpoint::Start(match start {
            "earliest" => StartPosition::Earliest,
            "latest" => StartPosition::Latest,
            _ => {
                if let Some(millis) = start.strip_prefix('@') {
                    StartPosition::Timestamp(Timestamp::from_millis(millis.parse().ok()?))
                } else {
                    StartPosition::Position(Position::new(start.strip_prefix("position:")?))
                }
            }
        }));
    }
    let sequence: i64 = metadata.get(SEQUENCE_NUMBER)?.trim().parse().ok()?;
    if sequence < 0 {
        return Some(Checkpoint::Start(StartPosition::Earliest));
    }
    Some(Checkpoint::Processed(Position::new(sequence.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn checkpoints_of_other_sdks_read_as_processed_positions() {
        assert_eq!(
            decode(&meta(&[("offset", "4096"), ("sequencenumber", "41")])),
            Some(Checkpoint::Processed(Position::new("41")))
        );
        assert_eq!(
            decode(&meta(&[("offset", "-1"), ("sequencenumber", "-1")])),
            Some(Checkpoint::Start(StartPosition::Earliest))
        );
        assert_eq!(decode(&meta(&[("offset", "12")])), None);
    }

    #[test]
    fn tributary_entries_win_over_the_fallback() {
        assert_eq!(
            decode(&meta(&[
                ("tributarycheckpoint", "start:@1700000000000"),
                ("sequencenumber", "-1")
            ])),
            Some(Checkpoint::Start(StartPosition::Timestamp(
                Timestamp::from_millis(1_700_000_000_000)
            )))
        );
        assert_eq!(
            decode(&meta(&[("tributarycheckpoint", "start:position:17")])),
            Some(Checkpoint::Start(StartPosition::Position(Position::new(
                "17"
            ))))
        );
        assert_eq!(
            decode(&meta(&[("tributarycheckpoint", "ended")])),
            Some(Checkpoint::Ended)
        );
        assert_eq!(
            decode(&meta(&[("tributarycheckpoint", "start:latest")])),
            Some(Checkpoint::Start(StartPosition::Latest))
        );
    }
}
