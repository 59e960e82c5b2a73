//! Stream administration: create (and wait until active), delete, list, describe, and the
//! shard listing the consumer group follows through splits and merges.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::StreamStatus;
use tributary::{Error, ErrorKind, PartitionId, PartitionInfo, Position, Result, StreamInfo};

/// One shard as `ListShards` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shard {
    pub id: String,
    /// The shard it was split from, or the first of the two it was merged from.
    pub parent: Option<String>,
    /// The second shard of a merge.
    pub adjacent_parent: Option<String>,
    pub starting_sequence: String,
    /// Set once the shard is closed (split or merged away): no record is added after it.
    pub ending_sequence: Option<String>,
    pub starting_hash_key: String,
    pub ending_hash_key: String,
}

impl Shard {
    /// The shards this one was split or merged from.
    pub(crate) fn parents(&self) -> Vec<PartitionId> {
        self.parent
            .iter()
            .chain(self.adjacent_parent.iter())
            .map(PartitionId::new)
            .collect()
    }
}

/// Kinesis administration for one client, with the URL's call timeout.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    pub client: Client,
    pub timeout: Duration,
}

impl Admin {
    async fn timed<T, E, R>(
        &self,
        what: &str,
        call: impl std::future::Future<
            Output = std::result::Result<T, aws_sdk_kinesis::error::SdkError<E, R>>,
        >,
    ) -> Result<T>
    where
        E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        crate::error::timed(self.timeout, what, call).await
    }

    /// The stream's status, or `None` when it does not exist.
    pub(crate) async fn status(&self, stream: &str) -> Result<Option<StreamStatus>> {
        let call = self
            .client
            .describe_stream_summary()
            .stream_name(stream)
            .send();
        match self
            .timed(&format!("describe stream `{stream}`"), call)
            .await
        {
            Ok(out) => Ok(out
                .stream_description_summary()
                .map(|s| s.stream_status().clone())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits until the stream is `ACTIVE` (or `UPDATING`, which serves reads and writes).
    pub(crate) async fn wait_active(&self, stream: &str) -> Result<()> {
        let deadline = Instant::now() + self.timeout.max(Duration::from_secs(60));
        let mut pause = Duration::from_millis(20);
        loop {
            match self.status(stream).await? {
                Some(StreamStatus::Active | StreamStatus::Updating) => return Ok(()),
                Some(StreamStatus::Deleting) | None => {
                    return Err(Error::not_found(format!(
                        "Kinesis stream `{stream}` is being deleted or does not exist"
                    )));
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(Error::timeout(format!(
                    "Kinesis stream `{stream}` did not become ACTIVE within {:?}",
                    self.timeout.max(Duration::from_secs(60))
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    pub(crate) async fn create(&self, stream: &str, shards: u32) -> Result<()> {
        let call = self
            .client
            .create_stream()
            .stream_name(stream)
            .shard_count(shards as i32)
            .send();
        match self.timed(&format!("create stream `{stream}`"), call).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(Error::already_exists(format!(
                    "Kinesis stream `{stream}` already exists"
                )));
            }
            Err(e) => return Err(e),
        }
        self.wait_active(stream).await
    }

    /// Deletes the stream (and its enhanced fan-out consumers) and waits until it is gone, so
    /// that its name can be used again at once.
    pub(crate) async fn delete(&self, stream: &str) -> Result<()> {
        let call = self
            .client
            .delete_stream()
            .stream_name(stream)
            .enforce_consumer_deletion(true)
            .send();
        match self.timed(&format!("delete stream `{stream}`"), call).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::not_found(format!(
                    "Kinesis stream `{stream}` does not exist"
                )));
            }
            Err(e) => return Err(e),
        }
        let deadline = Instant::now() + self.timeout.max(Duration::from_secs(60));
        let mut pause = Duration::from_millis(20);
        while self.status(stream).await?.is_some() {
            if Instant::now() >= deadline {
                return Err(Error::timeout(format!(
                    "Kinesis stream `{stream}` was still being deleted after {:?}",
                    self.timeout.max(Duration::from_secs(60))
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
        Ok(())
    }

    pub(crate) async fn list(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut call = self.client.list_streams().limit(1000);
            if let Some(t) = &token {
                call = call.next_token(t);
            }
            let page = self.timed("list streams", call.send()).await?;
            names.extend(page.stream_names().iter().cloned());
            match page.next_token() {
                Some(t) if page.has_more_streams() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Every shard of the stream, open and closed (within the retention period).
    pub(crate) async fn shards(&self, stream: &str) -> Result<Vec<Shard>> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // With a token, the stream name must not be given again.
            let call = match &token {
                Some(t) => self.client.list_shards().next_token(t),
                None => self.client.list_shards().stream_name(stream),
            };
            let page = self
                .timed(&format!("list shards of stream `{stream}`"), call.send())
                .await?;
            for shard in page.shards() {
                let (start, end) = shard
                    .hash_key_range()
                    .map(|r| {
                        (
                            r.starting_hash_key().to_owned(),
                            r.ending_hash_key().to_owned(),
                        )
                    })
                    .unwrap_or_default();
                let sequences = shard.sequence_number_range();
                shards.push(Shard {
                    id: shard.shard_id().to_owned(),
                    parent: shard.parent_shard_id().map(str::to_owned),
                    adjacent_parent: shard.adjacent_parent_shard_id().map(str::to_owned),
                    starting_sequence: sequences
                        .map(|s| s.starting_sequence_number().to_owned())
                        .unwrap_or_default(),
                    ending_sequence: sequences
                        .and_then(|s| s.ending_sequence_number())
                        .map(str::to_owned),
                    starting_hash_key: start,
                    ending_hash_key: end,
                });
            }
            match page.next_token() {
                Some(t) => token = Some(t.to_owned()),
                None => break,
            }
        }
        shards.sort_by(|a, b| PartitionId::new(&a.id).cmp(&PartitionId::new(&b.id)));
        Ok(shards)
    }

    pub(crate) async fn describe(&self, stream: &str) -> Result<StreamInfo> {
        let shards = self
            .shards(stream)
            .await
            .map_err(|e| not_found_named(e, stream))?;
        Ok(StreamInfo {
            name: stream.to_owned(),
            partitions: shards
                .into_iter()
                .map(|s| PartitionInfo {
                    id: PartitionId::new(&s.id),
                    earliest: (!s.starting_sequence.is_empty())
                        .then(|| Position::new(&s.starting_sequence)),
                    // Kinesis does not tell the next sequence number of a shard.
                    next: None,
                })
                .collect(),
        })
    }
}

/// A `NotFound` from the service, reworded to name the stream.
pub(crate) fn not_found_named(error: Error, stream: &str) -> Error {
    if error.kind() == ErrorKind::NotFound {
        Error::not_found(format!("Kinesis stream `{stream}` does not exist"))
    } else {
        error
    }
}
