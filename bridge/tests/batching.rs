//! How a route cuts batches: linger bounds how long the first event of a batch waits (a steady
//! trickle must not hold a batch open until it is full), while a backlog still fills batches
//! to `max_events`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::intercept::Intercepting;
use tributary::{Consumer, Delivery, Event, Producer, Receipt, Result};
use tributary_bridge::route::{self, CancellationToken, RouteSpec, RouteStats};

// The waits of this file poll every 200 µs instead of going through `common::wait_until`
// (every 10 ms): what they read (the first batch's size, the moment the route has taken a
// group) must be seen before the route moves on, and a 10 ms look would see later batches.
// Each still has its deadline and says what it saw.

/// The size of the first batch the route writes: `replicated` grows by whole batches. (With a
/// backlog the route writes one batch while it collects the next, so this can read two.)
async fn first_batch(stats: &RouteStats) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let replicated = stats.replicated.load(Ordering::Relaxed);
        if replicated > 0 {
            return replicated;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing replicated in 30 s"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// A producer that records the size of every batch sent through it.
struct RecordingProducer {
    inner: Box<dyn Producer>,
    sizes: Arc<Mutex<Vec<usize>>>,
}

#[async_trait::async_trait]
impl Producer for RecordingProducer {
    async fn send(&self, event: Event) -> Result<Receipt> {
        self.sizes.lock().unwrap().push(1);
        self.inner.send(event).await
    }
    async fn send_batch(&self, events: Vec<Event>) -> Result<Vec<Receipt>> {
        self.sizes.lock().unwrap().push(events.len());
        self.inner.send_batch(events).await
    }
    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_is_written_after_linger_not_when_the_batch_is_full() {
    let source = tributary::connect("memory://batching-trickle")
        .await
        .unwrap();
    let sink = tributary::connect("memory://batching-trickle-sink")
        .await
        .unwrap();
    let mut spec = RouteSpec::new("trickle", source.clone(), "in", sink, "out");
    spec.max_batch = 1000;
    spec.linger = Duration::from_millis(20);
    let stats = Arc::new(RouteStats::default());
    let cancel = CancellationToken::default();
    let task = tokio::spawn(route::run_route(spec, stats.clone(), cancel.clone()));

    // One event every 2 ms: always less than linger apart, so a linger measured from the last
    // event would never end the batch before its 1000th event (2 s).
    let producer = source.producer("in").await.unwrap();
    let trickle = tokio::spawn(async move {
        for i in 0..1500 {
            producer.send(Event::new(format!("e{i}"))).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let first = first_batch(&stats).await;
    println!("trickle: first batch {first} events (max 1000, linger 20 ms, an event every 2 ms)");
    assert!(
        first < 500,
        "the first batch waited for {first} events: linger did not bound it"
    );
    trickle.abort();
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_fills_batches_even_with_no_linger() {
    let source = tributary::connect("memory://batching-backlog")
        .await
        .unwrap();
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let recorded = sizes.clone();
    let sink = Intercepting::new(
        tributary::connect("memory://batching-backlog-sink")
            .await
            .unwrap(),
    )
    .wrap_producer(move |inner| {
        Box::new(RecordingProducer {
            inner,
            sizes: recorded.clone(),
        })
    })
    .into_backend();
    let events: Vec<Event> = (0..5000).map(|i| Event::new(format!("e{i}"))).collect();
    source
        .producer("in")
        .await
        .unwrap()
        .send_batch(events)
        .await
        .unwrap();
    let mut spec = RouteSpec::new("backlog", source, "in", sink, "out");
    spec.max_batch = 1000;
    spec.linger = Duration::ZERO;
    let stats = Arc::new(RouteStats::default());
    let cancel = CancellationToken::default();
    let task = tokio::spawn(route::run_route(spec, stats.clone(), cancel.clone()));
    first_batch(&stats).await;
    let first = sizes.lock().unwrap()[0];
    println!("backlog: first batch {first} events (max 1000, linger 0)");
    assert_eq!(first, 1000, "events already waiting join the batch");
    cancel.cancel();
    task.await.unwrap().unwrap();
}

/// A producer whose first batch is confirmed only when the test says so: a sink busy with a
/// write for as long as the test needs.
struct HeldProducer {
    inner: Box<dyn Producer>,
    sizes: Arc<Mutex<Vec<usize>>>,
    release: Arc<tokio::sync::Semaphore>,
}

#[async_trait::async_trait]
impl Producer for HeldProducer {
    async fn send(&self, event: Event) -> Result<Receipt> {
        Ok(self.send_batch(vec![event]).await?.remove(0))
    }
    async fn send_batch(&self, events: Vec<Event>) -> Result<Vec<Receipt>> {
        let first = {
            let mut sizes = self.sizes.lock().unwrap();
            sizes.push(events.len());
            sizes.len() == 1
        };
        if first {
            self.release.acquire().await.unwrap().forget();
        }
        self.inner.send_batch(events).await
    }
    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

/// A consumer that counts the deliveries it hands out: how the test knows what the route has
/// taken from the source.
struct CountingConsumer {
    inner: Box<dyn Consumer>,
    taken: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Consumer for CountingConsumer {
    async fn receive(&self) -> Result<Delivery> {
        let d = self.inner.receive().await?;
        self.taken.fetch_add(1, Ordering::Relaxed);
        Ok(d)
    }
    async fn receive_batch(&self, max: usize, linger: Duration) -> Result<Vec<Delivery>> {
        let batch = self.inner.receive_batch(max, linger).await?;
        self.taken.fetch_add(batch.len(), Ordering::Relaxed);
        Ok(batch)
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
    async fn commit(&self) -> Result<()> {
        self.inner.commit().await
    }
    fn lag(&self) -> Option<u64> {
        self.inner.lag()
    }
}

/// Waits (up to 30 s) until `taken` reaches `n`.
async fn taken_at_least(taken: &AtomicUsize, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while taken.load(Ordering::Relaxed) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the route took {} events from the source in 30 s, expected {n}",
            taken.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Waits (up to 30 s) until the sink was handed `n` batches.
async fn batches_sent(sizes: &Mutex<Vec<usize>>, n: usize) -> Vec<usize> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = sizes.lock().unwrap().clone();
        if seen.len() >= n {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sink got {seen:?} in 30 s, expected {n} batches"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// The route's default: a batch started while the sink is idle goes at once, and everything
/// that arrives while a write is in flight, however spread out, goes in the next batch the
/// moment the sink confirms (no linger cutting it into pieces).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_arrives_while_the_sink_is_busy_goes_in_one_batch_when_it_confirms() {
    let source = tributary::connect("memory://batching-busy").await.unwrap();
    let taken = Arc::new(AtomicUsize::new(0));
    let counted = taken.clone();
    let watched_source = Intercepting::new(source.clone())
        .wrap_consumer(move |inner| {
            Box::new(CountingConsumer {
                inner,
                taken: counted.clone(),
            })
        })
        .into_backend();
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (recorded, held) = (sizes.clone(), release.clone());
    let sink = Intercepting::new(
        tributary::connect("memory://batching-busy-sink")
            .await
            .unwrap(),
    )
    .wrap_producer(move |inner| {
        Box::new(HeldProducer {
            inner,
            sizes: recorded.clone(),
            release: held.clone(),
        })
    })
    .into_backend();
    let spec = RouteSpec::new("busy", watched_source, "in", sink, "out");
    let stats = Arc::new(RouteStats::default());
    let cancel = CancellationToken::default();
    let task = tokio::spawn(route::run_route(spec, stats.clone(), cancel.clone()));

    let producer = source.producer("in").await.unwrap();
    producer.send(Event::new("first")).await.unwrap();
    assert_eq!(
        batches_sent(&sizes, 1).await,
        [1],
        "the first event goes alone"
    );
    // While that write is held: two groups of events, further apart than any linger.
    let group = |tag: &str| (0..5).map(|i| Event::new(format!("{tag}{i}"))).collect();
    producer.send_batch(group("a")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    producer.send_batch(group("b")).await.unwrap();
    // The write is confirmed once the route holds both groups (with a 5 ms linger, the old
    // route stopped taking after the first group, and this wait failed).
    taken_at_least(&taken, 11).await;
    release.add_permits(1);
    let sent = batches_sent(&sizes, 2).await;
    println!("busy sink: batches {sent:?}");
    assert_eq!(
        sent[1], 10,
        "what arrived during the write went in pieces: {sent:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stats.replicated.load(Ordering::Relaxed) < 11 {
        assert!(tokio::time::Instant::now() < deadline, "not all replicated");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
}
