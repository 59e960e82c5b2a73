//! Checkpoints (the committed position per group, stream and partition) and leases (which
//! consumer owns a partition until when), for backends that keep progress outside the server:
//! Kinesis, Event Hubs and the local backend.
//!
//! The trait is shaped for conditional-write stores (DynamoDB, Blob with ETags): every lease
//! carries a version, and renew/release only succeed on the version the caller holds.

use crate::{Error, PartitionId, Position, Result, Timestamp};
use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
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

/// Ownership of one partition by one consumer until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The partition owned.
    pub key: CheckpointKey,
    /// Who owns it (a unique consumer id).
    pub owner: String,
    /// When the lease lapses unless renewed.
    pub expires_at: Timestamp,
    /// Changes on every claim and renew; renew and release must present the current one.
    pub version: u64,
}

/// Load/save positions and claim/renew/release leases.
///
/// # Behavior
/// - `claim` succeeds when the partition has no lease, its lease has expired, or the caller
///   already owns it; otherwise it returns `Ok(None)`.
/// - `renew` and `release` succeed only for the current version; a lease taken over by someone
///   else makes `renew` return `Ok(None)` (the caller must stop processing that partition).
#[async_trait]
pub trait CheckpointStore: Send + Sync + fmt::Debug {
    /// All saved positions of `group` on `stream`.
    async fn load(&self, group: &str, stream: &str) -> Result<HashMap<PartitionId, Position>>;
    /// Saves the committed position of one partition.
    async fn save(&self, key: &CheckpointKey, position: &Position) -> Result<()>;
    /// Claims a partition for `owner` for `ttl`.
    async fn claim(&self, key: &CheckpointKey, owner: &str, ttl: Duration)
    -> Result<Option<Lease>>;
    /// Extends a lease the caller holds.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>>;
    /// Gives a lease up so another consumer can claim it at once.
    async fn release(&self, lease: &Lease) -> Result<()>;
    /// Current (possibly expired) leases of `group` on `stream`.
    async fn leases(&self, group: &str, stream: &str) -> Result<Vec<Lease>>;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LeaseRecord {
    owner: String,
    expires_at_ms: i64,
    version: u64,
}

/// Everything stored for one group on one stream; shared by both implementations.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct GroupStreamState {
    #[serde(default)]
    checkpoints: BTreeMap<String, String>,
    #[serde(default)]
    leases: BTreeMap<String, LeaseRecord>,
}

impl GroupStreamState {
    fn claim(&mut self, key: &CheckpointKey, owner: &str, ttl: Duration) -> Option<Lease> {
        let now = Timestamp::now().as_millis();
        let current = self.leases.get(key.partition.as_str());
        if let Some(l) = current
            && l.owner != owner
            && l.expires_at_ms > now
        {
            return None;
        }
        let version = current.map_or(1, |l| l.version + 1);
        let record = LeaseRecord {
            owner: owner.to_owned(),
            expires_at_ms: now.saturating_add(ttl.as_millis() as i64),
            version,
        };
        self.leases
            .insert(key.partition.as_str().to_owned(), record.clone());
        Some(to_lease(key, &record))
    }

    fn renew(&mut self, lease: &Lease, ttl: Duration) -> Option<Lease> {
        let record = self.leases.get_mut(lease.key.partition.as_str())?;
        if record.version != lease.version || record.owner != lease.owner {
            return None;
        }
        record.version += 1;
        record.expires_at_ms = Timestamp::now()
            .as_millis()
            .saturating_add(ttl.as_millis() as i64);
        Some(to_lease(&lease.key, record))
    }

    fn release(&mut self, lease: &Lease) {
        let partition = lease.key.partition.as_str();
        if self
            .leases
            .get(partition)
            .is_some_and(|r| r.version == lease.version && r.owner == lease.owner)
        {
            self.leases.remove(partition);
        }
    }

