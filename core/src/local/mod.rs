//! The built-in local backend: `memory://` (in-process) and `file:///path` (durable).
//!
//! It is the reference implementation of the semantics: partitions with Kafka-compatible key
//! hashing, consumer groups with committed positions, nack and unacked-at-close redelivery, all
//! four start positions, and retention by size and age. See `ARCHITECTURE.md` for the file
//! layout and the recovery rules.

mod codec;
mod file;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod log;
mod source;

pub use file::FsyncPolicy;

use crate::backend::checkpoint::{
    CheckpointStore, FileCheckpointStore, MemoryCheckpointStore, escape_component,
};
use crate::backend::group::{GroupConfig, GroupEngine};
use crate::registry::{UrlOptions, redact};
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

/// Where the local backend keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// In this process only.
    Memory,
    /// Under this directory, durable across restarts.
    File(PathBuf),
}

/// Configuration of the local backend; every field is also a URL option.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LocalConfig {
    /// Memory or a directory.
    pub storage: Storage,
    /// Partitions of auto-created streams (`partitions`, default 4).
    pub default_partitions: u32,
    /// Create streams on first use (`auto_create`, default true).
    pub auto_create: bool,
    /// Largest event accepted (`max_event_bytes`, default 1 MiB, like Kafka).
    pub max_event_bytes: usize,
    /// Segment size (`segment_bytes`, default 64 MiB for files, 8 MiB in memory).
    pub segment_bytes: u64,
    /// Per-partition size limit (`retention_bytes`, default unlimited).
    pub retention_bytes: Option<u64>,
    /// Age limit (`retention`, e.g. `7d`, default unlimited).
    pub retention_age: Option<Duration>,
    /// Durability of file writes (`fsync=always|interval|never`, `fsync_interval=100ms`).
    pub fsync: FsyncPolicy,
    /// How long a process keeps a consumer group of a `file://` stream after it dies
    /// (`group_lease`, default 15s); another process can take the group over after that.
    pub group_lease: Duration,
    /// Readers step over lost or damaged records of `file://` streams with a warning
    /// (`skip_damaged`, default false: reaching them is a `Corrupt` error naming them).
    pub skip_damaged: bool,
}

const OPTIONS: &[&str] = &[
    "partitions",
    "auto_create",
    "max_event_bytes",
    "segment_bytes",
    "retention_bytes",
    "retention",
    "fsync",
    "fsync_interval",
    "group_lease",
    "skip_damaged",
];

impl LocalConfig {
    /// Defaults for `storage`.
    pub fn new(storage: Storage) -> Self {
        let file = matches!(storage, Storage::File(_));
        LocalConfig {
            storage,
            default_partitions: 4,
            auto_create: true,
            max_event_bytes: 1 << 20,
            segment_bytes: if file { 64 << 20 } else { 8 << 20 },
            retention_bytes: None,
            retention_age: None,
            fsync: FsyncPolicy::Always,
            group_lease: Duration::from_secs(15),
            skip_damaged: false,
        }
    }

