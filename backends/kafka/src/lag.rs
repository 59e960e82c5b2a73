//! A group's backlog on a whole topic, asked of the broker: what `kafka-consumer-groups
//! --describe` shows, for every partition, whether or not a live member holds it.

use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// One bound for a lookup of several requests: each request waits at most what is left.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Instant,
    within: Duration,
}

impl Deadline {
    pub(crate) fn after(within: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + within,
            within,
        }
    }

    fn left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// What is left for the request that does `what`, or the timeout naming it.
    fn remaining(&self, what: &str) -> Result<Duration> {
        // librdkafka treats a 0 ms timeout as "do not wait", which would report a request that
        // was never sent as a failure of its own: below a millisecond the lookup is over.
        let left = self.left();
        if left >= Duration::from_millis(1) {
            Ok(left)
        } else {
            Err(self.expired(what))
        }
    }

    fn expired(&self, what: &str) -> Error {
        Error::timeout(format!(
            "{what}: no answer within {:?} from the broker",
            self.within
        ))
        .with_retryable(true)
    }

    /// A request's own timeout, said as the lookup's.
    fn explain(&self, error: Error) -> Error {
        if error.kind() == tributary::ErrorKind::Timeout {
            let message = format!(
                "{} (the lookup's bound: {:?})",
                error.message(),
                self.within
            );
            Error::timeout(message).with_retryable(true)
        } else {
            error
        }
    }
}

/// The `group.id` of the client that reads other groups' figures. It never joins it (no
/// subscription, no assignment, no commit), so the group never exists on the broker; the id is
/// there because librdkafka needs the client to have a group for `ListConsumerGroupOffsets`
/// (see [`crate::group_offsets`]).
const LAG_READER_GROUP: &str = "tributary-lag-reader";

/// Reads any group's backlog without joining the group: one consumer client, made on first use
/// and shared by every group, asks for the partitions' ends and for the groups' commits
/// ([`crate::group_offsets`]).
#[derive(Default)]
pub(crate) struct LagReader {
    client: Mutex<Option<Arc<BaseConsumer<DefaultConsumerContext>>>>,
}

impl LagReader {
    fn client(&self, config: &KafkaConfig) -> Result<Arc<BaseConsumer<DefaultConsumerContext>>> {
        let mut slot = self.client.lock();
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let mut config = config.consumer_base();
        config.set("group.id", LAG_READER_GROUP);
        // The URL's static member id belongs to the route's own member: this client never
        // joins, but two clients with one id is a fencing waiting to happen.
        config.remove("group.instance.id");
        let client: BaseConsumer<DefaultConsumerContext> = config
            .create()
            .map_err(|e| map(e, "create the client that reads groups' lag"))?;
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// The backlog of `group` on `topic`: one request for the topic's partitions, two for the
    /// ends (latest and earliest, each batched per broker) and one for the group's commits,
    /// all within `deadline`. Blocking: call it off the async runtime.
    pub(crate) fn group_lag(
        &self,
        config: &KafkaConfig,
        admin: &AdminClient<DefaultClientContext>,
        topic: &str,
        group: &str,
        deadline: Deadline,
    ) -> Result<GroupLag> {
        let step = |what: &str| format!("{what} (the lag of group `{group}` on `{topic}`)");
        let what = step("read the partitions");
        let metadata = admin
            .inner()
            .fetch_metadata(Some(topic), deadline.remaining(&what)?)
            .map_err(|e| deadline.explain(map(e, &what)))?;
        let partitions = crate::topics::partition_count(&metadata, topic)
            .ok_or_else(|| Error::not_found(format!("Kafka topic `{topic}` does not exist")))?;
        let partitions = i32::try_from(partitions).map_err(|_| {
            Error::other(format!("`{topic}` has more partitions than Kafka allows"))
        })?;
        let reader = self.client(config)?;
        // Nothing else polls this client: what librdkafka queued for it since the last lookup
        // (connection errors while a broker was away) goes now, so the queue stays small.
        for _ in 0..10_000 {
            if reader.poll(Duration::ZERO).is_none() {
                break;
            }
        }
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
        let what = step("read the end offsets");
        let ends = reader
            .offsets_for_times(list(Offset::End)?, deadline.remaining(&what)?)
            .map_err(|e| deadline.explain(map(e, &what)))?;
        let what = step("read the start offsets");
        let starts = reader
            .offsets_for_times(list(Offset::Beginning)?, deadline.remaining(&what)?)
            .map_err(|e| deadline.explain(map(e, &what)))?;
        let what = step("read the commits");
        let mut pause = Duration::from_millis(50);
        let committed = loop {
            let asked = crate::group_offsets::committed(
                reader.client(),
                group,
                topic,
                partitions,
                deadline.remaining(&what)?,
            );
            match asked {
                // A coordinator that moved or is loading (a group that is new, a broker that
                // restarted) answers again in moments, as `kafka-consumer-groups` finds.
                Err(e) if e.is_retryable() && deadline.left() > pause => {
                    tracing::debug!(group, topic, error = %e, "asking for the commits again");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                other => break other.map_err(|e| deadline.explain(e))?,
            }
        };
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
