//! The built-in local backend: `memory://` (in-process) and `file:///path` (durable).
//!
//! It is the reference implementation of the semantics: partitions with Kafka-compatible key
//! hashing, consumer groups with committed positions, nack and unacked-at-close redelivery, all
//! four start positions, and retention by size and age. See `ARCHITECTURE.md` for the file
//! layout and the recovery rules.

mod arena;
mod catalog;
mod codec;
mod config;
mod dirs;
mod file;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod journal;
mod log;
mod partitioner;
mod producer;
mod source;
mod stream;
mod sync_crew;
mod writer;

pub use config::{LocalConfig, Storage};
pub use file::FsyncPolicy;
pub use partitioner::{murmur2, partition_for_key};
pub(crate) use stream::{StreamState, validate_stream_name};

use arena::Arena;
use bytes::Bytes;
use dirs::*;
use journal::Journal;
use producer::*;
use stream::*;
use sync_crew::SyncCrew;
use writer::*;

use crate::backend::checkpoint::{
    CheckpointStore, FileCheckpointStore, MemoryCheckpointStore, escape_component,
};
use crate::backend::group::{GroupConfig, GroupEngine};
use crate::redact::{redact, shown_value};
use crate::registry::UrlOptions;
use crate::{
    AckModel, Backend, Capabilities, Consumer, ConsumerOptions, Error, ErrorKind, Event, Lifecycle,
    Ordering, PartitionId, PartitionInfo, Position, Producer, Receipt, ReceiptSupport, Result,
    StartSupport, StreamInfo, StreamSpec, Timestamp,
};
use async_trait::async_trait;
use file::FileLog;
use log::{LogConfig, MemoryLog, PartitionLog};
use parking_lot::Mutex;
use std::any::Any;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use url::Url;

static NAMED_MEMORY: LazyLock<Mutex<HashMap<String, Weak<Shared>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

pub(crate) async fn connect_url(url: Url) -> Result<Arc<dyn Backend>> {
    let config = LocalConfig::from_url(&url)?;
    if config.storage == Storage::Memory
        && let Some(name) = url.host_str().filter(|h| !h.is_empty())
    {
        if let Some(shared) = NAMED_MEMORY.lock().get(name).and_then(Weak::upgrade) {
            return Ok(Arc::new(LocalBackend { shared }));
        }
        let backend = LocalBackend::open(config).await?;
        // Opening memory storage never awaits anything that could race; the entry API settles
        // two concurrent first connects on one instance.
        let mut named = NAMED_MEMORY.lock();
        let shared = match named.get(name).and_then(Weak::upgrade) {
            Some(existing) => existing,
            None => {
                named.insert(name.to_owned(), Arc::downgrade(&backend.shared));
                backend.shared.clone()
            }
        };
        return Ok(Arc::new(LocalBackend { shared }));
    }
    Ok(Arc::new(LocalBackend::open(config).await?))
}

struct Shared {
    config: LocalConfig,
    scheme: &'static str,
    root: Option<PathBuf>,
    /// Whether this process holds the directory's writer lock (always for memory): taken by
    /// the first write, held until the backend closes.
    writable: AtomicBool,
    lock: Mutex<Option<fs::File>>,
    streams: Mutex<HashMap<String, Arc<StreamState>>>,
    /// Serialises stream creation and opening so two callers never open the same logs twice.
    open_lock: tokio::sync::Mutex<()>,
    /// Consumer groups: the group engine over the directory's checkpoint store (shared by
    /// the processes of the host) or a memory store.
    groups: GroupEngine,
    closed: AtomicBool,
}

/// The local backend. Build it with [`crate::connect`] (`memory://`, `file:///path`) or
/// [`LocalBackend::open`].
#[derive(Clone)]
pub struct LocalBackend {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("storage", &self.shared.config.storage)
            .field("writable", &self.shared.writable)
            .finish()
    }
}

