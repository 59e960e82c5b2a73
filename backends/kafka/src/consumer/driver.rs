//! The driver thread: one per consumer, because librdkafka blocks and runs rebalance
//! callbacks inside `poll`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::types::RDKafkaRespErr;
use tributary::Error;

use super::commit::{Committer, commit_acked, same_error};
use super::member::StaticMember;
use super::rebalance::Context;
use super::state::{Pending, Shared};
use super::{CloseReply, Message, Reply};
use crate::error::map;
use crate::fetched::{Arena, Fetched};

/// How often the driver reads the partitions' ends from librdkafka's cache, for `lag()`.
const ENDS_EVERY: Duration = Duration::from_millis(100);

/// The most messages one round moves from librdkafka into the ready queue.
const ROUND: usize = 512;

/// The thread that drives one librdkafka consumer: polls, serves rebalances, fills the ready
/// queue, hands commits to the committer, and closes.
pub(super) struct Driver {
    pub(super) consumer: Arc<BaseConsumer<Context>>,
    /// `None` once the driver has stopped it, at close.
    pub(super) committer: Option<Committer>,
    pub(super) shared: Arc<Shared>,
    /// How far the driver reads ahead of the application, in events and bytes.
    pub(super) max_ready: usize,
    pub(super) max_ready_bytes: usize,
    pub(super) paused: bool,
    /// Reused buffer for one round of fetched messages.
    pub(super) batch: Vec<Pending>,
    /// Where fetched messages are copied to.
    pub(super) arena: Arena,
    pub(super) commit_interval: Duration,
    pub(super) group: String,
    /// Commands from the consumer (commit, close).
    pub(super) inbox: std::sync::mpsc::Receiver<Message>,
    /// When the partitions' ends were last read from librdkafka's cache.
    pub(super) ends_refreshed: Instant,
    /// The static member id this consumer holds, released when the driver (and with it the
    /// librdkafka consumer) is gone.
    pub(super) _member: Option<StaticMember>,
}

impl Driver {
    /// Reads the commands waiting in the inbox: a close request (if any) and commits to make.
    fn read_inbox(&self) -> (Option<CloseReply>, Vec<Reply>) {
        let mut close = None;
        let mut commits = Vec::new();
        while let Ok(message) = self.inbox.try_recv() {
            match message {
                Message::Close(reply) => close = Some(reply),
                Message::Commit(reply) => commits.push(reply),
            }
        }
        (close, commits)
    }

    pub(super) fn run(mut self) {
        let mut last_commit = Instant::now();
        let (reply, mut late_commits) = loop {
            // Cleared before the inbox is read, so a command sent after this point is seen.
            self.shared.state.lock().command_waiting = false;
            let (close, commits) = self.read_inbox();
            if let Some(reply) = close {
                break (reply, commits);
            }
            if !commits.is_empty() {
                self.request_commit(commits);
            }
            let fetched = self.fetch();
            if fetched > 0 {
                self.shared.wake.notify_waiters();
            }
            self.refresh_ends();
            if last_commit.elapsed() >= self.commit_interval {
                // A failure is retried at the next tick.
                self.request_commit(Vec::new());
                last_commit = Instant::now();
            }
        };
        late_commits.extend(self.read_inbox().1);
        if let Some(committer) = self.committer.take() {
            // Requests already queued are still served; then the thread ends.
            drop(committer.jobs);
            let _ = committer.thread.join();
        }
        let last = commit_acked(&self.consumer, &self.shared);
        if let Err(e) = &last {
            tracing::warn!(error = %e, "kafka: final commit failed; the next member re-reads from the last commit");
        }
        {
            let mut state = self.shared.state.lock();
            // Commits asked for during the close are answered by the final one.
            for reply in late_commits {
                let _ = reply.send(match &last {
                    Ok(()) => Ok(()),
                    Err(e) => Err(same_error(e)),
                });
            }
            // Events never handed out go back to Kafka: the next owner reads them again.
            state.ready.clear();
            state.ready_bytes = 0;
            state.redeliveries.clear();
            state.stopped = true;
        }
        self.shared.wake.notify_waiters();
        // Leaves the group (the revoke callback commits once more) before answering. The
        // committer thread has ended, so this is the last reference and the close happens here.
        drop(self.consumer);
        if let Some(reply) = reply {
            let _ = reply.send(Ok(()));
        }
    }

