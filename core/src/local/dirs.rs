//! The `file://` directory: the writer lock, interrupted deletes, background maintenance.

use super::*;

pub(super) fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned())
}

/// The writer lock taken for one operation; released when dropped.
pub(super) struct LockGuard(pub(super) Option<fs::File>);

/// Takes `<dir>/LOCK` for `what`, then clears what an interrupted delete left behind (only a
/// lock holder deletes, so with the lock in hand no delete is under way).
pub(super) fn take_writer_lock(dir: &Path, what: &str) -> Result<fs::File> {
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
pub(super) fn remove_deleted_leftovers(root: &Path) {
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
pub(super) fn spawn_maintenance(shared: Weak<Shared>) {
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

pub(super) fn forget_checkpoints(dir: &Path, stream: &str) {
    let file = format!("{}.json", escape_component(stream));
    if let Ok(groups) = fs::read_dir(dir) {
        for g in groups.flatten() {
            let _ = fs::remove_file(g.path().join(&file));
        }
    }
}
