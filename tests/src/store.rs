//! The contract every [`CheckpointStore`] keeps, as one function a store's own test calls.
//!
//! ```no_run
//! # async fn demo() {
//! use tributary::backend::MemoryCheckpointStore;
//! tributary_conformance::checkpoint_store_contract(&MemoryCheckpointStore::new()).await;
//! # }
//! ```
//!
//! Every check uses a group and stream of its own (random suffix), so it can run against a
//! shared server (a DynamoDB table, a Blob container) beside other tests.

use futures::future::join_all;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tributary::backend::{Checkpoint, CheckpointKey, CheckpointStore, Lease, PartitionTopology};
use tributary::{PartitionId, Position, StartPosition, Timestamp};

const TTL: Duration = Duration::from_secs(30);

fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{name}-{:x}-{}",
        nanos & 0xffff_ffff_ffff,
        std::process::id()
    )
}

fn key(group: &str, stream: &str, partition: &str) -> CheckpointKey {
    CheckpointKey::new(group, stream, PartitionId::new(partition))
}

async fn lease_of(store: &dyn CheckpointStore, key: &CheckpointKey) -> Option<Lease> {
    store
        .leases(&key.group, &key.stream)
        .await
        .expect("leases")
        .into_iter()
        .find(|l| l.key.partition == key.partition && !l.owner.is_empty())
}

/// The checkpoint of `key`'s partition, as the store reads it back.
async fn checkpoint_of(store: &dyn CheckpointStore, key: &CheckpointKey) -> Option<Checkpoint> {
    store
        .checkpoints(&key.group, &key.stream)
        .await
        .expect("checkpoints")
        .remove(&key.partition)
}

async fn has_no_checkpoints(store: &dyn CheckpointStore, group: &str, stream: &str) -> bool {
    store
        .checkpoints(group, stream)
        .await
        .expect("checkpoints")
        .is_empty()
}

/// `claimants` owners race for `key` (naming `over`, the lease they mean to take over, if
/// any); the leases of the winners.
async fn race(
    store: &dyn CheckpointStore,
    key: &CheckpointKey,
    claimants: usize,
    owner: &str,
    over: Option<&Lease>,
) -> Vec<Lease> {
    let claims = join_all((0..claimants).map(|i| async move {
        store
            .claim(key, &format!("{owner}-{i}"), TTL, over)
            .await
            .expect("claim")
    }))
    .await;
    claims.into_iter().flatten().collect()
}

/// `lease` is no longer its holder's: it cannot be renewed and a checkpoint under it is refused.
async fn assert_fenced(store: &dyn CheckpointStore, lease: &Lease, who: &str) {
    let kind = store.kind();
    assert!(
        store.renew(lease, TTL).await.expect("renew").is_none(),
        "{kind}: {who} cannot renew"
    );
    let late = Checkpoint::Processed(Position::new("99"));
    assert!(
        store
            .checkpoint(lease, &late)
            .await
            .expect("checkpoint")
            .is_none(),
        "{kind}: {who}'s checkpoint is refused"
    );
}

