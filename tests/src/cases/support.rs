//! What the cases share: the per-run context, bounded receives, and exact comparisons.

use crate::Harness;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tributary::{
    Backend, Capabilities, Consumer, ConsumerExt, ConsumerOptions, Delivery, ErrorKind, Event,
    Producer, StartPosition, StreamSpec,
};

/// A case's result: a remark for the table, or what went wrong.
pub(crate) type CaseOutcome = Result<Option<String>, String>;

/// How long a case waits for events it expects (a deadline, never a sleep).
pub(crate) const WAIT: Duration = Duration::from_secs(30);
/// How long a case watches for events it does not expect.
pub(crate) const QUIET: Duration = Duration::from_millis(750);

/// What every case of one run shares: the harness, the backend (replaced by a restart), its
/// declared capabilities, and a source of unique stream and group names.
pub(crate) struct Ctx {
    pub harness: Harness,
    pub backend: Arc<dyn Backend>,
    pub caps: Capabilities,
    counter: AtomicU64,
    run_id: String,
}

impl Ctx {
    pub(crate) fn new(harness: Harness, backend: Arc<dyn Backend>) -> Self {
        let caps = backend.capabilities();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Ctx {
            harness,
            backend,
            caps,
            counter: AtomicU64::new(0),
            run_id: format!("{:x}{:x}", std::process::id(), nanos % 0xffff_ffff),
        }
    }