    /// Parses `memory://[name]?…` or `file:///absolute/path?…`.
    pub fn from_url(url: &Url) -> Result<Self> {
        let storage = match url.scheme() {
            "memory" => {
                if url.path() != "" && url.path() != "/" {
                    return Err(Error::config(format!(
                        "`{}`: memory URLs take no path; use memory:// or memory://NAME to share one instance in this process",
                        redact(url)
                    )));
                }
                Storage::Memory
            }
            "file" => {
                match url.host_str() {
                    None | Some("") | Some("localhost") => {}
                    Some(host) => {
                        return Err(Error::config(format!(
                            "`{}`: file URLs need an absolute path with three slashes, e.g. file:///var/lib/tributary \
                             (`{host}` was read as a host name)",
                            redact(url)
                        )));
                    }
                }
                let path = url.to_file_path().map_err(|_| {
                    Error::config(format!("`{}`: not a valid local path", redact(url)))
                })?;
                if path.as_os_str().is_empty() || path == Path::new("/") {
                    return Err(Error::config(format!(
                        "`{}`: give the directory to store streams in, e.g. file:///var/lib/tributary",
                        redact(url)
                    )));
                }
                Storage::File(path)
            }
            other => {
                return Err(Error::config(format!(
                    "the local backend serves memory:// and file://, not {other}://"
                )));
            }
        };
        let file = matches!(storage, Storage::File(_));
        let mut config = LocalConfig::new(storage);
        let mut opts = UrlOptions::new(url)?;
        if let Some(p) = opts.take::<u32>("partitions")? {
            if p == 0 || p > 10_000 {
                return Err(Error::config(format!(
                    "option `partitions`: {p} is out of range 1..=10000"
                )));
            }
            config.default_partitions = p;
        }
        if let Some(v) = opts.take_bool("auto_create")? {
            config.auto_create = v;
        }
        if let Some(v) = opts.take_size("max_event_bytes")? {
            if v == 0 || v > (64 << 20) {
                return Err(Error::config(format!(
                    "option `max_event_bytes`: {v} is out of range 1..=67108864"
                )));
            }
            config.max_event_bytes = v as usize;
        }
        if let Some(v) = opts.take_size("segment_bytes")? {
            if v < 1024 {
                return Err(Error::config(format!(
                    "option `segment_bytes`: {v} is below the minimum of 1024"
                )));
            }
            config.segment_bytes = v;
        }
        config.retention_bytes = opts.take_size("retention_bytes")?;
        config.retention_age = opts.take_duration("retention")?;
        let fsync = opts.take_str("fsync");
        let interval = opts.take_duration("fsync_interval")?;
        let group_lease = opts.take_duration("group_lease")?;
        let skip_damaged = opts.take_bool("skip_damaged")?;
        if !file
            && (fsync.is_some()
                || interval.is_some()
                || group_lease.is_some()
                || skip_damaged.is_some())
        {
            return Err(Error::config(
                "options `fsync`, `fsync_interval`, `group_lease` and `skip_damaged` apply to file:// only",
            ));
        }
        config.skip_damaged = skip_damaged.unwrap_or(false);
        config.fsync = match (fsync.as_deref(), interval) {
            (None | Some("always"), None) => FsyncPolicy::Always,
            (Some("interval"), i) | (None, i @ Some(_)) => {
                FsyncPolicy::Interval(i.unwrap_or(Duration::from_millis(100)))
            }
            (Some("never"), None) => FsyncPolicy::Never,
            (Some(v @ ("always" | "never")), Some(_)) => {
                return Err(Error::config(format!(
                    "option `fsync_interval` needs fsync=interval, not fsync={v}"
                )));
            }
            (Some(other), _) => {
                return Err(Error::config(format!(
                    "option `fsync`: `{other}` is not one of always, interval, never"
                )));
            }
        };
        if let Some(lease) = group_lease {
            config.group_lease = lease.max(Duration::from_millis(100));
        }
        opts.finish(OPTIONS)?;
        Ok(config)
    }

    fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            retention_bytes: self.retention_bytes,
            retention_age: self.retention_age,
        }
    }
}

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

