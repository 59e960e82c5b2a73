//! The stream as the group engine sees it: shards with their parents, pinned start
//! positions, and a reader per shard (polling `GetRecords`, or enhanced fan-out).
//!
//! Positions: a plain record's position is its sequence number `S`; user record `i` of a KPL
//! aggregated record is `S:i`. Reading on after a checkpoint `S` or `S:i` asks for an iterator
//! *at* `S` and skips what of record `S` was processed (the plain record, or user records
//! `0..=i`), the way the KCL resumes inside an aggregated record.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{Record, ShardIteratorType};
use bytes::Bytes;
use parking_lot::Mutex;
use tributary::backend::group::{PartitionReader, PartitionSource, ReadBatch, SourceRecord};
use tributary::backend::{Checkpoint, PartitionTopology};
use tributary::{Error, ErrorKind, PartitionId, Position, Result, StartPosition, Timestamp};

use crate::admin::Admin;
use crate::envelope;
use crate::error::{code_of, map_sdk, timed, timeout_error};
use crate::fanout::{FanoutReader, Subscriptions};
use crate::kpl;

/// How reads behave, from the URL.
#[derive(Debug, Clone)]
pub(crate) struct ReadSettings {
    pub poll_interval: Duration,
    pub records_per_call: i32,
    pub call_timeout: Duration,
}

/// The shortest pause between two `GetRecords` calls on one shard: the service allows five
/// per second per shard, shared by every reader of the shard.
pub(crate) const MIN_CALL_GAP: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One stream's shards for the group engine.
pub(crate) struct KinesisSource {
    pub(crate) stream: String,
    pub(crate) client: Client,
    pub(crate) admin: Admin,
    pub(crate) settings: ReadSettings,
    /// Enhanced fan-out, when the URL asks for it.
    pub(crate) fanout: Option<Arc<Subscriptions>>,
    /// Arrival times of records named by start positions, looked up once.
    position_times: Mutex<HashMap<String, Timestamp>>,
}

impl KinesisSource {
    pub(crate) fn new(
        stream: &str,
        client: Client,
        admin: Admin,
        settings: ReadSettings,
        fanout: Option<Arc<Subscriptions>>,
    ) -> Self {
        KinesisSource {
            stream: stream.to_owned(),
            client,
            admin,
            settings,
            fanout,
            position_times: Mutex::new(HashMap::new()),
        }
    }

    fn what(&self, shard: &str) -> String {
        format!("shard `{shard}` of stream `{}`", self.stream)
    }

    /// An iterator of `shard` of the given kind; `Ok(None)` when the service says the
    /// sequence number does not belong to the shard.
    async fn iterator(&self, shard: &str, at: &Start) -> Result<Option<String>> {
        iterator(
            &self.client,
            &self.stream,
            shard,
            at,
            self.settings.call_timeout,
        )
        .await
    }

    /// The arrival time of the record a position names, found in whichever shard holds it.
    async fn time_of(&self, position: &Position) -> Result<Timestamp> {
        if let Some(t) = self.position_times.lock().get(position.as_str()) {
            return Ok(*t);
        }
        let (sequence, _) = split(position);
        for shard in self.admin.shards(&self.stream).await? {
            let Some(it) = self
                .iterator(&shard.id, &Start::At(sequence.clone()))
                .await?
            else {
                continue;
            };
            let call = self.client.get_records().shard_iterator(it).limit(1).send();
            let out = timed(
                self.settings.call_timeout,
                &format!("read {}", self.what(&shard.id)),
                call,
            )
            .await?;
            if let Some(time) = out
                .records()
                .first()
                .and_then(|r| r.approximate_arrival_timestamp())
                .and_then(to_timestamp)
            {
                self.position_times
                    .lock()
                    .insert(position.to_string(), time);
                return Ok(time);
            }
        }
        Err(Error::config(format!(
            "start position `{position}` is not the sequence number of a record in stream `{}`",
            self.stream
        )))
    }
}

