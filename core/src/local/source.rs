//! The local log as a partition source for the group engine: consumer groups of the local
//! backend are the engine's, over a memory store (`memory://`) or the directory's checkpoint
//! store (`file://`, shared by the processes of the host).

use super::StreamState;
use super::log::PartitionLog;
use crate::backend::checkpoint::{Checkpoint, PartitionTopology};
use crate::backend::group::{PartitionReader, PartitionSource, ReadBatch, SourceRecord};
use crate::{Error, PartitionId, Position, Result, StartPosition};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const FETCH_BYTES: usize = 1 << 20;
/// How often a reader looks for appends when another process writes (no in-process wake-up).
const FOLLOWER_POLL: Duration = Duration::from_millis(50);
/// How long a read waits for appends before returning empty, so the engine sees its leases.
const IDLE_READ: Duration = Duration::from_secs(1);

pub(crate) struct LocalSource {
    pub(crate) stream: Arc<StreamState>,
    /// Another process writes this directory: appends are found by polling.
    pub(crate) follower: bool,
}

impl LocalSource {
    fn log(&self, partition: &PartitionId) -> Result<(usize, Arc<dyn PartitionLog>)> {
        partition
            .as_index()
            .map(|i| i as usize)
            .and_then(|i| Some((i, self.stream.partitions.get(i)?.clone())))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "stream `{}` has no partition `{partition}`",
                    self.stream.name
                ))
            })
    }
}

fn offset_of(position: &Position, stream: &str) -> Result<u64> {
    position.as_offset().ok_or_else(|| {
        Error::corrupt(format!(
            "checkpoint `{position}` of stream `{stream}` is not an offset"
        ))
    })
}

#[async_trait]
impl PartitionSource for LocalSource {
    async fn partitions(&self) -> Result<Vec<PartitionTopology>> {
        self.stream.check_live()?;
        Ok((0..self.stream.partitions.len() as u32)
            .map(|i| PartitionTopology::root(PartitionId::from(i)))
            .collect())
    }

    async fn resolve_start(
        &self,
        partition: &PartitionId,
        start: &StartPosition,
    ) -> Result<Checkpoint> {
        let (_, log) = self.log(partition)?;
        let start = start.clone();
        let stream = self.stream.name.clone();
        self.stream
            .io(move || {
                let _ = log.refresh();
                let (first, next) = log.bounds();
                Ok(match start {
                    StartPosition::Earliest => Checkpoint::Start(StartPosition::Earliest),
                    StartPosition::Latest if next == 0 => {
                        Checkpoint::Start(StartPosition::Earliest)
                    }
                    StartPosition::Latest => Checkpoint::Processed(Position::from_offset(next - 1)),
                    StartPosition::Timestamp(t) => Checkpoint::Start(StartPosition::Position(
                        Position::from_offset(log.offset_for_time(t.as_millis())?),
                    )),
                    StartPosition::Position(p) => {
                        let offset = p.as_offset().ok_or_else(|| {
                            Error::config(format!(
                                "start position `{p}` is not an offset of stream `{stream}`"
                            ))
                        })?;
                        Checkpoint::Start(StartPosition::Position(Position::from_offset(
                            offset.clamp(first, next),
                        )))
                    }
                })
            })
            .await
    }

    async fn open(
        &self,
        partition: &PartitionId,
        from: &Checkpoint,
    ) -> Result<Box<dyn PartitionReader>> {
        let (index, log) = self.log(partition)?;
        let from = from.clone();
        let stream = self.stream.name.clone();
        let reader_log = log.clone();
        let cursor = self
            .stream
            .io(move || {
                let _ = reader_log.refresh();
                let (first, next) = reader_log.bounds();
                Ok(match from {
                    Checkpoint::Processed(p) => offset_of(&p, &stream)? + 1,
                    Checkpoint::Start(StartPosition::Earliest) => first,
                    Checkpoint::Start(StartPosition::Latest) => next,
                    Checkpoint::Start(StartPosition::Timestamp(t)) => {
                        reader_log.offset_for_time(t.as_millis())?
                    }
                    Checkpoint::Start(StartPosition::Position(p)) => {
                        offset_of(&p, &stream)?.clamp(first, next)
                    }
                    Checkpoint::Ended => next,
                })
            })
            .await?;
        Ok(Box::new(LocalReader {
            stream: self.stream.clone(),
            index,
            log,
            cursor,
            follower: self.follower,
            appended: self.stream.appended[index].subscribe(),
        }))
    }
}

