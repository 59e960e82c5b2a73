//! The engine's cheap paths kept honest: handles that share one acknowledger, wake-ups sent
//! only while a member is receiving (a lost wake-up would strand a waiting consumer), and
//! acked events freed on the reader's side. Every wait has a deadline.

use crate::backend::{AckToken, SharedAcknowledge};
use crate::{AckHandle, Consumer, ConsumerOptions, Event, Outcome, StartPosition};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Recorder(Mutex<Vec<(AckToken, Outcome)>>);

impl SharedAcknowledge for Recorder {
    fn settle_delivery(&self, token: AckToken, outcome: Outcome) {
        self.0.lock().unwrap().push((token, outcome));
    }
}

#[test]
fn shared_handles_settle_once_and_a_dropped_one_nacks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<AckHandle>();
    let target = Arc::new(Recorder::default());
    AckHandle::shared(target.clone(), AckToken([1, 2, 3])).ack();
    drop(AckHandle::shared(target.clone(), AckToken([4, 5, 6])));
    AckHandle::shared(target.clone(), AckToken([7, 8, 9])).settle(Outcome::Nack);
    assert_eq!(
        *target.0.lock().unwrap(),
        vec![
            (AckToken([1, 2, 3]), Outcome::Ack),
            (AckToken([4, 5, 6]), Outcome::Nack),
            (AckToken([7, 8, 9]), Outcome::Nack),
        ]
    );
}

/// A consumer waiting on an empty group is woken by each send, many times over, from another
/// thread: the send lands while the member is counted as receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_member_is_woken_by_every_send() {
    let backend = crate::connect("memory://?partitions=4").await.unwrap();
    let producer = backend.producer("wake").await.unwrap();
    let consumer: Arc<dyn Consumer> = Arc::from(
        backend
            .consumer(
                "wake",
                ConsumerOptions::new("g").start(StartPosition::Earliest),
            )
            .await
            .unwrap(),
    );
    const ROUNDS: usize = 300;
    let (acked, mut acks) = tokio::sync::mpsc::channel(1);
    let receiver = tokio::spawn({
        let consumer = consumer.clone();
        async move {
            for i in 0..ROUNDS {
                let batch = timeout(DEADLINE, consumer.receive_batch(10, Duration::ZERO))
                    .await
                    .unwrap_or_else(|_| panic!("round {i}: no wake-up within the deadline"))
                    .unwrap();
                assert_eq!(batch.len(), 1, "round {i}");
                assert_eq!(batch[0].event.payload, format!("{i}").into_bytes());
                for d in batch {
                    d.ack();
                }
                acked.send(i).await.unwrap();
            }
        }
    });
    for i in 0..ROUNDS {
        producer
            .send(Event::new(format!("{i}")).with_key("k"))
            .await
            .unwrap();
        // One event at a time: the next goes once this one is acked, so it lands while the
        // consumer is on its way back into `receive_batch` or already waiting there.
        let round = timeout(DEADLINE, acks.recv())
            .await
            .expect("the consumer keeps up");
        assert_eq!(round, Some(i));
    }
    timeout(DEADLINE, receiver).await.unwrap().unwrap();
    consumer.close().await.unwrap();
}

/// A member at its in-flight limit waits in `receive`; an ack or a nack from another task
/// must wake it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_wakes_a_member_waiting_at_its_in_flight_limit() {
    let backend = crate::connect("memory://?partitions=1").await.unwrap();
    let producer = backend.producer("limit").await.unwrap();
    for i in 0..3 {
        producer.send(Event::new(format!("{i}"))).await.unwrap();
    }
    let consumer: Arc<dyn Consumer> = Arc::from(
        backend
            .consumer(
                "limit",
                ConsumerOptions::new("g")
                    .start(StartPosition::Earliest)
                    .max_in_flight(1),
            )
            .await
            .unwrap(),
    );
    let first = timeout(DEADLINE, consumer.receive())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.event.payload.as_ref(), b"0");
    let mut waiting = tokio::spawn({
        let consumer = consumer.clone();
        async move { consumer.receive().await }
    });
    // The limit holds it back: the settle below must be what wakes it, not a race it won.
    blocked_at_the_limit(&consumer, &mut waiting).await;
    first.nack();
    let again = timeout(DEADLINE, waiting).await.unwrap().unwrap().unwrap();
    assert_eq!(
        (again.event.payload.as_ref(), again.attempt),
        (&b"0"[..], Some(2))
    );
    let mut waiting = tokio::spawn({
        let consumer = consumer.clone();
        async move { consumer.receive().await }
    });
    blocked_at_the_limit(&consumer, &mut waiting).await;
    again.ack();
    let next = timeout(DEADLINE, waiting).await.unwrap().unwrap().unwrap();
    assert_eq!(next.event.payload.as_ref(), b"1");
    next.ack();
    consumer.close().await.unwrap();
}

/// Asserts that `waiting` (a `receive` past the in-flight limit) is still waiting after a
/// while, with nothing ready to `try_receive` either.
async fn blocked_at_the_limit(
    consumer: &Arc<dyn Consumer>,
    waiting: &mut tokio::task::JoinHandle<crate::Result<crate::Delivery>>,
) {
    assert!(
        timeout(Duration::from_millis(200), &mut *waiting)
            .await
            .is_err(),
        "a receive past the in-flight limit returned before a settle"
    );
    assert!(
        consumer.try_receive().is_none(),
        "a delivery past the in-flight limit"
    );
}

