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
/// How long one reading of the broker's figures may take before the gauge's warning: a
/// broker that stops answering shows in the log within this, not after the backend's whole
/// `timeout` (30 s by default) for each of the lookup's requests.
#[cfg(feature = "kafka")]
const LAG_WITHIN: Duration = Duration::from_secs(5);

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
        LagSource::broker(&spec.source, &spec.source_stream, &spec.group, &spec.start)
            .unwrap_or(LagSource::Consumer(consumer))
    }

    /// The broker's figures for `group` on `stream`, where the backend can give them without
    /// a member of the group (Kafka); `None` elsewhere.
    pub fn broker(
        source: &Arc<dyn Backend>,
        stream: &str,
        group: &str,
        start: &StartPosition,
    ) -> Option<LagSource> {
        #[cfg(feature = "kafka")]
        if let Some(probe) = kafka::GroupLag::new(source, stream, group, start) {
            return Some(LagSource::Kafka(Arc::new(probe)));
        }
        #[cfg(not(feature = "kafka"))]
        let _ = (source, stream, group, start);
        None
    }

    /// The lag now: `Ok(None)` while unknown.
    pub(super) async fn read(&self) -> Result<Option<u64>> {
        match self {
            LagSource::Consumer(consumer) => Ok(consumer.lag()),
            #[cfg(feature = "kafka")]
            // The backend runs librdkafka's blocking queries off the async workers.
            LagSource::Kafka(probe) => probe.measure(LAG_WITHIN).await.map(Some),
        }
    }
}

#[cfg(feature = "kafka")]
pub(crate) mod kafka {
    //! The group's lag from the broker, through the Kafka backend's own clients
    //! ([`tributary_kafka::KafkaBackend::group_lag`]): a client per route here made a daemon
    //! with 16 routes run 16 more librdkafka clients, and asked for each partition's
    //! watermarks one request at a time.

    use std::sync::Arc;
    use std::time::Duration;

    use tributary::{Backend, Error, Result, StartPosition};
    use tributary_kafka::KafkaBackend;

    /// What reads the route's group's lag on its source topic, never joining the group.
    pub struct GroupLag {
        source: Arc<dyn Backend>,
        topic: String,
        group: String,
        /// Where a partition without a commit starts, so what counts as pending there.
        from_earliest: bool,
    }

    impl GroupLag {
        /// `None` when `source` is not a Kafka backend.
        pub(crate) fn new(
            source: &Arc<dyn Backend>,
            topic: &str,
            group: &str,
            start: &StartPosition,
        ) -> Option<GroupLag> {
            source.as_any().downcast_ref::<KafkaBackend>()?;
            Some(GroupLag {
                source: source.clone(),
                topic: topic.to_owned(),
                group: group.to_owned(),
                from_earliest: !matches!(start, StartPosition::Latest),
            })
        }

        /// Events of the topic past the group's committed offsets, over every partition, or
        /// an error once `within` has passed.
        pub async fn measure(&self, within: Duration) -> Result<u64> {
            let backend = self
                .source
                .as_any()
                .downcast_ref::<KafkaBackend>()
                .ok_or_else(|| Error::other("the lag source is not a Kafka backend"))?;
            let lag = backend
                .group_lag_within(&self.topic, &self.group, within)
                .await?;
            Ok(lag
                .partitions
                .iter()
                .map(|p| {
                    let from = match p.committed {
                        // Retention may have removed what the commit points at.
                        Some(committed) => committed.max(p.earliest),
                        None if self.from_earliest => p.earliest,
                        None => p.end,
                    };
                    p.end.saturating_sub(from)
                })
                .sum())
        }
    }
}