/// A stream name must be usable as one path component on every backend we replicate to.
pub(crate) fn validate_stream_name(name: &str) -> Result<()> {
    let ok_len = !name.is_empty() && name.len() <= 249;
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok_len || !ok_chars || name == "." || name == ".." {
        return Err(Error::config(format!(
            "invalid stream name `{}`: use 1 to 249 characters of A-Z a-z 0-9 . _ - (not `.` or `..`)",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// Kafka's default partitioner hash, so keys land on the same partition numbers as in Kafka.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = SEED ^ (data.len() as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition a key maps to (Kafka-compatible: `(murmur2(key) & 0x7fffffff) % n`).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

struct WriteRequest {
    batches: Vec<(usize, Vec<Event>)>,
    reply: oneshot::Sender<Result<Vec<u64>>>,
}

pub(crate) struct StreamState {
    name: String,
    partitions: Vec<Arc<dyn PartitionLog>>,
    /// Bumped after every append, so waiting consumers wake without polling.
    appended: watch::Sender<u64>,
    deleted: AtomicBool,
    /// Set when the backend closes, so handles opened earlier stop writing.
    closed: AtomicBool,
    round_robin: AtomicU64,
    /// File storage: the group-commit writer thread's queue, once this process writes.
    writer: OnceLock<mpsc::Sender<WriteRequest>>,
    blocking_io: bool,
}

impl StreamState {
    fn check_live(&self) -> Result<()> {
        if self.deleted.load(AtomicOrdering::Acquire) {
            return Err(Error::not_found(format!(
                "stream `{}` was deleted",
                self.name
            )));
        }
        if self.closed.load(AtomicOrdering::Acquire) {
            return Err(Error::closed(format!(
                "the backend of stream `{}` was closed",
                self.name
            )));
        }
        Ok(())
    }

    /// Runs storage work: inline for memory, on the blocking pool for files.
    pub(crate) async fn io<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<R> + Send + 'static,
    ) -> Result<R> {
        if self.blocking_io {
            tokio::task::spawn_blocking(f)
                .await
                .map_err(|e| Error::other(format!("storage task failed: {e}")))?
        } else {
            f()
        }
    }
}

/// One writer thread per file stream: it drains every queued batch, writes them, then fsyncs
/// each touched partition once, so N concurrent senders share one fsync.
fn spawn_writer(
    name: String,
    logs: Vec<Arc<dyn PartitionLog>>,
    fsync: FsyncPolicy,
) -> mpsc::Sender<WriteRequest> {
    let (tx, mut rx) = mpsc::channel::<WriteRequest>(1024);
    let thread_name = format!("tributary-writer-{name}");
    let stream_name = name.clone();
    let spawned = std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let mut group = Vec::new();
            while let Some(first) = rx.blocking_recv() {
                group.push(first);
                while group.len() < 512 {
                    match rx.try_recv() {
                        Ok(r) => group.push(r),
                        Err(_) => break,
                    }
                }
                let now = Timestamp::now().as_millis();
                let mut touched = vec![false; logs.len()];
                let mut results = Vec::with_capacity(group.len());
                for request in &group {
                    let mut bases = Vec::with_capacity(request.batches.len());
                    let mut outcome = Ok(());
                    for (p, events) in &request.batches {
                        match logs[*p].append(events, now) {
                            Ok(base) => {
                                touched[*p] = true;
                                bases.push(base);
                            }
                            Err(e) => {
                                outcome = Err(partly_stored(e, &request.batches, &bases, *p));
                                break;
                            }
                        }
                    }
                    results.push(outcome.map(|_| bases));
                }
                if fsync == FsyncPolicy::Always {
                    for (p, _) in touched.iter().enumerate().filter(|(_, t)| **t) {
                        if let Err(e) = logs[p].sync() {
                            for r in results.iter_mut() {
                                if r.is_ok() {
                                    *r = Err(Error::unavailable(format!(
                                        "fsync of stream `{name}` partition {p} failed: {e}"
                                    )));
                                }
                            }
                        }
                    }
                }
                for (request, result) in group.drain(..).zip(results) {
                    let _ = request.reply.send(result);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(stream = %stream_name, error = %e, "cannot start the writer thread");
    }
    tx
}

/// The error of a batch whose partition `failed` could not be written after the partitions
/// before it were (a batch is written partition by partition; each partition all or nothing).
fn partly_stored(e: Error, batches: &[(usize, Vec<Event>)], bases: &[u64], failed: usize) -> Error {
    if bases.is_empty() {
        return e;
    }
    let total: usize = batches.iter().map(|(_, ev)| ev.len()).sum();
    let stored: Vec<String> = batches
        .iter()
        .zip(bases)
        .map(|((p, ev), base)| {
            format!("partition {p} positions {base}..{}", base + ev.len() as u64)
        })
        .collect();
    let count: usize = batches
        .iter()
        .take(bases.len())
        .map(|(_, ev)| ev.len())
        .sum();
    e.context(format!(
        "batch partly stored: {count} of {total} events were stored ({}), the events for \
         partition {failed} and after were not; sending the batch again stores the first ones twice",
        stored.join(", ")
    ))
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
            stream
                .io(move || logs.iter().try_for_each(|l| l.promote()))
                .await
                .map_err(|e| self.err(e))?;
            let _ = stream.writer.set(spawn_writer(
                stream.name.clone(),
                stream.partitions.clone(),
                self.shared.config.fsync,
            ));
        }
        *self.shared.lock.lock() = Some(lock);
        self.shared.writable.store(true, AtomicOrdering::Release);
        Ok(())
    }

    fn stream_dir(&self, name: &str) -> Option<PathBuf> {
        self.shared
            .root
            .as_ref()
            .map(|r| r.join("streams").join(escape_component(name)))
    }

    /// The open stream, opening it from disk or auto-creating it as configured.
    async fn stream(&self, name: &str, create_missing: bool) -> Result<Arc<StreamState>> {
        validate_stream_name(name).map_err(|e| self.err(e))?;
        if let Some(s) = self.shared.streams.lock().get(name) {
            return Ok(s.clone());
        }
        let _guard = self.shared.open_lock.lock().await;
        if let Some(s) = self.shared.streams.lock().get(name) {
            return Ok(s.clone());
        }
        let partitions = match self.stream_dir(name) {
            Some(dir) => self.read_meta(name, &dir).await?,
            None => None,
        };
        let (partitions, _lock) = match partitions {
            Some(p) => (p, None),
            None if create_missing && self.shared.config.auto_create => {
                let lock = self
                    .writer_lock_for(&format!("create stream `{name}`"))
                    .await?;
                let p = self.shared.config.default_partitions;
                self.write_meta(name, p).await?;
                (p, Some(lock))
            }
            None => {
                return Err(self.err(Error::not_found(format!(
                    "stream `{name}` does not exist (create it with `tributary streams URL create {name}` or enable auto_create)"
                ))));
            }
        };
        let state = self.open_stream(name, partitions, _lock.is_some()).await?;
        self.shared
            .streams
            .lock()
            .insert(name.to_owned(), state.clone());
        Ok(state)
    }

    /// The partition count of stream `name` from its `stream.json`, checked against the
    /// directory; `None` when the stream does not exist. A missing `stream.json` beside
    /// partition data is rebuilt from the partition directories (never guessed from defaults).
    async fn read_meta(&self, name: &str, dir: &Path) -> Result<Option<u32>> {
        let meta = dir.join("stream.json");
        match tokio::fs::read(&meta).await {
            Ok(bytes) => parse_meta(&bytes, &meta, name).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let scan = dir.to_owned();
                let found = tokio::task::spawn_blocking(move || partitions_on_disk(&scan))
                    .await
                    .map_err(|e| Error::other(format!("metadata task failed: {e}")))??;
                let Some(partitions) = found else {
                    return Ok(None);
                };
                tracing::warn!(stream = name, partitions, file = %meta.display(),
                    "stream.json is missing; rebuilt from the partition directories on disk");
                // Written back when no other process writes; otherwise the next writer does.
                if let Ok(_lock) = self.writer_lock_for("rewrite stream.json").await {
                    self.write_meta(name, partitions).await?;
                }
                Ok(Some(partitions))
            }
            Err(e) => Err(self.err(Error::io(format!("reading {}", meta.display()), e))),
        }
    }

    async fn write_meta(&self, name: &str, partitions: u32) -> Result<()> {
        let Some(dir) = self.stream_dir(name) else {
            return Ok(());
        };
        let body = serde_json::json!({
            "name": name,
            "partitions": partitions,
            "format": 1,
            "created_ms": Timestamp::now().as_millis(),
        })
        .to_string();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            let tmp = dir.join("stream.json.tmp");
            fs::write(&tmp, body.as_bytes())
                .and_then(|_| fs::File::open(&tmp)?.sync_all())
                .and_then(|_| fs::rename(&tmp, dir.join("stream.json")))
                .map_err(|e| Error::io(format!("writing metadata of stream `{name}`"), e))
        })
        .await
        .map_err(|e| Error::other(format!("metadata task failed: {e}")))?
        .map_err(|e| self.err(e))
    }

    /// Opens a stream's partition logs. `creating`: the caller holds the writer lock for
    /// this call only and the logs are new: they are laid out on disk, then opened read-only.
    async fn open_stream(
        &self,
        name: &str,
        partitions: u32,
        creating: bool,
    ) -> Result<Arc<StreamState>> {
        let log_config = self.shared.config.log_config();
        let writable = self.is_writable();
        let logs: Vec<Arc<dyn PartitionLog>> = match self.stream_dir(name) {
            None => (0..partitions)
                .map(|_| Arc::new(MemoryLog::new(log_config)) as Arc<dyn PartitionLog>)
                .collect(),
            Some(dir) => {
                let fsync = self.shared.config.fsync;
                let skip = self.shared.config.skip_damaged;
                let stream = name.to_owned();
                tokio::task::spawn_blocking(move || {
                    let open = |p: u32, writable: bool| {
                        FileLog::open(
                            &dir.join(p.to_string()),
                            format!("stream `{stream}` partition {p}"),
                            writable,
                            fsync,
                            log_config,
                            skip,
                        )
                    };
                    if creating && !writable {
                        for p in 0..partitions {
                            drop(open(p, true)?);
                        }
                    }
                    (0..partitions)
                        .map(|p| open(p, writable).map(|l| Arc::new(l) as Arc<dyn PartitionLog>))
                        .collect::<Result<Vec<_>>>()
                })
                .await
                .map_err(|e| Error::other(format!("open task failed: {e}")))?
                .map_err(|e| self.err(e))?
            }
        };
        let blocking_io = self.shared.root.is_some();
        let writer = OnceLock::new();
        if blocking_io && writable {
            let _ = writer.set(spawn_writer(
                name.to_owned(),
                logs.clone(),
                self.shared.config.fsync,
            ));
        }
        Ok(Arc::new(StreamState {
            name: name.to_owned(),
            partitions: logs,
            appended: watch::channel(0).0,
            deleted: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            round_robin: AtomicU64::new(0),
            writer,
            blocking_io,
        }))
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

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned())
}

