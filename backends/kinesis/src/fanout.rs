//! Enhanced fan-out: a registered stream consumer per group, and `SubscribeToShard` per shard,
//! pushed records instead of polling (2 MB/s per shard for each consumer, not shared).
//!
//! A subscription lasts at most five minutes. Each reader renews its own before that
//! (`fanout_resubscribe`, 4m30s by default), after the last record it received, so no record is
//! lost or repeated across renewals; a subscription that ends early (the service closed it, the
//! connection broke) is renewed the same way. Records at or before the last one received (or
//! before the starting sequence number) are dropped should a server send them again:
//! ferrokinesis 0.7 ignores the sequence number of a subscription's starting position and
//! starts every subscription at the oldest record. The service refuses a second subscription to the
//! same shard within five seconds (`ResourceInUseException`) and more than one per second
//! (`LimitExceededException`): both are waited out.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{
    ConsumerStatus, Record, ShardIteratorType, StartingPosition, SubscribeToShardEventStream,
};
use tokio::sync::{Mutex, mpsc};
use tributary::backend::group::{PartitionReader, ReadBatch, SourceRecord};
use tributary::{Error, Result};

use crate::error::{code_of, map_sdk, timeout_error};
use crate::source::{Resume, Start, convert};

/// The registered stream consumers of one backend, one per stream and name.
pub(crate) struct Subscriptions {
    pub client: Client,
    /// The consumer's name (the group's, or `fanout_consumer`).
    pub name: String,
    pub timeout: Duration,
    /// How long a subscription is kept before it is renewed.
    pub resubscribe: Duration,
    /// How long `read` waits for pushed records before returning an empty batch.
    pub poll_interval: Duration,
    arns: Mutex<HashMap<String, String>>,
}

impl Subscriptions {
    pub(crate) fn new(
        client: Client,
        name: &str,
        timeout: Duration,
        resubscribe: Duration,
        poll_interval: Duration,
    ) -> Arc<Self> {
        Arc::new(Subscriptions {
            client,
            name: name.to_owned(),
            timeout,
            resubscribe,
            poll_interval,
            arns: Mutex::new(HashMap::new()),
        })
    }

