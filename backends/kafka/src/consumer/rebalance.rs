//! Rebalances: where each newly assigned partition starts (the group's commit, else the
//! consumer's start position resolved at that moment and committed at once), and what a
//! revoked partition commits and withdraws.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, RebalanceProtocol,
};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tributary::{Error, StartPosition};

use super::state::Shared;
use crate::error::map;

/// The consumer's librdkafka context: serves rebalances (inside `poll`, on the driver thread).
pub(super) struct Context {
    pub(super) shared: Arc<Shared>,
}

impl Context {
    /// The assignment with an explicit offset for every partition: the committed one where the
    /// group has a commit, else the consumer's start position, resolved now so that "latest"
    /// means latest at the moment of joining, not at some later first fetch. Also reads each
    /// partition's end, so that `lag()` answers from the moment of joining.
    fn starting_offsets(
        &self,
        consumer: &BaseConsumer<Self>,
        assigned: &TopicPartitionList,
    ) -> Resolved {
        let (topic, start, timeout) = {
            let state = self.shared.state.lock();
            (state.topic.clone(), state.start.clone(), state.timeout)
        };
        let mut failure = None;
        let committed = match consumer.committed_offsets(assigned.clone(), timeout) {
            Ok(list) => list,
            Err(e) => {
                // Without the commits the fallback (auto.offset.reset) decides; say so loudly.
                tracing::warn!(topic = %topic, error = %e, "kafka: cannot read the group's commits");
                failure = Some(map(e, &format!("read the group's commits on `{topic}`")));
                assigned.clone()
            }
        };
        let mut resolved = Resolved::default();
        let mut by_time = TopicPartitionList::new();
        for element in committed.elements() {
            let partition = element.partition();
            let (low, high) = match watermarks(consumer, &topic, partition, timeout) {
                Ok((low, high)) => (Some(low), Some(high)),
                Err(e) => {
                    // Only "latest" needs the end to start; for the rest it only feeds `lag()`,
                    // which then waits for the first fetch response.
                    let committed = matches!(element.offset(), Offset::Offset(n) if n >= 0);
                    if !committed && matches!(start, StartPosition::Latest) {
                        failure.get_or_insert(e);
                    } else {
                        tracing::debug!(topic = %topic, partition, error = %e, "kafka: partition ends unknown at assignment");
                    }
                    (None, None)
                }
            };
            let offset = match (element.offset(), &start) {
                (Offset::Offset(n), _) if n >= 0 => {
                    resolved.add(&topic, partition, Some(n), high, false);
                    continue;
                }
                (_, StartPosition::Earliest) => low,
                (_, StartPosition::Position(position)) => {
                    Some(position.as_offset().unwrap_or(0) as i64)
                }
                (_, StartPosition::Timestamp(t)) => {
                    let _ = by_time.add_partition_offset(
                        &topic,
                        partition,
                        Offset::Offset(t.as_millis()),
                    );
                    resolved.ends.insert(partition, high);
                    continue;
                }
                (_, _) => high,
            };
            match offset {
                Some(offset) => resolved.add(&topic, partition, Some(offset), high, true),
                // The ends are unknown: librdkafka resolves the start itself.
                None => {
                    let fallback = match start {
                        StartPosition::Earliest => Offset::Beginning,
                        _ => Offset::End,
                    };
                    let _ = resolved
                        .assignment
                        .add_partition_offset(&topic, partition, fallback);
                    resolved.ends.insert(partition, None);
                }
            }
        }
        if by_time.count() > 0 {
            match consumer.offsets_for_times(by_time.clone(), timeout) {
                Ok(found) => {
                    for element in found.elements() {
                        let partition = element.partition();
                        let end = resolved.ends.get(&partition).copied().flatten();
                        let offset = match element.offset() {
                            Offset::Offset(n) if n >= 0 => Some(n),
                            // No event at or after the time: start at the end.
                            _ => end,
                        };
                        match offset {
                            Some(offset) => {
                                resolved.add(&topic, partition, Some(offset), end, true)
                            }
                            None => {
                                let _ = resolved.assignment.add_partition_offset(
                                    &topic,
                                    partition,
                                    Offset::End,
                                );
                            }
                        }
                    }
                }
                Err(e) => {
                    failure.get_or_insert(map(e, &format!("look up offsets by time on `{topic}`")));
                    for element in by_time.elements() {
                        let _ = resolved.assignment.add_partition_offset(
                            &topic,
                            element.partition(),
                            Offset::End,
                        );
                    }
                }
            }
        }
        resolved.failure = failure;
        resolved
    }
}

/// A partition's first and next offsets, asked of its leader. Right after a topic is created
/// (or its leader moves) the broker may not lead the partition yet: retried for `timeout`.
fn watermarks(
    consumer: &BaseConsumer<Context>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<(i64, i64), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match consumer.fetch_watermarks(topic, partition, left) {
            Ok((low, high)) => return Ok((low.max(0), high.max(0))),
            Err(e) => {
                let error = map(
                    e,
                    &format!("find the ends of `{topic}` partition {partition}"),
                );
                if !error.is_retryable() || Instant::now() + RETRY_EVERY >= deadline {
                    return Err(error);
                }
                std::thread::sleep(RETRY_EVERY);
            }
        }
    }
}