/// The on-disk format of `stream.json` this build reads and writes.
const META_FORMAT: u64 = 1;

/// Checks a stream's `stream.json` against the stream it is read for; returns its partitions.
fn parse_meta(bytes: &[u8], path: &Path, name: &str) -> Result<u32> {
    let corrupt =
        |what: String| Error::corrupt(format!("{}: {what}", path.display())).with_backend("file");
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        Error::corrupt(format!("{} is not valid JSON: {e}", path.display())).with_backend("file")
    })?;
    let partitions = match value.get("partitions").and_then(|p| p.as_u64()) {
        Some(p) if (1..=10_000).contains(&p) => p as u32,
        _ => {
            return Err(corrupt(
                "`partitions` must be a number from 1 to 10000".to_owned(),
            ));
        }
    };
    match value.get("format").and_then(|f| f.as_u64()) {
        Some(META_FORMAT) => {}
        Some(other) => {
            return Err(corrupt(format!(
                "format {other} is not one this build reads ({META_FORMAT}); a newer tributary wrote it?"
            )));
        }
        None => return Err(corrupt(format!("`format` must be {META_FORMAT}"))),
    }
    match value.get("name").and_then(|n| n.as_str()) {
        Some(n) if n == name => {}
        Some(n) => {
            return Err(corrupt(format!(
                "names stream `{}`, but it is the metadata of stream `{name}`",
                n.escape_debug()
            )));
        }
        None => return Err(corrupt(format!("`name` must be \"{name}\""))),
    }
    Ok(partitions)
}

