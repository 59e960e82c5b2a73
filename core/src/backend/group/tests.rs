//! The engine against a simulated, reshardable stream: random joins, leaves, crashes, nacks,
//! splits and merges, then the promises checked on what happened.

use super::*;
use crate::backend::checkpoint::MemoryCheckpointStore;
use crate::{Consumer, ErrorKind};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use tokio::sync::Notify;

/// A stream whose partitions can be split and merged, like Kinesis shards.
#[derive(Default)]
struct SimState {
    partitions: BTreeMap<PartitionId, SimPartition>,
    next_id: u32,
}

struct SimPartition {
    events: Vec<Event>,
    closed: bool,
    parents: Vec<PartitionId>,
    /// The hash range it covers, as Kinesis shards do: a key always maps to the open
    /// partition whose range holds its hash, so its events move to descendants only.
    range: (u32, u32),
}

const HASH_SPACE: u32 = 1 << 16;

fn key_hash(key: &str) -> u32 {
    let mut h: u32 = 2_166_136_261;
    for b in key.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(16_777_619);
    }
    h % HASH_SPACE
}

#[derive(Default)]
struct SimStream {
    state: parking_lot::Mutex<SimState>,
    appended: Notify,
}

impl SimStream {
    fn new(partitions: u32) -> Arc<Self> {
        let stream = Arc::new(SimStream::default());
        let width = HASH_SPACE / partitions;
        for i in 0..partitions {
            let hi = if i + 1 == partitions {
                HASH_SPACE
            } else {
                (i + 1) * width
            };
            stream.add_partition(Vec::new(), (i * width, hi));
        }
        stream
    }

    fn add_partition(&self, parents: Vec<PartitionId>, range: (u32, u32)) -> PartitionId {
        let mut state = self.state.lock();
        let id = PartitionId::from(state.next_id);
        state.next_id += 1;
        state.partitions.insert(
            id.clone(),
            SimPartition {
                events: Vec::new(),
                closed: false,
                parents,
                range,
            },
        );
        id
    }

    /// Appends to the open partition whose hash range holds the key's hash.
    fn append(&self, key: &str, payload: String) {
        let hash = key_hash(key);
        let event = Event::new(payload).with_key(key.to_owned());
        let mut state = self.state.lock();
        let partition = state
            .partitions
            .values_mut()
            .find(|p| !p.closed && p.range.0 <= hash && hash < p.range.1)
            .expect("open partitions cover the hash space");
        partition.events.push(event);
        drop(state);
        self.appended.notify_waiters();
    }

    /// Splits the widest open partition in two.
    fn split(&self) {
        let (parent, (lo, hi)) = {
            let mut state = self.state.lock();
            let Some((id, p)) = state
                .partitions
                .iter_mut()
                .filter(|(_, p)| !p.closed && p.range.1 - p.range.0 > 1)
                .max_by_key(|(_, p)| p.range.1 - p.range.0)
            else {
                return;
            };
            p.closed = true;
            (id.clone(), p.range)
        };
        let mid = lo + (hi - lo) / 2;
        self.add_partition(vec![parent.clone()], (lo, mid));
        self.add_partition(vec![parent], (mid, hi));
        self.appended.notify_waiters();
    }

    /// Merges the first two adjacent open partitions.
    fn merge(&self) {
        let pair = {
            let mut state = self.state.lock();
            let mut open: Vec<(PartitionId, (u32, u32))> = state
                .partitions
                .iter()
                .filter(|(_, p)| !p.closed)
                .map(|(id, p)| (id.clone(), p.range))
                .collect();
            open.sort_by_key(|(_, r)| r.0);
            let Some(w) = open.windows(2).find(|w| w[0].1.1 == w[1].1.0) else {
                return;
            };
            let (a, b) = (w[0].clone(), w[1].clone());
            state.partitions.get_mut(&a.0).expect("listed").closed = true;
            state.partitions.get_mut(&b.0).expect("listed").closed = true;
            (a, b)
        };
        let ((a, (lo, _)), (b, (_, hi))) = pair;
        self.add_partition(vec![a, b], (lo, hi));
        self.appended.notify_waiters();
    }

    fn total(&self) -> usize {
        self.state
            .lock()
            .partitions
            .values()
            .map(|p| p.events.len())
            .sum()
    }
}

struct SimSource(Arc<SimStream>);

