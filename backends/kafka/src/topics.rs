//! Topic administration: existence, creation, deletion, description, limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::metadata::Metadata;
use tributary::{Error, PartitionId, PartitionInfo, Position, Result, StreamInfo, StreamSpec};

use crate::KafkaBackend;
use crate::error::{self, map};

impl KafkaBackend {
    pub(crate) async fn topic_partitions(&self, topic: &str) -> Result<Option<usize>> {
        let metadata = blocking_metadata(&self.admin, Some(topic), self.config.timeout).await?;
        Ok(partition_count(&metadata, topic))
    }

    /// Makes sure the topic exists (creating it where `auto_create` allows).
    pub(crate) async fn ensure_topic(&self, topic: &str) -> Result<()> {
        if self.topic_partitions(topic).await?.is_some() {
            return Ok(());
        }
        if !self.config.auto_create {
            return Err(Error::not_found(format!(
                "Kafka topic `{topic}` does not exist (create it, or add auto_create=true to the URL)"
            )));
        }
        match self
            .create_topic(topic, StreamSpec::with_partitions(self.config.partitions))
            .await
        {
            Err(e) if e.kind() == tributary::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    pub(crate) async fn topic_limit(&self, topic: &str) -> usize {
        let options = AdminOptions::new().request_timeout(Some(self.config.timeout));
        let specifier = ResourceSpecifier::Topic(topic);
        match self.admin.describe_configs([&specifier], &options).await {
            Ok(results) => results
                .into_iter()
                .flatten()
                .find_map(|r| {
                    r.get("max.message.bytes")
                        .and_then(|e| e.value.as_ref()?.parse().ok())
                })
                .unwrap_or(self.max_message_bytes),
            Err(_) => self.max_message_bytes,
        }
    }

    /// Waits until metadata agrees with `present` for `topic` (creation and deletion propagate
    /// asynchronously through the cluster).
    async fn await_topic(&self, topic: &str, present: bool) -> Result<()> {
        let deadline = Instant::now() + self.config.timeout;
        loop {
            if self.topic_partitions(topic).await?.is_some() == present {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::timeout(format!(
                    "topic `{topic}` still {} after {:?}",
                    if present { "missing" } else { "present" },
                    self.config.timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn create_topic(&self, stream: &str, spec: StreamSpec) -> Result<()> {
        let partitions = i32::try_from(spec.partitions.max(1)).map_err(|_| {
            Error::config(format!(
                "{} partitions is too many for Kafka",
                spec.partitions
            ))
        })?;
        let topic = NewTopic::new(
            stream,
            partitions,
            TopicReplication::Fixed(self.config.replication.map_or(-1, i32::from)),
        );
        let options = AdminOptions::new().operation_timeout(Some(self.config.timeout));
        let results = self
            .admin
            .create_topics([&topic], &options)
            .await
            .map_err(|e| map(e, &format!("create topic `{stream}`")))?;
        for result in results {
            if let Err((name, code)) = result {
                return Err(match code {
                    RDKafkaErrorCode::TopicAlreadyExists => {
                        Error::already_exists(format!("Kafka topic `{name}` already exists"))
                    }
                    other => error::by_code(other, &format!("create topic `{name}`: {other}")),
                });
            }
        }
        self.await_topic(stream, true).await
    }

    pub(crate) async fn delete_topic(&self, stream: &str) -> Result<()> {
        let options = AdminOptions::new().operation_timeout(Some(self.config.timeout));
        let results = self
            .admin
            .delete_topics(&[stream], &options)
            .await
            .map_err(|e| map(e, &format!("delete topic `{stream}`")))?;
        for result in results {
            if let Err((name, code)) = result {
                return Err(match code {
                    RDKafkaErrorCode::UnknownTopicOrPartition => {
                        Error::not_found(format!("Kafka topic `{name}` does not exist"))
                    }
                    other => error::by_code(other, &format!("delete topic `{name}`: {other}")),
                });
            }
        }
        self.await_topic(stream, false).await
    }

    pub(crate) async fn list_topics(&self) -> Result<Vec<String>> {
        let metadata = blocking_metadata(&self.admin, None, self.config.timeout).await?;
        let mut names: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .filter(|n| !n.starts_with("__"))
            .collect();
        names.sort();
        Ok(names)
    }

    pub(crate) async fn describe_topic(&self, stream: &str) -> Result<StreamInfo> {
        let admin = self.admin.clone();
        let topic = stream.to_string();
        let timeout = self.config.timeout;
        tokio::task::spawn_blocking(move || -> Result<StreamInfo> {
            let metadata = admin
                .inner()
                .fetch_metadata(Some(&topic), timeout)
                .map_err(|e| map(e, &format!("describe `{topic}`")))?;
            let found = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .ok_or_else(|| Error::not_found(format!("Kafka topic `{topic}` does not exist")))?;
            let mut ids: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
            ids.sort_unstable();
            let mut partitions = Vec::with_capacity(ids.len());
            for id in ids {
                let (low, high) = admin
                    .inner()
                    .fetch_watermarks(&topic, id, timeout)
                    .map_err(|e| {
                        map(e, &format!("read the offsets of `{topic}` partition {id}"))
                    })?;
                partitions.push(PartitionInfo {
                    id: PartitionId::from(id as u32),
                    earliest: Some(Position::from_offset(low.max(0) as u64)),
                    next: Some(Position::from_offset(high.max(0) as u64)),
                });
            }
            Ok(StreamInfo {
                name: topic,
                partitions,
            })
        })
        .await
        .map_err(|e| Error::other(format!("describe panicked: {e}")))?
    }
}

/// `topic`'s partition count in `metadata`; `None` if the broker does not know it.
pub(crate) fn partition_count(metadata: &Metadata, topic: &str) -> Option<usize> {
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .and_then(|t| match t.error() {
            None => Some(t.partitions().len()),
            Some(_) => None,
        })
}

pub(crate) async fn blocking_metadata(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    topic: Option<&str>,
    timeout: Duration,
) -> Result<Metadata> {
    let admin = admin.clone();
    let topic = topic.map(str::to_owned);
    tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(topic.as_deref(), timeout))
        .await
        .map_err(|e| Error::other(format!("metadata lookup panicked: {e}")))?
        .map_err(|e| map(e, "fetch Kafka metadata"))
}

pub(crate) async fn broker_limit(
    admin: &AdminClient<DefaultClientContext>,
    broker: i32,
    timeout: Duration,
) -> Option<usize> {
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let specifier = ResourceSpecifier::Broker(broker);
    let results = admin.describe_configs([&specifier], &options).await.ok()?;
    results.into_iter().flatten().find_map(|r| {
        r.get("message.max.bytes")
            .and_then(|e| e.value.as_ref()?.parse().ok())
    })
}
