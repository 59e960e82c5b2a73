//! One writer thread per file stream: it drains every queued batch, writes each partition's
//! events of all of them with one append (one framed buffer, one write), then makes the round
//! durable once, so N concurrent senders share one write and one sync. Under `fsync=always` the
//! round's frames go to the stream's journal (journal.rs): one write and one fdatasync however
//! many partitions the round touched; the partitions are synced when the journal fills.

use super::*;

/// One `send_batch`: its events grouped per partition, in ascending partition order (the
/// writer relies on it to say which partitions of a failed batch were stored). A request with
/// no batches asks for a journal checkpoint (the backend closing: the next writer then starts
/// from an empty journal).
pub(crate) struct WriteRequest {
    pub(crate) batches: Vec<(usize, Vec<Event>)>,
    pub(crate) reply: oneshot::Sender<Result<Vec<u64>>>,
}

/// How many queued batches one write round takes at most.
const MAX_GROUP: usize = 512;
/// The journal frames buffer kept from one round to the next, at most.
const FRAMES_KEPT: usize = 16 << 20;

/// One writer thread per file stream: it drains every queued batch, writes them, then makes
/// them durable (`journal`: the stream's, under `fsync=always`), so N concurrent senders share
/// one sync.
pub(super) fn spawn_writer(
    name: String,
    logs: Vec<Arc<dyn PartitionLog>>,
    fsync: FsyncPolicy,
    journal: Option<Journal>,
) -> mpsc::Sender<WriteRequest> {
    let (tx, mut rx) = mpsc::channel::<WriteRequest>(1024);
    let thread_name = format!("tributary-writer-{name}");
    let stream_name = name.clone();
    let spawned = std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let mut group = Vec::with_capacity(MAX_GROUP);
            let mut round = Round::new(logs.len());
            let mut crew = SyncCrew::new(&name, &logs);
            let mut journaled = journal.map(|journal| Journaled {
                journal,
                frames: Vec::new(),
                unsynced: vec![false; logs.len()],
            });
            while rx.blocking_recv_many(&mut group, MAX_GROUP) > 0 {
                let now = Timestamp::now().as_millis();
                match journaled.as_mut() {
                    Some(j) => {
                        round.write(&logs, &mut group, now, Some(j));
                        round.commit(j, &logs, &mut crew, &name);
                        if group.iter().any(|r| r.batches.is_empty()) {
                            let done = j.checkpoint(&mut crew, &name);
                            for (request, result) in group.iter().zip(round.results.iter_mut()) {
                                if let (true, Err(e)) = (request.batches.is_empty(), &done) {
                                    *result = Err(Error::new(e.kind(), e.message()));
                                }
                            }
                        }
                    }
                    None => {
                        round.write(&logs, &mut group, now, None);
                        if fsync == FsyncPolicy::Always {
                            round.sync(&mut crew, &name);
                        }
                    }
                }
                for (request, result) in group.drain(..).zip(round.results.drain(..)) {
                    let _ = request.reply.send(result);
                }
            }
            // No checkpoint here: by now another process may be writing the stream (the
            // backend closed, releasing the lock, before the last handle let go of this
            // thread), and the journal is its. The logs sync as they close; what the journal
            // still holds is then in them, and skipped when a writer next replays it.
        });
    if let Err(e) = spawned {
        tracing::error!(stream = %stream_name, error = %e, "cannot start the writer thread");
    }
    tx
}

/// The stream's journal and what the writer keeps beside it.
struct Journaled {
    journal: Journal,
    /// The round's frames, kept between rounds for its allocation.
    frames: Vec<u8>,
    /// Per partition: written since the last checkpoint (only the journal holds it durably).
    unsynced: Vec<bool>,
}

impl Journaled {
    /// Syncs every partition written since the last checkpoint (at once, see [`SyncCrew`]),
    /// which publishes their marks, then starts the journal's next generation.
    fn checkpoint(&mut self, crew: &mut SyncCrew, name: &str) -> Result<()> {
        let partitions: Vec<usize> = (0..self.unsynced.len())
            .filter(|p| self.unsynced[*p])
            .collect();
        for (p, outcome) in crew.sync(&partitions) {
            if let Err(e) = outcome {
                return Err(Error::unavailable(format!(
                    "fsync of stream `{name}` partition {p} failed: {e}"
                )));
            }
        }
        self.journal.checkpoint()?;
        self.unsynced.fill(false);
        Ok(())
    }
}

/// The writer thread's state for one group of batches, kept between rounds so a round
/// allocates only the per-partition event vectors it hands to the logs.
struct Round {
    touched: Vec<bool>,
    /// Per request: the index of its next partition batch to write.
    cursor: Vec<usize>,
    /// Per request: the first offset of each of its partition batches written so far.
    bases: Vec<Vec<u64>>,
    results: Vec<Result<Vec<u64>>>,
}

impl Round {
    fn new(partitions: usize) -> Self {
        Round {
            touched: vec![false; partitions],
            cursor: Vec::new(),
            bases: Vec::new(),
            results: Vec::new(),
        }
    }