/// Runs every check of the store contract against `store`, panicking with what broke:
///
/// 1. of 16 claimants racing for one free partition, exactly one wins;
/// 2. renew gives a new version and the old one can no longer renew, checkpoint or release;
/// 3. fenced checkpoints: written while the lease is current, refused (nothing written) after a
///    takeover; every checkpoint kind round-trips;
/// 4. a claim that names no lease fails while one is held; a steal naming the current lease
///    wins, after which the old owner can neither renew nor checkpoint nor release;
/// 5. release frees the partition at once;
/// 6. an unrenewed lease expires (as observed by this store instance) and, of 8 claimants
///    racing for the expired lease, exactly one wins;
/// 7. groups, streams and partitions are isolated from each other; `prepare` is idempotent
///    and disturbs nothing;
/// 8. `renew_many` and `checkpoint_many` treat each lease as the single calls would: the held
///    ones renew (new versions) and checkpoint, a stolen one is refused and writes nothing.
pub async fn checkpoint_store_contract(store: &dyn CheckpointStore) {
    let kind = store.kind();
    let group = unique("contract");
    let stream = unique("orders");
    let p0 = key(&group, &stream, "shardId-000000000000");

    // 0. Empty to begin with; prepare is harmless.
    let topology = [
        PartitionTopology::root(PartitionId::new("shardId-000000000000")),
        PartitionTopology {
            id: PartitionId::new("shardId-000000000001"),
            parents: vec![PartitionId::new("shardId-000000000000")],
        },
    ];
    store
        .prepare(&group, &stream, &topology)
        .await
        .expect("prepare");
    store
        .prepare(&group, &stream, &topology)
        .await
        .expect("prepare twice");
    assert!(
        has_no_checkpoints(store, &group, &stream).await,
        "{kind}: a new group has no checkpoints"
    );
    assert!(
        lease_of(store, &p0).await.is_none(),
        "{kind}: a new group has no owned leases"
    );

    // 1. Exactly one of many racing claimants wins a free partition.
    let winners = race(store, &p0, 16, "owner", None).await;
    assert_eq!(
        winners.len(),
        1,
        "{kind}: exactly one of 16 racing claims must win, {} did",
        winners.len()
    );
    let first = winners.into_iter().next().unwrap();
    assert_eq!(first.key, p0, "{kind}: the lease names its partition");
    assert!(
        first.expires_at > Timestamp::now(),
        "{kind}: a fresh lease expires in the future"
    );
    let seen = lease_of(store, &p0)
        .await
        .expect("the claimed lease is listed");
    assert_eq!(seen.owner, first.owner, "{kind}: leases() shows the owner");
    assert_eq!(
        seen.version, first.version,
        "{kind}: leases() shows the version"
    );

    // 2. Renew moves the version; the old version is dead.
    let renewed = store
        .renew(&first, TTL)
        .await
        .unwrap()
        .expect("the holder renews");
    assert_ne!(
        renewed.version, first.version,
        "{kind}: renew changes the version"
    );
    assert_fenced(store, &first, "a stale version").await;
    assert!(
        has_no_checkpoints(store, &group, &stream).await,
        "{kind}: a refused checkpoint writes nothing"
    );

    // 3. Fenced checkpoints of every kind round-trip.
    let mut holder = renewed;
    let kinds = [
        Checkpoint::Start(StartPosition::Earliest),
        Checkpoint::Start(StartPosition::Latest),
        Checkpoint::Start(StartPosition::Timestamp(Timestamp::from_millis(
            1_700_000_000_123,
        ))),
        Checkpoint::Start(StartPosition::Position(Position::new(
            "49590338271490256608559692538361571095921575989136588898",
        ))),
        Checkpoint::Processed(Position::new("9")),
        Checkpoint::Processed(Position::new("10")),
        Checkpoint::Ended,
    ];
    for checkpoint in &kinds {
        holder = store
            .checkpoint(&holder, checkpoint)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{kind}: the holder's checkpoint {checkpoint:?} is refused"));
        assert_eq!(
            checkpoint_of(store, &p0).await.as_ref(),
            Some(checkpoint),
            "{kind}: checkpoint {checkpoint:?} must read back as written"
        );
    }
    let processed = Checkpoint::Processed(Position::new("42"));
    holder = store
        .checkpoint(&holder, &processed)
        .await
        .unwrap()
        .expect("checkpoint");

    // 4. No claim over a held lease without naming it; a steal that names it wins and fences.
    assert!(
        store
            .claim(&p0, "intruder", TTL, None)
            .await
            .unwrap()
            .is_none(),
        "{kind}: a claim naming no lease must fail while the partition is held"
    );
    assert!(
        store
            .claim(&p0, "intruder", TTL, Some(&first))
            .await
            .unwrap()
            .is_none(),
        "{kind}: a claim naming a stale version must fail"
    );
    let current = lease_of(store, &p0).await.expect("held");
    let thief = store
        .claim(&p0, "thief", TTL, Some(&current))
        .await
        .unwrap()
        .expect("a steal naming the current lease wins");
    assert_eq!(thief.owner, "thief");
    assert_fenced(store, &holder, "the robbed owner").await;
    assert_eq!(
        checkpoint_of(store, &p0).await,
        Some(processed.clone()),
        "{kind}: the robbed owner's late checkpoint wrote nothing"
    );
    store.release(&holder).await.unwrap();
    assert_eq!(
        lease_of(store, &p0).await.map(|l| l.owner),
        Some("thief".to_owned()),
        "{kind}: a stale release does nothing"
    );

    // 5. Release frees the partition at once.
    store.release(&thief).await.unwrap();
    assert!(
        lease_of(store, &p0).await.is_none(),
        "{kind}: a released partition has no owner"
    );
    let again = store
        .claim(&p0, "next", TTL, None)
        .await
        .unwrap()
        .expect("a released partition can be claimed naming no lease");
    assert!(
        store.renew(&thief, TTL).await.unwrap().is_none(),
        "{kind}: a released lease cannot be renewed"
    );
    store.release(&again).await.unwrap();

    // 6. Expiry, and a race for the expired lease.
    let short = Duration::from_millis(300);
    let p1 = key(&group, &stream, "shardId-000000000001");
    let fleeting = store
        .claim(&p1, "mortal", short, None)
        .await
        .unwrap()
        .expect("claim");
    // Stores that learn expiry by watching the version (KCL) start watching here.
    let watched = lease_of(store, &p1).await.expect("held");
    assert!(
        !watched.is_free(Timestamp::now()),
        "{kind}: not expired yet"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let expired = loop {
        tokio::time::sleep(short).await;
        let seen = lease_of(store, &p1)
            .await
            .expect("still listed until taken");
        if seen.is_free(Timestamp::now()) {
            break seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind}: a lease of {short:?} not renewed for 60 s never expired"
        );
    };
    let heirs = race(store, &p1, 8, "heir", Some(&expired)).await;
    assert_eq!(
        heirs.len(),
        1,
        "{kind}: exactly one of 8 racing claims of an expired lease must win"
    );
    assert!(
        store.renew(&fleeting, TTL).await.unwrap().is_none(),
        "{kind}: an expired and taken lease cannot be renewed"
    );

    // 7. Isolation between groups, streams and partitions.
    let other_group = unique("contract-other");
    assert!(
        has_no_checkpoints(store, &other_group, &stream).await,
        "{kind}: another group sees none of this group's checkpoints"
    );
    let other_stream = unique("payments");
    let elsewhere = store
        .claim(
            &key(&group, &other_stream, "shardId-000000000000"),
            "x",
            TTL,
            None,
        )
        .await
        .unwrap()
        .expect("the same partition id on another stream is free");
    assert!(
        has_no_checkpoints(store, &group, &other_stream).await,
        "{kind}: another stream sees none of this stream's checkpoints"
    );
    store.release(&elsewhere).await.unwrap();
    store
        .prepare(&group, &stream, &topology)
        .await
        .expect("prepare again");
    assert_eq!(
        checkpoint_of(store, &p0).await,
        Some(processed),
        "{kind}: prepare keeps existing checkpoints"
    );
    assert_eq!(
        lease_of(store, &p1).await.map(|l| l.owner),
        Some(heirs[0].owner.clone()),
        "{kind}: prepare keeps existing leases"
    );
    store.release(&heirs[0]).await.unwrap();

    // 8. Batches keep every rule of the single calls, each lease on its own.
    batches_fence_each_lease_on_its_own(store, &group, &stream).await;
}