    /// The consumer's ARN on `stream`, registering it on first use and waiting until it is
    /// `ACTIVE`.
    pub(crate) async fn consumer_arn(&self, stream: &str) -> Result<String> {
        let mut arns = self.arns.lock().await;
        if let Some(arn) = arns.get(stream) {
            return Ok(arn.clone());
        }
        let what = format!("describe stream `{stream}`");
        let summary = tokio::time::timeout(
            self.timeout,
            self.client
                .describe_stream_summary()
                .stream_name(stream)
                .send(),
        )
        .await
        .map_err(|_| timeout_error(&what, self.timeout))?
        .map_err(|e| map_sdk(e, "Kinesis", &what))?;
        let stream_arn = summary
            .stream_description_summary()
            .map(|s| s.stream_arn().to_owned())
            .ok_or_else(|| Error::other(format!("{what}: no stream ARN in the answer")))?;
        let deadline = Instant::now() + self.timeout.max(Duration::from_secs(60));
        let mut pause = Duration::from_millis(50);
        loop {
            let what = format!(
                "describe enhanced fan-out consumer `{}` of stream `{stream}`",
                self.name
            );
            let described = tokio::time::timeout(
                self.timeout,
                self.client
                    .describe_stream_consumer()
                    .stream_arn(&stream_arn)
                    .consumer_name(&self.name)
                    .send(),
            )
            .await
            .map_err(|_| timeout_error(&what, self.timeout))?;
            match described {
                Ok(out) => {
                    if let Some(d) = out.consumer_description()
                        && *d.consumer_status() == ConsumerStatus::Active
                    {
                        let arn = d.consumer_arn().to_owned();
                        arns.insert(stream.to_owned(), arn.clone());
                        return Ok(arn);
                    }
                }
                Err(e) if code_of(&e) == Some("ResourceNotFoundException") => {
                    let what = format!(
                        "register enhanced fan-out consumer `{}` on stream `{stream}`",
                        self.name
                    );
                    let registered = tokio::time::timeout(
                        self.timeout,
                        self.client
                            .register_stream_consumer()
                            .stream_arn(&stream_arn)
                            .consumer_name(&self.name)
                            .send(),
                    )
                    .await
                    .map_err(|_| timeout_error(&what, self.timeout))?;
                    match registered {
                        Ok(_) => {}
                        // Another member registered it first.
                        Err(e) if code_of(&e) == Some("ResourceInUseException") => {}
                        Err(e) => return Err(map_sdk(e, "Kinesis", &what)),
                    }
                }
                Err(e) => return Err(map_sdk(e, "Kinesis", &what)),
            }
            if Instant::now() >= deadline {
                return Err(Error::timeout(format!(
                    "enhanced fan-out consumer `{}` of stream `{stream}` did not become ACTIVE in time",
                    self.name
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

/// What the subscription task hands the reader.
enum Pushed {
    Records(VecDeque<SourceRecord>),
    Ended,
    Failed(Error),
}

/// Reads a shard through enhanced fan-out; a task of its own keeps the subscription going.
pub(crate) struct FanoutReader {
    receiver: mpsc::Receiver<Pushed>,
    buffer: VecDeque<SourceRecord>,
    ended: bool,
    poll_interval: Duration,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FanoutReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FanoutReader {
    pub(crate) async fn open(
        subscriptions: Arc<Subscriptions>,
        stream: &str,
        shard: &str,
        resume: Resume,
    ) -> Result<Self> {
        let arn = subscriptions.consumer_arn(stream).await?;
        // A few events ahead at most: each holds up to 10,000 records.
        let (sender, receiver) = mpsc::channel(2);
        let pump = Pump {
            client: subscriptions.client.clone(),
            arn,
            stream: stream.to_owned(),
            shard: shard.to_owned(),
            timeout: subscriptions.timeout,
            resubscribe: subscriptions.resubscribe,
            floor: match &resume.start {
                Start::At(s) => Some((s.clone(), true)),
                Start::After(s) => Some((s.clone(), false)),
                _ => None,
            },
            resume,
            last_sequence: None,
            sender,
        };
        Ok(FanoutReader {
            receiver,
            buffer: VecDeque::new(),
            ended: false,
            poll_interval: subscriptions.poll_interval,
            task: tokio::spawn(pump.run()),
        })
    }

    fn take(&mut self, max: usize) -> ReadBatch {
        let n = max.min(self.buffer.len());
        ReadBatch {
            records: self.buffer.drain(..n).collect(),
            ended: self.ended && self.buffer.is_empty(),
        }
    }
}

#[async_trait]
impl PartitionReader for FanoutReader {
    async fn read(&mut self, max: usize) -> Result<ReadBatch> {
        if !self.buffer.is_empty() || self.ended {
            return Ok(self.take(max));
        }
        // `recv` is cancel-safe: a dropped read loses nothing.
        match tokio::time::timeout(self.poll_interval, self.receiver.recv()).await {
            Err(_) => Ok(ReadBatch::default()),
            Ok(Some(Pushed::Records(records))) => {
                self.buffer = records;
                Ok(self.take(max))
            }
            Ok(Some(Pushed::Ended)) | Ok(None) => {
                self.ended = true;
                Ok(self.take(max))
            }
            Ok(Some(Pushed::Failed(error))) => Err(error),
        }
    }

    fn behind(&self) -> Option<u64> {
        None
    }
}

struct Pump {
    client: Client,
    arn: String,
    stream: String,
    shard: String,
    timeout: Duration,
    resubscribe: Duration,
    resume: Resume,
    /// The last record received: renewals start after it.
    last_sequence: Option<String>,
    /// Records before this sequence number (at it too, when `.1` is false) were delivered or
    /// are before the start: never passed on.
    floor: Option<(String, bool)>,
    sender: mpsc::Sender<Pushed>,
}

impl Pump {
    fn starting_position(&self) -> StartingPosition {
        let start = match &self.last_sequence {
            Some(last) => Start::After(last.clone()),
            None => self.resume.start.clone(),
        };
        let builder = StartingPosition::builder();
        let builder = match start {
            Start::TrimHorizon => builder.r#type(ShardIteratorType::TrimHorizon),
            Start::Latest => builder.r#type(ShardIteratorType::Latest),
            Start::AtTimestamp(t) => builder
                .r#type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from_millis(t.as_millis())),
            Start::At(s) => builder
                .r#type(ShardIteratorType::AtSequenceNumber)
                .sequence_number(s),
            Start::After(s) => builder
                .r#type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(s),
        };
        builder.build().expect("type is set")
    }

    async fn run(mut self) {
        let mut pause = Duration::from_millis(200);
        loop {
            match self.subscription().await {
                Ok(true) => {
                    let _ = self.sender.send(Pushed::Ended).await;
                    return;
                }
                Ok(false) => pause = Duration::from_millis(200),
                Err(error) if error.is_retryable() => {
                    tracing::debug!(stream = %self.stream, shard = %self.shard, %error, "enhanced fan-out subscription ended; renewing");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(error) => {
                    let _ = self.sender.send(Pushed::Failed(error)).await;
                    return;
                }
            }
            if self.sender.is_closed() {
                return;
            }
        }
    }

    /// One subscription, until it ends or is due for renewal. `Ok(true)`: the shard ended.
    async fn subscription(&mut self) -> Result<bool> {
        let what = format!(
            "subscribe to shard `{}` of stream `{}`",
            self.shard, self.stream
        );
        let call = self
            .client
            .subscribe_to_shard()
            .consumer_arn(&self.arn)
            .shard_id(&self.shard)
            .starting_position(self.starting_position())
            .send();
        let mut out = match tokio::time::timeout(self.timeout, call).await {
            Err(_) => return Err(timeout_error(&what, self.timeout)),
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                let code = code_of(&e).map(str::to_owned);
                let error = map_sdk(e, "Kinesis", &what);
                return Err(match code.as_deref() {
                    // Too soon after the previous subscription: wait and renew.
                    Some("ResourceInUseException") | Some("LimitExceededException") => {
                        error.with_retryable(true)
                    }
                    _ => error,
                });
            }
        };
        let renew_at = tokio::time::Instant::now() + self.resubscribe;
        loop {
            let event = tokio::select! {
                event = out.event_stream.recv() => event,
                _ = tokio::time::sleep_until(renew_at) => return Ok(false),
            };
            let event = match event {
                Ok(Some(event)) => event,
                Ok(None) => return Ok(false),
                Err(e) => {
                    return Err(Error::unavailable(format!(
                        "{what}: the event stream broke: {}",
                        aws_sdk_kinesis::error::DisplayErrorContext(&e)
                    )));
                }
            };
            let SubscribeToShardEventStream::SubscribeToShardEvent(mut event) = event else {
                continue;
            };
            // Whether the event says the shard ended, before its records are taken.
            let shard_ended = !event.child_shards().is_empty()
                && event.continuation_sequence_number().is_empty()
                || (!event.child_shards().is_empty() && event.records().is_empty());
            // Taken, not cloned: each record's data becomes its event's payload as it is.
            let fresh: Vec<Record> = std::mem::take(&mut event.records)
                .into_iter()
                .filter(|r| match &self.floor {
                    None => true,
                    Some((floor, inclusive)) => {
                        let order = sequence_order(r.sequence_number(), floor);
                        order.is_gt() || (*inclusive && order.is_eq())
                    }
                })
                .collect();
            let none_fresh = fresh.is_empty();
            let last = fresh.last().map(|r| r.sequence_number().to_owned());
            let mut records = VecDeque::new();
            let mut skip = self.resume.skip.take();
            convert(&self.stream, &self.shard, fresh, &mut skip, &mut records)?;
            if none_fresh {
                self.resume.skip = skip;
            }
            if let Some(last) = last {
                self.floor = Some((last.clone(), false));
                self.last_sequence = Some(last);
            }
            if !records.is_empty() && self.sender.send(Pushed::Records(records)).await.is_err() {
                return Err(Error::closed("reader dropped").with_retryable(false));
            }
            if shard_ended {
                return Ok(true);
            }
        }
    }
}

/// Orders two sequence numbers (decimal strings of up to 128 bits and more) as numbers.
fn sequence_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl std::fmt::Debug for Pushed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pushed::Records(r) => write!(f, "Records({})", r.len()),
            Pushed::Ended => f.write_str("Ended"),
            Pushed::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sequence_order;
    use std::cmp::Ordering;

    #[test]
    fn sequence_numbers_order_as_numbers() {
        let a = "49590338271490256608559692538361571095921575989136588898";
        let b = "49590338271490256608559692540925702759324208523137515618";
        assert_eq!(sequence_order(a, b), Ordering::Less);
        assert_eq!(sequence_order(b, a), Ordering::Greater);
        assert_eq!(sequence_order("9", "10"), Ordering::Less);
        assert_eq!(sequence_order(a, a), Ordering::Equal);
    }
}
