//! One partition: its retained events, readers waiting for more, and the receivers that own
//! it per consumer group.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};

use super::log::{PartitionLog, load_log, write_record};
use super::{Event, Incoming, now_millis};
use crate::filter::StartAt;

/// Snapshot of a partition for `$management` READ.
pub(crate) struct PartitionInfo {
    pub(crate) begin_sequence: i64,
    pub(crate) last_sequence: i64,
    pub(crate) last_offset: i64,
    pub(crate) last_enqueued_ms: i64,
    pub(crate) empty: bool,
}

/// One partition: retained events plus the receivers that own it per consumer group.
pub(crate) struct Partition {
    pub(crate) id: u32,
    pub(super) state: Mutex<PartitionState>,
    /// Next sequence number to be assigned; readers wait on changes.
    pub(super) tail: watch::Sender<i64>,
    pub(super) owners: Mutex<HashMap<String, GroupOwners>>,
}

pub(super) struct PartitionState {
    pub(super) events: VecDeque<Arc<Event>>,
    pub(super) next_sequence: i64,
    pub(super) next_offset: i64,
    pub(super) last_enqueued_ms: i64,
    pub(super) max_events: usize,
    pub(super) log: Option<PartitionLog>,
}

impl Partition {
    pub(super) fn open(
        id: u32,
        max_events: usize,
        log_path: Option<PathBuf>,
    ) -> std::io::Result<Partition> {
        let mut state = PartitionState {
            events: VecDeque::new(),
            next_sequence: 0,
            next_offset: 0,
            last_enqueued_ms: 0,
            max_events,
            log: None,
        };
        if let Some(path) = log_path {
            let (valid, records) = load_log(&path, &mut state)?;
            let mut log = PartitionLog::open(path, valid, records)?;
            // A file written with a larger retention (or before compaction existed).
            if log.records > state.events.len() {
                log.compact(&state.events)?;
            }
            state.log = Some(log);
        }
        let tail = watch::Sender::new(state.next_sequence);
        Ok(Partition {
            id,
            state: Mutex::new(state),
            tail,
            owners: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, PartitionState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends events; returns an error only when persisting fails (nothing is then kept).
    pub(crate) fn append(&self, incoming: Vec<Incoming>) -> std::io::Result<()> {
        let mut state = self.lock();
        let now = now_millis().max(state.last_enqueued_ms);
        let mut events = Vec::with_capacity(incoming.len());
        let mut offset = state.next_offset;
        for (i, inc) in incoming.into_iter().enumerate() {
            events.push(Arc::new(Event {
                sequence: state.next_sequence + i as i64,
                offset,
                enqueued_ms: now,
                partition_key: inc.partition_key,
                message: inc.message,
            }));
            offset += inc.size.max(1) as i64;
        }
        if let Some(log) = state.log.as_mut() {
            for event in &events {
                write_record(&mut log.file, event)?;
            }
            log.file.flush()?;
            log.records += events.len();
        }
        state.next_sequence += events.len() as i64;
        state.next_offset = offset;
        state.last_enqueued_ms = now;
        state.events.extend(events);
        while state.events.len() > state.max_events {
            state.events.pop_front();
        }
        let PartitionState {
            events,
            max_events,
            log,
            ..
        } = &mut *state;
        if let Some(log) = log.as_mut()
            && log.needs_compaction(events.len(), *max_events)
            && let Err(e) = log.compact(events)
        {
            // The events are stored (the file still holds them, and more): only its size
            // is not reclaimed this time.
            tracing::warn!(path = %log.path.display(), error = %e, "cannot compact a partition file");
        }
        let next = state.next_sequence;
        drop(state);
        self.tail.send_replace(next);
        Ok(())
    }

    /// The sequence number a reader starting at `start` reads first.
    pub(crate) fn resolve(&self, start: &StartAt) -> i64 {
        let state = self.lock();
        let begin = state
            .events
            .front()
            .map_or(state.next_sequence, |e| e.sequence);
        let first_where = |pred: &dyn Fn(&Event) -> bool| {
            let i = state.events.partition_point(|e| !pred(e));
            state
                .events
                .get(i)
                .map_or(state.next_sequence, |e| e.sequence)
        };
        let at = match *start {
            StartAt::Earliest => begin,
            StartAt::Latest => state.next_sequence,
            StartAt::Sequence { value, inclusive } => {
                if inclusive {
                    value
                } else {
                    value.saturating_add(1)
                }
            }
            StartAt::Offset { value, inclusive } => first_where(&|e| {
                if inclusive {
                    e.offset >= value
                } else {
                    e.offset > value
                }
            }),
            StartAt::EnqueuedTime { millis, inclusive } => first_where(&|e| {
                if inclusive {
                    e.enqueued_ms >= millis
                } else {
                    e.enqueued_ms > millis
                }
            }),
        };
        at.clamp(begin, state.next_sequence)
    }

    /// Up to `max` events from sequence number `from` on (from the oldest retained one if
    /// `from` was dropped already).
    pub(crate) fn read(&self, from: i64, max: usize) -> Vec<Arc<Event>> {
        let state = self.lock();
        let begin = state
            .events
            .front()
            .map_or(state.next_sequence, |e| e.sequence);
        let skip = (from.max(begin) - begin) as usize;
        state.events.iter().skip(skip).take(max).cloned().collect()
    }

    /// Watches the next sequence number to be assigned.
    pub(crate) fn subscribe(&self) -> watch::Receiver<i64> {
        self.tail.subscribe()
    }

    pub(crate) fn info(&self) -> PartitionInfo {
        let state = self.lock();
        let last = state.events.back();
        PartitionInfo {
            begin_sequence: state
                .events
                .front()
                .map_or(state.next_sequence, |e| e.sequence),
            last_sequence: state.next_sequence - 1,
            last_offset: last.map_or(-1, |e| e.offset),
            last_enqueued_ms: state.last_enqueued_ms,
            empty: state.events.is_empty(),
        }
    }

    /// Registers a receiver of consumer group `group` with an owner level (epoch) or none.
    /// Receivers it displaces get [`Detach::Stolen`] on their `ended` channel; a receiver with
    /// a lower epoch than the current owner is refused.
    pub(crate) fn claim(
        self: &Arc<Self>,
        group: &str,
        epoch: Option<i64>,
        link_id: u64,
    ) -> Result<Claim, String> {
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        let owners = owners.entry(group.to_ascii_lowercase()).or_default();
        let (tx, rx) = oneshot::channel();
        match epoch {
            Some(epoch) => {
                if let Some(current) = owners.epoch
                    && epoch < current
                {
                    return Err(format!(
                        "Receiver with epoch '{epoch}' cannot be created because a receiver with a higher epoch of '{current}' already exists for partition '{}' of consumer group '{group}'",
                        self.id
                    ));
                }
                let reason = format!(
                    "New receiver with higher epoch of '{epoch}' is created hence current receiver is getting disconnected (partition '{}', consumer group '{group}')",
                    self.id
                );
                for (_, ended) in owners.receivers.drain() {
                    let _ = ended.send(Detach::Stolen(reason.clone()));
                }
                owners.epoch = Some(epoch);
            }
            None => {
                if let Some(current) = owners.epoch {
                    return Err(format!(
                        "Receiver without epoch cannot be created because a receiver with epoch '{current}' already exists for partition '{}' of consumer group '{group}'",
                        self.id
                    ));
                }
            }
        }
        owners.receivers.insert(link_id, tx);
        Ok(Claim {
            partition: self.clone(),
            group: group.to_ascii_lowercase(),
            link_id,
            ended: rx,
        })
    }

    /// Ends every receiver of every consumer group on this partition with
    /// [`Detach::Forced`]; returns how many were told.
    pub(crate) fn force_detach(&self, reason: &str) -> usize {
        let mut all = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        let mut told = 0;
        for owners in all.values_mut() {
            for (_, ended) in owners.receivers.drain() {
                told += usize::from(ended.send(Detach::Forced(reason.to_string())).is_ok());
            }
        }
        told
    }

    pub(super) fn release(&self, group: &str, link_id: u64) {
        let mut all = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(owners) = all.get_mut(group) {
            owners.receivers.remove(&link_id);
            if owners.receivers.is_empty() {
                // The owner level lapses with its last receiver, as in the service.
                all.remove(group);
            }
        }
    }
}

#[derive(Default)]
pub(super) struct GroupOwners {
    pub(super) epoch: Option<i64>,
    pub(super) receivers: HashMap<u64, oneshot::Sender<Detach>>,
}

/// Why a receiver's link is ended by the emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Detach {
    /// A receiver with an equal or higher owner level took the partition
    /// (`amqp:link:stolen`).
    Stolen(String),
    /// Ended on request ([`crate::Emulator::detach_receivers`]), as the service ends links
    /// when it moves a partition between its nodes or after a link was idle
    /// (`amqp:link:detach-forced`). Clients reattach.
    Forced(String),
}

/// A receiver's registration on a partition; dropping it deregisters the receiver.
pub(crate) struct Claim {
    pub(super) partition: Arc<Partition>,
    pub(super) group: String,
    pub(super) link_id: u64,
    /// Fires when the link must end: a receiver with a higher owner level took over, or a
    /// test forced the detach.
    pub(crate) ended: oneshot::Receiver<Detach>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.partition.release(&self.group, self.link_id);
    }
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::types::messaging::{AmqpValue, Body, Message};
    use fe2o3_amqp::types::primitives::Value;

    use super::*;

    fn incoming(text: &str) -> Incoming {
        Incoming {
            message: Message::builder()
                .body(Body::Value(AmqpValue(Value::String(text.into()))))
                .build(),
            size: text.len(),
            partition_key: None,
        }
    }

    fn body(event: &Event) -> String {
        match &event.message.body {
            Body::Value(AmqpValue(Value::String(s))) => s.clone(),
            other => panic!("unexpected body {other:?}"),
        }
    }

    #[test]
    fn the_data_file_stays_within_twice_the_retention_and_reloads_the_retained_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let partition = Partition::open(0, 10, Some(path.clone())).unwrap();
        let mut largest = 0;
        for batch in 0..50 {
            partition
                .append(
                    (0..7)
                        .map(|i| incoming(&format!("e{}", batch * 7 + i)))
                        .collect(),
                )
                .unwrap();
            largest = largest.max(std::fs::metadata(&path).unwrap().len());
        }
        let records = partition.lock().log.as_ref().unwrap().records;
        assert!(records < 2 * 10 + 7, "{records} records in the file");
        // No record here is larger than one with the longest body.
        let sample = dir.path().join("sample.log");
        Partition::open(1, 10, Some(sample.clone()))
            .unwrap()
            .append(vec![incoming("e999")])
            .unwrap();
        let one_record = std::fs::metadata(&sample).unwrap().len();
        assert!(
            largest <= (2 * 10 + 7) as u64 * one_record,
            "the file grew to {largest} bytes ({one_record} per record) for 10 retained events"
        );
        drop(partition);

        // A restart sees the retained events, numbered as before, and appends after them.
        let reopened = Partition::open(0, 10, Some(path.clone())).unwrap();
        let kept = reopened.read(0, 100);
        let bodies: Vec<String> = kept.iter().map(|e| body(e)).collect();
        let want: Vec<String> = (340..350).map(|i| format!("e{i}")).collect();
        assert_eq!(bodies, want);
        assert_eq!(kept[0].sequence, 340);
        reopened.append(vec![incoming("after")]).unwrap();
        assert_eq!(reopened.info().last_sequence, 350);
    }