    /// Moves fetched messages into the ready queue while it has room; returns how many.
    ///
    /// Backpressure without losing prefetched data: while the ready queue is full the driver
    /// stops draining librdkafka, whose own queue then fills to `queued.max.messages.kbytes`
    /// and stops fetching. It still polls every 100 ms, because rebalances and the group's
    /// liveness check happen inside `poll`; each such poll may bring one more message, so
    /// should the application stall for long, the partitions are paused outright (pausing
    /// discards librdkafka's prefetch, which is why it is not the normal path).
    ///
    /// A round takes no more than the queue has room for. It once took up to 512 whatever the
    /// room, so a queue bounded below that (a small `max_in_flight`) overflowed on every round
    /// and paused its partitions: each pause threw away librdkafka's prefetch (tens of
    /// thousands of events), and the resumed fetch started only at the broker thread's next
    /// wake-up, up to a second later. A bridge route with `in_flight` 200 copied ~1,000
    /// events/s that way (issue 22's in-flight cliff).
    fn fetch(&mut self) -> usize {
        let (count, bytes, changed) = {
            let mut state = self.shared.state.lock();
            (
                state.ready.len(),
                state.ready_bytes,
                std::mem::take(&mut state.assignment_changed),
            )
        };
        let full = count >= self.max_ready || bytes >= self.max_ready_bytes;
        let overfull = count >= 2 * self.max_ready || bytes >= 2 * self.max_ready_bytes;
        if (overfull != self.paused || (changed && self.paused))
            && let Ok(assignment) = self.consumer.assignment()
        {
            let result = if overfull {
                self.consumer.pause(&assignment)
            } else {
                self.consumer.resume(&assignment)
            };
            match result {
                Ok(()) => {
                    if overfull && !self.paused {
                        self.shared.state.lock().pauses += 1;
                        tracing::debug!(
                            group = %self.group,
                            ready = count,
                            "kafka: the application stopped taking events; partitions paused"
                        );
                    }
                    self.paused = overfull;
                }
                Err(e) => tracing::warn!(error = %e, "kafka: pause/resume failed"),
            }
        }
        let (budget, byte_budget, mut wait) = if full {
            // Wait for the application to make room (or 100 ms, to keep serving rebalances),
            // then take at most one message.
            let mut state = self.shared.state.lock();
            if state.ready.len() > state.low_water && !state.command_waiting {
                self.shared
                    .room
                    .wait_for(&mut state, Duration::from_millis(100));
            }
            (1, usize::MAX, Duration::ZERO)
        } else {
            (
                (self.max_ready - count).min(ROUND),
                self.max_ready_bytes - bytes,
                Duration::from_millis(20),
            )
        };
        let mut batch = std::mem::take(&mut self.batch);
        let mut batch_bytes = 0;
        while batch.len() < budget && batch_bytes < byte_budget {
            match self.consumer.poll(wait) {
                Some(Ok(message)) => {
                    let fetched = Fetched::copy(&message, &mut self.arena);
                    batch_bytes += fetched.size();
                    batch.push(Pending::new(message.partition(), message.offset(), fetched));
                    // Take what is already buffered in one go; wait only for the first.
                    wait = Duration::ZERO;
                }
                Some(Err(error)) => {
                    self.poll_error(error);
                    break;
                }
                None => break,
            }
        }
        let fetched = batch.len();
        if fetched > 0 {
            self.shared.state.lock().enqueue(&mut batch);
        }
        self.batch = batch;
        fetched
    }

    /// Reads each assigned partition's high watermark from librdkafka's cache (what the last
    /// fetch response said; no request to the broker), so `lag()` follows new events even
    /// while the application is not receiving. At most every [`ENDS_EVERY`].
    fn refresh_ends(&mut self) {
        if self.ends_refreshed.elapsed() < ENDS_EVERY {
            return;
        }
        self.ends_refreshed = Instant::now();
        let (topic, partitions): (String, Vec<i32>) = {
            let state = self.shared.state.lock();
            (
                state.topic.clone(),
                state.partitions.keys().copied().collect(),
            )
        };
        let Ok(c_topic) = std::ffi::CString::new(topic) else {
            return;
        };
        let highs: Vec<(i32, i64)> = partitions
            .into_iter()
            .filter_map(|partition| {
                let (mut low, mut high) = (-1i64, -1i64);
                // SAFETY: the client outlives this call (the driver holds it), the topic is a
                // valid C string, and the two out-pointers are valid for writes.
                let err = unsafe {
                    rdkafka::bindings::rd_kafka_get_watermark_offsets(
                        self.consumer.client().native_ptr(),
                        c_topic.as_ptr(),
                        partition,
                        &mut low,
                        &mut high,
                    )
                };
                (err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
                    .then_some((partition, high))
            })
            .collect();
        let mut state = self.shared.state.lock();
        for (partition, high) in highs {
            if let Some(p) = state.partitions.get_mut(&partition) {
                p.end = Some(p.end.map_or(high, |end| end.max(high)));
            }
        }
    }

    fn poll_error(&mut self, error: KafkaError) {
        let mut state = self.shared.state.lock();
        // librdkafka marks errors it cannot recover from as fatal (rdkafka reports them as
        // `MessageConsumptionFatal` with the underlying code, such as a fenced static member).
        let fatal = matches!(error, KafkaError::MessageConsumptionFatal(_))
            || matches!(
                error.rdkafka_error_code(),
                Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::Fatal)
            );
        if fatal {
            let topic = state.topic.clone();
            let fenced = error.rdkafka_error_code() == Some(RDKafkaErrorCode::FencedInstanceId)
                || matches!(
                    self.consumer.client().fatal_error(),
                    Some((RDKafkaErrorCode::FencedInstanceId, _))
                );
            state.failure = Some(if fenced {
                Error::config(format!(
                    "another live consumer of `{topic}` joined group `{}` with this process's group.instance.id (option `instance_id`): give every process its own",
                    self.group
                ))
            } else {
                map(
                    error,
                    &format!("consume `{topic}` in group `{}`", self.group),
                )
            });
            drop(state);
            self.shared.wake.notify_waiters();
        } else {
            // librdkafka reconnects by itself; the application keeps waiting.
            tracing::warn!(topic = %state.topic, error = %error, "kafka: transient consumer error");
        }
    }

    /// Hands a commit to the committer thread: `replies` are answered once it is confirmed.
    /// An empty `replies` is a periodic commit, skipped while the previous one is pending.
    fn request_commit(&self, replies: Vec<Reply>) {
        let Some(committer) = &self.committer else {
            return;
        };
        if replies.is_empty() && committer.periodic_queued.swap(true, Ordering::AcqRel) {
            return;
        }
        // The thread only stops when `jobs` is dropped, at close.
        let _ = committer.jobs.send(replies);
    }
}
