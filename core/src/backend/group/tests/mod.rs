//! The engine against a simulated, reshardable stream (`sim.rs`): a property test of random
//! joins, leaves, crashes, nacks, splits and merges (`resharding.rs`), and one test per promise
//! on delivery order (`delivery.rs`), lease fencing and renewal (`leases.rs`) and how members
//! share partitions (`balance.rs`).

mod balance;
mod delivery;
mod leases;
mod resharding;
mod sim;

use super::*;
use crate::Consumer;
use crate::backend::checkpoint::MemoryCheckpointStore;
use sim::{SimSource, SimStream};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;

/// What the engines' observer saw, in order.
type Observed = Arc<parking_lot::Mutex<Vec<GroupEvent>>>;

/// `fast_config`'s lease time.
const LEASE_TTL: Duration = Duration::from_millis(400);

/// Intervals short enough for a test to see many rounds in a second.
fn fast_config(events: Observed) -> GroupConfig {
    GroupConfig::new(LEASE_TTL)
        .balance_interval(Duration::from_millis(40))
        .commit_interval(Duration::from_millis(30))
        .topology_interval(Duration::from_millis(100))
        .shed_grace(Duration::from_millis(200))
        .prefetch(16)
        .observer(move |e| events.lock().push(e.clone()))
}

async fn memory_engine(ttl: Duration) -> (Arc<GroupEngine>, Observed) {
    let events = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let config = fast_config(events.clone()).balance_interval(ttl / 4);
    let engine = GroupEngine::new(Arc::new(MemoryCheckpointStore::new()), config);
    (Arc::new(engine), events)
}

/// `n` engines, as `n` processes would have, over one memory store, each with `fast_config`
/// as `tune` changes it.
fn engines(
    n: usize,
    tune: impl FnOnce(GroupConfig) -> GroupConfig,
) -> (Arc<dyn CheckpointStore>, Observed, Vec<GroupEngine>) {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryCheckpointStore::new());
    let events = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let config = tune(fast_config(events.clone()));
    let engines = (0..n)
        .map(|_| GroupEngine::new(store.clone(), config.clone()))
        .collect();
    (store, events, engines)
}

/// Joins group `g` of stream `s`, starting at `start` where the group has no checkpoint.
async fn join_group(
    engine: &GroupEngine,
    stream: &Arc<SimStream>,
    start: StartPosition,
) -> GroupConsumer {
    engine
        .join(
            "s",
            Arc::new(SimSource(stream.clone())),
            ConsumerOptions::new("g").start(start),
        )
        .await
        .unwrap()
}

/// How many leases of group `g` on stream `s` each owner holds, fewest first (free leases
/// not counted).
async fn lease_counts(store: &Arc<dyn CheckpointStore>) -> Vec<usize> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for lease in store.leases("g", "s").await.unwrap() {
        if !lease.owner.is_empty() {
            *counts.entry(lease.owner).or_default() += 1;
        }
    }
    let mut counts: Vec<usize> = counts.into_values().collect();
    counts.sort_unstable();
    counts
}

/// Probes every 20 ms until `done` holds for what `probe` answers, and returns that; past
/// `within` the test fails with `what` and the last answer.
async fn wait_for<T, F, Fut>(
    within: Duration,
    what: &str,
    mut probe: F,
    done: impl Fn(&T) -> bool,
) -> T
where
    T: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let answer = probe().await;
        if done(&answer) {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {within:?}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