/// How far back the search for a shard's last record starts (clocks of hosts and service may
/// differ by this much without losing an event).
const PIN_LOOKBACK_MS: i64 = 5_000;
/// At most this many `GetRecords` calls to find a shard's last record.
const PIN_MAX_CALLS: usize = 50;

impl KinesisSource {
    /// Pins "after everything so far" on `shard` as the position of its last record: Kinesis
    /// cannot tell it directly, so it is found by reading from a little before now to the end.
    /// A shard with nothing recent is pinned at the time it is now (nothing after it has
    /// arrived yet), a closed shard as ended.
    async fn pin_latest(&self, shard: &str) -> Result<Checkpoint> {
        let now = Timestamp::now();
        let since = Timestamp::from_millis(now.as_millis() - PIN_LOOKBACK_MS);
        let Some(mut it) = self.iterator(shard, &Start::AtTimestamp(since)).await? else {
            return Ok(Checkpoint::Start(StartPosition::Timestamp(now)));
        };
        let what = format!("find the last record of {}", self.what(shard));
        let mut last: Option<Position> = None;
        for call in 0..PIN_MAX_CALLS {
            if call > 0 {
                tokio::time::sleep(MIN_CALL_GAP).await;
            }
            let out = timed(
                self.settings.call_timeout,
                &what,
                self.client
                    .get_records()
                    .shard_iterator(&it)
                    .limit(self.settings.records_per_call)
                    .send(),
            )
            .await?;
            if let Some(record) = out.records().last() {
                last = Some(last_position(record));
            }
            match out.next_shard_iterator() {
                // Closed, and read to its end: nothing new can arrive in it.
                None => return Ok(Checkpoint::Ended),
                Some(next) => it = next.to_owned(),
            }
            if out.records().is_empty() && out.millis_behind_latest().unwrap_or(0) == 0 {
                break;
            }
        }
        Ok(match last {
            Some(position) => Checkpoint::Processed(position),
            None => Checkpoint::Start(StartPosition::Timestamp(now)),
        })
    }
}

/// The position of the last user record in `record` (the record itself when not aggregated).
fn last_position(record: &Record) -> Position {
    let sequence = record.sequence_number();
    let data = Bytes::copy_from_slice(record.data().as_ref());
    match kpl::is_aggregated(&data).then(|| kpl::deaggregate(&data)) {
        Some(Ok(users)) if !users.is_empty() => {
            Position::from_fmt(format_args!("{sequence}:{}", users.len() - 1))
        }
        _ => Position::new(sequence),
    }
}

/// Where a shard iterator starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start {
    TrimHorizon,
    Latest,
    AtTimestamp(Timestamp),
    At(String),
    After(String),
}

pub(crate) async fn iterator(
    client: &Client,
    stream: &str,
    shard: &str,
    at: &Start,
    timeout: Duration,
) -> Result<Option<String>> {
    let mut call = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard);
    call = match at {
        Start::TrimHorizon => call.shard_iterator_type(ShardIteratorType::TrimHorizon),
        Start::Latest => call.shard_iterator_type(ShardIteratorType::Latest),
        Start::AtTimestamp(t) => call
            .shard_iterator_type(ShardIteratorType::AtTimestamp)
            .timestamp(DateTime::from_millis(t.as_millis())),
        Start::At(s) => call
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number(s),
        Start::After(s) => call
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(s),
    };
    let what = format!("open an iterator of shard `{shard}` of stream `{stream}`");
    match tokio::time::timeout(timeout, call.send()).await {
        Err(_) => Err(timeout_error(&what, timeout)),
        Ok(Ok(out)) => Ok(out.shard_iterator),
        Ok(Err(e))
            if code_of(&e) == Some("InvalidArgumentException")
                && matches!(at, Start::At(_) | Start::After(_)) =>
        {
            Ok(None)
        }
        Ok(Err(e)) => Err(map_sdk(e, "Kinesis", &what)),
    }
}

