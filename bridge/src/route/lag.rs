//! Where a route's source lag comes from.
//!
//! `Consumer::lag` is what this member knows: for Kafka, librdkafka's statistics for the
//! partitions assigned to it, once it has fetched from them. That figure is absent after a
//! restart of a caught-up route (nothing fetched, nothing known), 0 after a takeover until the
//! first fetch, and blind to partitions a dead member still holds. For a Kafka source the
//! route asks the broker instead, as `kafka-consumer-groups.sh --describe` does: every
//! partition of the source topic, its end offset, and the group's committed offset.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tributary::{Backend, Consumer, Result, StartPosition};

use super::{RouteSpec, RouteStats};

/// How often a route publishes its source's lag.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// Publishes the source's lag every [`LAG_EVERY`] until dropped, from its own task so that a
/// stalled sink (when the lag matters most) does not freeze the figure. A reading that fails
/// leaves the last figure and is logged once until one succeeds again.
pub fn report_lag(
    route: String,
    source: LagSource,
    stats: Arc<RouteStats>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LAG_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        // Made at the first figure: a gauge exists (and reads 0) from its making, and a lag
        // not known yet must be absent, not 0.
        let mut gauge = None;
        loop {
            tick.tick().await;
            match source.read().await {
                Ok(Some(lag)) => {
                    failing = false;
                    stats
                        .lag_plus_one
                        .store(lag.saturating_add(1), Ordering::Relaxed);
                    gauge
                        .get_or_insert_with(|| crate::metrics::SOURCE_LAG.gauge(&route))
                        .set(lag as f64);
                }
                Ok(None) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(route = %route, error = %e, "source lag unknown; the gauge keeps its last figure");
                    }
                    failing = true;
                }
            }
        }
    })
}

/// What a lag reporter reads.
pub enum LagSource {
    /// The consumer's own figure.
    Consumer(Arc<dyn Consumer>),
    /// The broker's figures for the whole topic.
    #[cfg(feature = "kafka")]
    Kafka(Arc<kafka::GroupLag>),
}

impl LagSource {
    /// The broker's figures where the source is Kafka, else the consumer's.
    pub(super) fn for_route(spec: &RouteSpec, consumer: Arc<dyn Consumer>) -> LagSource {
        LagSource::broker(
            &spec.name,
            &spec.source,
            &spec.source_stream,
            &spec.group,
            &spec.start,
        )
        .unwrap_or(LagSource::Consumer(consumer))
    }

    /// The broker's figures for `group` on `stream`, where the backend can give them without
    /// a member of the group (Kafka); `None` elsewhere.
    pub fn broker(
        route: &str,
        source: &Arc<dyn Backend>,
        stream: &str,
        group: &str,
        start: &StartPosition,
    ) -> Option<LagSource> {
        #[cfg(feature = "kafka")]
        if let Some(backend) = source
            .as_any()
            .downcast_ref::<tributary_kafka::KafkaBackend>()
        {
            match kafka::GroupLag::new(backend, stream, group, start) {
                Ok(probe) => return Some(LagSource::Kafka(Arc::new(probe))),
                Err(e) => {
                    tracing::warn!(route, error = %e, "cannot ask the broker for the group's lag; reporting the consumer's own figure")
                }
            }
        }
        #[cfg(not(feature = "kafka"))]
        let _ = (route, source, stream, group, start);
        None
    }

    /// The lag now: `Ok(None)` while unknown.
    pub(super) async fn read(&self) -> Result<Option<u64>> {
        match self {
            LagSource::Consumer(consumer) => Ok(consumer.lag()),
            #[cfg(feature = "kafka")]
            LagSource::Kafka(probe) => {
                let probe = probe.clone();
                // librdkafka's queries block: off the async workers.
                tokio::task::spawn_blocking(move || probe.measure())
                    .await
                    .map_err(|e| tributary::Error::unavailable(format!("lag probe: {e}")))?
                    .map(Some)
            }
        }
    }
}

#[cfg(feature = "kafka")]
pub(crate) mod kafka {
    //! The group's lag from the broker: end offsets and committed offsets of every partition.

    use std::time::Duration;

    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::{Offset, TopicPartitionList};
    use tributary::{Error, Result, StartPosition};

    /// How long one broker query may take.
    const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

    /// A client of the route's group that never joins it: it only reads the group's committed
    /// offsets and the topic's end offsets.
    pub struct GroupLag {
        client: BaseConsumer,
        topic: String,
        /// Where a partition without a commit starts, so what counts as pending there.
        from_earliest: bool,
    }

    impl GroupLag {
        pub(crate) fn new(
            backend: &tributary_kafka::KafkaBackend,
            topic: &str,
            group: &str,
            start: &StartPosition,
        ) -> Result<GroupLag> {
            let mut config = backend.consumer_config();
            config.set("group.id", group);
            config.set("enable.auto.commit", "false");
            // It never joins; a static member id is the route's consumer's alone.
            config.remove("group.instance.id");
            let client: BaseConsumer = config
                .create()
                .map_err(|e| Error::config(format!("lag probe client: {e}")))?;
            Ok(GroupLag {
                client,
                topic: topic.to_owned(),
                from_earliest: !matches!(start, StartPosition::Latest),
            })
        }

        /// Events of the topic past the group's committed offsets, over every partition
        /// (blocking: a metadata, a committed-offsets and a watermark query per partition).
        pub fn measure(&self) -> Result<u64> {
            let unavailable = |what: &str, e: rdkafka::error::KafkaError| {
                Error::unavailable(format!("lag of `{}`: {what}: {e}", self.topic))
            };
            let metadata = self
                .client
                .fetch_metadata(Some(&self.topic), QUERY_TIMEOUT)
                .map_err(|e| unavailable("metadata", e))?;
            let Some(topic) = metadata.topics().iter().find(|t| t.name() == self.topic) else {
                return Err(Error::not_found(format!("topic `{}`", self.topic)));
            };
            if let Some(e) = topic.error() {
                return Err(Error::unavailable(format!(
                    "lag of `{}`: metadata: {e:?}",
                    self.topic
                )));
            }
            let mut wanted = TopicPartitionList::new();
            for p in topic.partitions() {
                wanted.add_partition(&self.topic, p.id());
            }
            let committed = self
                .client
                .committed_offsets(wanted, QUERY_TIMEOUT)
                .map_err(|e| unavailable("committed offsets", e))?;
            let mut lag = 0u64;
            for element in committed.elements_for_topic(&self.topic) {
                let (low, high) = self
                    .client
                    .fetch_watermarks(&self.topic, element.partition(), QUERY_TIMEOUT)
                    .map_err(|e| unavailable("end offsets", e))?;
                let from = match element.offset() {
                    // Retention may have removed what the commit points at.
                    Offset::Offset(committed) => committed.max(low),
                    _ if self.from_earliest => low,
                    _ => high,
                };
                lag += (high - from).max(0) as u64;
            }
            Ok(lag)
        }
    }
}
