//! Random scripts of joins, leaves, crashes, nacks, splits and merges, then the promises
//! checked on what happened: nothing lost, per-key order of first deliveries, no delivery by
//! an owner that lost or gave up the partition, children after their parents end.

use super::*;
use crate::backend::checkpoint::{CheckpointKey, Lease};
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    Join(u8),
    Leave(u8),
    Crash(u8),
    Split,
    Merge,
    Pause(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..40).prop_map(Op::Append),
        3 => (0u8..3).prop_map(Op::Join),
        1 => (0u8..3).prop_map(Op::Leave),
        1 => (0u8..3).prop_map(Op::Crash),
        1 => Just(Op::Split),
        1 => Just(Op::Merge),
        2 => (1u8..40).prop_map(Op::Pause),
    ]
}

/// What the consumers did, in the order they did it.
#[derive(Default)]
struct Seen {
    /// (partition, position) of every ack.
    acked: HashSet<(PartitionId, u64)>,
    /// Per key, the payloads in the order they were first received.
    first_order: HashMap<String, Vec<String>>,
    received: HashSet<String>,
}

struct Process {
    engine: Arc<GroupEngine>,
    task: Option<tokio::task::JoinHandle<()>>,
    consumer: Option<Arc<GroupConsumer>>,
}

async fn consume(consumer: Arc<GroupConsumer>, seen: Arc<parking_lot::Mutex<Seen>>, seed: u64) {
    let rng = AtomicU64::new(seed | 1);
    let next = || {
        // xorshift: deterministic per case, no shared state.
        let mut x = rng.load(AtomicOrdering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        rng.store(x, AtomicOrdering::Relaxed);
        x
    };
    loop {
        let batch = match consumer.receive_batch(8, Duration::from_millis(1)).await {
            Ok(batch) => batch,
            Err(_) => return,
        };
        for delivery in batch {
            let payload = String::from_utf8(delivery.event.payload.to_vec()).unwrap();
            let key = String::from_utf8(delivery.event.key.clone().unwrap().to_vec()).unwrap();
            let partition = delivery.partition.clone().unwrap();
            let position = delivery.position.as_ref().unwrap().as_offset().unwrap();
            {
                let mut seen = seen.lock();
                if seen.received.insert(payload.clone()) {
                    seen.first_order.entry(key).or_default().push(payload);
                }
            }
            if next() % 7 == 0 {
                delivery.nack();
            } else {
                seen.lock().acked.insert((partition, position));
                delivery.ack();
            }
        }
    }
}

async fn run_script(script: Vec<Op>, seed: u64) -> std::result::Result<(), String> {
    let stream = SimStream::new(3);
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::new());
    let events = Arc::new(parking_lot::Mutex::new(Vec::<GroupEvent>::new()));
    let seen = Arc::new(parking_lot::Mutex::new(Seen::default()));
    let new_engine = || Arc::new(GroupEngine::new(store.clone(), fast_config(events.clone())));
    let mut processes: Vec<Process> = (0..3)
        .map(|_| Process {
            engine: new_engine(),
            task: None,
            consumer: None,
        })
        .collect();
    let mut sequence = 0u64;
    let join = |process: &mut Process, seed: u64| {
        let engine = process.engine.clone();
        let source: Arc<dyn PartitionSource> = Arc::new(SimSource(stream.clone()));
        let seen = seen.clone();
        async move {
            let consumer = Arc::new(
                engine
                    .join(
                        "sim",
                        source,
                        ConsumerOptions::new("g").start(StartPosition::Earliest),
                    )
                    .await
                    .map_err(|e| format!("join: {e}"))?,
            );
            let task = tokio::spawn(consume(consumer.clone(), seen, seed));
            Ok::<_, String>((consumer, task))
        }
    };
    // Someone must be there at the end; start with one member.
    let (c, t) = join(&mut processes[0], seed).await?;
    processes[0].consumer = Some(c);
    processes[0].task = Some(t);
    for op in script {
        match op {
            Op::Append(n) => {
                for _ in 0..n {
                    sequence += 1;
                    let key = format!("k{}", sequence % 5);
                    stream.append(&key, format!("{key}-{sequence:06}"));
                }
            }
            Op::Join(i) => {
                let p = &mut processes[i as usize];
                if p.consumer.is_none() {
                    let (c, t) = join(p, seed.wrapping_add(u64::from(i) + 1)).await?;
                    p.consumer = Some(c);
                    p.task = Some(t);
                }
            }
            Op::Leave(i) => {
                let p = &mut processes[i as usize];
                if let Some(c) = p.consumer.take() {
                    c.close().await.map_err(|e| format!("close: {e}"))?;
                    if let Some(t) = p.task.take() {
                        let _ = t.await;
                    }
                }
            }
            Op::Crash(i) => {
                let p = &mut processes[i as usize];
                if p.consumer.take().is_some() {
                    p.engine.crash();
                    if let Some(t) = p.task.take() {
                        t.abort();
                    }
                    // A crashed process comes back as a new one.
                    p.engine = new_engine();
                }
            }
            Op::Split => stream.split(),
            Op::Merge => stream.merge(),
            Op::Pause(ms) => tokio::time::sleep(Duration::from_millis(u64::from(ms))).await,
        }
    }
    if processes.iter().all(|p| p.consumer.is_none()) {
        let (c, t) = join(&mut processes[0], seed).await?;
        processes[0].consumer = Some(c);
        processes[0].task = Some(t);
    }
    // Everything must be acked eventually (crashed members' leases lapse after 400 ms).
    let total = stream.total();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let acked = seen.lock().acked.len();
        if acked >= total {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("only {acked} of {total} events acked after 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for p in &mut processes {
        if let Some(c) = p.consumer.take() {
            c.close().await.map_err(|e| format!("final close: {e}"))?;
        }
        if let Some(t) = p.task.take() {
            let _ = t.await;
        }
    }

    // 1. Nothing lost: every event of every partition acked.
    let state = stream.state.lock();
    let seen = seen.lock();
    for (id, p) in &state.partitions {
        for i in 0..p.events.len() as u64 {
            if !seen.acked.contains(&(id.clone(), i)) {
                return Err(format!("event {i} of partition {id} was never acked"));
            }
        }
    }
    // 2. Per-key order of first deliveries.
    for (key, payloads) in &seen.first_order {
        let mut sorted = payloads.clone();
        sorted.sort();
        if &sorted != payloads {
            return Err(format!(
                "key {key} first received out of order: {payloads:?}"
            ));
        }
    }
    // 3. Fencing: after losing or giving up a partition, an owner delivers none of it until
    //    it acquires it again. 4. Children start only after every parent ended.
    let events = events.lock();
    let mut holding: HashSet<(String, PartitionId)> = HashSet::new();
    let mut ended: HashSet<PartitionId> = HashSet::new();
    let parents: HashMap<PartitionId, Vec<PartitionId>> = state
        .partitions
        .iter()
        .map(|(id, p)| (id.clone(), p.parents.clone()))
        .collect();
    let mut delivered_from: BTreeSet<PartitionId> = BTreeSet::new();
    for event in events.iter() {
        match event {
            GroupEvent::Acquired {
                partition, owner, ..
            } => {
                holding.insert((owner.clone(), partition.clone()));
            }
            GroupEvent::Lost { partition, owner } | GroupEvent::Released { partition, owner } => {
                holding.remove(&(owner.clone(), partition.clone()));
            }
            GroupEvent::Ended { partition, owner } => {
                holding.remove(&(owner.clone(), partition.clone()));
                ended.insert(partition.clone());
            }
            GroupEvent::Delivered {
                partition, owner, ..
            } => {
                if !holding.contains(&(owner.clone(), partition.clone())) {
                    return Err(format!(
                        "{owner} delivered from partition {partition} without holding it"
                    ));
                }
                if delivered_from.insert(partition.clone()) {
                    for parent in &parents[partition] {
                        if !ended.contains(parent) {
                            return Err(format!(
                                "partition {partition} delivered before its parent {parent} ended"
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn a_group_loses_nothing_keeps_order_and_fences(
        script in proptest::collection::vec(op(), 1..24),
        seed in any::<u64>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let outcome = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), run_script(script.clone(), seed))
                .await
                .unwrap_or_else(|_| Err("the case did not finish within 60 s".to_owned()))
        });
        prop_assert!(outcome.is_ok(), "{:?} with script {:?}", outcome, script);
    }
}

/// A store whose releases take a while, as a remote store's can.
#[derive(Debug)]
struct SlowRelease(Arc<dyn CheckpointStore>, Duration);

#[async_trait::async_trait]
impl CheckpointStore for SlowRelease {
    fn kind(&self) -> &'static str {
        "slow release"
    }
    async fn prepare(&self, g: &str, s: &str, p: &[PartitionTopology]) -> Result<()> {
        self.0.prepare(g, s, p).await
    }
    async fn checkpoints(&self, g: &str, s: &str) -> Result<HashMap<PartitionId, Checkpoint>> {
        self.0.checkpoints(g, s).await
    }
    async fn leases(&self, g: &str, s: &str) -> Result<Vec<Lease>> {
        self.0.leases(g, s).await
    }
    async fn claim(
        &self,
        key: &CheckpointKey,
        owner: &str,
        ttl: Duration,
        expected: Option<&Lease>,
    ) -> Result<Option<Lease>> {
        self.0.claim(key, owner, ttl, expected).await
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        self.0.renew(lease, ttl).await
    }
    async fn checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Option<Lease>> {
        self.0.checkpoint(lease, checkpoint).await
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        tokio::time::sleep(self.1).await;
        self.0.release(lease).await
    }
}

/// Another member may start a partition's children as soon as the store says the partition
/// ended, before its owner's release of the lease is through: the end is announced when it is
/// stored, so no observer sees a child delivered before its parent ended. (The random scripts
/// above found this once in about 22 runs; a slow release makes it happen every time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_is_announced_ended_before_its_children_deliver_even_when_its_release_is_slow() {
    let stream = SimStream::new(1);
    let store: Arc<dyn CheckpointStore> = Arc::new(SlowRelease(
        Arc::new(MemoryCheckpointStore::new()),
        Duration::from_millis(600),
    ));
    let events: Observed = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let config = fast_config(events.clone());
    let first = GroupEngine::new(store.clone(), config.clone());
    let second = GroupEngine::new(store, config);
    let seen = Arc::new(parking_lot::Mutex::new(Seen::default()));
    let a = Arc::new(join_group(&first, &stream, StartPosition::Earliest).await);
    let b = Arc::new(join_group(&second, &stream, StartPosition::Earliest).await);
    let tasks = [
        tokio::spawn(consume(a.clone(), seen.clone(), 1)),
        tokio::spawn(consume(b.clone(), seen.clone(), 2)),
    ];
    for i in 0..20 {
        stream.append(&format!("k{}", i % 5), format!("before-{i}"));
    }
    stream.split();
    for i in 0..20 {
        stream.append(&format!("k{}", i % 5), format!("after-{i}"));
    }
    let total = stream.total();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.lock().acked.len() < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {total} events acked after 20 s",
            seen.lock().acked.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
    for t in tasks {
        let _ = t.await;
    }
    let parent = PartitionId::from(0u32);
    let events = events.lock();
    let ended_at = events
        .iter()
        .position(|e| matches!(e, GroupEvent::Ended { partition, .. } if *partition == parent))
        .expect("the split partition ended");
    let first_child_delivery = events
        .iter()
        .position(|e| matches!(e, GroupEvent::Delivered { partition, .. } if *partition != parent))
        .expect("the children delivered");
    assert!(
        ended_at < first_child_delivery,
        "a child delivered (event {first_child_delivery}) before its parent was announced ended \
         (event {ended_at})"
    );
}
