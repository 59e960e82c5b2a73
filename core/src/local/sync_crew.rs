//! The threads that fsync a stream's partitions beside the writer thread: under `fsync=always`
//! at the journal's checkpoints (every partition written since the one before), and for a
//! writer without a journal after each round.
//!
//! Each partition is its own file, so syncing several needs several fdatasyncs. One
//! after the other they cost their sum; issued at once, the file system commits them together.
//! Threads spawned per round cost about twenty system calls each (stack map and unmap, signal
//! masks, scheduler set-up: an `strace -c` of the `fsync=always` bench counted 3 clones and ~60
//! such calls per round of 4 partitions), so the crew's threads live as long as the writer
//! and wait for work on a channel.

use super::*;
use std::sync::mpsc as std_mpsc;

/// At most this many helper threads per stream; a round touching more partitions gives each
/// helper several, synced one after the other.
const MAX_HELPERS: usize = 7;

type Outcomes = Vec<(usize, Result<()>)>;

struct Helper {
    jobs: std_mpsc::SyncSender<Vec<usize>>,
    done: std_mpsc::Receiver<Outcomes>,
}

/// Fsyncs sets of partitions of one stream, the writer thread taking a share itself.
pub(super) struct SyncCrew {
    logs: Arc<[Arc<dyn PartitionLog>]>,
    helpers: Vec<Helper>,
    name: String,
}

impl SyncCrew {
    pub(super) fn new(name: &str, logs: &[Arc<dyn PartitionLog>]) -> Self {
        SyncCrew {
            logs: logs.iter().cloned().collect(),
            helpers: Vec::new(),
            name: name.to_owned(),
        }
    }

    /// Fsyncs every partition in `touched` (each once) and returns each one's outcome. Helper
    /// threads start on first need; where one cannot start or has stopped, the writer thread
    /// syncs its share itself, so an outcome is always reported.
    pub(super) fn sync(&mut self, touched: &[usize]) -> Outcomes {
        let Some((&first, rest)) = touched.split_first() else {
            return Vec::new();
        };
        let wanted = rest.len().min(MAX_HELPERS);
        while self.helpers.len() < wanted {
            match self.start_helper() {
                Some(helper) => self.helpers.push(helper),
                None => break,
            }
        }
        let crew = self.helpers.len().min(wanted);
        let mut shares: Vec<Vec<usize>> = vec![Vec::new(); crew];
        let mut own = vec![first];
        if crew == 0 {
            own.extend_from_slice(rest);
        } else {
            for (i, &p) in rest.iter().enumerate() {
                shares[i % crew].push(p);
            }
        }
        // Per helper: whether it took a share this round and is still alive after it.
        let mut alive: Vec<bool> = Vec::with_capacity(self.helpers.len());
        for (helper, share) in self.helpers.iter().zip(shares) {
            match helper.jobs.send(share) {
                Ok(()) => alive.push(true),
                Err(std_mpsc::SendError(share)) => {
                    own.extend(share);
                    alive.push(false);
                }
            }
        }
        let mut outcomes: Outcomes = own.iter().map(|&p| (p, self.logs[p].sync())).collect();
        for (helper, alive) in self.helpers.iter().zip(alive.iter_mut()) {
            if *alive {
                match helper.done.recv() {
                    Ok(theirs) => outcomes.extend(theirs),
                    Err(_) => *alive = false,
                }
            }
        }
        if outcomes.len() < touched.len() {
            // A helper died mid-share (a panic in a sync): which of its partitions were made
            // durable is unknown, so each one without an outcome is reported failed.
            let mut reported = vec![false; self.logs.len()];
            for (p, _) in &outcomes {
                reported[*p] = true;
            }
            for &p in touched.iter().filter(|p| !reported[**p]) {
                outcomes.push((
                    p,
                    Err(Error::unavailable("the fsync thread stopped".to_owned())),
                ));
            }
        }
        // A stopped helper is replaced at the next round that needs it.
        let mut alive = alive.into_iter();
        self.helpers.retain(|_| alive.next().unwrap_or(true));
        outcomes
    }

    fn start_helper(&self) -> Option<Helper> {
        // Bounded to one job: a helper has at most one share of the current round.
        let (jobs, job_rx) = std_mpsc::sync_channel::<Vec<usize>>(1);
        let (done_tx, done) = std_mpsc::sync_channel::<Outcomes>(1);
        let logs = self.logs.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("tributary-fsync-{}", self.name))
            .spawn(move || {
                // Ends when the crew (the writer thread) drops its sender.
                while let Ok(share) = job_rx.recv() {
                    let outcomes: Outcomes = share.iter().map(|&p| (p, logs[p].sync())).collect();
                    if done_tx.send(outcomes).is_err() {
                        break;
                    }
                }
            });
        match spawned {
            Ok(_) => Some(Helper { jobs, done }),
            Err(e) => {
                tracing::warn!(stream = %self.name, error = %e,
                    "cannot start an fsync thread; the writer thread syncs those partitions itself");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::file::{FileLog, FsyncPolicy};
    use crate::local::log::LogConfig;

    fn open(dir: &Path, writable: bool) -> FileLog {
        let config = LogConfig {
            segment_bytes: 1 << 20,
            retention_bytes: None,
            retention_age: None,
            preallocate: false,
        };
        FileLog::open(
            dir,
            "crew".into(),
            writable,
            FsyncPolicy::Always,
            config,
            false,
        )
        .unwrap()
    }

    #[test]
    fn every_touched_partition_is_synced_and_published_once_whatever_the_crew_size() {
        let dir = tempfile::tempdir().unwrap();
        // More partitions than helpers, so some helpers sync several one after the other.
        let partitions = MAX_HELPERS + 3;
        let dirs: Vec<_> = (0..partitions)
            .map(|p| dir.path().join(p.to_string()))
            .collect();
        let logs: Vec<Arc<dyn PartitionLog>> = dirs
            .iter()
            .map(|d| {
                fs::create_dir_all(d).unwrap();
                Arc::new(open(d, true)) as Arc<dyn PartitionLog>
            })
            .collect();
        let readers: Vec<FileLog> = dirs.iter().map(|d| open(d, false)).collect();
        let mut crew = SyncCrew::new("s", &logs);
        for round in 1..=3u64 {
            // Each round touches a different set: all, the odd ones, one.
            let touched: Vec<usize> = match round {
                1 => (0..partitions).collect(),
                2 => (0..partitions).filter(|p| p % 2 == 1).collect(),
                _ => vec![partitions - 1],
            };
            for &p in &touched {
                logs[p].append_owned(vec![Event::new("x")], 0).unwrap();
            }
            let mut outcomes = crew.sync(&touched);
            outcomes.sort_by_key(|(p, _)| *p);
            let synced: Vec<usize> = outcomes.iter().map(|(p, _)| *p).collect();
            assert_eq!(
                synced, touched,
                "round {round}: one outcome per touched partition"
            );
            assert!(outcomes.iter().all(|(_, o)| o.is_ok()), "round {round}");
            // Under fsync=always the marks are published by the sync: a reader in another
            // process sees exactly the records appended to each partition so far.
            for (p, reader) in readers.iter().enumerate() {
                reader.refresh().unwrap();
                let appended = 1 + u64::from(p % 2 == 1) + u64::from(p == partitions - 1);
                let expected = match round {
                    1 => 1,
                    2 => 1 + u64::from(p % 2 == 1),
                    _ => appended,
                };
                assert_eq!(reader.bounds().1, expected, "round {round} partition {p}");
            }
        }
        assert!(crew.helpers.len() <= MAX_HELPERS);
    }
}
