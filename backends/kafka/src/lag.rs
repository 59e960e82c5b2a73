//! A group's backlog on a whole topic, asked of the broker: what `kafka-consumer-groups
//! --describe` shows, for every partition, whether or not a live member holds it.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _, DefaultConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use tributary::{Error, Result};

use crate::config::KafkaConfig;
use crate::error::map;

/// A group's backlog on every partition of a topic (see [`crate::KafkaBackend::group_lag`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupLag {
    /// Per partition, in partition order.
    pub partitions: Vec<PartitionLag>,
}

impl GroupLag {
    /// Events the group has not processed, over every partition.
    pub fn total(&self) -> u64 {
        self.partitions.iter().map(|p| p.lag).sum()
    }
}

/// One partition's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionLag {
    /// The partition number.
    pub partition: u32,
    /// The partition's end offset (the offset the next event will get).
    pub end: u64,
    /// The partition's oldest retained offset.
    pub earliest: u64,
    /// The group's committed offset (the next event it will read), if it has one.
    pub committed: Option<u64>,
    /// `end - committed`; for a partition the group never committed, every retained event.
    pub lag: u64,
}

/// Reads any group's backlog without joining the group: the partitions' ends through one
/// consumer client with no group, made on first use and shared by every group; the commits
/// through the backend's admin client ([`crate::group_offsets`]).
#[derive(Default)]
pub(crate) struct EndsReader {
    ends: Mutex<Option<Arc<BaseConsumer<DefaultConsumerContext>>>>,
}

impl EndsReader {
    fn ends_reader(
        &self,
        config: &KafkaConfig,
    ) -> Result<Arc<BaseConsumer<DefaultConsumerContext>>> {
        let mut ends = self.ends.lock();
        if let Some(reader) = ends.as_ref() {
            return Ok(reader.clone());
        }
        let mut client = config.consumer_base();
        // Not a member of any group: it only asks for offsets.
        client.remove("group.id");
        client.remove("group.instance.id");
        let reader: BaseConsumer<DefaultConsumerContext> = client
            .create()
            .map_err(|e| map(e, "create a reader of partition ends"))?;
        let reader = Arc::new(reader);
        *ends = Some(reader.clone());
        Ok(reader)
    }

    /// The backlog of `group` on `topic` (whose partition count is `partitions`): two
    /// requests for the ends (latest and earliest, each batched per broker) and one for the
    /// group's commits. Blocking: call it off the async runtime.
    pub(crate) fn group_lag(
        &self,
        config: &KafkaConfig,
        admin: &AdminClient<DefaultClientContext>,
        topic: &str,
        partitions: i32,
        group: &str,
        timeout: Duration,
    ) -> Result<GroupLag> {
        let reader = self.ends_reader(config)?;
        let list = |offset: Offset| -> Result<TopicPartitionList> {
            let mut list = TopicPartitionList::new();
            for partition in 0..partitions {
                list.add_partition_offset(topic, partition, offset)
                    .map_err(|e| map(e, &format!("list the partitions of `{topic}`")))?;
            }
            Ok(list)
        };
        // `offsets_for_times` with the special times "latest" and "earliest": the partitions'
        // ends in one request per broker, rather than one watermark request per partition.
        let ends = reader
            .offsets_for_times(list(Offset::End)?, timeout)
            .map_err(|e| map(e, &format!("read the end offsets of `{topic}`")))?;
        let starts = reader
            .offsets_for_times(list(Offset::Beginning)?, timeout)
            .map_err(|e| map(e, &format!("read the start offsets of `{topic}`")))?;
        let committed = crate::group_offsets::committed(admin, group, topic, partitions, timeout)?;
        let offset_of = |list: &TopicPartitionList, partition: i32| {
            list.find_partition(topic, partition)
                .and_then(|element| match element.offset() {
                    Offset::Offset(n) if n >= 0 => Some(n as u64),
                    _ => None,
                })
        };
        let mut result = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            let end = offset_of(&ends, partition).ok_or_else(|| {
                Error::unavailable(format!(
                    "the broker gave no end offset for `{topic}` partition {partition}"
                ))
                .with_retryable(true)
            })?;
            let committed = committed.get(partition as usize).copied().flatten();
            let earliest = offset_of(&starts, partition).unwrap_or(0);
            let from = committed.unwrap_or(earliest);
            result.push(PartitionLag {
                partition: partition as u32,
                end,
                earliest,
                committed,
                lag: end.saturating_sub(from),
            });
        }
        Ok(GroupLag { partitions: result })
    }
}