/// `S:i` → (`S`, `Some(i)`); `S` → (`S`, `None`).
pub(crate) fn split(position: &Position) -> (String, Option<u64>) {
    let text = position.as_str();
    match text.rsplit_once(':') {
        Some((sequence, sub)) if !sequence.is_empty() => match sub.parse::<u64>() {
            Ok(sub) => (sequence.to_owned(), Some(sub)),
            Err(_) => (text.to_owned(), None),
        },
        _ => (text.to_owned(), None),
    }
}

pub(crate) fn to_timestamp(t: &DateTime) -> Option<Timestamp> {
    t.to_millis().ok().map(Timestamp::from_millis)
}

/// Where a reader begins, and what of its first record it skips.
#[derive(Debug, Clone)]
pub(crate) struct Resume {
    pub start: Start,
    /// Within record `sequence`, deliver only user records with index >= `from_sub` (a plain
    /// record is index 0).
    pub skip: Option<(String, u64)>,
}

impl Resume {
    pub(crate) fn from_checkpoint(from: &Checkpoint) -> Option<Resume> {
        let plain = |start| Resume { start, skip: None };
        Some(match from {
            Checkpoint::Start(StartPosition::Earliest) => plain(Start::TrimHorizon),
            Checkpoint::Start(StartPosition::Latest) => plain(Start::Latest),
            Checkpoint::Start(StartPosition::Timestamp(t)) => plain(Start::AtTimestamp(*t)),
            Checkpoint::Start(StartPosition::Position(p)) => {
                let (sequence, sub) = split(p);
                Resume {
                    start: Start::At(sequence.clone()),
                    skip: sub.filter(|s| *s > 0).map(|s| (sequence, s)),
                }
            }
            Checkpoint::Processed(p) => {
                let (sequence, sub) = split(p);
                Resume {
                    start: Start::At(sequence.clone()),
                    skip: Some((sequence, sub.unwrap_or(0) + 1)),
                }
            }
            _ => return None,
        })
    }
}

#[async_trait]
impl PartitionSource for KinesisSource {
    async fn partitions(&self) -> Result<Vec<PartitionTopology>> {
        let shards = self.admin.shards(&self.stream).await?;
        // A parent past the retention period is no longer listed: its data is gone, so its
        // children must not wait for it.
        let listed: HashSet<String> = shards.iter().map(|s| s.id.clone()).collect();
        Ok(shards
            .into_iter()
            .map(|s| PartitionTopology {
                id: PartitionId::new(&s.id),
                parents: s
                    .parents()
                    .into_iter()
                    .filter(|p| listed.contains(p.as_str()))
                    .collect(),
            })
            .collect())
    }

    async fn resolve_start(
        &self,
        partition: &PartitionId,
        start: &StartPosition,
    ) -> Result<Checkpoint> {
        Ok(match start {
            StartPosition::Earliest => Checkpoint::Start(StartPosition::Earliest),
            StartPosition::Latest => self.pin_latest(partition.as_str()).await?,
            StartPosition::Timestamp(t) => Checkpoint::Start(StartPosition::Timestamp(*t)),
            StartPosition::Position(p) => {
                let (sequence, _) = split(p);
                if self
                    .iterator(partition.as_str(), &Start::At(sequence))
                    .await?
                    .is_some()
                {
                    Checkpoint::Start(StartPosition::Position(p.clone()))
                } else {
                    // The position is another shard's: this one starts at the same moment.
                    Checkpoint::Start(StartPosition::Timestamp(self.time_of(p).await?))
                }
            }
        })
    }

