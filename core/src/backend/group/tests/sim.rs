//! A stream whose partitions split and merge by hash range, as Kinesis shards do, and the
//! engine's source and reader over it.

use super::*;
use tokio::sync::Notify;

/// The partitions of a `SimStream`, open and closed.
#[derive(Default)]
pub(super) struct SimState {
    pub(super) partitions: BTreeMap<PartitionId, SimPartition>,
    next_id: u32,
}

pub(super) struct SimPartition {
    pub(super) events: Vec<Event>,
    closed: bool,
    pub(super) parents: Vec<PartitionId>,
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

/// A stream whose partitions can be split and merged, like Kinesis shards.
#[derive(Default)]
pub(super) struct SimStream {
    pub(super) state: parking_lot::Mutex<SimState>,
    appended: Notify,
}

impl SimStream {
    pub(super) fn new(partitions: u32) -> Arc<Self> {
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
    pub(super) fn append(&self, key: &str, payload: String) {
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
    pub(super) fn split(&self) {
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
    pub(super) fn merge(&self) {
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

    pub(super) fn total(&self) -> usize {
        self.state
            .lock()
            .partitions
            .values()
            .map(|p| p.events.len())
            .sum()
    }
}

pub(super) struct SimSource(pub(super) Arc<SimStream>);

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
