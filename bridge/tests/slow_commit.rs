//! A source whose commits never get an answer (a coordinator that is away, say) must not stall
//! replication or shutdown: the route waits for a commit only so long, then goes on with a
//! warning, and stops within its deadline.
//!
//! The fault is injected around the memory backend: no real server can be told to leave one
//! commit unanswered while serving everything else.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tributary::{
    Backend, Capabilities, Consumer, ConsumerOptions, Delivery, Event, Producer, Result,
    StreamInfo, StreamSpec,
};
use tributary_bridge::route::{self, RouteSpec, RouteStats, tokio_util_free::CancelToken};

/// The memory backend, except that `commit()` on its consumers never returns.
#[derive(Debug)]
struct UnansweredCommits {
    inner: Arc<dyn Backend>,
    commits_started: Arc<AtomicU64>,
}

struct HangingConsumer {
    inner: Box<dyn Consumer>,
    commits_started: Arc<AtomicU64>,
}

#[async_trait]
impl Consumer for HangingConsumer {
    async fn receive(&self) -> Result<Delivery> {
        self.inner.receive().await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
    async fn commit(&self) -> Result<()> {
        self.commits_started.fetch_add(1, Ordering::Relaxed);
        std::future::pending().await
    }
    fn lag(&self) -> Option<u64> {
        self.inner.lag()
    }
}

#[async_trait]
impl Backend for UnansweredCommits {
    fn scheme(&self) -> &'static str {
        self.inner.scheme()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn producer(&self, stream: &str) -> Result<Box<dyn Producer>> {
        self.inner.producer(stream).await
    }
    async fn consumer(&self, stream: &str, options: ConsumerOptions) -> Result<Box<dyn Consumer>> {
        Ok(Box::new(HangingConsumer {
            inner: self.inner.consumer(stream, options).await?,
            commits_started: self.commits_started.clone(),
        }))
    }
    async fn create_stream(&self, stream: &str, spec: StreamSpec) -> Result<()> {
        self.inner.create_stream(stream, spec).await
    }
    async fn delete_stream(&self, stream: &str) -> Result<()> {
        self.inner.delete_stream(stream).await
    }
    async fn list_streams(&self) -> Result<Vec<String>> {
        self.inner.list_streams().await
    }
    async fn describe_stream(&self, stream: &str) -> Result<StreamInfo> {
        self.inner.describe_stream(stream).await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_never_returns_stalls_neither_replication_nor_shutdown() {
    let memory = tributary::connect("memory://slow-commit").await.unwrap();
    let commits_started = Arc::new(AtomicU64::new(0));
    let source: Arc<dyn Backend> = Arc::new(UnansweredCommits {
        inner: memory.clone(),
        commits_started: commits_started.clone(),
    });
    let total = 3000u64;
    let events: Vec<Event> = (0..total).map(|i| Event::new(format!("e{i}"))).collect();
    memory
        .producer("in")
        .await
        .unwrap()
        .send_batch(events)
        .await
        .unwrap();
    let mut spec = RouteSpec::new("slow-commit", source, "in", memory.clone(), "out");
    spec.max_batch = 100;
    let stats = Arc::new(RouteStats::default());
    let cancel = CancelToken::default();
    let task = tokio::spawn(route::run_route(spec, stats.clone(), cancel.clone()));

    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(60), async {
        while stats.replicated.load(Ordering::Relaxed) < total {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "replication stalled at {} of {total} behind an unanswered commit",
            stats.replicated.load(Ordering::Relaxed)
        )
    });
    let replicated_in = started.elapsed();

    let stopping = std::time::Instant::now();
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the route stops although its last commit never returns")
        .unwrap()
        .unwrap();
    println!(
        "unanswered commits: {total} events replicated in {:.1} s with {} commit(s) started (one at a time), stopped in {:.1} s",
        replicated_in.as_secs_f64(),
        commits_started.load(Ordering::Relaxed),
        stopping.elapsed().as_secs_f64()
    );
    // One commit is outstanding at a time: the hung one is never stacked on.
    assert_eq!(commits_started.load(Ordering::Relaxed), 1);
}