/// The partition count shown by a stream directory's partition directories `0..n`, when it
/// holds any; an error when they are not exactly `0..n` (a count cannot be trusted then).
fn partitions_on_disk(dir: &Path) -> Result<Option<u32>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::io(format!("listing {}", dir.display()), e).with_backend("file"));
        }
    };
    let mut ids = Vec::new();
    for entry in entries.flatten() {
        if !entry.path().is_dir() {
            continue;
        }
        let name = entry.file_name();
        match name.to_str().and_then(|n| n.parse::<u32>().ok()) {
            Some(id) => ids.push(id),
            None => {
                return Err(Error::corrupt(format!(
                    "{}: stream.json is missing and `{}` is not a partition directory; restore stream.json",
                    dir.display(),
                    name.to_string_lossy()
                ))
                .with_backend("file"));
            }
        }
    }
    if ids.is_empty() {
        return Ok(None);
    }
    ids.sort_unstable();
    let n = ids.len() as u32;
    if ids.iter().enumerate().any(|(i, id)| *id != i as u32) || n > 10_000 {
        return Err(Error::corrupt(format!(
            "{}: stream.json is missing and the partition directories are not 0..{n}; restore stream.json",
            dir.display()
        ))
        .with_backend("file"));
    }
    Ok(Some(n))
}

