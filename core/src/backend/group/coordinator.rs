//! The one task per runtime that talks to the checkpoint store: claims, renews, checkpoints,
//! sheds and releases. Because it is the only writer of the runtime's leases, a runtime never
//! races itself for a lease version.

use super::GroupEvent;
use super::owner::is_dead_local;
use super::runtime::{Phase, Runtime};
use crate::backend::checkpoint::{Checkpoint, CheckpointKey, Lease, PartitionTopology};
use crate::{Error, PartitionId, Position, Result, StartPosition, Timestamp};
use std::collections::{BTreeMap, HashMap, HashSet};
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
    /// Owners seen holding more than their share, and for how many rounds: a steal waits a
    /// round so the owner can shed on its own (a clean hand-over, no duplicates).
    over_share: HashMap<String, u32>,
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
    fn key(&self, partition: &PartitionId) -> CheckpointKey {
        CheckpointKey::new(&self.rt.group, &self.rt.stream, partition.clone())
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        if now >= self.next_commit {
            if let Err(e) = self.commit_all().await {
                tracing::warn!(stream = %self.rt.stream, group = %self.rt.group, error = %e,
                    "saving the group's progress failed; will retry");
            }
            self.next_commit = Instant::now() + self.rt.config.commit_interval;
        }
        renew_leases(&self.rt).await;
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
                tracing::warn!(stream = %rt.stream, group = %rt.group, error = %e,
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
        let mut first_error = None;
        for (id, generation, lease, position) in due {
            let checkpoint = Checkpoint::Processed(position.clone());
            match self.rt.store.checkpoint(&lease, &checkpoint).await {
                Ok(Some(lease)) => {
                    let mut state = self.rt.state.lock();
                    if let Some(p) = state
                        .parts
                        .get_mut(&id)
                        .filter(|p| p.generation == generation)
                    {
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
                    p.draining_since
                        .is_some_and(|since| p.inflight.is_empty() || since.elapsed() >= grace)
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
                .await;
        }
        if ended && let Some(held) = lease.as_ref() {
            lease = self.store_checkpoint(held, &Checkpoint::Ended).await;
        }
        let Some(lease) = lease else {
            self.rt.emit(GroupEvent::Lost {
                partition: id.clone(),
                owner: self.rt.owner.clone(),
            });
            return;
        };
        if let Err(e) = self.rt.store.release(&lease).await {
            tracing::warn!(stream = %self.rt.stream, group = %self.rt.group, partition = %id,
                error = %e, "releasing a lease failed; it will lapse on its own");
        }
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

    async fn store_checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint) -> Option<Lease> {
        match self.rt.store.checkpoint(lease, checkpoint).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(stream = %self.rt.stream, group = %self.rt.group,
                    partition = %lease.key.partition, error = %e,
                    "saving a checkpoint before release failed; the next owner replays from the last one");
                Some(lease.clone())
            }
        }
    }

    /// The last step of a runtime: commit, release everything, stopped.
    async fn stop(&mut self) {
        if let Err(e) = self.commit_all().await {
            tracing::warn!(stream = %self.rt.stream, group = %self.rt.group, error = %e,
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

    /// Claims, steals and sheds so that every owner holds its fair share.
    async fn balance(&mut self) -> Result<()> {
        let rt = self.rt.clone();
        if Instant::now() >= self.topology_due || self.topology.is_empty() {
            let topology = rt.source.partitions().await?;
            if topology.is_empty() {
                return Err(Error::not_found(format!(
                    "stream `{}` has no partitions",
                    rt.stream
                )));
            }
            rt.store.prepare(&rt.group, &rt.stream, &topology).await?;
            self.topology = topology;
            self.topology_due = Instant::now() + rt.config.topology_interval;
        }
        if rt.state.lock().members.is_empty() {
            return Ok(());
        }
        let leases = rt.store.leases(&rt.group, &rt.stream).await?;
        let checkpoints = rt.store.checkpoints(&rt.group, &rt.stream).await?;
        let now = Timestamp::now();
        let listed: HashSet<&PartitionId> = self.topology.iter().map(|t| &t.id).collect();
        let ended = |id: &PartitionId| matches!(checkpoints.get(id), Some(Checkpoint::Ended));
        let eligible: Vec<&PartitionTopology> = self
            .topology
            .iter()
            .filter(|t| {
                !ended(&t.id)
                    && t.parents
                        .iter()
                        .all(|parent| ended(parent) || !listed.contains(parent))
            })
            .collect();
        let eligible_ids: HashSet<&PartitionId> = eligible.iter().map(|t| &t.id).collect();
        let lease_of: HashMap<&PartitionId, &Lease> = leases
            .iter()
            .filter(|l| !l.owner.is_empty())
            .map(|l| (&l.key.partition, l))
            .collect();
        let live = |l: &Lease| !l.is_free(now) && !is_dead_local(&l.owner);

        let (held, draining): (HashSet<PartitionId>, HashSet<PartitionId>) = {
            let state = rt.state.lock();
            let (draining, held) = state
                .parts
                .iter()
                .map(|(id, p)| (id.clone(), p.draining_since.is_some()))
                .partition::<Vec<_>, _>(|(_, draining)| *draining);
            (
                held.into_iter().map(|(id, _)| id).collect(),
                draining.into_iter().map(|(id, _)| id).collect(),
            )
        };
        let mut others: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
        for lease in lease_of.values() {
            if lease.owner != rt.owner && live(lease) && eligible_ids.contains(&lease.key.partition)
            {
                others.entry(lease.owner.as_str()).or_default().push(lease);
            }
        }
        let owners = others.len() + 1;
        let total = eligible.len();
        let ceil = total.div_ceil(owners);
        let mut mine = held.iter().filter(|id| eligible_ids.contains(id)).count() + draining.len();

        // Claim free partitions (no lease, lapsed, or a dead local owner's) up to the share.
        let free: Vec<&PartitionTopology> = eligible
            .iter()
            .copied()
            .filter(|t| !held.contains(&t.id) && !draining.contains(&t.id))
            // A lease of this runtime's own that it does not hold in memory (a claim whose
            // start failed, a release that did not reach the store) is free for it to take
            // back, live or not.
            .filter(|t| {
                lease_of
                    .get(&t.id)
                    .is_none_or(|l| !live(l) || l.owner == rt.owner)
            })
            .collect();
        let mut claimed = Vec::new();
        if mine < ceil && !free.is_empty() {
            // Start at a different place per owner so that owners starting together do not
            // all race for the same partitions.
            let offset = (hash(&rt.owner) as usize) % free.len();
            for i in 0..free.len() {
                if mine >= ceil {
                    break;
                }
                let t = free[(i + offset) % free.len()];
                let seen = lease_of.get(&t.id).map(|l| (*l).clone());
                if let Some(lease) = rt
                    .store
                    .claim(
                        &self.key(&t.id),
                        &rt.owner,
                        rt.config.lease_ttl,
                        seen.as_ref(),
                    )
                    .await?
                {
                    claimed.push((t.clone(), lease));
                    mine += 1;
                }
            }
        }

        // Steal one partition from the owner holding most, when it stayed above the share for
        // two rounds (it had the chance to shed on its own) and this runtime is below it.
        // Owners that never shed (other libraries' workers sharing the table) are balanced
        // this way too.
        // Over the floor share, not the ceiling: 4 partitions held 2 + 2 with a third member
        // at 0 are each at the ceiling, yet the third member must get one.
        let floor = total / owners;
        let mut still_over = HashMap::new();
        for (owner, owned) in &others {
            if owned.len() > floor {
                still_over.insert(
                    (*owner).to_owned(),
                    self.over_share.get(*owner).copied().unwrap_or(0) + 1,
                );
            }
        }
        self.over_share = still_over;
        if mine < ceil && free.len() <= claimed.len() {
            let richest = others
                .iter()
                .max_by_key(|(owner, owned)| (owned.len(), std::cmp::Reverse(**owner)));
            if let Some((owner, owned)) = richest
                && owned.len() > floor
                && owned.len() > mine + 1
                && self.over_share.get(*owner).copied().unwrap_or(0) >= 2
            {
                let victim = owned
                    .iter()
                    .max_by(|a, b| a.key.partition.cmp(&b.key.partition))
                    .expect("an owner in the map holds a lease");
                if let Some(topology) = eligible.iter().find(|t| t.id == victim.key.partition)
                    && let Some(lease) = rt
                        .store
                        .claim(&victim.key, &rt.owner, rt.config.lease_ttl, Some(victim))
                        .await?
                {
                    tracing::info!(stream = %rt.stream, group = %rt.group,
                        partition = %victim.key.partition, from = %victim.owner,
                        "took a partition from the member holding most, to balance the group");
                    claimed.push(((*topology).clone(), lease));
                    mine += 1;
                }
            }
        }

        // Shed down to the share when another owner has room below it.
        let someone_has_room = others.values().any(|owned| owned.len() < ceil);
        if mine > ceil && someone_has_room {
            let mut state = rt.state.lock();
            let excess = mine - ceil;
            let candidates: Vec<PartitionId> = state
                .parts
                .iter()
                .rev()
                .filter(|(_, p)| p.draining_since.is_none())
                .map(|(id, _)| id.clone())
                .take(excess)
                .collect();
            for id in candidates {
                if let Some(p) = state.parts.get_mut(&id) {
                    p.draining_since = Some(Instant::now());
                }
            }
            Runtime::assign(&mut state);
            drop(state);
            rt.notify_members();
            rt.wake.notify_one();
        }

        if !claimed.is_empty() {
            // Read the checkpoints again: a previous owner may have committed between the first
            // read and the claim (it cannot any more).
            let fresh = match rt.store.checkpoints(&rt.group, &rt.stream).await {
                Ok(fresh) => fresh,
                Err(e) => {
                    for (_, lease) in &claimed {
                        let _ = rt.store.release(lease).await;
                    }
                    return Err(e);
                }
            };
            for (topology, lease) in claimed {
                if let Err(e) = self
                    .start_part(&topology, lease, fresh.get(&topology.id))
                    .await
                {
                    tracing::warn!(stream = %rt.stream, group = %rt.group,
                        partition = %topology.id, error = %e,
                        "could not start reading a claimed partition; released it");
                }
            }
        }
        Ok(())
    }

    /// Pins the start of a partition without a checkpoint, opens its reader and hands it to
    /// the runtime.
    async fn start_part(
        &mut self,
        topology: &PartitionTopology,
        mut lease: Lease,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<()> {
        let rt = self.rt.clone();
        let from = match checkpoint {
            Some(c) => c.clone(),
            None => {
                let resolved = if topology.parents.is_empty() {
                    rt.source.resolve_start(&topology.id, &rt.start).await
                } else {
                    // A child's events all come after its parents' ends.
                    Ok(Checkpoint::Start(StartPosition::Earliest))
                };
                let resolved = match resolved {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = rt.store.release(&lease).await;
                        return Err(e);
                    }
                };
                match rt.store.checkpoint(&lease, &resolved).await {
                    Ok(Some(held)) => lease = held,
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        let _ = rt.store.release(&lease).await;
                        return Err(e);
                    }
                }
                resolved
            }
        };
        if from == Checkpoint::Ended {
            rt.store.release(&lease).await?;
            return Ok(());
        }
        let reader = match rt.source.open(&topology.id, &from).await {
            Ok(reader) => reader,
            Err(e) => {
                let _ = rt.store.release(&lease).await;
                return Err(e);
            }
        };
        rt.add_part(topology.id.clone(), lease, from, reader);
        Ok(())
    }
}

/// When the soonest lease renewal is due.
fn lease_renewal_due(rt: &Runtime) -> Instant {
    let state = rt.state.lock();
    let refresh_at = rt.config.lease_ttl * 2 / 3;
    let now_ms = Timestamp::now().as_millis();
    let soonest = state
        .parts
        .values()
        .map(|p| p.lease.expires_at.as_millis() - now_ms)
        .min();
    match soonest {
        // Renew when less than two thirds of the lease time is left.
        Some(left) => {
            let wait_ms = left - refresh_at.as_millis() as i64;
            Instant::now() + std::time::Duration::from_millis(wait_ms.max(0) as u64)
        }
        None => Instant::now() + rt.config.lease_ttl,
    }
}

/// Renews the leases with less than two thirds of their time left.
async fn renew_leases(rt: &Runtime) {
    let ttl = rt.config.lease_ttl;
    let now_ms = Timestamp::now().as_millis();
    let due: Vec<(PartitionId, u64, Lease)> = {
        let state = rt.state.lock();
        state
            .parts
            .iter()
            .filter(|(_, p)| {
                p.lease.expires_at.as_millis() - now_ms < (ttl.as_millis() as i64) * 2 / 3
            })
            .map(|(id, p)| (id.clone(), p.generation, p.lease.clone()))
            .collect()
    };
    for (id, generation, lease) in due {
        match rt.store.renew(&lease, ttl).await {
            Ok(Some(renewed)) => {
                let mut state = rt.state.lock();
                if let Some(p) = state
                    .parts
                    .get_mut(&id)
                    .filter(|p| p.generation == generation)
                {
                    p.lease = renewed;
                }
            }
            Ok(None) => mark_lost(rt, &id, "its lease could not be renewed"),
            Err(e) => {
                if lease.expires_at <= Timestamp::now() {
                    // Unreachable store and the lease ran out: another member may own the
                    // partition now, so this one must stop.
                    mark_lost(
                        rt,
                        &id,
                        &format!("its lease ran out while renewing failed ({e})"),
                    );
                } else {
                    tracing::warn!(stream = %rt.stream, group = %rt.group,
                        partition = %id, error = %e, "renewing a lease failed; will retry");
                }
            }
        }
    }
}

/// Fencing: the partition is someone else's now.
fn mark_lost(rt: &Runtime, partition: &PartitionId, why: &str) {
    let event = GroupEvent::Lost {
        partition: partition.clone(),
        owner: rt.owner.clone(),
    };
    if rt.remove_part(partition, Some(event)).is_some() {
        tracing::warn!(stream = %rt.stream, group = %rt.group,
            partition = %partition, "partition taken over by another member ({why}); \
             its unacked deliveries will be redelivered there");
    }
}

/// Resolves once the runtime is stopping (or has stopped or failed).
async fn stopping(phase: &mut tokio::sync::watch::Receiver<Phase>) {
    let _ = phase
        .wait_for(|p| matches!(p, Phase::Stopping | Phase::Stopped | Phase::Failed(..)))
        .await
        .map(|_| ());
}

fn hash(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}