    async fn open(
        &self,
        partition: &PartitionId,
        from: &Checkpoint,
    ) -> Result<Box<dyn PartitionReader>> {
        let resume = Resume::from_checkpoint(from).ok_or_else(|| {
            Error::other(format!(
                "cannot open {} at {from:?}",
                self.what(partition.as_str())
            ))
        })?;
        if let Some(fanout) = &self.fanout {
            return Ok(Box::new(
                FanoutReader::open(fanout.clone(), &self.stream, partition.as_str(), resume)
                    .await?,
            ));
        }
        Ok(Box::new(PollReader {
            client: self.client.clone(),
            stream: self.stream.clone(),
            shard: partition.as_str().to_owned(),
            settings: self.settings.clone(),
            resume,
            iterator: None,
            last_sequence: None,
            buffer: VecDeque::new(),
            ended: false,
            next_call: Instant::now(),
            backoff: MIN_CALL_GAP,
            behind_ms: None,
        }))
    }
}

/// Turns the records of one `GetRecords` answer (or fan-out event) into source records:
/// KPL aggregates split, envelopes read, the resume skip applied. The records are taken, so
/// that each event's payload is the bytes the SDK decoded, not a copy of them.
pub(crate) fn convert(
    stream: &str,
    shard: &str,
    records: Vec<Record>,
    skip: &mut Option<(String, u64)>,
    out: &mut VecDeque<SourceRecord>,
) -> Result<()> {
    for mut record in records {
        // Taken, not copied: the payload, the partition key (the event's key) and the
        // sequence number are the SDK's own allocations.
        let data = std::mem::take(&mut record.data).into_bytes();
        let sequence = std::mem::take(&mut record.sequence_number);
        let sequence = sequence.as_str();
        let arrival = record
            .approximate_arrival_timestamp()
            .and_then(to_timestamp);
        let from_sub = match skip.take() {
            Some((s, from)) if s == sequence => from,
            Some(other) => {
                // The checkpointed record is gone (trimmed or never there): nothing to skip.
                let _ = other;
                0
            }
            None => 0,
        };
        if kpl::is_aggregated(&data) {
            let users = kpl::deaggregate(&data).map_err(|why| {
                Error::corrupt(format!(
                    "record {sequence} of shard `{shard}` of stream `{stream}`: {why}"
                ))
            })?;
            for (i, user) in users.into_iter().enumerate() {
                if (i as u64) < from_sub {
                    continue;
                }
                let (event, problem) =
                    envelope::decode_record(user.partition_key.into(), user.data, arrival);
                if let Some(problem) = problem {
                    tracing::warn!(stream, shard, sequence, sub = i, "{problem}");
                }
                out.push_back(SourceRecord {
                    event,
                    position: Position::from_fmt(format_args!("{sequence}:{i}")),
                });
            }
        } else if from_sub == 0 {
            let partition_key = record.partition_key.take().unwrap_or_default();
            let (event, problem) = envelope::decode_record(partition_key.into(), data, arrival);
            if let Some(problem) = problem {
                tracing::warn!(stream, shard, sequence, "{problem}");
            }
            out.push_back(SourceRecord {
                event,
                position: Position::new(sequence),
            });
        }
    }
    Ok(())
}

/// Reads a shard by polling `GetRecords`.
struct PollReader {
    client: Client,
    stream: String,
    shard: String,
    settings: ReadSettings,
    resume: Resume,
    iterator: Option<String>,
    /// The last record fetched, to renew an expired iterator after it.
    last_sequence: Option<String>,
    buffer: VecDeque<SourceRecord>,
    ended: bool,
    next_call: Instant,
    backoff: Duration,
    behind_ms: Option<i64>,
}

impl PollReader {
    fn what(&self) -> String {
        format!("shard `{}` of stream `{}`", self.shard, self.stream)
    }