    /// A name no other case, run or process uses.
    pub(crate) fn name(&self, what: &str) -> String {
        format!(
            "conf-{what}-{}-{}",
            self.run_id,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Whether fresh streams can be had: from the harness's provisioning hook, or from the
    /// backend itself where it declares `admin`.
    pub(crate) fn can_make_streams(&self) -> bool {
        self.harness.provision.is_some() || self.caps.admin
    }

    /// A fresh, empty stream with `partitions` partitions. The harness's provisioning hook wins
    /// over the backend's own `create_stream`, so a harness can provision where its
    /// credentials may read and write but not administer.
    pub(crate) async fn stream(&self, what: &str, partitions: u32) -> Result<String, String> {
        let name = self.name(what);
        if let Some(provision) = &self.harness.provision {
            let request = crate::StreamRequest { name, partitions };
            return provision(request).await.check("provision stream");
        }
        self.backend
            .create_stream(&name, StreamSpec::with_partitions(partitions))
            .await
            .check("create stream")?;
        Ok(name)
    }

    /// The setup most cases share: a fresh stream, a consumer of a new group `g` reading it
    /// from the earliest event, and a producer. The consumer opens first, so a backend that
    /// keeps nothing for groups created after a send (Pub/Sub) is held to the same checks.
    pub(crate) async fn stream_with_reader(
        &self,
        what: &str,
        partitions: u32,
    ) -> Result<(Box<dyn Consumer>, Box<dyn Producer>), String> {
        let stream = self.stream(what, partitions).await?;
        let consumer = self
            .consumer(&stream, &self.name("g"), StartPosition::Earliest)
            .await?;
        let producer = self.producer(&stream).await?;
        Ok((consumer, producer))
    }

    pub(crate) async fn producer(&self, stream: &str) -> Result<Box<dyn Producer>, String> {
        self.backend.producer(stream).await.check("open producer")
    }

    pub(crate) async fn consumer(
        &self,
        stream: &str,
        group: &str,
        start: StartPosition,
    ) -> Result<Box<dyn Consumer>, String> {
        self.backend
            .consumer(stream, ConsumerOptions::new(group).start(start))
            .await
            .check("open consumer")
    }
}

/// Turns a library error into a case failure that says which step failed.
pub(crate) trait Check<T> {
    fn check(self, what: &str) -> Result<T, String>;
}

impl<T> Check<T> for tributary::Result<T> {
    fn check(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// A step that must fail with a given kind of error.
pub(crate) trait MustFail {
    /// The error, for further checks; a case failure naming the step if it succeeded or failed
    /// with another kind.
    fn must_fail(self, kind: ErrorKind, what: &str) -> Result<tributary::Error, String>;
}

impl<T> MustFail for tributary::Result<T> {
    fn must_fail(self, kind: ErrorKind, what: &str) -> Result<tributary::Error, String> {
        match self {
            Ok(_) => Err(format!("{what}: succeeded, expected a {kind} error")),
            Err(err) if err.kind() == kind => Ok(err),
            Err(err) => Err(format!("{what}: expected a {kind} error, got {err}")),
        }
    }
}

/// Fails the case with a formatted message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}
pub(crate) use ensure;

/// Receives exactly `n` deliveries (or fails after the deadline, saying how many arrived).
pub(crate) async fn receive_n(consumer: &dyn Consumer, n: usize) -> Result<Vec<Delivery>, String> {
    let deadline = Instant::now() + WAIT.max(Duration::from_millis(n as u64 / 2));
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match consumer.receive_timeout(left).await.check("receive")? {
            Some(d) => out.push(d),
            None => {
                return Err(format!(
                    "received {} of {n} events before the deadline",
                    out.len()
                ));
            }
        }
    }
    Ok(out)
}

/// Fails if anything arrives within a short window (used only to check absence).
pub(crate) async fn expect_quiet(consumer: &dyn Consumer) -> Result<(), String> {
    match consumer.receive_timeout(QUIET).await.check("receive")? {
        None => Ok(()),
        Some(d) => Err(format!("unexpected delivery {:?}", show(&d.event.payload))),
    }
}

/// A payload as text, shortened, for messages.
pub(crate) fn show(b: &Bytes) -> String {
    String::from_utf8_lossy(&b[..b.len().min(60)]).into_owned()
}

pub(crate) fn payloads(ds: &[Delivery]) -> Vec<Bytes> {
    ds.iter().map(|d| d.event.payload.clone()).collect()
}

pub(crate) fn ack_all(ds: Vec<Delivery>) {
    for d in ds {
        d.ack();
    }
}

/// `n` events `prefix-0`… spread over seven keys.
pub(crate) fn numbered(prefix: &str, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event::new(format!("{prefix}-{i}")).with_key(format!("k{}", i % 7)))
        .collect()
}

/// The received payloads are exactly the sent ones (as multisets); else names what differs.
pub(crate) fn same_set(got: &[Bytes], want: &[Event]) -> Result<(), String> {
    let mut got_sorted = got.to_vec();
    got_sorted.sort();
    let mut want_sorted: Vec<Bytes> = want.iter().map(|e| e.payload.clone()).collect();
    want_sorted.sort();
    if got_sorted != want_sorted {
        let g: HashSet<_> = got_sorted.iter().collect();
        let w: HashSet<_> = want_sorted.iter().collect();
        let missing: Vec<_> = w.difference(&g).take(3).map(|b| show(b)).collect();
        let extra: Vec<_> = g.difference(&w).take(3).map(|b| show(b)).collect();
        return Err(format!(
            "got {} events, wanted {}; missing e.g. {missing:?}; unexpected e.g. {extra:?}",
            got.len(),
            want.len()
        ));
    }
    Ok(())
}

/// Payloads seen by several consumers at once, with how often each was seen.
#[derive(Default)]
pub(crate) struct Seen(Mutex<HashMap<Bytes, usize>>);

impl Seen {
    pub(crate) fn add(&self, b: Bytes) {
        *self.0.lock().expect("poisoned").entry(b).or_default() += 1;
    }
    /// Distinct payloads seen.
    pub(crate) fn total(&self) -> usize {
        self.0.lock().expect("poisoned").len()
    }
    /// Distinct payloads, and deliveries beyond the first of each.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let m = self.0.lock().expect("poisoned");
        (m.len(), m.values().map(|v| v - 1).sum())
    }
}