impl LocalBackend {
    /// Opens the backend. For file storage, any number of processes read a directory; the
    /// one that writes holds its writer lock, taken by the first producer and kept until
    /// close. Creating or deleting a stream takes the lock for that operation only. While
    /// another process holds it, writing fails with `Unavailable` (retryable) and reading works.
    pub async fn open(config: LocalConfig) -> Result<Self> {
        let (scheme, root, store) = match &config.storage {
            Storage::Memory => {
                let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::new());
                ("memory", None, store)
            }
            Storage::File(dir) => {
                let dir = dir.clone();
                let store = tokio::task::spawn_blocking({
                    let dir = dir.clone();
                    move || {
                        fs::create_dir_all(&dir).map_err(|e| {
                            Error::io(format!("creating {}", dir.display()), e).with_backend("file")
                        })?;
                        FileCheckpointStore::open(dir.join("checkpoints"))
                    }
                })
                .await
                .map_err(|e| Error::other(format!("open task failed: {e}")))??;
                let store: Arc<dyn CheckpointStore> = Arc::new(store);
                ("file", Some(dir), store)
            }
        };
        // Commits every 200 ms: a crash replays at most that much of what was acked.
        let group_config = GroupConfig::new(config.group_lease)
            .backend("local")
            .commit_interval(Duration::from_millis(200))
            .balance_interval(Duration::from_secs(1).min(config.group_lease / 3));
        let shared = Arc::new(Shared {
            writable: AtomicBool::new(root.is_none()),
            config,
            scheme,
            root,
            lock: Mutex::new(None),
            streams: Mutex::new(HashMap::new()),
            open_lock: tokio::sync::Mutex::new(()),
            groups: GroupEngine::new(store, group_config),
            closed: AtomicBool::new(false),
        });
        spawn_maintenance(Arc::downgrade(&shared));
        Ok(LocalBackend { shared })
    }

    /// Whether this process holds the directory's writer lock (always true for memory). A
    /// process takes it with its first producer.
    pub fn is_writable(&self) -> bool {
        self.shared.writable.load(AtomicOrdering::Acquire)
    }

    /// Removes a consumer group's committed positions and leases on every stream of this
    /// backend, e.g. a one-off reader's group once it is done. Call it after the group's
    /// consumers in this process closed.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        self.check_open()?;
        let Some(root) = self.shared.root.clone() else {
            return Ok(());
        };
        let dir = root.join("checkpoints").join(escape_component(group));
        tokio::task::spawn_blocking(move || match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("removing {}", dir.display()), e))
            }
            _ => Ok(()),
        })
        .await
        .map_err(|e| Error::other(format!("delete task failed: {e}")))?
        .map_err(|e| self.err(e))
    }

    fn err(&self, e: Error) -> Error {
        e.with_backend(self.shared.scheme)
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.closed.load(AtomicOrdering::Acquire) {
            return Err(self.err(Error::closed("the backend was closed")));
        }
        Ok(())
    }

    /// The directory's writer lock for one operation: the lock this process holds, or one
    /// taken now and released when the guard drops.
    async fn writer_lock_for(&self, what: &str) -> Result<LockGuard> {
        match &self.shared.root {
            Some(root) if !self.is_writable() => {
                let root = root.clone();
                let what = what.to_owned();
                let file = tokio::task::spawn_blocking(move || take_writer_lock(&root, &what))
                    .await
                    .map_err(|e| Error::other(format!("lock task failed: {e}")))?
                    .map_err(|e| self.err(e))?;
                Ok(LockGuard(Some(file)))
            }
            _ => Ok(LockGuard(None)),
        }
    }

    /// Makes this process the directory's writer until it closes: takes the writer lock and
    /// turns the streams it reads into written ones.
    async fn become_writer(&self, what: &str) -> Result<()> {
        if self.is_writable() {
            return Ok(());
        }
        let _guard = self.shared.open_lock.lock().await;
        if self.is_writable() {
            return Ok(());
        }
        let LockGuard(Some(lock)) = self.writer_lock_for(what).await? else {
            return Ok(());
        };
        let streams: Vec<_> = self.shared.streams.lock().values().cloned().collect();
        for stream in streams {
            let logs = stream.partitions.clone();
            let dir = self.stream_dir(&stream.name);
            let name = stream.name.clone();
            let fsync = self.shared.config.fsync;
            let journal_bytes = self.shared.config.journal_bytes;
            let journal = stream
                .io(move || {
                    let Some(dir) = dir else {
                        logs.iter().try_for_each(|l| l.promote(Bytes::new()))?;
                        return Ok(None);
                    };
                    // As at open: the journal's records back into the logs before they are judged.
                    let replay = Journal::recover(&dir, logs.len() as u32, &name)?;
                    for (log, replay) in logs.iter().zip(replay) {
                        log.promote(replay)?;
                    }
                    let always = fsync == FsyncPolicy::Always;
                    Journal::for_writer(&dir, always, journal_bytes, &name)
                })
                .await
                .map_err(|e| self.err(e))?;
            let _ = stream.writer.set(spawn_writer(
                stream.name.clone(),
                stream.partitions.clone(),
                self.shared.config.fsync,
                journal,
            ));
        }
        *self.shared.lock.lock() = Some(lock);
        self.shared.writable.store(true, AtomicOrdering::Release);
        Ok(())
    }

    fn capabilities_for(config: &LocalConfig) -> Capabilities {
        Capabilities {
            native_headers: true,
            timestamps: true,
            ordering: Ordering::PerKey,
            ack: AckModel::Cumulative,
            nack: true,
            delivery_attempts: true,
            start: StartSupport {
                earliest: true,
                latest: true,
                timestamp: true,
                position: true,
            },
            receipts: ReceiptSupport {
                partition: true,
                position: true,
            },
            max_event_bytes: Some(config.max_event_bytes),
            lifecycle: Lifecycle {
                auto_create: config.auto_create,
                networked: false,
                competing_consumers: true,
            },
            lag: true,
            admin: true,
        }
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn scheme(&self) -> &'static str {
        self.shared.scheme
    }

    fn capabilities(&self) -> Capabilities {
        Self::capabilities_for(&self.shared.config)
    }

    async fn producer(&self, stream: &str) -> Result<Box<dyn Producer>> {
        self.check_open()?;
        validate_stream_name(stream).map_err(|e| self.err(e))?;
        self.become_writer(&format!("produce to stream `{stream}`"))
            .await?;
        let state = self.stream(stream, true).await?;
        Ok(Box::new(LocalProducer {
            stream: state,
            max_event_bytes: self.shared.config.max_event_bytes,
            closed: tokio::sync::RwLock::new(false),
            scheme: self.shared.scheme,
        }))
    }

    async fn consumer(&self, stream: &str, options: ConsumerOptions) -> Result<Box<dyn Consumer>> {
        self.check_open()?;
        options.validate().map_err(|e| self.err(e))?;
        let state = self.stream(stream, true).await?;
        let source = Arc::new(source::LocalSource {
            stream: state,
            follower: self.shared.root.is_some() && !self.is_writable(),
        });
        let consumer = self
            .shared
            .groups
            .join(stream, source, options)
            .await
            .map_err(|e| self.err(e))?;
        Ok(Box::new(consumer))
    }

    async fn create_stream(&self, stream: &str, spec: StreamSpec) -> Result<()> {
        self.check_open()?;
        validate_stream_name(stream).map_err(|e| self.err(e))?;
        if spec.partitions == 0 || spec.partitions > 10_000 {
            return Err(self.err(Error::config(format!(
                "stream `{stream}`: {} partitions is out of range 1..=10000",
                spec.partitions
            ))));
        }
        let _guard = self.shared.open_lock.lock().await;
        let _lock = self
            .writer_lock_for(&format!("create stream `{stream}`"))
            .await?;
        let exists = self.shared.streams.lock().contains_key(stream)
            || self
                .stream_dir(stream)
                .is_some_and(|d| d.join("stream.json").exists());
        if exists {
            return Err(self.err(Error::already_exists(format!(
                "stream `{stream}` already exists"
            ))));
        }
        self.write_meta(stream, spec.partitions).await?;
        let state = self.open_stream(stream, spec.partitions, true).await?;
        self.shared.streams.lock().insert(stream.to_owned(), state);
        Ok(())
    }

    async fn delete_stream(&self, stream: &str) -> Result<()> {
        self.check_open()?;
        validate_stream_name(stream).map_err(|e| self.err(e))?;
        let _guard = self.shared.open_lock.lock().await;
        let _lock = self
            .writer_lock_for(&format!("delete stream `{stream}`"))
            .await?;
        let removed = self.shared.streams.lock().remove(stream);
        let dir = self.stream_dir(stream);
        let on_disk = dir.as_ref().is_some_and(|d| d.join("stream.json").exists());
        if removed.is_none() && !on_disk {
            return Err(self.err(Error::not_found(format!(
                "stream `{stream}` does not exist"
            ))));
        }
        if let Some(state) = removed {
            state.deleted.store(true, AtomicOrdering::Release);
            // Readers wake, find the stream deleted, and end their groups with "not found".
            state.wake_all();
        }
        if let (Some(dir), Some(root)) = (dir, self.shared.root.clone()) {
            let stream = stream.to_owned();
            tokio::task::spawn_blocking(move || {
                // Rename first so a crash mid-delete never leaves a half-deleted stream visible.
                let trash = root.join(format!(
                    ".deleted-{}-{}",
                    escape_component(&stream),
                    std::process::id()
                ));
                // The group positions go before the data: a crash in between leaves a
                // `.deleted-*` directory, which the next lock holder finishes removing.
                fs::rename(&dir, &trash)
                    .map_err(|e| Error::io(format!("deleting stream `{stream}`"), e))?;
                forget_checkpoints(&root.join("checkpoints"), &stream);
                fs::remove_dir_all(&trash)
                    .map_err(|e| Error::io(format!("deleting stream `{stream}`"), e))?;
                Ok::<_, Error>(())
            })
            .await
            .map_err(|e| Error::other(format!("delete task failed: {e}")))?
            .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    async fn list_streams(&self) -> Result<Vec<String>> {
        self.check_open()?;
        let mut names: Vec<String> = self.shared.streams.lock().keys().cloned().collect();
        if let Some(root) = &self.shared.root {
            let dir = root.join("streams");
            if let Ok(mut entries) = tokio::fs::read_dir(&dir).await {
                while let Ok(Some(entry)) = entries.next_entry().await {
                    if let Ok(bytes) = tokio::fs::read(entry.path().join("stream.json")).await
                        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
                        && let Some(name) = v.get("name").and_then(|n| n.as_str())
                    {
                        names.push(name.to_owned());
                    }
                }
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn describe_stream(&self, stream: &str) -> Result<StreamInfo> {
        self.check_open()?;
        let state = self.stream(stream, false).await?;
        let logs = state.partitions.clone();
        let bounds = state
            .io(move || {
                Ok(logs
                    .iter()
                    .map(|l| {
                        let _ = l.refresh();
                        l.bounds()
                    })
                    .collect::<Vec<_>>())
            })
            .await?;
        Ok(StreamInfo {
            name: stream.to_owned(),
            partitions: bounds
                .into_iter()
                .enumerate()
                .map(|(i, (start, next))| PartitionInfo {
                    id: PartitionId::from(i as u32),
                    earliest: (start < next).then(|| Position::from_offset(start)),
                    next: Some(Position::from_offset(next)),
                })
                .collect(),
        })
    }

    async fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, AtomicOrdering::AcqRel) {
            return Ok(());
        }
        // Consumers commit what was acked and release their partitions at once.
        let groups = self.shared.groups.close().await;
        let streams: Vec<_> = self.shared.streams.lock().values().cloned().collect();
        for stream in streams {
            if let Some(writer) = stream.writer.get() {
                // A journal checkpoint while this process still holds the lock.
                let (reply, done) = oneshot::channel();
                let request = WriteRequest {
                    batches: Vec::new(),
                    reply,
                };
                if writer.send(request).await.is_ok()
                    && let Ok(Err(e)) = done.await
                {
                    tracing::warn!(stream = %stream.name, error = %e, "journal checkpoint on close failed");
                }
            }
            let logs = stream.partitions.clone();
            stream
                .io(move || logs.iter().try_for_each(|l| l.sync()))
                .await?;
            stream.closed.store(true, AtomicOrdering::Release);
            stream.wake_all();
        }
        // Releasing the lock lets this or another process open the directory for writing.
        self.shared.lock.lock().take();
        groups
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod journal_tests;
#[cfg(test)]
mod tests;
