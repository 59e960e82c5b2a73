//! The balance round: list the partitions, read the store's leases and checkpoints, and
//! claim, steal or shed so that every owner holds its fair share; then start what was claimed.
//!
//! Apart from the coordinator's loop because it is the engine's policy, the part most likely
//! to change (how shares are computed, when a steal is allowed, which partition is shed), while
//! the loop around it (when rounds run, renewals beside them, commits, release) is mechanism.

use super::Coordinator;
use super::leases::mark_lost;
use crate::backend::checkpoint::{Checkpoint, CheckpointKey, Lease, PartitionTopology};
use crate::backend::group::owner::is_dead_local;
use crate::backend::group::runtime::Runtime;
use crate::{Error, PartitionId, Result, StartPosition, Timestamp};
use std::collections::{BTreeMap, HashMap, HashSet};
use tokio::time::Instant;

impl Coordinator {
    fn key(&self, partition: &PartitionId) -> CheckpointKey {
        CheckpointKey::new(&self.rt.group, &self.rt.stream, partition.clone())
    }

    /// Claims, steals and sheds so that every owner holds its fair share.
    pub(super) async fn balance(&mut self) -> Result<()> {
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

        // A partition this runtime still reads whose lease names another owner was taken from
        // it (a steal it would otherwise see only at its next renewal): stop it now. Counted
        // as held, it would make the shares below wrong, and a runtime that sheds down to its
        // share while others take from it ends up with less than its share, then takes back
        // what it gave away, redelivering what it had not committed.
        let taken: Vec<(PartitionId, String)> = {
            let state = rt.state.lock();
            state
                .parts
                .keys()
                .filter_map(|id| {
                    lease_of
                        .get(id)
                        .filter(|l| l.owner != rt.owner)
                        .map(|l| (id.clone(), l.owner.clone()))
                })
                .collect()
        };
        for (id, owner) in taken {
            mark_lost(&rt, &id, &format!("the store names {owner} as its owner"));
        }

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
        // two balance intervals (it had the chance to shed on its own) and this runtime is
        // below it. Time, not rounds: a member's join wakes a round at once, and counting that
        // one let a newcomer steal twice before the holder had a round of its own to see it.
        // Owners that never shed (other libraries' workers sharing the table) are balanced
        // this way too.
        // Over the floor share, not the ceiling: 4 partitions held 2 + 2 with a third member
        // at 0 are each at the ceiling, yet the third member must get one.
        // A runtime holding nothing does not wait: owners are counted from the leases, so no
        // one sees it and no one will shed for it. Without this, a member joining a group
        // whose members took everything, or a survivor whose peer took every partition a
        // crashed member left, idles for rounds while the others carry the stream.
        let floor = total / owners;
        let mut still_over = HashMap::new();
        let first_seen = Instant::now();
        for (owner, owned) in &others {
            if owned.len() > floor {
                still_over.insert(
                    (*owner).to_owned(),
                    self.over_share.get(*owner).copied().unwrap_or(first_seen),
                );
            }
        }
        self.over_share = still_over;
        let shed_chance = rt.config.balance_interval * 2;
        if mine < ceil && free.len() <= claimed.len() {
            let richest = others
                .iter()
                .max_by_key(|(owner, owned)| (owned.len(), std::cmp::Reverse(**owner)));
            if let Some((owner, owned)) = richest
                && owned.len() > floor
                && owned.len() > mine + 1
                && (mine == 0
                    || self
                        .over_share
                        .get(*owner)
                        .is_some_and(|since| since.elapsed() >= shed_chance))
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
                    tracing::info!(backend = rt.config.backend, stream = %rt.stream, group = %rt.group,
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
                    tracing::warn!(backend = rt.config.backend, stream = %rt.stream, group = %rt.group,
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

fn hash(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}