    /// Appends the events of every request, one append per partition: partition `p` gets the
    /// events of each request in queue order, so send order (and so per-key order) holds.
    /// A failed append fails the requests with events for that partition; their events for
    /// later partitions are not written (each request's batches ascend by partition, so the
    /// error says exactly which were stored).
    /// With `journaled`, each partition's frames also go to the round's journal frames.
    fn write(
        &mut self,
        logs: &[Arc<dyn PartitionLog>],
        group: &mut [WriteRequest],
        now: i64,
        mut journaled: Option<&mut Journaled>,
    ) {
        let n = group.len();
        self.touched.fill(false);
        self.cursor.clear();
        self.cursor.resize(n, 0);
        self.bases.resize_with(n, Vec::new);
        for b in &mut self.bases[..n] {
            b.clear();
        }
        let mut failed: Vec<Option<(usize, Error)>> = (0..n).map(|_| None).collect();
        let mut counts: Vec<Vec<(usize, usize)>> = group
            .iter()
            .map(|r| r.batches.iter().map(|(p, ev)| (*p, ev.len())).collect())
            .collect();
        for (p, log) in logs.iter().enumerate() {
            // Who has events for `p`, and how many, in queue order.
            let mut events: Vec<Event> = Vec::new();
            let mut takers: Vec<(usize, usize)> = Vec::new();
            for (i, request) in group.iter_mut().enumerate() {
                let c = self.cursor[i];
                if failed[i].is_some() || c >= request.batches.len() || request.batches[c].0 != p {
                    continue;
                }
                let batch = std::mem::take(&mut request.batches[c].1);
                takers.push((i, batch.len()));
                if events.is_empty() {
                    events = batch; // the common case of one request: no copy at all
                } else {
                    events.extend(batch);
                }
                self.cursor[i] += 1;
            }
            if takers.is_empty() {
                continue;
            }
            let appended = match journaled.as_deref_mut() {
                Some(j) => {
                    let start = journal::start_frame(&mut j.frames);
                    let appended = log.append_journaled(events, now, &mut j.frames);
                    let generation = j.journal.generation();
                    journal::finish_frame(&mut j.frames, start, generation, p as u32);
                    appended
                }
                None => log.append_owned(events, now),
            };
            match appended {
                Ok(mut base) => {
                    self.touched[p] = true;
                    for (i, count) in takers {
                        self.bases[i].push(base);
                        base += count as u64;
                    }
                }
                Err(e) => {
                    // The first request gets the error itself; the others (Error is not Clone)
                    // a copy of its kind, retryability and message.
                    for &(i, _) in &takers[1..] {
                        let copy =
                            Error::new(e.kind(), e.message()).with_retryable(e.is_retryable());
                        failed[i] = Some((p, copy));
                    }
                    failed[takers[0].0] = Some((p, e));
                }
            }
        }
        self.results.clear();
        for i in 0..n {
            let bases = std::mem::take(&mut self.bases[i]);
            self.results.push(match failed[i].take() {
                None => Ok(bases),
                Some((p, e)) => Err(partly_stored(e, &std::mem::take(&mut counts[i]), &bases, p)),
            });
        }
    }

    /// Makes the round durable with one write and one fdatasync of the journal, then lets
    /// readers see it; a round that does not fit in the journal is made durable by a
    /// checkpoint instead (its partitions synced with the others). A failure fails every
    /// request not yet failed.
    fn commit(
        &mut self,
        j: &mut Journaled,
        logs: &[Arc<dyn PartitionLog>],
        crew: &mut SyncCrew,
        name: &str,
    ) {
        for (p, touched) in self.touched.iter().enumerate() {
            j.unsynced[p] |= *touched;
        }
        if j.frames.is_empty() {
            return; // nothing was written
        }
        let outcome = match j.journal.append(&j.frames) {
            Ok(true) => {
                for (p, log) in logs.iter().enumerate() {
                    if self.touched[p] {
                        log.publish_appended();
                    }
                }
                Ok(())
            }
            Ok(false) => j.checkpoint(crew, name),
            Err(e) => Err(e),
        };
        j.frames.clear();
        if j.frames.capacity() > FRAMES_KEPT {
            j.frames = Vec::new(); // a round of large events: not kept for every round after
        }
        if let Err(e) = outcome {
            let message = format!("making the writes to stream `{name}` durable failed: {e}");
            for r in self.results.iter_mut() {
                if r.is_ok() {
                    *r = Err(Error::unavailable(message.clone()));
                }
            }
        }
    }

    /// Fsyncs each partition this round wrote, at once (see [`SyncCrew`]); the round ends, and
    /// its sends are acknowledged, only when every one is done. A failure fails every request
    /// not yet failed.
    fn sync(&mut self, crew: &mut SyncCrew, name: &str) {
        let touched: Vec<usize> = (0..self.touched.len())
            .filter(|p| self.touched[*p])
            .collect();
        let outcomes = crew.sync(&touched);
        for (p, outcome) in outcomes {
            if let Err(e) = outcome {
                for r in self.results.iter_mut() {
                    if r.is_ok() {
                        *r = Err(Error::unavailable(format!(
                            "fsync of stream `{name}` partition {p} failed: {e}"
                        )));
                    }
                }
            }
        }
    }
}

/// The error of a batch whose partition `failed` could not be written after the partitions
/// before it were (a batch is written partition by partition; each partition all or nothing).
pub(super) fn partly_stored(
    e: Error,
    batches: &[(usize, usize)],
    bases: &[u64],
    failed: usize,
) -> Error {
    if bases.is_empty() {
        return e;
    }
    let total: usize = batches.iter().map(|(_, n)| n).sum();
    let stored: Vec<String> = batches
        .iter()
        .zip(bases)
        .map(|((p, n), base)| format!("partition {p} positions {base}..{}", base + *n as u64))
        .collect();
    let count: usize = batches.iter().take(bases.len()).map(|(_, n)| n).sum();
    e.context(format!(
        "batch partly stored: {count} of {total} events were stored ({}), the events for \
         partition {failed} and after were not; sending the batch again stores the first ones twice",
        stored.join(", ")
    ))
}
