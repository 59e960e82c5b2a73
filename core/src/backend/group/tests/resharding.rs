//! Random scripts of joins, leaves, crashes, nacks, splits and merges, then the promises
//! checked on what happened: nothing lost, per-key order of first deliveries, no delivery by
//! an owner that lost or gave up the partition, children after their parents end.

use super::*;
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