/// `try_receive` answers without waiting: nothing while the group has nothing ready, the
/// delivery (through the backend's wrapper) once one is, in order and with its attempt, and
/// the closed error once the consumer is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_receive_takes_only_what_is_ready() {
    let backend = crate::connect("memory://?partitions=1").await.unwrap();
    let producer = backend.producer("ready").await.unwrap();
    let consumer = backend
        .consumer(
            "ready",
            ConsumerOptions::new("g").start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    assert!(consumer.try_receive().is_none(), "nothing was sent");
    for i in 0..2 {
        producer.send(Event::new(format!("{i}"))).await.unwrap();
    }
    // The reader task moves the events into the group's buffer: poll until they are there.
    let first = timeout(DEADLINE, async {
        loop {
            if let Some(ready) = consumer.try_receive() {
                break ready;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the event reaches the group")
    .unwrap();
    assert_eq!(
        (first.event.payload.as_ref(), first.attempt),
        (&b"0"[..], Some(1))
    );
    first.nack();
    let again = consumer
        .try_receive()
        .expect("a nack is ready at once")
        .unwrap();
    assert_eq!(
        (again.event.payload.as_ref(), again.attempt),
        (&b"0"[..], Some(2))
    );
    again.ack();
    let next = timeout(DEADLINE, consumer.receive())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.event.payload.as_ref(), b"1");
    next.ack();
    assert!(consumer.try_receive().is_none(), "everything was taken");
    consumer.close().await.unwrap();
    let closed = consumer.try_receive().expect("closed answers at once");
    assert_eq!(closed.unwrap_err().kind(), crate::ErrorKind::Closed);
}

/// A payload that records which thread frees it.
struct Tracked(Arc<Mutex<Vec<std::thread::ThreadId>>>);

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        b"tracked"
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.lock().unwrap().push(std::thread::current().id());
    }
}

/// One partition whose reader hands over what the test sends it, when it sends it.
struct Feed(Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Vec<Event>>>>);

#[async_trait::async_trait]
impl super::PartitionSource for Feed {
    async fn partitions(&self) -> crate::Result<Vec<crate::backend::PartitionTopology>> {
        Ok(vec![crate::backend::PartitionTopology {
            id: crate::PartitionId::from(0),
            parents: Vec::new(),
        }])
    }
    async fn resolve_start(
        &self,
        _: &crate::PartitionId,
        _: &StartPosition,
    ) -> crate::Result<crate::backend::Checkpoint> {
        Ok(crate::backend::Checkpoint::Start(StartPosition::Earliest))
    }
    async fn open(
        &self,
        _: &crate::PartitionId,
        _: &crate::backend::Checkpoint,
    ) -> crate::Result<Box<dyn super::PartitionReader>> {
        let rx = self.0.lock().unwrap().take().expect("opened once");
        Ok(Box::new(FeedReader { rx, next: 0 }))
    }
}

struct FeedReader {
    rx: tokio::sync::mpsc::UnboundedReceiver<Vec<Event>>,
    next: u64,
}

#[async_trait::async_trait]
impl super::PartitionReader for FeedReader {
    async fn read(&mut self, _: usize) -> crate::Result<super::ReadBatch> {
        // Waits for the test: no read returns, so none drops what the engine holds, before
        // the test sends the next batch.
        let events = self.rx.recv().await.unwrap_or_default();
        let records = events
            .into_iter()
            .map(|event| {
                self.next += 1;
                super::SourceRecord {
                    event,
                    position: crate::Position::from_offset(self.next - 1),
                }
            })
            .collect();
        Ok(super::ReadBatch {
            records,
            ended: false,
        })
    }
    fn behind(&self) -> Option<u64> {
        None
    }
}

/// The engine's copy of an acked event is dropped by the partition's reader task on its next
/// read, not by the thread that acked it: a backend's reader side allocated the event, and the
/// application's drop of its own copy then only lowers reference counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_events_are_freed_on_the_reader_side() {
    let freed = Arc::new(Mutex::new(Vec::new()));
    let event = || Event::new(bytes::Bytes::from_owner(Tracked(freed.clone())));
    let (feed, rx) = tokio::sync::mpsc::unbounded_channel();
    let engine = super::GroupEngine::new(
        Arc::new(crate::backend::MemoryCheckpointStore::new()),
        super::GroupConfig::new(Duration::from_secs(5)).prefetch(16),
    );
    let consumer = engine
        .join(
            "s",
            Arc::new(Feed(Mutex::new(Some(rx)))),
            ConsumerOptions::new("g").start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    feed.send((0..10).map(|_| event()).collect()).unwrap();
    // The application: a thread of its own, acking and dropping each delivery.
    let runtime = tokio::runtime::Handle::current();
    let (consumer, app) = tokio::task::spawn_blocking(move || {
        for _ in 0..10 {
            let delivery = runtime
                .block_on(async { timeout(DEADLINE, consumer.receive()).await })
                .expect("the batch arrives")
                .unwrap();
            delivery.ack();
        }
        (consumer, std::thread::current().id())
    })
    .await
    .unwrap();
    assert!(
        freed.lock().unwrap().is_empty(),
        "the engine holds its copies until its reader reads again"
    );
    feed.send(vec![event()]).unwrap();
    timeout(DEADLINE, async {
        while freed.lock().unwrap().len() < 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the next read drops the acked events");
    assert!(
        freed.lock().unwrap().iter().all(|thread| *thread != app),
        "none freed on the application's thread"
    );
    timeout(DEADLINE, consumer.receive())
        .await
        .unwrap()
        .unwrap()
        .ack();
    consumer.close().await.unwrap();
}
