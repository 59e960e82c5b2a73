//! A source whose commits never get an answer (a coordinator that is away, say) must not stall
//! replication or shutdown: the route waits for a commit only so long, then goes on with a
//! warning, and stops within its deadline.
//!
//! The fault is injected around the memory backend: no real server can be told to leave one
//! commit unanswered while serving everything else.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::intercept::Intercepting;
use tributary::{Consumer, Delivery, Event, Result};
use tributary_bridge::route::{self, CancellationToken, RouteSpec, RouteStats};

/// A consumer whose `commit()` never returns.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_never_returns_stalls_neither_replication_nor_shutdown() {
    let memory = tributary::connect("memory://slow-commit").await.unwrap();
    let commits_started = Arc::new(AtomicU64::new(0));
    let started = commits_started.clone();
    let source = Intercepting::new(memory.clone())
        .wrap_consumer(move |inner| {
            Box::new(HangingConsumer {
                inner,
                commits_started: started.clone(),
            })
        })
        .into_backend();
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
    let cancel = CancellationToken::default();
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
