//! Delivery reports, gathered per batch.
//!
//! rdkafka's `FutureProducer` makes a oneshot channel and a box for every record, reads the
//! clock for every record, and wakes the sending task once per record: in the bridge's
//! profile that was two of the heap allocations per replicated event, a share of the
//! `clock_gettime` samples, and a task wake-up per event. Here a record's delivery opaque is
//! a plain number (its sequence number in this producer, no allocation); the reports of a
//! batch are filled into one table entry and the sender is woken once, when the last report
//! of its batch is in.
//!
//! One client serves every producer of a backend ([`crate::backend`]), so each batch also
//! names its producer's [`InFlight`]: what that producer's `flush` and `close` wait for,
//! instead of librdkafka's flush, which would wait for every stream's records.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use tokio::sync::{oneshot, watch};

/// One record's outcome: partition and offset, or librdkafka's error.
pub(crate) type Outcome = std::result::Result<(i32, i64), KafkaError>;

/// The outcomes of a batch, in the order its records were given.
pub(crate) type Outcomes = Vec<Option<Outcome>>;

/// The producer's context: the table of batches whose reports are still coming.
#[derive(Default)]
pub(crate) struct Reports {
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// Sequence number of the next record registered (wraps; see [`Batch::holds`]).
    next: usize,
    /// Oldest first. A producer has few batches in flight, so a linear search is cheap.
    batches: VecDeque<Batch>,
}

struct Batch {
    /// Sequence number of the first record.
    base: usize,
    /// The producer that sent it.
    owner: Arc<InFlight>,
    outcomes: Outcomes,
    /// Records whose outcome is not in yet.
    remaining: usize,
    done: Option<oneshot::Sender<Outcomes>>,
}

impl Batch {
    fn holds(&self, seq: usize) -> bool {
        // Wrapping: correct as long as fewer than `usize::MAX` records are in flight.
        seq.wrapping_sub(self.base) < self.outcomes.len()
    }
}

/// The batches of one producer whose reports are not all in, including those whose sender
/// gave up waiting (its future dropped): librdkafka still delivers their records.
pub(crate) struct InFlight {
    batches: watch::Sender<usize>,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            batches: watch::channel(0).0,
        }
    }
}

impl InFlight {
    /// Waits until none of this producer's batches are in flight; `Err` with how many still
    /// are when `timeout` passes first.
    pub(crate) async fn settled(&self, timeout: std::time::Duration) -> Result<(), usize> {
        let mut batches = self.batches.subscribe();
        match tokio::time::timeout(timeout, batches.wait_for(|n| *n == 0)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(*self.batches.borrow()),
        }
    }

    #[cfg(test)]
    fn count(&self) -> usize {
        *self.batches.borrow()
    }
}

impl Reports {
    /// Registers a batch of `len` records (`len` > 0) of the producer whose batches `owner`
    /// counts: the sequence number of its first record (record `i` is `base + i`), and where
    /// its outcomes arrive once all are in.
    pub(crate) fn register(
        &self,
        len: usize,
        owner: &Arc<InFlight>,
    ) -> (usize, oneshot::Receiver<Outcomes>) {
        let (done, outcomes) = oneshot::channel();
        owner.batches.send_modify(|n| *n += 1);
        let mut pending = self.pending.lock();
        let base = pending.next;
        pending.next = base.wrapping_add(len);
        pending.batches.push_back(Batch {
            base,
            owner: owner.clone(),
            outcomes: (0..len).map(|_| None).collect(),
            remaining: len,
            done: Some(done),
        });
        (base, outcomes)
    }

    /// Records the outcome of record `seq` (from its delivery report, or because it was never
    /// queued); the batch's outcomes go to its sender once the last one is in.
    pub(crate) fn settle(&self, seq: usize, outcome: Outcome) {
        let mut pending = self.pending.lock();
        let Some(index) = pending.batches.iter().position(|b| b.holds(seq)) else {
            return;
        };
        let batch = &mut pending.batches[index];
        let slot = &mut batch.outcomes[seq.wrapping_sub(batch.base)];
        if slot.is_some() {
            return;
        }
        *slot = Some(outcome);
        batch.remaining -= 1;
        if batch.remaining == 0
            && let Some(mut batch) = pending.batches.remove(index)
        {
            drop(pending);
            batch.owner.batches.send_modify(|n| *n -= 1);
            if let Some(done) = batch.done.take() {
                // The sender may have given up (its future dropped): nobody to tell.
                let _ = done.send(std::mem::take(&mut batch.outcomes));
            }
        }
    }
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let outcome = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((error, _)) => Err(error.clone()),
        };
        self.settle(seq, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;
    use std::time::Duration;

    #[test]
    fn outcomes_come_back_in_record_order_once_all_are_in() {
        let reports = Reports::default();
        let (one, other) = (Arc::new(InFlight::default()), Arc::new(InFlight::default()));
        let (a, mut first) = reports.register(3, &one);
        let (b, mut second) = reports.register(1, &other);
        assert_eq!((one.count(), other.count()), (1, 1));
        assert_eq!(b, a + 3);
        reports.settle(a + 2, Ok((1, 7)));
        reports.settle(a, Ok((0, 5)));
        reports.settle(b, Ok((2, 9)));
        assert!(
            first.try_recv().is_err(),
            "one record of the first batch is missing"
        );
        let second = second.try_recv().expect("the second batch is complete");
        assert_eq!(second.len(), 1);
        assert_eq!(
            (one.count(), other.count()),
            (1, 0),
            "each producer counts its own batches"
        );
        let error = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        reports.settle(a + 1, Err(error.clone()));
        reports.settle(a + 1, Ok((0, 6)));
        let first = first.try_recv().expect("the first batch is complete");
        assert!(matches!(first[0], Some(Ok((0, 5)))));
        assert!(
            matches!(&first[1], Some(Err(e)) if *e == error),
            "the first outcome stays"
        );
        assert!(matches!(first[2], Some(Ok((1, 7)))));
        assert!(reports.pending.lock().batches.is_empty());
        assert_eq!(one.count(), 0);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let reports = Reports::default();
        reports.pending.lock().next = usize::MAX - 1;
        let (base, mut done) = reports.register(4, &Arc::default());
        for i in [3, 0, 2, 1] {
            reports.settle(base.wrapping_add(i), Ok((0, i as i64)));
        }
        let outcomes = done.try_recv().expect("complete across the wrap");
        for (i, outcome) in outcomes.iter().enumerate() {
            assert!(matches!(outcome, Some(Ok((0, o))) if *o == i as i64));
        }
    }

    #[tokio::test]
    async fn settled_waits_for_batches_whose_sender_gave_up() {
        let reports = Reports::default();
        let owner = Arc::new(InFlight::default());
        assert_eq!(owner.settled(Duration::from_millis(50)).await, Ok(()));
        let (base, outcomes) = reports.register(2, &owner);
        drop(outcomes);
        reports.settle(base, Ok((0, 1)));
        assert_eq!(
            owner.settled(Duration::from_millis(50)).await,
            Err(1),
            "one batch still in flight"
        );
        let mut waiting = std::pin::pin!(owner.settled(Duration::from_secs(60)));
        assert!(
            futures::poll!(waiting.as_mut()).is_pending(),
            "waits while the batch is in flight"
        );
        reports.settle(base + 1, Ok((0, 2)));
        assert_eq!(waiting.await, Ok(()), "woken by the last report");
    }
}