#[async_trait]
impl PartitionSource for SimSource {
    async fn partitions(&self) -> Result<Vec<PartitionTopology>> {
        let state = self.0.state.lock();
        Ok(state
            .partitions
            .iter()
            .map(|(id, p)| PartitionTopology {
                id: id.clone(),
                parents: p.parents.clone(),
            })
            .collect())
    }
    async fn resolve_start(
        &self,
        partition: &PartitionId,
        start: &StartPosition,
    ) -> Result<Checkpoint> {
        let len = self.0.state.lock().partitions[partition].events.len();
        Ok(match start {
            StartPosition::Latest if len > 0 => {
                Checkpoint::Processed(Position::from_offset(len as u64 - 1))
            }
            _ => Checkpoint::Start(StartPosition::Earliest),
        })
    }
    async fn open(
        &self,
        partition: &PartitionId,
        from: &Checkpoint,
    ) -> Result<Box<dyn PartitionReader>> {
        let cursor = match from {
            Checkpoint::Processed(p) => p.as_offset().expect("offset") + 1,
            Checkpoint::Start(StartPosition::Latest) => {
                self.0.state.lock().partitions[partition].events.len() as u64
            }
            _ => 0,
        };
        Ok(Box::new(SimReader {
            stream: self.0.clone(),
            partition: partition.clone(),
            cursor,
        }))
    }
}

struct SimReader {
    stream: Arc<SimStream>,
    partition: PartitionId,
    cursor: u64,
}

#[async_trait]
impl PartitionReader for SimReader {
    async fn read(&mut self, max: usize) -> Result<ReadBatch> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        loop {
            let notified = self.stream.appended.notified();
            {
                let state = self.stream.state.lock();
                let p = &state.partitions[&self.partition];
                let from = self.cursor as usize;
                if from < p.events.len() {
                    let to = p.events.len().min(from + max);
                    let records = (from..to)
                        .map(|i| SourceRecord {
                            event: p.events[i].clone(),
                            position: Position::from_offset(i as u64),
                        })
                        .collect();
                    self.cursor = to as u64;
                    return Ok(ReadBatch {
                        records,
                        ended: p.closed && to == p.events.len(),
                    });
                }
                if p.closed {
                    return Ok(ReadBatch {
                        records: Vec::new(),
                        ended: true,
                    });
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(ReadBatch::default()),
            }
        }
    }
    fn behind(&self) -> Option<u64> {
        let state = self.stream.state.lock();
        Some(state.partitions[&self.partition].events.len() as u64 - self.cursor)
    }
}

fn fast_config(events: Arc<parking_lot::Mutex<Vec<GroupEvent>>>) -> GroupConfig {
    GroupConfig::new(Duration::from_millis(400))
        .balance_interval(Duration::from_millis(40))
        .commit_interval(Duration::from_millis(30))
        .topology_interval(Duration::from_millis(100))
        .shed_grace(Duration::from_millis(200))
        .prefetch(16)
        .observer(move |e| events.lock().push(e.clone()))
}

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