struct LocalReader {
    stream: Arc<StreamState>,
    index: usize,
    log: Arc<dyn PartitionLog>,
    cursor: u64,
    follower: bool,
    appended: watch::Receiver<u64>,
}

#[async_trait]
impl PartitionReader for LocalReader {
    async fn read(&mut self, max: usize) -> Result<ReadBatch> {
        let idle_until = tokio::time::Instant::now() + IDLE_READ;
        loop {
            self.stream.check_live()?;
            self.appended.borrow_and_update();
            let from = self.cursor;
            // The memory log and the file log's tail hand out each record with its position
            // (kept, or made from the one before): nothing to make here. An empty answer means
            // nothing is published from `from` on yet; `None`, that only the files hold it.
            let positioned = self.log.read_positioned(from, max.max(1), FETCH_BYTES);
            if let Some(records) = &positioned
                && let Some(last) = records.last()
            {
                let first = records[0].position.as_offset().unwrap_or(from);
                if first > from {
                    tracing::warn!(stream = %self.stream.name, partition = self.index, from,
                        resumed = first,
                        "events before the resume point were removed by retention");
                }
                self.cursor = last.position.as_offset().map_or(from, |o| o + 1);
                return Ok(ReadBatch {
                    records: positioned.unwrap_or_default(),
                    ended: false,
                });
            }
            // Records still in memory need no blocking task and no look at the bounds (the
            // log's lock, which its writer holds through system calls); older ones are read
            // from disk.
            let records = match positioned {
                Some(_) => Vec::new(),
                None if from < self.log.bounds().1 => {
                    let log = self.log.clone();
                    self.stream
                        .io(move || log.read(from, max.max(1), FETCH_BYTES))
                        .await?
                }
                None => Vec::new(),
            };
            if let Some(last) = records.last() {
                if records[0].offset > from {
                    tracing::warn!(stream = %self.stream.name, partition = self.index, from,
                        resumed = records[0].offset,
                        "events before the resume point were removed by retention");
                }
                // The cursor moves only once the records are in hand: a read dropped
                // halfway is simply done again.
                self.cursor = last.offset + 1;
                return Ok(ReadBatch {
                    records: records
                        .into_iter()
                        .map(|r| SourceRecord {
                            position: Position::from_offset(r.offset),
                            event: r.event,
                        })
                        .collect(),
                    ended: false,
                });
            }
            if tokio::time::Instant::now() >= idle_until {
                return Ok(ReadBatch::default());
            }
            // Memory appends wake only readers that said they wait; one that lands between the
            // look above and this finds the flag unset, so look once more after setting it (a
            // memory read returns at least one record whenever the log holds any from `from`).
            if self.log.as_memory().is_some() {
                self.stream.will_wait(self.index);
                if self.log.bounds().1 > from {
                    continue;
                }
            }
            if self.follower {
                // This process may have become the writer since: its appends wake us too.
                tokio::select! {
                    _ = self.appended.changed() => {}
                    _ = tokio::time::sleep(FOLLOWER_POLL) => {}
                }
                let log = self.log.clone();
                self.stream.io(move || log.refresh()).await?;
            } else {
                tokio::select! {
                    _ = self.appended.changed() => {}
                    _ = tokio::time::sleep_until(idle_until) => {}
                }
            }
        }
    }

    fn behind(&self) -> Option<u64> {
        let (_, next) = self.log.bounds();
        Some(next.saturating_sub(self.cursor))
    }
}
