//! The one task per runtime that talks to the checkpoint store: claims, renews, checkpoints,
//! sheds and releases. Because it is the only writer of the runtime's leases, a runtime never
//! races itself for a lease version.
//!
//! This file is the task's loop (when to commit, renew and balance, and stopping) and what it
//! does with partitions it gives up; `balance.rs` is the balance round (the fair-share policy),
//! `leases.rs` the lease renewal and fencing that run beside it.

mod balance;
mod leases;

use super::GroupEvent;
use super::runtime::{Phase, Runtime};
use crate::backend::checkpoint::{Checkpoint, Lease, PartitionTopology};
use crate::{PartitionId, Position, Result};
use leases::{lease_renewal_due, mark_lost, renew_leases};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub(super) enum Request {
    Commit(oneshot::Sender<Result<()>>),
}

struct Coordinator {
    rt: Arc<Runtime>,
    topology: Vec<PartitionTopology>,
    topology_due: Instant,
    next_balance: Instant,
    next_commit: Instant,
    /// Owners seen holding more than their share, and since when: a steal waits two balance
    /// intervals so the owner can shed on its own (a clean hand-over, no duplicates).
    over_share: HashMap<String, Instant>,
}

pub(super) async fn run(rt: Arc<Runtime>, mut requests: mpsc::Receiver<Request>) {
    let now = Instant::now();
    let mut co = Coordinator {
        rt: rt.clone(),
        topology: Vec::new(),
        topology_due: now,
        next_balance: now,
        next_commit: now + rt.config.commit_interval,
        over_share: HashMap::new(),
    };
    match co.balance().await {
        Ok(()) => {
            rt.phase.send_if_modified(|p| {
                let starting = *p == Phase::Starting;
                if starting {
                    *p = Phase::Running;
                }
                starting
            });
        }
        Err(e) => {
            rt.phase
                .send_replace(Phase::Failed(e.kind(), e.message().to_owned()));
            co.stop().await;
            return;
        }
    }
    co.next_balance = Instant::now() + rt.config.balance_interval;
    loop {
        let deadline = co
            .next_commit
            .min(co.next_balance)
            .min(lease_renewal_due(&co.rt));
        tokio::select! {
            biased;
            request = requests.recv() => match request {
                Some(Request::Commit(reply)) => {
                    // A consumer committing after every small batch keeps this branch busy:
                    // leases falling due are renewed first, so commits never starve them.
                    renew_leases(&co.rt).await;
                    let result = co.commit_all().await;
                    let _ = reply.send(result);
                }
                None => {}
            },
            _ = rt.wake.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
        if rt.is_stopping() {
            co.stop().await;
            // Commits asked for while stopping were covered by the final commit.
            requests.close();
            while let Ok(Request::Commit(reply)) = requests.try_recv() {
                let _ = reply.send(Ok(()));
            }
            return;
        }
        co.tick().await;
    }
}

impl Coordinator {
    async fn tick(&mut self) {
        // Leases before commits: a lapsed lease costs the partition, a late commit only
        // replays a little more after a crash.
        renew_leases(&self.rt).await;
        let now = Instant::now();
        if now >= self.next_commit {
            if let Err(e) = self.commit_all().await {
                tracing::warn!(backend = self.rt.config.backend, stream = %self.rt.stream, group = %self.rt.group, error = %e,
                    "saving the group's progress failed; will retry");
            }
            self.next_commit = Instant::now() + self.rt.config.commit_interval;
        }
        self.finish_parts().await;
        let membership = self.rt.membership_changed.swap(false, Ordering::AcqRel);
        if membership || Instant::now() >= self.next_balance {
            // Balancing lists the partitions and reads the store, and any of those calls can
            // hang until its own timeout (an Event Hubs management call on a broken connection
            // took 30 s). This task also renews the leases: a balance round that outlived their
            // renewal let every lease of the member lapse, and other members took its
            // partitions and read them again. So leases falling due during a round are renewed
            // beside it.
            let rt = self.rt.clone();
            let balanced = {
                let balancing = self.balance();
                tokio::pin!(balancing);
                // A renewal that fails leaves the lease due: try again no sooner than this.
                let mut next_try = Instant::now();
                // Closing does not wait for a hung round either. A lease the round claimed but
                // had not started reading is left to lapse (nothing of it was delivered).
                let mut phase = rt.phase.subscribe();
                loop {
                    let due = lease_renewal_due(&rt).max(next_try);
                    tokio::select! {
                        balanced = &mut balancing => break balanced,
                        _ = stopping(&mut phase) => break Ok(()),
                        _ = tokio::time::sleep_until(due) => {
                            renew_leases(&rt).await;
                            next_try = Instant::now() + std::time::Duration::from_millis(100);
                        }
                    }
                }
            };
            if let Err(e) = balanced {
                tracing::warn!(backend = rt.config.backend, stream = %rt.stream, group = %rt.group, error = %e,
                    "balancing the group failed; will retry");
            }
            self.next_balance = Instant::now() + self.rt.config.balance_interval;
        }
    }

    /// Writes the acked position of every partition whose commit moved.
    async fn commit_all(&mut self) -> Result<()> {
        let due: Vec<(PartitionId, u64, Lease, Position)> = {
            let state = self.rt.state.lock();
            state
                .parts
                .iter()
                .filter_map(|(id, p)| {
                    let committed = p.tracker.committed()?;
                    (p.saved.as_ref() != Some(committed))
                        .then(|| (id.clone(), p.generation, p.lease.clone(), committed.clone()))
                })
                .collect()
        };
        if due.is_empty() {
            return Ok(());
        }
        let writes: Vec<(Lease, Checkpoint)> = due
            .iter()
            .map(|(_, _, lease, position)| (lease.clone(), Checkpoint::Processed(position.clone())))
            .collect();
        let results = self.rt.store.checkpoint_many(&writes).await;
        let mut first_error = None;
        for ((id, generation, _, position), result) in due.into_iter().zip(results) {
            match result {
                Ok(Some(lease)) => {
                    let mut state = self.rt.state.lock();
                    if let Some(p) = state.part_mut(&id, generation) {
                        p.lease = lease;
                        p.saved = Some(position);
                    }
                }
                Ok(None) => mark_lost(&self.rt, &id, "its checkpoint was refused"),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Hands over partitions being shed whose deliveries are settled (or whose grace ran out),
    /// and retires partitions read to their end.
    async fn finish_parts(&mut self) {
        let grace = self.rt.config.shed_grace;
        let (shed, ended): (Vec<PartitionId>, Vec<PartitionId>) = {
            let state = self.rt.state.lock();
            let shed = state
                .parts
                .iter()
                .filter(|(_, p)| {
                    p.draining_since.is_some_and(|since| {
                        p.tracker.nothing_in_flight() || since.elapsed() >= grace
                    })
                })
                .map(|(id, _)| id.clone())
                .collect();
            let ended = state
                .parts
                .iter()
                .filter(|(_, p)| p.draining_since.is_none() && p.finished())
                .map(|(id, _)| id.clone())
                .collect();
            (shed, ended)
        };
        for id in shed {
            self.release(&id, false).await;
        }
        for id in ended {
            self.release(&id, true).await;
            // Its children may be claimable now.
            self.topology_due = Instant::now();
            self.next_balance = Instant::now();
        }
    }

    /// Commits what was acked, marks an ended partition `Ended`, and releases the lease.
    async fn release(&mut self, id: &PartitionId, ended: bool) {
        // Delivering stops now; the lease goes once the commit is written.
        let Some(part) = self.rt.remove_part(id, None) else {
            return;
        };
        let mut lease = Some(part.lease.clone());
        let committed = part.tracker.committed().cloned();
        if let (Some(position), Some(held)) = (committed, lease.as_ref())
            && part.saved.as_ref() != Some(&position)
        {
            lease = self
                .store_checkpoint(held, &Checkpoint::Processed(position))
                .await
                .0;
        }
        // Announced as soon as the store says so: from then on a member may start the
        // partition's children (it looks at the store, not at this lease), so an observer must
        // see the end before any delivery from them.
        let mut announced = false;
        if ended && let Some(held) = lease.as_ref() {
            let (held, stored) = self.store_checkpoint(held, &Checkpoint::Ended).await;
            lease = held;
            if stored {
                self.rt.emit(GroupEvent::Ended {
                    partition: id.clone(),
                    owner: self.rt.owner.clone(),
                });
                announced = true;
            }
        }
        let Some(lease) = lease else {
            self.rt.emit(GroupEvent::Lost {
                partition: id.clone(),
                owner: self.rt.owner.clone(),
            });
            return;
        };
        if let Err(e) = self.rt.store.release(&lease).await {
            tracing::warn!(backend = self.rt.config.backend, stream = %self.rt.stream, group = %self.rt.group, partition = %id,
                error = %e, "releasing a lease failed; it will lapse on its own");
        }
        if !announced {
            self.rt.emit(if ended {
                GroupEvent::Ended {
                    partition: id.clone(),
                    owner: self.rt.owner.clone(),
                }
            } else {
                GroupEvent::Released {
                    partition: id.clone(),
                    owner: self.rt.owner.clone(),
                }
            });
        }
    }

    /// Writes `checkpoint` under `lease`: the lease still held (`None` when another owner
    /// fenced it) and whether the checkpoint was stored. A failed write keeps the lease, so
    /// the partition is still released; its next owner replays from the last checkpoint.
    async fn store_checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
    ) -> (Option<Lease>, bool) {
        match self.rt.store.checkpoint(lease, checkpoint).await {
            Ok(held) => {
                let stored = held.is_some();
                (held, stored)
            }
            Err(e) => {
                tracing::warn!(backend = self.rt.config.backend, stream = %self.rt.stream, group = %self.rt.group,
                    partition = %lease.key.partition, error = %e,
                    "saving a checkpoint before release failed; the next owner replays from the last one");
                (Some(lease.clone()), false)
            }
        }
    }

    /// The last step of a runtime: commit, release everything, stopped.
    async fn stop(&mut self) {
        if let Err(e) = self.commit_all().await {
            tracing::warn!(backend = self.rt.config.backend, stream = %self.rt.stream, group = %self.rt.group, error = %e,
                "the final commit failed; the next owner replays from the last checkpoint");
        }
        let ids: Vec<PartitionId> = self.rt.state.lock().parts.keys().cloned().collect();
        for id in ids {
            let finished = self
                .rt
                .state
                .lock()
                .parts
                .get(&id)
                .is_some_and(|p| p.finished());
            self.release(&id, finished).await;
        }
        self.rt.phase.send_replace(Phase::Stopped);
        self.rt.notify_members();
    }
}

/// Resolves once the runtime is stopping (or has stopped or failed).
async fn stopping(phase: &mut tokio::sync::watch::Receiver<Phase>) {
    let _ = phase
        .wait_for(|p| matches!(p, Phase::Stopping | Phase::Stopped | Phase::Failed(..)))
        .await
        .map(|_| ());
}
