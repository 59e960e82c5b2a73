//! A directory-backed store for one host: survives a process kill, shared by the processes of
//! that host.

use super::state::GroupStreamState;
use super::{Checkpoint, CheckpointKey, CheckpointStore, Lease, PartitionTopology};
use crate::{Error, PartitionId, Result};
use async_trait::async_trait;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Checkpoints and leases in a directory, for single-host use.
///
/// One JSON file per group and stream, replaced atomically (write to a temporary file, fsync,
/// rename, fsync the directory) under an exclusive file lock, so concurrent processes on the
/// same host see each other's leases and a crash leaves either the old or the new state.
///
/// A write that changes only leases (claim, renew, release) skips the directory's fsync: the
/// new file is fsynced before it is renamed into place, so a host crash that loses the rename
/// leaves the file it replaced, with the same checkpoints and the leases of processes the
/// crash ended. That halves the syncs of a renewal, the write whose lateness costs a partition.
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

    pub(crate) fn path(&self, group: &str, stream: &str) -> PathBuf {
        self.dir
            .join(escape_component(group))
            .join(format!("{}.json", escape_component(stream)))
    }

    async fn with<R: Send + 'static>(
        &self,
        group: &str,
        stream: &str,
        f: impl FnOnce(&mut GroupStreamState) -> (R, Change) + Send + 'static,
    ) -> Result<R> {
        let path = self.path(group, stream);
        tokio::task::spawn_blocking(move || locked_update(&path, f))
            .await
            .map_err(|e| Error::other(format!("checkpoint task failed: {e}")))?
    }
}

/// What an update changed, which says how the file is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Nothing: no write.
    Nothing,
    /// Leases only: the new file is fsynced and renamed into place; the directory is not
    /// synced (see [`FileCheckpointStore`]).
    Leases,
    /// A checkpoint: the rename is made durable too.
    Checkpoints,
}

impl Change {
    /// `change` when `done`, else nothing.
    fn when(done: bool, change: Change) -> Change {
        if done { change } else { Change::Nothing }
    }
}

/// Reads the state under the file lock, lets `f` change it, and writes it back when `f` says
/// it changed something.
fn locked_update<R>(
    path: &Path,
    f: impl FnOnce(&mut GroupStreamState) -> (R, Change),
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
    let (result, changed) = f(&mut state);
    if changed != Change::Nothing {
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(&state)
            .map_err(|e| Error::other(format!("encoding {}: {e}", path.display())))?;
        let mut file = fs::File::create(&tmp)
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        file.write_all(&body)
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        fs::rename(&tmp, path)
            .map_err(|e| Error::io(format!("replacing {}", path.display()), e))?;
        if changed == Change::Checkpoints
            && let Ok(d) = fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
    }
    Ok(result)
}

#[async_trait]
impl CheckpointStore for FileCheckpointStore {
    fn kind(&self) -> &'static str {
        "file"
    }
    async fn prepare(&self, _: &str, _: &str, _: &[PartitionTopology]) -> Result<()> {
        Ok(())
    }
    async fn checkpoints(
        &self,
        group: &str,
        stream: &str,
    ) -> Result<HashMap<PartitionId, Checkpoint>> {
        self.with(group, stream, |s| (s.checkpoint_map(), Change::Nothing))
            .await
    }
    async fn leases(&self, group: &str, stream: &str) -> Result<Vec<Lease>> {
        let (g, st) = (group.to_owned(), stream.to_owned());
        self.with(group, stream, move |s| {
            (s.lease_list(&g, &st), Change::Nothing)
        })
        .await
    }
    async fn claim(
        &self,
        key: &CheckpointKey,
        owner: &str,
        ttl: Duration,
        expected: Option<&Lease>,
    ) -> Result<Option<Lease>> {
        let (k, owner, expected) = (key.clone(), owner.to_owned(), expected.cloned());
        self.with(&key.group, &key.stream, move |s| {
            let won = s.claim(&k, &owner, ttl, expected.as_ref());
            let changed = Change::when(won.is_some(), Change::Leases);
            (won, changed)
        })
        .await
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        let l = lease.clone();
        self.with(&lease.key.group, &lease.key.stream, move |s| {
            let renewed = s.renew(&l, ttl);
            let changed = Change::when(renewed.is_some(), Change::Leases);
            (renewed, changed)
        })
        .await
    }
    async fn checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Option<Lease>> {
        let (l, c) = (lease.clone(), checkpoint.clone());
        self.with(&lease.key.group, &lease.key.stream, move |s| {
            let held = s.checkpoint(&l, &c);
            let changed = Change::when(held.is_some(), Change::Checkpoints);
            (held, changed)
        })
        .await
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        let l = lease.clone();
        self.with(&lease.key.group, &lease.key.stream, move |s| {
            ((), Change::when(s.release(&l), Change::Leases))
        })
        .await
    }
    async fn renew_many(&self, leases: &[Lease], ttl: Duration) -> Vec<Result<Option<Lease>>> {
        self.in_one_write(
            leases,
            |lease| &lease.key,
            Change::Leases,
            move |s, lease| s.renew(&lease, ttl),
        )
        .await
    }
    async fn checkpoint_many(
        &self,
        checkpoints: &[(Lease, Checkpoint)],
    ) -> Vec<Result<Option<Lease>>> {
        self.in_one_write(
            checkpoints,
            |(lease, _)| &lease.key,
            Change::Checkpoints,
            |s, (lease, checkpoint)| s.checkpoint(&lease, &checkpoint),
        )
        .await
    }
}