    fn checkpoints(&self) -> HashMap<PartitionId, Position> {
        self.checkpoints
            .iter()
            .map(|(p, pos)| (PartitionId::new(p), Position::new(pos)))
            .collect()
    }

    fn leases(&self, group: &str, stream: &str) -> Vec<Lease> {
        self.leases
            .iter()
            .map(|(p, r)| to_lease(&CheckpointKey::new(group, stream, PartitionId::new(p)), r))
            .collect()
    }
}

fn to_lease(key: &CheckpointKey, r: &LeaseRecord) -> Lease {
    Lease {
        key: key.clone(),
        owner: r.owner.clone(),
        expires_at: Timestamp::from_millis(r.expires_at_ms),
        version: r.version,
    }
}

/// An in-process store: fast, shared by consumers of one process, gone when it exits.
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
    async fn load(&self, group: &str, stream: &str) -> Result<HashMap<PartitionId, Position>> {
        Ok(self.with(group, stream, |s| s.checkpoints()))
    }
    async fn save(&self, key: &CheckpointKey, position: &Position) -> Result<()> {
        self.with(&key.group, &key.stream, |s| {
            s.checkpoints
                .insert(key.partition.to_string(), position.to_string())
        });
        Ok(())
    }
    async fn claim(
        &self,
        key: &CheckpointKey,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        Ok(self.with(&key.group, &key.stream, |s| s.claim(key, owner, ttl)))
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        Ok(self.with(&lease.key.group, &lease.key.stream, |s| s.renew(lease, ttl)))
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        self.with(&lease.key.group, &lease.key.stream, |s| s.release(lease));
        Ok(())
    }
    async fn leases(&self, group: &str, stream: &str) -> Result<Vec<Lease>> {
        Ok(self.with(group, stream, |s| s.leases(group, stream)))
    }
}

/// A directory-backed store for single-host use that survives a process kill.
///
/// One JSON file per group and stream, replaced atomically (write to a temporary file, fsync,
/// rename, fsync the directory) under an exclusive file lock, so concurrent processes on the
/// same host see each other's leases and a crash leaves either the old or the new state.
#[derive(Debug, Clone)]
pub struct FileCheckpointStore {
    dir: PathBuf,
}

/// Makes a name safe as one path component: keeps `[A-Za-z0-9._-]`, escapes the rest as `%XX`.
pub(crate) fn escape_component(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && !out.is_empty()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl FileCheckpointStore {
    /// A store rooted at `dir`, created if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| {
            Error::io(
                format!("creating checkpoint directory {}", dir.display()),
                e,
            )
        })?;
        Ok(FileCheckpointStore { dir })
    }

    fn path(&self, group: &str, stream: &str) -> PathBuf {
        self.dir
            .join(escape_component(group))
            .join(format!("{}.json", escape_component(stream)))
    }

    async fn with<R: Send + 'static>(
        &self,
        group: &str,
        stream: &str,
        write: bool,
        f: impl FnOnce(&mut GroupStreamState) -> R + Send + 'static,
    ) -> Result<R> {
        let path = self.path(group, stream);
        tokio::task::spawn_blocking(move || locked_update(&path, write, f))
            .await
            .map_err(|e| Error::other(format!("checkpoint task failed: {e}")))?
    }
}