    async fn ensure_iterator(&mut self) -> Result<()> {
        if self.iterator.is_some() {
            return Ok(());
        }
        let start = match &self.last_sequence {
            Some(last) => Start::After(last.clone()),
            None => self.resume.start.clone(),
        };
        let found = iterator(
            &self.client,
            &self.stream,
            &self.shard,
            &start,
            self.settings.call_timeout,
        )
        .await?;
        self.iterator = match found {
            Some(it) => Some(it),
            None => {
                // The checkpointed record is past the retention period: the oldest retained
                // record is the next one there is.
                tracing::warn!(stream = %self.stream, shard = %self.shard, ?start, "the checkpointed record is no longer retained; reading from the oldest retained record");
                self.resume.skip = None;
                iterator(
                    &self.client,
                    &self.stream,
                    &self.shard,
                    &Start::TrimHorizon,
                    self.settings.call_timeout,
                )
                .await?
            }
        };
        if self.iterator.is_none() {
            self.ended = true;
        }
        Ok(())
    }

    fn take(&mut self, max: usize) -> ReadBatch {
        let n = max.min(self.buffer.len());
        let records: Vec<SourceRecord> = self.buffer.drain(..n).collect();
        ReadBatch {
            ended: self.ended && self.buffer.is_empty(),
            records,
        }
    }
}

#[async_trait]
impl PartitionReader for PollReader {
    async fn read(&mut self, max: usize) -> Result<ReadBatch> {
        if !self.buffer.is_empty() || self.ended {
            return Ok(self.take(max));
        }
        // Sleeping first keeps `read` cancel-safe: nothing changes until a call has answered.
        tokio::time::sleep_until(self.next_call.into()).await;
        self.ensure_iterator().await?;
        let Some(it) = self.iterator.clone() else {
            return Ok(self.take(max));
        };
        let call = self
            .client
            .get_records()
            .shard_iterator(it)
            .limit(self.settings.records_per_call)
            .send();
        let what = format!("read {}", self.what());
        // The service counts calls, not the time between answer and call: the next call may
        // go 200 ms after this one went, however long the answer took.
        let called = Instant::now();
        let answer = tokio::time::timeout(self.settings.call_timeout, call).await;
        let mut out = match answer {
            Err(_) => {
                self.next_call = Instant::now() + self.backoff;
                return Err(timeout_error(&what, self.settings.call_timeout));
            }
            Ok(Err(e)) => match code_of(&e) {
                Some("ProvisionedThroughputExceededException") | Some("LimitExceededException") => {
                    // Other readers of the shard share its five calls per second: back off.
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    self.next_call = Instant::now() + self.backoff;
                    return Ok(ReadBatch::default());
                }
                Some("ExpiredIteratorException") => {
                    self.iterator = None;
                    self.next_call = Instant::now();
                    return Ok(ReadBatch::default());
                }
                _ => {
                    self.next_call = Instant::now() + self.backoff;
                    let error = map_sdk(e, "Kinesis", &what);
                    if error.kind() == ErrorKind::NotFound {
                        // The shard is gone (past retention after a reshard): nothing more.
                        self.ended = true;
                        return Ok(self.take(max));
                    }
                    return Err(error);
                }
            },
            Ok(Ok(out)) => out,
        };
        self.backoff = MIN_CALL_GAP;
        self.behind_ms = out.millis_behind_latest();
        let last = out.records().last().map(|r| r.sequence_number().to_owned());
        let caught_up = out.records().is_empty() && self.behind_ms.unwrap_or(0) == 0;
        // A record that cannot be read fails the read before the iterator moves past it.
        let mut skip = self.resume.skip.take();
        convert(
            &self.stream,
            &self.shard,
            std::mem::take(&mut out.records),
            &mut skip,
            &mut self.buffer,
        )?;
        self.resume.skip = skip;
        if last.is_some() {
            self.last_sequence = last;
        }
        self.iterator = out.next_shard_iterator.take();
        if self.iterator.is_none() {
            self.ended = true;
        }
        self.next_call = if caught_up {
            Instant::now() + self.settings.poll_interval
        } else {
            called + MIN_CALL_GAP
        };
        Ok(self.take(max))
    }

    fn behind(&self) -> Option<u64> {
        // Kinesis reports how far behind in time a reader is, not in events: only "nothing
        // behind" can be told.
        (self.behind_ms == Some(0)).then_some(0)
    }
}
