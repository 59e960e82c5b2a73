//! An owned partition's life in the runtime: taken on with its reader task, filled by that
//! task, and dropped (reader stopped, buffer discarded) when the coordinator gives it up or
//! loses it.
//!
//! The coordinator decides when a partition starts and stops; this module does what that
//! means in memory. The reader task is the only code here that runs outside the runtime's
//! lock: it waits for room, reads, and hands what it read to the runtime, checking each time
//! that the partition is still owned under the same generation.

use super::{Part, PartTracker, Runtime};
use crate::backend::checkpoint::{Checkpoint, Lease};
use crate::backend::group::{GroupEvent, PartitionReader};
use crate::{ErrorKind, PartitionId};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

impl Runtime {
    /// Starts delivering `partition` from a reader: called by the coordinator once it holds the
    /// lease.
    pub(in crate::backend::group) fn add_part(
        self: &Arc<Self>,
        partition: PartitionId,
        lease: Lease,
        from: Checkpoint,
        reader: Box<dyn PartitionReader>,
    ) {
        let committed = match &from {
            Checkpoint::Processed(p) => Some(p.clone()),
            _ => None,
        };
        let space = Arc::new(Notify::new());
        let behind = Arc::new(AtomicU64::new(u64::MAX));
        let mut state = self.state.lock();
        state.next_generation += 1;
        let generation = state.next_generation;
        let handle = tokio::spawn(read_loop(
            Arc::downgrade(self),
            partition.clone(),
            generation,
            reader,
            space.clone(),
            behind.clone(),
        ))
        .abort_handle();
        state.parts.insert(
            partition.clone(),
            Part {
                lease,
                generation,
                member: None,
                buffer: VecDeque::new(),
                redeliver: BTreeMap::new(),
                tracker: PartTracker::starting_at(committed.clone()),
                saved: committed,
                reader_ended: false,
                draining_since: None,
                space,
                reader: Some(handle),
                behind,
                error: None,
                settled: Vec::new(),
            },
        );
        Self::assign(&mut state);
        // Under the lock, so no delivery of the partition is observed before its acquisition.
        self.emit(GroupEvent::Acquired {
            partition,
            owner: self.owner.clone(),
            from,
        });
        drop(state);
        self.notify_members();
    }

    /// Stops delivering `partition` and forgets it: its reader stops, its buffered events are
    /// dropped, and its unsettled deliveries no longer count against their members.
    /// `event` (Lost, Released, Ended) is emitted under the lock, so no delivery of the
    /// partition is observed after it.
    pub(in crate::backend::group) fn remove_part(
        &self,
        partition: &PartitionId,
        event: Option<GroupEvent>,
    ) -> Option<Part> {
        let mut state = self.state.lock();
        let mut part = state.parts.remove(partition)?;
        if let Some(event) = event {
            self.emit(event);
        }
        if let Some(reader) = part.reader.take() {
            reader.abort();
        }
        for inflight in part.tracker.in_flight() {
            if let Some((count, _)) = state.slots.get_mut(&inflight.member) {
                *count = count.saturating_sub(1);
            }
        }
        Self::assign(&mut state);
        drop(state);
        self.notify_members();
        Some(part)
    }
}

/// Errors after which reading the partition again cannot help: the group stops with them.
fn is_fatal(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::NotFound | ErrorKind::Closed)
}

/// Fills one partition's buffer from its reader while the runtime owns it.
async fn read_loop(
    runtime: Weak<Runtime>,
    partition: PartitionId,
    generation: u64,
    mut reader: Box<dyn PartitionReader>,
    space: Arc<Notify>,
    behind: Arc<AtomicU64>,
) {
    let mut backoff = Duration::from_millis(100);
    // Swapped with the partition's list of settled events at each read, so both keep their
    // room and neither is reallocated.
    let mut settled = Vec::new();
    loop {
        let room = loop {
            let notified = space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let Some(rt) = runtime.upgrade() else { return };
                let state = rt.state.lock();
                let Some(part) = state.part(&partition, generation) else {
                    return;
                };
                // Refill from half empty, in one read, rather than topping up a few events at a
                // time.
                if part.buffer.len() <= rt.config.prefetch / 2
                    && part.tracker.window() < rt.config.max_window
                {
                    break rt.config.prefetch - part.buffer.len();
                }
            }
            notified.await;
        };
        let read = reader.read(room).await;
        behind.store(reader.behind().unwrap_or(u64::MAX), Ordering::Relaxed);
        let Some(rt) = runtime.upgrade() else { return };
        match read {
            Ok(batch) => {
                backoff = Duration::from_millis(100);
                let wake = {
                    let mut state = rt.state.lock();
                    let Some(part) = state.part_mut(&partition, generation) else {
                        return;
                    };
                    // Members only wait on an empty buffer; a refill of a non-empty one needs
                    // no wake-up, nor does one while no member is receiving.
                    let was_empty = part.buffer.is_empty();
                    if was_empty {
                        // The read's vector becomes the buffer as it is: no copy of its
                        // records (the old buffer's allocation goes as the vector's would).
                        part.buffer = batch.records.into();
                    } else {
                        part.buffer.extend(batch.records);
                    }
                    part.reader_ended |= batch.ended;
                    std::mem::swap(&mut part.settled, &mut settled);
                    was_empty && !part.buffer.is_empty() && rt.anyone_receiving()
                };
                // Dropped here, outside the lock, on the reader's side (see `Part::settled`).
                settled.clear();
                if wake {
                    rt.notify_members();
                }
                if batch.ended {
                    rt.wake.notify_one();
                    return;
                }
            }
            Err(e) if is_fatal(e.kind()) => {
                rt.state.lock().fatal = Some((e.kind(), e.message().to_owned()));
                // Members get the error from now on; the leases go back, and a consumer that
                // joins later (say, of a stream created again) starts a fresh runtime.
                rt.begin_stopping();
                rt.notify_members();
                rt.wake.notify_one();
                return;
            }
            Err(e) => {
                tracing::warn!(backend = rt.config.backend, stream = %rt.stream, group = %rt.group, partition = %partition,
                    error = %e, retry_in = ?backoff, "reading a partition failed; will retry");
                if !e.is_retryable() {
                    let mut state = rt.state.lock();
                    if let Some(part) = state.part_mut(&partition, generation) {
                        part.error = Some((e.kind(), e.message().to_owned()));
                    }
                    drop(state);
                    rt.notify_members();
                }
                drop(rt);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}
