//! Leases: a member that lost a partition can commit nothing of it, and renewals go on while
//! a balance round hangs.

use super::*;
use std::sync::atomic::{AtomicBool, Ordering};

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
    wait_for(
        Duration::from_secs(10),
        "took the 4 partitions",
        || lease_counts(&store),
        |counts| counts == &[4],
    )
    .await;
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