impl FileCheckpointStore {
    /// Applies `apply` to each item under one file lock and writes the file once, for every
    /// group and stream the items name (one, from a group runtime), as `change` says an item
    /// that applied changes it. A write that fails fails every item of its file with the same
    /// error.
    async fn in_one_write<T: Clone + Send + 'static>(
        &self,
        items: &[T],
        key_of: impl Fn(&T) -> &CheckpointKey,
        change: Change,
        apply: impl Fn(&mut GroupStreamState, T) -> Option<Lease> + Send + Clone + 'static,
    ) -> Vec<Result<Option<Lease>>> {
        let mut results: Vec<Option<Result<Option<Lease>>>> = items.iter().map(|_| None).collect();
        let mut files: Vec<((String, String), Vec<usize>)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let key = key_of(item);
            let file = (key.group.clone(), key.stream.clone());
            match files.iter_mut().find(|(f, _)| *f == file) {
                Some((_, indices)) => indices.push(i),
                None => files.push((file, vec![i])),
            }
        }
        for ((group, stream), indices) in files {
            let batch: Vec<T> = indices.iter().map(|&i| items[i].clone()).collect();
            let apply = apply.clone();
            let outcome = self
                .with(&group, &stream, move |s| {
                    let done: Vec<Option<Lease>> =
                        batch.into_iter().map(|item| apply(s, item)).collect();
                    let changed = Change::when(done.iter().any(Option::is_some), change);
                    (done, changed)
                })
                .await;
            match outcome {
                Ok(done) => {
                    for (&i, lease) in indices.iter().zip(done) {
                        results[i] = Some(Ok(lease));
                    }
                }
                Err(e) => {
                    for &i in &indices {
                        results[i] = Some(Err(
                            Error::new(e.kind(), e.message()).with_retryable(e.is_retryable())
                        ));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every item belongs to one file"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Position;

    #[tokio::test]
    async fn corrupt_checkpoint_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpointStore::open(dir.path()).unwrap();
        let path = store.path("g", "s");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"{not json").unwrap();
        let err = store.checkpoints("g", "s").await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
        assert!(err.to_string().contains("s.json"), "{err}");
    }

    #[tokio::test]
    async fn files_from_before_checkpoint_kinds_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpointStore::open(dir.path()).unwrap();
        let path = store.path("g", "s");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(
            &path,
            br#"{"checkpoints":{"0":"41","1":"7"},"leases":{"*":{"owner":"old","expires_at_ms":0,"version":3}}}"#,
        )
        .unwrap();
        let loaded = store.checkpoints("g", "s").await.unwrap();
        assert_eq!(
            loaded[&PartitionId::from(0)],
            Checkpoint::Processed(Position::from_offset(41))
        );
        assert_eq!(loaded.len(), 2);
    }

    #[test]
    fn escaping_keeps_names_apart() {
        assert_eq!(escape_component("a/b"), "a%2Fb");
        assert_eq!(escape_component(".."), "%2E.");
        assert_ne!(escape_component("a b"), escape_component("a_b"));
    }
}
