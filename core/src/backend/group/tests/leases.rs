//! Leases: a member that lost a partition can commit nothing of it, renewals go on while a
//! balance round hangs, and a member committing after every delivery on a slow store keeps
//! its leases.

use super::*;
use crate::backend::checkpoint::{CheckpointKey, Lease};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_ack_after_a_takeover_is_never_committed() {
    let stream = SimStream::new(1);
    for i in 0..10 {
        stream.append("k", format!("e{i}"));
    }
    let (store, events, engines) = engines(1, |c| c.commit_interval(Duration::from_secs(60)));
    let first = join_group(&engines[0], &stream, StartPosition::Earliest).await;
    let held = first.receive().await.unwrap();
    // Another member steals the only partition outright (as a member that sees the lease
    // expired would): `first` learns it at its next renew.
    let lease = store.leases("g", "s").await.unwrap().remove(0);
    let stolen = store
        .claim(&lease.key, "thief", Duration::from_secs(60), Some(&lease))
        .await
        .unwrap()
        .expect("steal");
    held.ack();
    let lost = || async {
        events
            .lock()
            .iter()
            .any(|e| matches!(e, GroupEvent::Lost { .. }))
    };
    wait_for(Duration::from_secs(5), "noticed the loss", lost, |lost| {
        *lost
    })
    .await;
    first.commit().await.unwrap();
    assert!(
        store.checkpoints("g", "s").await.unwrap()[&PartitionId::from(0)]
            != Checkpoint::Processed(Position::from_offset(0)),
        "the fenced member's ack must not be committed"
    );
    store.release(&stolen).await.unwrap();
    first.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_partition_is_let_go_at_the_next_balance_round_not_the_next_renewal() {
    // Leases of 30 s are renewed 10 s after they are taken; balance rounds run every 40 ms.
    // A member that counted a stolen partition as its own until then would shed by the wrong
    // count (and take back what it shed, redelivering to itself); it must see the theft in the
    // lease table it reads every round.
    let stream = SimStream::new(2);
    let (store, events, engines) = engines(1, |mut c| {
        c.lease_ttl = Duration::from_secs(30);
        c
    });
    let member = join_group(&engines[0], &stream, StartPosition::Earliest).await;
    assert_eq!(lease_counts(&store).await, [2]);
    let lease = store.leases("g", "s").await.unwrap().remove(0);
    let stolen = store
        .claim(&lease.key, "thief", Duration::from_secs(30), Some(&lease))
        .await
        .unwrap()
        .expect("steal");
    let started = tokio::time::Instant::now();
    let lost = || async {
        events
            .lock()
            .iter()
            .any(|e| matches!(e, GroupEvent::Lost { .. }))
    };
    wait_for(Duration::from_secs(3), "noticed the theft", lost, |lost| {
        *lost
    })
    .await;
    println!("theft noticed after {:?}", started.elapsed());
    store.release(&stolen).await.unwrap();
    member.close().await.unwrap();
}

/// Waits until one member holds the 4 partitions of the group's stream.
async fn holds_all_four(store: &Arc<dyn CheckpointStore>) {
    wait_for(
        Duration::from_secs(10),
        "took the 4 partitions",
        || lease_counts(store),
        |counts| counts == &[4],
    )
    .await;
}

/// A source whose partition listing hangs once `stall` is set, as an Event Hubs management call
/// did on a broken connection (until its 30 s timeout).
struct StallingListing {
    inner: SimSource,
    stall: Arc<AtomicBool>,
}

#[async_trait]
impl PartitionSource for StallingListing {
    async fn partitions(&self) -> Result<Vec<PartitionTopology>> {
        if self.stall.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.partitions().await
    }
    async fn resolve_start(
        &self,
        partition: &PartitionId,
        start: &StartPosition,
    ) -> Result<Checkpoint> {
        self.inner.resolve_start(partition, start).await
    }
    async fn open(
        &self,
        partition: &PartitionId,
        from: &Checkpoint,
    ) -> Result<Box<dyn PartitionReader>> {
        self.inner.open(partition, from).await
    }
}

/// The coordinator renews leases and balances in one task: a balance round stuck in a hung
/// listing must not let the member's leases lapse (other members would take its partitions
/// and read them again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_partition_listing_does_not_let_leases_lapse() {
    let stream = SimStream::new(4);
    let (store, _, engines) = engines(1, |c| c);
    let stall = Arc::new(AtomicBool::new(false));
    let source = StallingListing {
        inner: SimSource(stream.clone()),
        stall: stall.clone(),
    };
    let consumer = engines[0]
        .join(
            "s",
            Arc::new(source),
            ConsumerOptions::new("g").start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    holds_all_four(&store).await;
    stall.store(true, Ordering::SeqCst);
    // Several lease times with every listing hanging (topology_interval is 100 ms).
    let until = tokio::time::Instant::now() + LEASE_TTL * 5;
    while tokio::time::Instant::now() < until {
        let now = crate::Timestamp::now();
        let lapsed: Vec<String> = store
            .leases("g", "s")
            .await
            .unwrap()
            .iter()
            .filter(|l| l.is_free(now))
            .map(|l| l.key.partition.to_string())
            .collect();
        assert!(
            lapsed.is_empty(),
            "leases lapsed while a partition listing hung: {lapsed:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stream.append("k", "after".into());
    let d = tokio::time::timeout(Duration::from_secs(5), consumer.receive())
        .await
        .expect("still delivering")
        .unwrap();
    assert_eq!(d.event.payload.as_ref(), b"after");
    d.ack();
    stall.store(false, Ordering::SeqCst);
    consumer.close().await.unwrap();
}

/// A store whose every write waits `delay` (a busy disk's fsync, a far region's round trip),
/// and whose batch calls wait it once, as the file store's one replace does. It counts the
/// writes the coordinator sends one partition at a time.
#[derive(Debug)]
struct SlowWrites {
    inner: MemoryCheckpointStore,
    delay: Duration,
    single_writes: AtomicUsize,
}

#[async_trait]
impl CheckpointStore for SlowWrites {
    fn kind(&self) -> &'static str {
        "slow"
    }
    async fn prepare(&self, g: &str, s: &str, p: &[PartitionTopology]) -> Result<()> {
        self.inner.prepare(g, s, p).await
    }
    async fn checkpoints(&self, g: &str, s: &str) -> Result<HashMap<PartitionId, Checkpoint>> {
        self.inner.checkpoints(g, s).await
    }
    async fn leases(&self, g: &str, s: &str) -> Result<Vec<Lease>> {
        self.inner.leases(g, s).await
    }
    async fn claim(
        &self,
        key: &CheckpointKey,
        owner: &str,
        ttl: Duration,
        expected: Option<&Lease>,
    ) -> Result<Option<Lease>> {
        tokio::time::sleep(self.delay).await;
        self.inner.claim(key, owner, ttl, expected).await
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        self.single_writes.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.renew(lease, ttl).await
    }
    async fn checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Option<Lease>> {
        self.single_writes.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.checkpoint(lease, checkpoint).await
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        self.inner.release(lease).await
    }
    async fn renew_many(&self, leases: &[Lease], ttl: Duration) -> Vec<Result<Option<Lease>>> {
        tokio::time::sleep(self.delay).await;
        self.inner.renew_many(leases, ttl).await
    }
    async fn checkpoint_many(
        &self,
        checkpoints: &[(Lease, Checkpoint)],
    ) -> Vec<Result<Option<Lease>>> {
        tokio::time::sleep(self.delay).await;
        self.inner.checkpoint_many(checkpoints).await
    }
}

/// A member that commits after every delivery, on a store where each write takes 250 ms,
/// keeps its four leases of 1.2 s: its due renewals go in one call and before any commit
/// waiting beside them, at worst 500 ms after they fall due with 800 ms left. (Renewed one
/// partition at a time, the last of four renewals came 1 s after due, and leases lapsed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committing_after_every_delivery_on_a_slow_store_keeps_every_lease() {
    let stream = SimStream::new(4);
    let store = Arc::new(SlowWrites {
        inner: MemoryCheckpointStore::new(),
        delay: Duration::from_millis(250),
        single_writes: Default::default(),
    });
    let events = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut config = fast_config(events.clone());
    config.lease_ttl = Duration::from_millis(1200);
    let engine = GroupEngine::new(store.clone(), config);
    let consumer = join_group(&engine, &stream, StartPosition::Earliest).await;
    holds_all_four(&(store.clone() as Arc<dyn CheckpointStore>)).await;
    let writes_before = store.single_writes.load(Ordering::SeqCst);
    let until = tokio::time::Instant::now() + Duration::from_millis(1200) * 4;
    let mut delivered = 0;
    while tokio::time::Instant::now() < until {
        for k in 0..4 {
            stream.append(&format!("k{k}"), format!("e{delivered}-{k}"));
        }
        if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(50), consumer.receive()).await
        {
            d.ack();
            delivered += 1;
            consumer.commit().await.unwrap();
        }
        let now = crate::Timestamp::now();
        let leases = store.inner.leases("g", "s").await.unwrap();
        let lapsed: Vec<String> = leases
            .iter()
            .filter(|l| l.is_free(now))
            .map(|l| {
                format!(
                    "{} ({} ms past)",
                    l.key.partition,
                    now.as_millis() - l.expires_at.as_millis()
                )
            })
            .collect();
        assert!(
            lapsed.is_empty(),
            "leases lapsed while their member committed after each of {delivered} deliveries: {lapsed:?}"
        );
    }
    assert!(delivered >= 4, "only {delivered} deliveries");
    assert!(
        !events
            .lock()
            .iter()
            .any(|e| matches!(e, GroupEvent::Lost { .. })),
        "the member lost a partition to itself"
    );
    assert_eq!(
        store.single_writes.load(Ordering::SeqCst) - writes_before,
        0,
        "renewals and commits went to the store one partition at a time"
    );
    consumer.close().await.unwrap();
}