/// The writer lock taken for one operation; released when dropped.
struct LockGuard(Option<fs::File>);

/// Takes `<dir>/LOCK` for `what`, then clears what an interrupted delete left behind (only a
/// lock holder deletes, so with the lock in hand no delete is under way).
fn take_writer_lock(dir: &Path, what: &str) -> Result<fs::File> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("LOCK");
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e).with_backend("file"))?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0);
            let _ = file.seek(std::io::SeekFrom::Start(0));
            let _ = write!(file, "pid {} on {}", std::process::id(), hostname());
            remove_deleted_leftovers(dir);
            Ok(file)
        }
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            Err(Error::unavailable(format!(
                "cannot {what}: {} is being written by another process ({}); this process can only read until it stops",
                dir.display(),
                holder.trim()
            )))
        }
        Err(fs::TryLockError::Error(e)) => {
            Err(Error::io(format!("locking {}", path.display()), e).with_backend("file"))
        }
    }
}

/// Finishes deletes a crash interrupted: the renamed `.deleted-*` directories and the group
/// positions of their streams.
fn remove_deleted_leftovers(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(".deleted-") {
            continue;
        }
        let trash = entry.path();
        let name = fs::read(trash.join("stream.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned));
        if let Some(name) = name {
            forget_checkpoints(&root.join("checkpoints"), &name);
        }
        match fs::remove_dir_all(&trash) {
            Ok(()) => {
                tracing::info!(dir = %trash.display(), "removed what an interrupted stream delete left")
            }
            Err(e) => {
                tracing::warn!(dir = %trash.display(), error = %e, "cannot remove an interrupted delete's leftovers")
            }
        }
    }
}

/// Interval fsyncs, retention and (for read-only followers) nothing else: followers refresh on
/// demand when a consumer waits.
fn spawn_maintenance(shared: Weak<Shared>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rounds = 0u64;
        loop {
            tick.tick().await;
            rounds += 1;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if shared.closed.load(AtomicOrdering::Acquire) {
                return;
            }
            let streams: Vec<_> = shared.streams.lock().values().cloned().collect();
            let retention_due = rounds.is_multiple_of(10);
            drop(shared);
            for stream in streams {
                let logs = stream.partitions.clone();
                let work = move || {
                    let now = Timestamp::now().as_millis();
                    for log in &logs {
                        log.tick()?;
                        if retention_due {
                            log.enforce_retention(now)?;
                        }
                    }
                    Ok(())
                };
                if let Err(e) = stream.io(work).await {
                    tracing::warn!(stream = %stream.name, error = %e, "log maintenance failed");
                }
            }
        }
    });
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
            state.appended.send_modify(|v| *v += 1);
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
            let logs = stream.partitions.clone();
            stream
                .io(move || logs.iter().try_for_each(|l| l.sync()))
                .await?;
            stream.closed.store(true, AtomicOrdering::Release);
            stream.appended.send_modify(|v| *v += 1);
        }
        // Releasing the lock lets this or another process open the directory for writing.
        self.shared.lock.lock().take();
        groups
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn forget_checkpoints(dir: &Path, stream: &str) {
    let file = format!("{}.json", escape_component(stream));
    if let Ok(groups) = fs::read_dir(dir) {
        for g in groups.flatten() {
            let _ = fs::remove_file(g.path().join(&file));
        }
    }
}