/// Step 8: `renew_many` and `checkpoint_many` over three leases, one of them stolen in between:
/// the two held ones renew and checkpoint, the stolen one gets `None` and writes nothing.
async fn batches_fence_each_lease_on_its_own(
    store: &dyn CheckpointStore,
    group: &str,
    stream: &str,
) {
    let kind = store.kind();
    assert!(
        store.renew_many(&[], TTL).await.is_empty() && store.checkpoint_many(&[]).await.is_empty(),
        "{kind}: an empty batch has no results"
    );
    let keys: Vec<CheckpointKey> = (2..5)
        .map(|n| key(group, stream, &format!("shardId-00000000000{n}")))
        .collect();
    let mut held = Vec::new();
    for k in &keys {
        held.push(
            store
                .claim(k, "batcher", TTL, None)
                .await
                .unwrap()
                .expect("a free partition is claimed"),
        );
    }
    let stolen = store
        .claim(&keys[1], "batch-thief", TTL, Some(&held[1]))
        .await
        .unwrap()
        .expect("a steal naming the current lease wins");

    let renewed: Vec<Option<Lease>> = store
        .renew_many(&held, TTL)
        .await
        .into_iter()
        .map(|r| r.expect("renew_many"))
        .collect();
    assert_eq!(renewed.len(), 3, "{kind}: one renewal result per lease");
    assert!(
        renewed[1].is_none(),
        "{kind}: renew_many refuses the stolen lease"
    );
    let (a, c) = match (&renewed[0], &renewed[2]) {
        (Some(a), Some(c)) => (a.clone(), c.clone()),
        _ => panic!("{kind}: renew_many renews the leases still held: {renewed:?}"),
    };
    assert!(
        a.version != held[0].version && c.version != held[2].version,
        "{kind}: renew_many changes each renewed lease's version"
    );
    for old in [&held[0], &held[2]] {
        assert_fenced(store, old, "a version renew_many replaced").await;
    }

    let writes = [
        (a, Checkpoint::Processed(Position::new("7"))),
        (held[1].clone(), Checkpoint::Processed(Position::new("8"))),
        (c, Checkpoint::Processed(Position::new("9"))),
    ];
    let written: Vec<Option<Lease>> = store
        .checkpoint_many(&writes)
        .await
        .into_iter()
        .map(|r| r.expect("checkpoint_many"))
        .collect();
    assert!(
        written[0].is_some() && written[1].is_none() && written[2].is_some(),
        "{kind}: checkpoint_many writes under the held leases and refuses the stolen one: {written:?}"
    );
    for (n, expected) in [(0, Some("7")), (1, None), (2, Some("9"))] {
        assert_eq!(
            checkpoint_of(store, &keys[n]).await,
            expected.map(|p| Checkpoint::Processed(Position::new(p))),
            "{kind}: checkpoint_many's write of {} reads back",
            keys[n].partition
        );
    }
    for lease in written.into_iter().flatten().chain([stolen]) {
        store.release(&lease).await.unwrap();
    }
}