fn locked_update<R>(
    path: &Path,
    write: bool,
    f: impl FnOnce(&mut GroupStreamState) -> R,
) -> Result<R> {
    let dir = path.parent().expect("checkpoint path has a parent");
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let lock_path = path.with_extension("lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
    lock.lock()
        .map_err(|e| Error::io(format!("locking {}", lock_path.display()), e))?;
    let mut state = match fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<GroupStreamState>(&bytes).map_err(|e| {
            Error::corrupt(format!(
                "checkpoint file {} is not valid: {e}; move it away to reset this group",
                path.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => GroupStreamState::default(),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let result = f(&mut state);
    if write {
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(&state).expect("state serialises");
        let mut file = fs::File::create(&tmp)
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        file.write_all(&body)
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        fs::rename(&tmp, path)
            .map_err(|e| Error::io(format!("replacing {}", path.display()), e))?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(result)
}

#[async_trait]
impl CheckpointStore for FileCheckpointStore {
    async fn load(&self, group: &str, stream: &str) -> Result<HashMap<PartitionId, Position>> {
        self.with(group, stream, false, |s| s.checkpoints()).await
    }
    async fn save(&self, key: &CheckpointKey, position: &Position) -> Result<()> {
        let (partition, position) = (key.partition.to_string(), position.to_string());
        self.with(&key.group, &key.stream, true, move |s| {
            s.checkpoints.insert(partition, position);
        })
        .await
    }
    async fn claim(
        &self,
        key: &CheckpointKey,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let (k, owner) = (key.clone(), owner.to_owned());
        self.with(&key.group, &key.stream, true, move |s| {
            s.claim(&k, &owner, ttl)
        })
        .await
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        let l = lease.clone();
        self.with(&lease.key.group, &lease.key.stream, true, move |s| {
            s.renew(&l, ttl)
        })
        .await
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        let l = lease.clone();
        self.with(&lease.key.group, &lease.key.stream, true, move |s| {
            s.release(&l)
        })
        .await
    }
    async fn leases(&self, group: &str, stream: &str) -> Result<Vec<Lease>> {
        let (g, st) = (group.to_owned(), stream.to_owned());
        self.with(group, stream, false, move |s| s.leases(&g, &st))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exercise(store: &dyn CheckpointStore) {
        let key = CheckpointKey::new("g", "orders/eu", PartitionId::from(0));
        assert!(store.load("g", "orders/eu").await.unwrap().is_empty());
        store.save(&key, &Position::from_offset(41)).await.unwrap();
        store.save(&key, &Position::from_offset(42)).await.unwrap();
        let loaded = store.load("g", "orders/eu").await.unwrap();
        assert_eq!(loaded[&PartitionId::from(0)], Position::from_offset(42));

        let ttl = Duration::from_secs(30);
        let a = store.claim(&key, "a", ttl).await.unwrap().expect("free");
        assert!(store.claim(&key, "b", ttl).await.unwrap().is_none());
        let a2 = store.renew(&a, ttl).await.unwrap().expect("still mine");
        assert!(
            store.renew(&a, ttl).await.unwrap().is_none(),
            "stale version"
        );
        store.release(&a2).await.unwrap();
        let b = store
            .claim(&key, "b", ttl)
            .await
            .unwrap()
            .expect("released");
        assert_eq!(
            store.leases("g", "orders/eu").await.unwrap(),
            vec![b.clone()]
        );

        let expired = store
            .claim(&key, "b", Duration::from_millis(0))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let c = store.claim(&key, "c", ttl).await.unwrap().expect("expired");
        assert!(store.renew(&expired, ttl).await.unwrap().is_none());
        assert_eq!(c.owner, "c");
    }

    #[tokio::test]
    async fn memory_store_contract() {
        exercise(&MemoryCheckpointStore::new()).await;
    }

    #[tokio::test]
    async fn file_store_contract_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpointStore::open(dir.path()).unwrap();
        exercise(&store).await;
        let reopened = FileCheckpointStore::open(dir.path()).unwrap();
        let loaded = reopened.load("g", "orders/eu").await.unwrap();
        assert_eq!(loaded[&PartitionId::from(0)], Position::from_offset(42));
    }

    #[tokio::test]
    async fn corrupt_checkpoint_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpointStore::open(dir.path()).unwrap();
        let path = store.path("g", "s");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"{not json").unwrap();
        let err = store.load("g", "s").await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
        assert!(err.to_string().contains("s.json"), "{err}");
    }

    #[test]
    fn escaping_keeps_names_apart() {
        assert_eq!(escape_component("a/b"), "a%2Fb");
        assert_eq!(escape_component(".."), "%2E.");
        assert_ne!(escape_component("a b"), escape_component("a_b"));
    }
}
