//! An open stream: its partition logs, its append notifications, and its `stream.json`.

use super::*;

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

pub(crate) struct StreamState {
    pub(crate) name: String,
    pub(crate) partitions: Vec<Arc<dyn PartitionLog>>,
    /// One per partition, bumped after every append to it, so the readers waiting on that
    /// partition (and only they) wake without polling.
    pub(crate) appended: Vec<watch::Sender<u64>>,
    /// One per partition: set by a reader about to wait for an append, cleared by the memory
    /// append that wakes it. A memory send skips the wake-up (a lock and a look at every
    /// waiter slot of the watch, about 450 instructions) when no reader waits.
    pub(crate) waiting: Vec<AtomicBool>,
    pub(crate) deleted: AtomicBool,
    /// Set when the backend closes, so handles opened earlier stop writing.
    pub(crate) closed: AtomicBool,
    pub(crate) round_robin: AtomicU64,
    /// File storage: the group-commit writer thread's queue, once this process writes.
    pub(crate) writer: OnceLock<mpsc::Sender<WriteRequest>>,
    pub(crate) blocking_io: bool,
    /// Memory storage: where sends copy small keys and payloads, kept from one send to the
    /// next (a send of one or a few events fills the same buffer instead of allocating its
    /// own), shared by the stream's partitions so a send over several fills it once.
    pub(super) arena: Arena,
}

impl StreamState {
    /// Wakes the readers of partition `p` after an append.
    pub(crate) fn wake(&self, p: usize) {
        if let Some(appended) = self.appended.get(p) {
            appended.send_modify(|v| *v += 1);
        }
    }

    /// [`wake`](Self::wake) after a memory append, if a reader of `p` said it waits. Called
    /// after the append: a reader that said so before its last look at the log (under the
    /// log's lock, as the append) is woken, and one that says so later finds the append in
    /// that look.
    pub(crate) fn wake_waiting(&self, p: usize) {
        if self
            .waiting
            .get(p)
            .is_some_and(|w| w.swap(false, AtomicOrdering::AcqRel))
        {
            self.wake(p);
        }
    }

    /// A reader of `p` is about to wait for an append: it looks at the log once more after this
    /// (see [`wake_waiting`](Self::wake_waiting)).
    pub(crate) fn will_wait(&self, p: usize) {
        if let Some(w) = self.waiting.get(p) {
            w.store(true, AtomicOrdering::SeqCst);
        }
    }

    /// Wakes every reader: the stream was deleted or its backend closed.
    pub(crate) fn wake_all(&self) {
        for appended in &self.appended {
            appended.send_modify(|v| *v += 1);
        }
    }

    pub(crate) fn check_live(&self) -> Result<()> {
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

/// The on-disk format of `stream.json` this build reads and writes.
pub(super) const META_FORMAT: u64 = 1;

/// Checks a stream's `stream.json` against the stream it is read for; returns its partitions.
pub(super) fn parse_meta(bytes: &[u8], path: &Path, name: &str) -> Result<u32> {
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
pub(super) fn partitions_on_disk(dir: &Path) -> Result<Option<u32>> {
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