async fn memory_engine(
    ttl: Duration,
) -> (Arc<GroupEngine>, Arc<parking_lot::Mutex<Vec<GroupEvent>>>) {
    let events = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let config = fast_config(events.clone()).balance_interval(ttl / 4);
    let engine = GroupEngine::new(Arc::new(MemoryCheckpointStore::new()), config);
    (Arc::new(engine), events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_event_comes_back_before_later_ones_in_first_delivery_order() {
    let stream = SimStream::new(1);
    for i in 0..20 {
        stream.append("k", format!("e{i}"));
    }
    let (engine, _) = memory_engine(Duration::from_secs(5)).await;
    let consumer = engine
        .join(
            "s",
            Arc::new(SimSource(stream.clone())),
            ConsumerOptions::new("g").start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let e0 = consumer.receive().await.unwrap();
    let e1 = consumer.receive().await.unwrap();
    let e2 = consumer.receive().await.unwrap();
    e0.nack();
    e1.nack();
    e2.ack();
    let next: Vec<(String, u32)> = consumer
        .receive_batch(3, Duration::from_millis(50))
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            let attempt = d.attempt.unwrap();
            let payload = String::from_utf8(d.event.payload.to_vec()).unwrap();
            d.ack();
            (payload, attempt)
        })
        .collect();
    assert_eq!(
        next,
        vec![
            ("e0".to_owned(), 2),
            ("e1".to_owned(), 2),
            ("e3".to_owned(), 1)
        ]
    );
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_ack_after_a_takeover_is_never_committed() {
    let stream = SimStream::new(1);
    for i in 0..10 {
        stream.append("k", format!("e{i}"));
    }
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::new());
    let events = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let config = fast_config(events.clone()).commit_interval(Duration::from_secs(60));
    let a = GroupEngine::new(store.clone(), config.clone());
    let b = GroupEngine::new(store.clone(), config);
    let options = ConsumerOptions::new("g").start(StartPosition::Earliest);
    let first = a
        .join("s", Arc::new(SimSource(stream.clone())), options.clone())
        .await
        .unwrap();
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !events
        .lock()
        .iter()
        .any(|e| matches!(e, GroupEvent::Lost { .. }))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never noticed the loss"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.commit().await.unwrap();
    assert!(
        store.checkpoints("g", "s").await.unwrap()[&PartitionId::from(0)]
            != Checkpoint::Processed(Position::from_offset(0)),
        "the fenced member's ack must not be committed"
    );
    store.release(&stolen).await.unwrap();
    drop(b);
    first.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_is_pinned_so_a_later_owner_does_not_skip() {
    let stream = SimStream::new(2);
    stream.append("a", "old".to_owned());
    let (engine, _) = memory_engine(Duration::from_secs(5)).await;
    let consumer = engine
        .join(
            "s",
            Arc::new(SimSource(stream.clone())),
            ConsumerOptions::new("g").start(StartPosition::Latest),
        )
        .await
        .unwrap();
    consumer.close().await.unwrap();
    // Sent while nobody consumes: a consumer joining later must see it, though it starts
    // `Latest`, because the group's start was pinned when it first joined.
    stream.append("a", "new".to_owned());
    let again = engine
        .join(
            "s",
            Arc::new(SimSource(stream.clone())),
            ConsumerOptions::new("g").start(StartPosition::Latest),
        )
        .await
        .unwrap();
    let d = again.receive().await.unwrap();
    assert_eq!(d.event.payload.as_ref(), b"new");
    d.ack();
    again.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_share_the_partitions_and_a_closing_one_hands_over_at_once() {
    let stream = SimStream::new(4);
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::new());
    let events = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let config = fast_config(events.clone()).shed_grace(Duration::from_millis(50));
    let a = GroupEngine::new(store.clone(), config.clone());
    let b = GroupEngine::new(store.clone(), config);
    let options = ConsumerOptions::new("g").start(StartPosition::Earliest);
    let ca = a
        .join("s", Arc::new(SimSource(stream.clone())), options.clone())
        .await
        .unwrap();
    let cb = b
        .join("s", Arc::new(SimSource(stream.clone())), options.clone())
        .await
        .unwrap();
    let owners = || async {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for lease in store.leases("g", "s").await.unwrap() {
            *counts.entry(lease.owner).or_default() += 1;
        }
        counts.into_values().collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while owners().await != vec![2, 2] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never balanced: {:?}",
            owners().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ca.close().await.unwrap();
    assert_eq!(
        store.leases("g", "s").await.unwrap().len(),
        2,
        "a closed member releases at once"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while owners().await != vec![4] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            owners().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cb.close().await.unwrap();
    assert!(store.leases("g", "s").await.unwrap().is_empty());
    assert_eq!(
        cb.receive().await.unwrap_err().kind(),
        ErrorKind::Closed,
        "receive after close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joining_a_group_at_its_ceiling_share_takes_a_partition() {
    // 4 partitions held 2 + 2: each holder is at the ceiling of 4 / 3, so neither sheds; the
    // third member must take one, or it idles while the others carry the stream.
    let stream = SimStream::new(4);
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::new());
    let events = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let config = fast_config(events.clone()).shed_grace(Duration::from_millis(50));
    let engines: Vec<GroupEngine> = (0..3)
        .map(|_| GroupEngine::new(store.clone(), config.clone()))
        .collect();
    let options = ConsumerOptions::new("g").start(StartPosition::Earliest);
    let owners = || async {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for lease in store.leases("g", "s").await.unwrap() {
            if !lease.owner.is_empty() {
                *counts.entry(lease.owner).or_default() += 1;
            }
        }
        let mut counts: Vec<usize> = counts.into_values().collect();
        counts.sort_unstable();
        counts
    };
    let mut consumers = Vec::new();
    for engine in &engines[..2] {
        consumers.push(
            engine
                .join("s", Arc::new(SimSource(stream.clone())), options.clone())
                .await
                .unwrap(),
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while owners().await != vec![2, 2] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never balanced: {:?}",
            owners().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumers.push(
        engines[2]
            .join("s", Arc::new(SimSource(stream.clone())), options.clone())
            .await
            .unwrap(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while owners().await != vec![1, 1, 2] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the third member never got a partition: {:?}",
            owners().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for consumer in consumers {
        consumer.close().await.unwrap();
    }
}

/// A source whose partition listing hangs once `stall` is set, as an Event Hubs management call
/// did on a broken connection (until its 30 s timeout).
struct StallingListing {
    inner: SimSource,
    stall: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl PartitionSource for StallingListing {
    async fn partitions(&self) -> Result<Vec<PartitionTopology>> {
        if self.stall.load(std::sync::atomic::Ordering::SeqCst) {
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
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::new());
    let events = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let config = fast_config(events.clone());
    let ttl = config.lease_ttl;
    let engine = GroupEngine::new(store.clone(), config);
    let stall = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let source = StallingListing {
        inner: SimSource(stream.clone()),
        stall: stall.clone(),
    };
    let consumer = engine
        .join(
            "s",
            Arc::new(source),
            ConsumerOptions::new("g").start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.leases("g", "s").await.unwrap().len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never took the 4 partitions"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stall.store(true, std::sync::atomic::Ordering::SeqCst);
    // Several lease times with every listing hanging (topology_interval is 100 ms).
    let until = tokio::time::Instant::now() + ttl * 5;
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
    stall.store(false, std::sync::atomic::Ordering::SeqCst);
    consumer.close().await.unwrap();
}