    #[test]
    fn a_forced_detach_ends_every_receiver_of_every_group_and_a_new_one_can_claim() {
        let partition = Arc::new(Partition::open(3, 10, None).unwrap());
        let mut epoch = partition.claim("a", Some(5), 1).unwrap();
        let mut plain = partition.claim("b", None, 2).unwrap();
        assert_eq!(partition.force_detach("moved"), 2);
        assert_eq!(
            epoch.ended.try_recv().unwrap(),
            Detach::Forced("moved".into())
        );
        assert_eq!(
            plain.ended.try_recv().unwrap(),
            Detach::Forced("moved".into())
        );
        assert_eq!(partition.force_detach("again"), 0, "each is told once");
        // The client's reattach, while its old link is still going away.
        let mut back = partition.claim("a", Some(5), 3).unwrap();
        drop(epoch);
        assert!(back.ended.try_recv().is_err(), "the reattached link stays");
        // A higher owner level still steals, with its own condition.
        let _higher = partition.claim("a", Some(6), 4).unwrap();
        assert!(matches!(back.ended.try_recv(), Ok(Detach::Stolen(_))));
    }

    #[test]
    fn a_file_written_with_a_larger_retention_is_compacted_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let partition = Partition::open(0, 1000, Some(path.clone())).unwrap();
        partition
            .append((0..100).map(|i| incoming(&format!("e{i}"))).collect())
            .unwrap();
        drop(partition);
        let before = std::fs::metadata(&path).unwrap().len();
        let reopened = Partition::open(0, 5, Some(path.clone())).unwrap();
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after * 10 < before, "{before} -> {after} bytes");
        assert_eq!(reopened.read(0, 100).len(), 5);
        assert_eq!(reopened.info().begin_sequence, 95);
    }
}