struct LocalProducer {
    stream: Arc<StreamState>,
    max_event_bytes: usize,
    /// Sends hold the read side; close takes the write side, so it waits for sends in flight.
    closed: tokio::sync::RwLock<bool>,
    scheme: &'static str,
}

impl LocalProducer {
    fn validate(&self, events: &[Event]) -> Result<()> {
        for event in events {
            let size = event.encoded_len();
            if size > self.max_event_bytes {
                return Err(Error::too_large(format!(
                    "event of {size} bytes (key + payload + headers) exceeds the limit of {} bytes \
                     on stream `{}` (option max_event_bytes)",
                    self.max_event_bytes, self.stream.name
                )));
            }
            codec::check_encodable(event, &self.stream.name)?;
        }
        Ok(())
    }

    fn partition_of(&self, event: &Event) -> usize {
        let n = self.stream.partitions.len() as u32;
        match &event.key {
            Some(key) => partition_for_key(key, n) as usize,
            None => {
                (self
                    .stream
                    .round_robin
                    .fetch_add(1, AtomicOrdering::Relaxed)
                    % n as u64) as usize
            }
        }
    }
}

#[async_trait]
impl Producer for LocalProducer {
    async fn send(&self, event: Event) -> Result<Receipt> {
        let mut receipts = self.send_batch(vec![event]).await?;
        Ok(receipts.pop().expect("one receipt per event"))
    }

    async fn send_batch(&self, events: Vec<Event>) -> Result<Vec<Receipt>> {
        let closed = self.closed.read().await;
        if *closed {
            return Err(Error::closed(format!(
                "producer of stream `{}` was closed",
                self.stream.name
            ))
            .with_backend(self.scheme));
        }
        self.stream
            .check_live()
            .map_err(|e| e.with_backend(self.scheme))?;
        self.validate(&events)
            .map_err(|e| e.with_backend(self.scheme))?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Group per partition, keeping send order inside each partition.
        let mut slots = Vec::with_capacity(events.len());
        let mut by_partition: Vec<(usize, Vec<Event>)> = Vec::new();
        for event in events {
            let p = self.partition_of(&event);
            let group = match by_partition.iter().position(|(q, _)| *q == p) {
                Some(g) => g,
                None => {
                    by_partition.push((p, Vec::new()));
                    by_partition.len() - 1
                }
            };
            slots.push((group, by_partition[group].1.len()));
            by_partition[group].1.push(event);
        }
        let partitions: Vec<usize> = by_partition.iter().map(|(p, _)| *p).collect();
        let bases = match self.stream.writer.get() {
            Some(writer) => {
                let (reply, rx) = oneshot::channel();
                // The events move to the writer thread: no copy of keys, payloads or headers.
                writer
                    .send(WriteRequest {
                        batches: by_partition,
                        reply,
                    })
                    .await
                    .map_err(|_| {
                        Error::closed("the stream's writer stopped").with_backend(self.scheme)
                    })?;
                rx.await
                    .map_err(|_| {
                        Error::closed("the stream's writer stopped").with_backend(self.scheme)
                    })?
                    .map_err(|e| e.with_backend(self.scheme))?
            }
            None if self.stream.blocking_io => {
                return Err(Error::unavailable(format!(
                    "stream `{}` is open read-only in this process",
                    self.stream.name
                ))
                .with_backend(self.scheme));
            }
            None => {
                let now = Timestamp::now().as_millis();
                by_partition
                    .iter()
                    .map(|(p, e)| self.stream.partitions[*p].append(e, now))
                    .collect::<Result<Vec<_>>>()?
            }
        };
        self.stream.appended.send_modify(|v| *v += 1);
        Ok(slots
            .into_iter()
            .map(|(group, index)| Receipt {
                partition: Some(PartitionId::from(partitions[group] as u32)),
                position: Some(Position::from_offset(bases[group] + index as u64)),
            })
            .collect())
    }