/// Pause between attempts to read a partition's ends while its leader is not ready.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// Where each assigned partition starts, and what is known of its end.
#[derive(Default)]
struct Resolved {
    /// The partitions with the offset to read from.
    assignment: TopicPartitionList,
    /// Offsets resolved from the start position where the group had no commit: committed at
    /// once, so that a member that takes the partition over later (after a crash before any
    /// ack) starts at the same place instead of resolving "latest" again and skipping what
    /// arrived in between.
    pin: TopicPartitionList,
    /// Each partition's first offset to read, where known.
    starts: HashMap<i32, i64>,
    /// Each partition's end offset, where known.
    ends: HashMap<i32, Option<i64>>,
    failure: Option<Error>,
}

impl Resolved {
    fn add(
        &mut self,
        topic: &str,
        partition: i32,
        start: Option<i64>,
        end: Option<i64>,
        pin: bool,
    ) {
        let offset = start.map_or(Offset::End, Offset::Offset);
        let _ = self
            .assignment
            .add_partition_offset(topic, partition, offset);
        if let Some(start) = start {
            self.starts.insert(partition, start);
            if pin {
                let _ = self.pin.add_partition_offset(topic, partition, offset);
            }
        }
        self.ends.insert(partition, end);
    }
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let resolved = self.starting_offsets(consumer, tpl);
                let result = if cooperative {
                    consumer.incremental_assign(&resolved.assignment)
                } else {
                    consumer.assign(&resolved.assignment)
                };
                // librdkafka keeps a partition's pause across unassign and assign: one this
                // member paused while its queue was full, and gets back in a rebalance, would
                // never fetch again. Assigned partitions start resumed; the driver pauses
                // them again if its queue is still full (`assignment_changed` below).
                if result.is_ok()
                    && let Err(e) = consumer.resume(&resolved.assignment)
                {
                    tracing::warn!(error = %e, "kafka: cannot resume newly assigned partitions");
                }
                if result.is_ok()
                    && resolved.pin.count() > 0
                    && let Err(e) = consumer.commit(&resolved.pin, CommitMode::Sync)
                {
                    // Only a later owner's start is at stake, and only until the first commit.
                    tracing::warn!(error = %e, "kafka: cannot commit the start position of newly assigned partitions");
                }
                let mut state = self.shared.state.lock();
                for element in resolved.assignment.elements() {
                    let partition = element.partition();
                    state.assign(
                        partition,
                        resolved.starts.get(&partition).copied(),
                        resolved.ends.get(&partition).copied().flatten(),
                    );
                }
                state.assignment_changed = true;
                tracing::debug!(topic = %state.topic, partitions = resolved.assignment.count(), "kafka: partitions assigned");
                if let Some(joined) = state.joined.take() {
                    let outcome = match (result, resolved.failure) {
                        (Err(e), _) => Err(map(e, &format!("join the group on `{}`", state.topic))),
                        (Ok(()), Some(e)) => Err(e),
                        (Ok(()), None) => Ok(()),
                    };
                    let _ = joined.send(outcome);
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Acks the application made before this moment count (they are applied as they
                // are made), and so do those it makes within `revoke_grace` for the deliveries
                // it holds: commit them for the partitions that go. Without the wait every
                // delivery in hand at a rebalance was read again by the next owner (in an eager
                // rebalance, every partition of every member). Their unacked and
                // not-yet-received events are withdrawn here and redelivered by the next owner.
                let lost = consumer.assignment_lost();
                let mut state = self.shared.state.lock();
                // Nothing more of them is handed out from here, wait or not.
                state.begin_revoke(tpl);
                // Not at close: the application has stopped settling. Not when the assignment
                // is lost (the session expired, the member was fenced): the partitions are
                // already another member's, and a commit for them would be refused.
                if !state.stopped && !self.shared.revoke_grace.is_zero() && !lost {
                    let waited = Instant::now();
                    let deadline = waited + self.shared.revoke_grace;
                    while state.revoking_in_flight() > 0
                        && !self
                            .shared
                            .settled
                            .wait_until(&mut state, deadline)
                            .timed_out()
                    {}
                    let left = state.revoking_in_flight();
                    if left > 0 {
                        tracing::info!(topic = %state.topic, unsettled = left, grace = ?self.shared.revoke_grace,
                            "kafka: partitions revoked with deliveries still out after revoke_grace; the next owner reads them again");
                    } else if waited.elapsed() > Duration::from_millis(1) {
                        tracing::debug!(topic = %state.topic, waited = ?waited.elapsed(), "kafka: revoked partitions' deliveries settled");
                    }
                }
                let list = state.commit_list(Some(tpl));
                if list.count() > 0 {
                    // A round trip to the coordinator: without the lock, which the
                    // application's acks, receives and lag() take on the runtime's workers. An
                    // ack made meanwhile misses this commit; the next owner reads its event
                    // again.
                    let committed = parking_lot::MutexGuard::unlocked(&mut state, || {
                        consumer.commit(&list, CommitMode::Sync)
                    });
                    match committed {
                        Ok(()) => state.mark_committed(&list),
                        Err(e) => {
                            tracing::warn!(topic = %state.topic, error = %e, "kafka: commit on revoke failed")
                        }
                    }
                }
                state.remove(tpl);
                state.assignment_changed = true;
                let topic = state.topic.clone();
                tracing::debug!(topic = %topic, partitions = tpl.count(), "kafka: partitions revoked");
                drop(state);
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "kafka: unassign failed");
                }
            }
            other => {
                tracing::warn!(error = ?other, "kafka: rebalance error; dropping the assignment");
                let mut state = self.shared.state.lock();
                state.partitions.clear();
                state.revoking = 0;
                state.withdraw_undeliverable();
                state.assignment_changed = true;
                drop(state);
                let _ = consumer.unassign();
            }
        }
    }
}
