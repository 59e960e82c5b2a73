//! The streams a local backend knows: found on disk, created, or opened on first use, with
//! their `stream.json`.

use super::*;

impl LocalBackend {
    pub(super) fn stream_dir(&self, name: &str) -> Option<PathBuf> {
        self.shared
            .root
            .as_ref()
            .map(|r| r.join("streams").join(escape_component(name)))
    }

    /// The open stream, opening it from disk or auto-creating it as configured.
    pub(super) async fn stream(
        &self,
        name: &str,
        create_missing: bool,
    ) -> Result<Arc<StreamState>> {
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
    pub(super) async fn read_meta(&self, name: &str, dir: &Path) -> Result<Option<u32>> {
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

    pub(super) async fn write_meta(&self, name: &str, partitions: u32) -> Result<()> {
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
    pub(super) async fn open_stream(
        &self,
        name: &str,
        partitions: u32,
        creating: bool,
    ) -> Result<Arc<StreamState>> {
        let log_config = self.shared.config.log_config();
        let writable = self.is_writable();
        let (logs, journal): (Vec<Arc<dyn PartitionLog>>, _) = match self.stream_dir(name) {
            None => (
                (0..partitions)
                    .map(|_| Arc::new(MemoryLog::new(log_config)) as Arc<dyn PartitionLog>)
                    .collect(),
                None,
            ),
            Some(dir) => {
                let fsync = self.shared.config.fsync;
                let skip = self.shared.config.skip_damaged;
                let journal_bytes = self.shared.config.journal_bytes;
                let stream = name.to_owned();
                tokio::task::spawn_blocking(move || {
                    let open = |p: u32, writable: bool, replay: Bytes| {
                        FileLog::open_replaying(
                            &dir.join(p.to_string()),
                            format!("stream `{stream}` partition {p}"),
                            writable,
                            fsync,
                            log_config,
                            skip,
                            replay,
                        )
                    };
                    if creating && !writable {
                        for p in 0..partitions {
                            drop(open(p, true, Bytes::new())?);
                        }
                    }
                    // A writer restores what the journal holds before the marks judge the logs,
                    // whatever the fsync mode now: the journal may hold acknowledged records.
                    let replay = if writable {
                        Journal::recover(&dir, partitions, &stream)?
                    } else {
                        vec![Bytes::new(); partitions as usize]
                    };
                    let logs = (0..partitions)
                        .zip(replay)
                        .map(|(p, r)| {
                            open(p, writable, r).map(|l| Arc::new(l) as Arc<dyn PartitionLog>)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let journal = if writable {
                        let always = fsync == FsyncPolicy::Always;
                        Journal::for_writer(&dir, always, journal_bytes, &stream)?
                    } else {
                        None
                    };
                    Ok((logs, journal))
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
                journal,
            ));
        }
        Ok(Arc::new(StreamState {
            name: name.to_owned(),
            partitions: logs,
            appended: (0..partitions).map(|_| watch::channel(0).0).collect(),
            waiting: (0..partitions).map(|_| AtomicBool::new(false)).collect(),
            deleted: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            round_robin: AtomicU64::new(0),
            writer,
            blocking_io,
            arena: Arena::default(),
        }))
    }
}
