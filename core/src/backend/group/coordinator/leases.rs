//! Keeping the runtime's leases: when the next renewal is due, renewing them, and fencing a
//! partition whose lease is someone else's now.
//!
//! Free functions over the runtime rather than coordinator methods, because the coordinator
//! runs them beside a balance round that holds the coordinator itself (a hung partition
//! listing must not let the leases lapse).

use crate::backend::checkpoint::Lease;
use crate::backend::group::GroupEvent;
use crate::backend::group::runtime::Runtime;
use crate::{PartitionId, Timestamp};
use tokio::time::Instant;

/// When the soonest lease renewal is due.
pub(super) fn lease_renewal_due(rt: &Runtime) -> Instant {
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

/// Renews the leases with less than two thirds of their time left, in one store call.
pub(super) async fn renew_leases(rt: &Runtime) {
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
    if due.is_empty() {
        return;
    }
    let leases: Vec<Lease> = due.iter().map(|(_, _, lease)| lease.clone()).collect();
    let results = rt.store.renew_many(&leases, ttl).await;
    for ((id, generation, lease), result) in due.into_iter().zip(results) {
        match result {
            Ok(Some(renewed)) => {
                let mut state = rt.state.lock();
                if let Some(p) = state.part_mut(&id, generation) {
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
                    tracing::warn!(backend = rt.config.backend, stream = %rt.stream, group = %rt.group,
                        partition = %id, error = %e, "renewing a lease failed; will retry");
                }
            }
        }
    }
}

/// Fencing: the partition is someone else's now.
pub(super) fn mark_lost(rt: &Runtime, partition: &PartitionId, why: &str) {
    let event = GroupEvent::Lost {
        partition: partition.clone(),
        owner: rt.owner.clone(),
    };
    if rt.remove_part(partition, Some(event)).is_some() {
        tracing::warn!(backend = rt.config.backend, stream = %rt.stream, group = %rt.group,
            partition = %partition, "partition taken over by another member ({why}); \
             its unacked deliveries will be redelivered there");
    }
}