    async fn flush(&self) -> Result<()> {
        if *self.closed.read().await {
            return Err(Error::closed(format!(
                "producer of stream `{}` was closed",
                self.stream.name
            ))
            .with_backend(self.scheme));
        }
        let logs = self.stream.partitions.clone();
        self.stream
            .io(move || logs.iter().try_for_each(|l| l.sync()))
            .await
    }

    async fn close(&self) -> Result<()> {
        let mut closed = self.closed.write().await;
        if *closed {
            return Ok(());
        }
        *closed = true;
        let logs = self.stream.partitions.clone();
        match self
            .stream
            .io(move || logs.iter().try_for_each(|l| l.sync()))
            .await
        {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Vectors from Kafka's UtilsTest.testMurmur2.
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input) as i32,
                *expected,
                "{:?}",
                std::str::from_utf8(input)
            );
        }
    }

    #[test]
    fn url_options_are_validated() {
        let bad = [
            ("memory://?partitions=0", "partitions"),
            ("memory://?partitions=x", "partitions"),
            ("memory://?fsync=always", "file:// only"),
            ("file:///tmp/x?fsync=sometimes", "fsync"),
            (
                "file:///tmp/x?fsync=never&fsync_interval=1s",
                "fsync_interval",
            ),
            ("file://relative/dir", "three slashes"),
            ("memory://?bogus=1", "unknown option `bogus`"),
            ("memory://?max_event_bytes=lots", "max_event_bytes"),
            ("memory:///path", "no path"),
        ];
        for (url, needle) in bad {
            let err = LocalConfig::from_url(&Url::parse(url).unwrap()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            assert!(err.to_string().contains(needle), "{url}: {err}");
        }
        let ok = LocalConfig::from_url(&Url::parse("file:///tmp/x?fsync_interval=50ms").unwrap())
            .unwrap();
        assert_eq!(ok.fsync, FsyncPolicy::Interval(Duration::from_millis(50)));
    }

    /// Issue 17 (2): only a process that writes holds the writer lock; one that reads first
    /// and produces later becomes the writer then, and its consumer sees its own events.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_lock_is_taken_by_the_first_write() {
        use crate::ConsumerExt;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let first = crate::connect(&url).await.unwrap();
        first
            .create_stream("s", StreamSpec::with_partitions(2))
            .await
            .unwrap();
        let reader = crate::connect(&url).await.unwrap();
        reader.describe_stream("s").await.unwrap();
        let consumer = reader
            .consumer(
                "s",
                ConsumerOptions::new("g").start(crate::StartPosition::Earliest),
            )
            .await
            .unwrap();
        assert!(
            consumer
                .receive_timeout(Duration::from_millis(50))
                .await
                .unwrap()
                .is_none()
        );
        let local = |b: &Arc<dyn Backend>| {
            b.as_any()
                .downcast_ref::<LocalBackend>()
                .unwrap()
                .is_writable()
        };
        assert!(!local(&first) && !local(&reader), "nobody has written yet");

        // The reading process now writes: it takes the lock, its reader view becomes the log.
        let producer = reader.producer("s").await.unwrap();
        assert!(local(&reader));
        producer
            .send(Event::new("mine").with_key("k"))
            .await
            .unwrap();
        let d = consumer
            .receive_timeout(Duration::from_secs(5))
            .await
            .unwrap()
            .expect("the process's own event");
        assert_eq!(d.event.payload.as_ref(), b"mine");
        d.ack();

        // Another process can neither write nor create meanwhile, and says who writes.
        let err = first.producer("s").await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(
            err.is_retryable() && err.to_string().contains("another process"),
            "{err}"
        );
        consumer.close().await.unwrap();
        producer.close().await.unwrap();
        reader.close().await.unwrap();
        // The lock is free again once the writer closed.
        first.producer("s").await.unwrap().close().await.unwrap();
        first.close().await.unwrap();
    }

    #[test]
    fn stream_names() {
        for good in ["orders", "a.b-c_d", "x1"] {
            validate_stream_name(good).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(250)] {
            assert_eq!(
                validate_stream_name(bad).unwrap_err().kind(),
                ErrorKind::Config
            );
        }
    }
}
