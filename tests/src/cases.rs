//! The cases. Each uses fresh, uniquely named streams and groups, waits with deadlines (never
//! sleeps to synchronise) and compares exact contents.

use crate::Harness;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tributary::{
    AckModel, Backend, Capabilities, Consumer, ConsumerExt, ConsumerOptions, Delivery, ErrorKind,
    Event, Producer, StartPosition, StreamSpec, Timestamp,
};

pub(crate) type CaseOutcome = Result<Option<String>, String>;

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

    fn name(&self, what: &str) -> String {
        format!(
            "conf-{what}-{}-{}",
            self.run_id,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    async fn stream(&self, what: &str, partitions: u32) -> Result<String, String> {
        let name = self.name(what);
        self.backend
            .create_stream(&name, StreamSpec::with_partitions(partitions))
            .await
            .check("create stream")?;
        Ok(name)
    }

    async fn producer(&self, stream: &str) -> Result<Box<dyn Producer>, String> {
        self.backend.producer(stream).await.check("open producer")
    }

    async fn consumer(
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

trait Check<T> {
    fn check(self, what: &str) -> Result<T, String>;
}

impl<T> Check<T> for tributary::Result<T> {
    fn check(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

const WAIT: Duration = Duration::from_secs(30);
const QUIET: Duration = Duration::from_millis(750);

/// Receives exactly `n` deliveries (or fails after the deadline, saying how many arrived).
async fn receive_n(consumer: &dyn Consumer, n: usize) -> Result<Vec<Delivery>, String> {
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
async fn expect_quiet(consumer: &dyn Consumer) -> Result<(), String> {
    match consumer.receive_timeout(QUIET).await.check("receive")? {
        None => Ok(()),
        Some(d) => Err(format!("unexpected delivery {:?}", show(&d.event.payload))),
    }
}

fn show(b: &Bytes) -> String {
    String::from_utf8_lossy(&b[..b.len().min(60)]).into_owned()
}

fn payloads(ds: &[Delivery]) -> Vec<Bytes> {
    ds.iter().map(|d| d.event.payload.clone()).collect()
}

fn ack_all(ds: Vec<Delivery>) {
    for d in ds {
        d.ack();
    }
}

fn numbered(prefix: &str, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event::new(format!("{prefix}-{i}")).with_key(format!("k{}", i % 7)))
        .collect()
}

fn same_set(got: &[Bytes], want: &[Event]) -> Result<(), String> {
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

pub(crate) struct Case {
    pub number: u32,
    pub name: &'static str,
    pub applies: fn(&Ctx) -> Result<(), String>,
    pub run: for<'a> fn(&'a mut Ctx) -> BoxFuture<'a, CaseOutcome>,
}

macro_rules! case {
    ($number:expr, $name:ident, $applies:expr) => {
        Case {
            number: $number,
            name: stringify!($name),
            applies: $applies,
            run: {
                fn run(c: &mut Ctx) -> BoxFuture<'_, CaseOutcome> {
                    Box::pin($name(c))
                }
                run
            },
        }
    };
}

fn always(_: &Ctx) -> Result<(), String> {
    Ok(())
}

fn needs(cond: bool, what: &str) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(format!("backend does not declare {what}"))
    }
}

pub(crate) const ALL: &[Case] = &[
    case!(1, round_trip, always),
    case!(2, binary_fidelity, always),
    case!(3, size_limit, |c| needs(
        c.caps.max_event_bytes.is_some(),
        "max_event_bytes"
    )),
    case!(4, receipts, |c| needs(
        c.caps.receipts.partition && c.caps.receipts.position,
        "receipts with partition and position"
    )),
    case!(5, ack, always),
    case!(6, no_ack_redelivers, always),
    case!(7, nack_redelivers, |c| needs(c.caps.nack, "nack")),
    case!(8, out_of_order_acks, |c| needs(
        c.caps.ack == AckModel::Cumulative,
        "cumulative (log) acks"
    )),
    case!(9, continue_after_errors, |c| needs(c.caps.nack, "nack")),
    case!(10, producer_close_flushes, always),
    case!(11, use_after_close, always),
    case!(12, per_key_order, |c| needs(
        c.caps.ordering == tributary::Ordering::PerKey,
        "per-key ordering"
    )),
    case!(13, competing_consumers, |c| needs(
        c.caps.lifecycle.competing_consumers,
        "competing consumers"
    )),
    case!(14, fan_out, always),
    case!(15, rebalance, |c| needs(
        c.caps.lifecycle.competing_consumers,
        "competing consumers"
    )),
    case!(16, stream_isolation, always),
    case!(17, start_earliest_latest, |c| needs(
        c.caps.start.earliest && c.caps.start.latest,
        "start at earliest and latest"
    )),
    case!(18, start_at_timestamp, |c| needs(
        c.caps.start.timestamp,
        "start at timestamp"
    )),
    case!(19, resume_after_restart_of_consumer, always),
    case!(20, unreachable_server, |c| {
        needs(c.caps.lifecycle.networked, "a network server")?;
        needs(
            c.harness.unreachable_url.is_some(),
            "an unreachable URL in the harness",
        )
    }),
    case!(21, server_restart, |c| needs(
        c.harness.restart.is_some(),
        "a restart hook in the harness"
    )),
    case!(22, missing_stream, always),
    case!(23, bad_configuration, always),
    case!(24, cancellation, always),
    case!(25, throughput, always),
    case!(26, lag, |c| needs(c.caps.lag, "consumer lag")),
];

async fn round_trip(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("roundtrip", 3).await?;
    let consumer = c
        .consumer(&stream, &c.name("g"), StartPosition::Earliest)
        .await?;
    let producer = c.producer(&stream).await?;
    let base = Timestamp::now().as_millis() - 60_000;
    let sent: Vec<Event> = (0..1000)
        .map(|i| {
            Event::new(format!("payload-{i}"))
                .with_key(format!("key-{}", i % 13))
                .with_header("index", i.to_string())
                .with_header("kind", "round-trip")
                .with_timestamp(Timestamp::from_millis(base + i as i64))
        })
        .collect();
    for chunk in sent.chunks(100) {
        producer
            .send_batch(chunk.to_vec())
            .await
            .check("send_batch")?;
    }
    let got = receive_n(consumer.as_ref(), sent.len()).await?;
    let mut by_payload: HashMap<Bytes, Event> = sent
        .iter()
        .map(|e| (e.payload.clone(), e.clone()))
        .collect();
    for d in &got {
        let want = by_payload
            .remove(&d.event.payload)
            .ok_or_else(|| format!("duplicate or unknown event {}", show(&d.event.payload)))?;
        let mut want = want;
        if !c.caps.timestamps {
            want.timestamp = d.event.timestamp;
        }
        ensure!(
            d.event == want,
            "event differs: sent {want:?}, received {:?}",
            d.event
        );
    }
    ack_all(got);
    expect_quiet(consumer.as_ref()).await?;
    consumer.close().await.check("close")?;
    Ok(None)
}

async fn binary_fidelity(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("binary", 1).await?;
    let consumer = c
        .consumer(&stream, &c.name("g"), StartPosition::Earliest)
        .await?;
    let producer = c.producer(&stream).await?;
    let mut many = Event::new("many headers").with_key("k");
    for i in 0..100 {
        many.headers.append(format!("h{i}"), vec![i as u8; i % 5]);
    }
    let sent = vec![
        Event::new(Bytes::new()).with_key("empty-payload"),
        Event::new(vec![0xff, 0xfe, 0x00, 0x80, 0xc3]).with_key("non-utf8-payload"),
        Event::new("non-utf8 key").with_key(vec![0xff, 0x00, 0xfe]),
        Event::new("binary header values")
            .with_key("k")
            .with_header("bin", vec![0u8, 255, 128, 10, 13])
            .with_header("empty", Bytes::new()),
        Event::new("unicode header names")
            .with_key("k")
            .with_header("ключ-名前-🔑", "v"),
        Event::new("duplicate header names")
            .with_key("k")
            .with_header("dup", "1")
            .with_header("other", "x")
            .with_header("dup", "2"),
        many,
        Event::new("no key"),
    ];
    for e in &sent {
        producer.send(e.clone()).await.check("send")?;
    }
    let got = receive_n(consumer.as_ref(), sent.len()).await?;
    for (i, d) in got.iter().enumerate() {
        let want = sent
            .iter()
            .find(|e| e.payload == d.event.payload)
            .ok_or_else(|| format!("unknown event {}", show(&d.event.payload)))?;
        ensure!(
            d.event.key == want.key,
            "event {i}: key {:?} != {:?}",
            d.event.key,
            want.key
        );
        ensure!(
            d.event.headers == want.headers,
            "event {}: headers {:?} != {:?}",
            show(&want.payload),
            d.event.headers,
            want.headers
        );
    }
    same_set(&payloads(&got), &sent)?;
    ack_all(got);
    Ok(None)
}

async fn size_limit(c: &mut Ctx) -> CaseOutcome {
    let max = c.caps.max_event_bytes.expect("gated");
    let stream = c.stream("size", 1).await?;
    let consumer = c
        .consumer(&stream, &c.name("g"), StartPosition::Earliest)
        .await?;
    let producer = c.producer(&stream).await?;
    let at_limit = Event::new(vec![b'x'; max]);
    producer
        .send(at_limit.clone())
        .await
        .check("send an event of exactly the maximum size")?;
    let over = Event::new(vec![b'y'; max + 1]);
    let err = match producer.send(over).await {
        Ok(_) => {
            return Err(format!(
                "an event of {} bytes (max {max}) was accepted",
                max + 1
            ));
        }
        Err(e) => e,
    };
    ensure!(
        err.kind() == ErrorKind::TooLarge,
        "expected a too-large error, got {err}"
    );
    producer
        .send(Event::new("after"))
        .await
        .check("send after a rejected event")?;
    let got = receive_n(consumer.as_ref(), 2).await?;
    ensure!(
        got[0].event.payload.len() == max,
        "the maximum-size event came back with {} bytes",
        got[0].event.payload.len()
    );
    ensure!(
        got[1].event.payload.as_ref() == b"after",
        "second event differs"
    );
    ack_all(got);
    Ok(Some(format!("limit {max} B; error: {err}")))
}

async fn receipts(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("receipts", 2).await?;
    let consumer = c
        .consumer(&stream, &c.name("g"), StartPosition::Earliest)
        .await?;
    let producer = c.producer(&stream).await?;
    let mut expected = HashMap::new();
    for e in numbered("r", 20) {
        let r = producer.send(e.clone()).await.check("send")?;
        ensure!(
            r.partition.is_some() && r.position.is_some(),
            "receipt lacks partition or position: {r:?}"
        );
        expected.insert(e.payload, (r.partition, r.position));
    }
    let got = receive_n(consumer.as_ref(), 20).await?;
    for d in &got {
        let want = &expected[&d.event.payload];
        ensure!(
            (&d.partition, &d.position) == (&want.0, &want.1),
            "delivery at {:?}/{:?} but the receipt said {:?}/{:?}",
            d.partition,
            d.position,
            want.0,
            want.1
        );
    }
    ack_all(got);
    Ok(None)
}

async fn ack(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("ack", 2).await?;
    let group = c.name("g");
    let first = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    let producer = c.producer(&stream).await?;
    producer.send_batch(numbered("a", 10)).await.check("send")?;
    let got = receive_n(first.as_ref(), 10).await?;
    ack_all(got);
    first.close().await.check("close")?;
    let second = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    producer
        .send(Event::new("marker"))
        .await
        .check("send marker")?;
    let next = receive_n(second.as_ref(), 1).await?;
    ensure!(
        next[0].event.payload.as_ref() == b"marker",
        "acked event {} was delivered again",
        show(&next[0].event.payload)
    );
    ack_all(next);
    expect_quiet(second.as_ref()).await?;
    Ok(None)
}

async fn no_ack_redelivers(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("noack", 2).await?;
    let group = c.name("g");
    let producer = c.producer(&stream).await?;
    let first = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    let sent = numbered("n", 10);
    producer.send_batch(sent.clone()).await.check("send")?;
    // Closed while holding unsettled deliveries.
    let held = receive_n(first.as_ref(), 10).await?;
    first.close().await.check("close")?;
    let second = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    let again = receive_n(second.as_ref(), 10).await?;
    same_set(&payloads(&again), &sent).map_err(|e| format!("after close: {e}"))?;
    drop(held);
    // Dropped without close (a crash from the group's point of view), still holding them.
    drop(second);
    let third = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    let once_more = receive_n(third.as_ref(), 10).await?;
    same_set(&payloads(&once_more), &sent).map_err(|e| format!("after drop: {e}"))?;
    drop(again);
    ack_all(once_more);
    Ok(None)
}

async fn nack_redelivers(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("nack", 1).await?;
    let consumer = c
        .consumer(&stream, &c.name("g"), StartPosition::Earliest)
        .await?;
    let producer = c.producer(&stream).await?;
    producer.send(Event::new("nack-me")).await.check("send")?;
    let first = receive_n(consumer.as_ref(), 1).await?.remove(0);
    let attempt = first.attempt;
    first.nack();
    let second = receive_n(consumer.as_ref(), 1).await?.remove(0);
    ensure!(
        second.event.payload.as_ref() == b"nack-me",
        "got {} instead",
        show(&second.event.payload)
    );
    if c.caps.delivery_attempts {
        ensure!(
            matches!((attempt, second.attempt), (Some(a), Some(b)) if b > a),
            "delivery attempt did not increase: {attempt:?} then {:?}",
            second.attempt
        );
    }
    second.ack();
    expect_quiet(consumer.as_ref()).await?;
    Ok(None)
}

async fn out_of_order_acks(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("ooo", 1).await?;
    let group = c.name("g");
    let producer = c.producer(&stream).await?;
    let first = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    producer.send_batch(numbered("o", 4)).await.check("send")?;
    let mut got = receive_n(first.as_ref(), 4).await?;
    ensure!(
        payloads(&got)
            == ["o-0", "o-1", "o-2", "o-3"].map(|s: &'static str| Bytes::from_static(s.as_bytes())),
        "single-partition order broken: {:?}",
        payloads(&got).iter().map(show).collect::<Vec<_>>()
    );
    let d3 = got.pop().expect("4");
    let d2 = got.pop().expect("3");
    let held = got.pop().expect("2");
    let d0 = got.pop().expect("1");
    d0.ack();
    d2.ack();
    d3.ack();
    // The consumer dies with event 1 unacked.
    drop(first);
    drop(held);
    let second = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    let next = receive_n(second.as_ref(), 1).await?;
    ensure!(
        next[0].event.payload.as_ref() == b"o-1",
        "expected the unacked o-1 first, got {}",
        show(&next[0].event.payload)
    );
    let mut redelivered = vec![show(&next[0].event.payload)];
    ack_all(next);
    while let Some(d) = second.receive_timeout(QUIET).await.check("receive")? {
        ensure!(
            d.event.payload.as_ref() != b"o-0",
            "o-0 was acked and committed, yet redelivered"
        );
        redelivered.push(show(&d.event.payload));
        d.ack();
    }
    Ok(Some(format!("redelivered {redelivered:?}")))
}

async fn continue_after_errors(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("errors", 2).await?;
    let consumer = c
        .consumer(&stream, &c.name("g"), StartPosition::Earliest)
        .await?;
    let producer = c.producer(&stream).await?;
    let sent = numbered("e", 100);
    producer.send_batch(sent.clone()).await.check("send")?;
    let mut done = HashSet::new();
    let mut deliveries = 0usize;
    let deadline = Instant::now() + WAIT;
    while done.len() < sent.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(d) = consumer.receive_timeout(left).await.check("receive")? else {
            return Err(format!("only {} of 100 processed", done.len()));
        };
        deliveries += 1;
        if deliveries.is_multiple_of(7) {
            d.nack();
        } else {
            done.insert(d.event.payload.clone());
            d.ack();
        }
    }
    Ok(Some(format!("{deliveries} deliveries for 100 events")))
}

async fn producer_close_flushes(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("closeflush", 2).await?;
    // The group exists before the sends, so backends that keep nothing for groups created
    // later (Pub/Sub) are held to the same check.
    let consumer = c
        .consumer(&stream, &c.name("g"), StartPosition::Earliest)
        .await?;
    let producer: Arc<dyn Producer> = Arc::from(c.producer(&stream).await?);
    let (progress, mut progress_rx) = tokio::sync::watch::channel(0usize);
    let progress = Arc::new(progress);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let p = producer.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut stored = Vec::new();
            for i in 0..100_000 {
                let payload = Bytes::from(format!("t{t}-{i}"));
                match p
                    .send(Event::new(payload.clone()).with_key(format!("t{t}")))
                    .await
                {
                    Ok(_) => {
                        stored.push(payload);
                        progress.send_modify(|n| *n += 1);
                    }
                    Err(e) if e.kind() == ErrorKind::Closed => break,
                    Err(e) => return Err(format!("send failed: {e}")),
                }
            }
            Ok(stored)
        }));
    }
    // Close while the eight senders are mid-stream.
    progress_rx
        .wait_for(|n| *n >= 200)
        .await
        .map_err(|_| "senders stopped early".to_string())?;
    producer.close().await.check("close")?;
    let mut stored = Vec::new();
    for t in tasks {
        stored.extend(t.await.map_err(|e| e.to_string())??);
    }
    ensure!(stored.len() < 800_000, "close did not stop the senders");
    let got = receive_n(consumer.as_ref(), stored.len()).await?;
    let mut got_payloads = payloads(&got);
    got_payloads.sort();
    stored.sort();
    ensure!(
        got_payloads == stored,
        "stored {} events but {} were confirmed",
        got_payloads.len(),
        stored.len()
    );
    ack_all(got);
    expect_quiet(consumer.as_ref()).await?;
    Ok(Some(format!(
        "{} sends confirmed, then close",
        stored.len()
    )))
}

async fn use_after_close(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("afterclose", 1).await?;
    let producer = c.producer(&stream).await?;
    producer.close().await.check("close producer")?;
    let err = producer
        .send(Event::new("late"))
        .await
        .err()
        .ok_or("send after close succeeded")?;
    ensure!(
        err.kind() == ErrorKind::Closed,
        "send after close: expected closed, got {err}"
    );
    producer.close().await.check("second close of producer")?;
    let consumer = c
        .consumer(&stream, &c.name("g"), StartPosition::Earliest)
        .await?;
    consumer.close().await.check("close consumer")?;
    let err = consumer
        .receive()
        .await
        .err()
        .ok_or("receive after close succeeded")?;
    ensure!(
        err.kind() == ErrorKind::Closed,
        "receive after close: expected closed, got {err}"
    );
    consumer.close().await.check("second close of consumer")?;
    Ok(None)
}

async fn per_key_order(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("order", 4).await?;
    let consumer = c
        .consumer(&stream, &c.name("g"), StartPosition::Earliest)
        .await?;
    let producer: Arc<dyn Producer> = Arc::from(c.producer(&stream).await?);
    let keys = 20;
    let per_key = 50;
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let p = producer.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_key {
                for k in (worker..keys).step_by(4) {
                    p.send(Event::new(format!("{k}:{i}")).with_key(format!("key-{k}")))
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    // Process concurrently: handlers run in parallel, but each key's events must still be seen
    // in order at receive time, which is what a keyed handler pool relies on.
    let got = receive_n(consumer.as_ref(), keys * per_key).await?;
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    let mut handlers = Vec::new();
    for d in got {
        let text = String::from_utf8_lossy(&d.event.payload).into_owned();
        let (k, i) = text.split_once(':').ok_or("bad payload")?;
        let i: i64 = i.parse().map_err(|_| "bad payload")?;
        let prev = last.insert(k.to_owned(), i).unwrap_or(-1);
        ensure!(i == prev + 1, "key {k}: event {i} arrived after {prev}");
        handlers.push(tokio::spawn(async move { d.ack() }));
    }
    for h in handlers {
        h.await.map_err(|e| e.to_string())?;
    }
    Ok(None)
}

async fn competing_consumers(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("compete", 4).await?;
    let group = c.name("g");
    let a: Arc<dyn Consumer> =
        Arc::from(c.consumer(&stream, &group, StartPosition::Earliest).await?);
    let b: Arc<dyn Consumer> =
        Arc::from(c.consumer(&stream, &group, StartPosition::Earliest).await?);
    let producer = c.producer(&stream).await?;
    let sent: Vec<Event> = (0..400)
        .map(|i| Event::new(format!("c-{i}")).with_key(format!("k{i}")))
        .collect();
    producer.send_batch(sent.clone()).await.check("send")?;
    let seen = Arc::new(parking_lot_free::Seen::default());
    let run = |consumer: Arc<dyn Consumer>, seen: Arc<parking_lot_free::Seen>| async move {
        let deadline = Instant::now() + WAIT;
        let mut mine = 0usize;
        while seen.total() < 400 && Instant::now() < deadline {
            if let Some(d) = consumer
                .receive_timeout(Duration::from_millis(200))
                .await
                .map_err(|e| e.to_string())?
            {
                seen.add(d.event.payload.clone());
                mine += 1;
                d.ack();
            }
        }
        Ok::<_, String>(mine)
    };
    let (ra, rb) = tokio::join!(run(a.clone(), seen.clone()), run(b.clone(), seen.clone()));
    let (na, nb) = (ra?, rb?);
    let (distinct, duplicates) = seen.counts();
    ensure!(
        distinct == 400,
        "together they received {distinct} of 400 distinct events"
    );
    ensure!(
        duplicates == 0,
        "{duplicates} events were delivered twice in steady state"
    );
    ensure!(na > 0 && nb > 0, "work was not shared: {na} and {nb}");
    Ok(Some(format!("split {na}/{nb}")))
}

mod parking_lot_free {
    use bytes::Bytes;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Seen(Mutex<HashMap<Bytes, usize>>);

    impl Seen {
        pub fn add(&self, b: Bytes) {
            *self.0.lock().expect("poisoned").entry(b).or_default() += 1;
        }
        pub fn total(&self) -> usize {
            self.0.lock().expect("poisoned").len()
        }
        pub fn counts(&self) -> (usize, usize) {
            let m = self.0.lock().expect("poisoned");
            (m.len(), m.values().map(|v| v - 1).sum())
        }
    }
}

async fn fan_out(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("fanout", 2).await?;
    let one = c
        .consumer(&stream, &c.name("g1"), StartPosition::Earliest)
        .await?;
    let two = c
        .consumer(&stream, &c.name("g2"), StartPosition::Earliest)
        .await?;
    let producer = c.producer(&stream).await?;
    let sent = numbered("f", 50);
    producer.send_batch(sent.clone()).await.check("send")?;
    let g1 = receive_n(one.as_ref(), 50).await?;
    let g2 = receive_n(two.as_ref(), 50).await?;
    same_set(&payloads(&g1), &sent).map_err(|e| format!("group 1: {e}"))?;
    same_set(&payloads(&g2), &sent).map_err(|e| format!("group 2: {e}"))?;
    ack_all(g1);
    ack_all(g2);
    Ok(None)
}

async fn rebalance(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("rebalance", 4).await?;
    let group = c.name("g");
    let producer = c.producer(&stream).await?;
    let a = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    let sent: Vec<Event> = (0..300)
        .map(|i| Event::new(format!("rb-{i}")).with_key(format!("k{i}")))
        .collect();
    producer
        .send_batch(sent[..100].to_vec())
        .await
        .check("send")?;
    let mut acked: HashMap<Bytes, usize> = HashMap::new();
    fn record(acked: &mut HashMap<Bytes, usize>, ds: Vec<Delivery>) {
        for d in ds {
            *acked.entry(d.event.payload.clone()).or_default() += 1;
            d.ack();
        }
    }
    record(&mut acked, receive_n(a.as_ref(), 50).await?);
    // B joins mid-stream.
    let b = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    producer
        .send_batch(sent[100..200].to_vec())
        .await
        .check("send")?;
    let deadline = Instant::now() + WAIT;
    while acked.len() < 150 && Instant::now() < deadline {
        for consumer in [&a, &b] {
            if let Some(d) = consumer
                .receive_timeout(Duration::from_millis(50))
                .await
                .check("receive")?
            {
                record(&mut acked, vec![d]);
            }
        }
    }
    // A leaves mid-stream.
    a.close().await.check("close a")?;
    producer
        .send_batch(sent[200..].to_vec())
        .await
        .check("send")?;
    while acked.len() < 300 && Instant::now() < deadline {
        if let Some(d) = b
            .receive_timeout(Duration::from_millis(200))
            .await
            .check("receive")?
        {
            record(&mut acked, vec![d]);
        }
    }
    ensure!(acked.len() == 300, "{} of 300 events received", acked.len());
    let dups: Vec<_> = acked
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(p, _)| show(p))
        .collect();
    ensure!(dups.is_empty(), "acked events delivered again: {dups:?}");
    Ok(None)
}

async fn stream_isolation(c: &mut Ctx) -> CaseOutcome {
    let s1 = c.stream("iso1", 1).await?;
    let s2 = c.stream("iso2", 1).await?;
    let c1 = c
        .consumer(&s1, &c.name("g"), StartPosition::Earliest)
        .await?;
    let c2 = c
        .consumer(&s2, &c.name("g"), StartPosition::Earliest)
        .await?;
    let p1 = c.producer(&s1).await?;
    let p2 = c.producer(&s2).await?;
    let (e1, e2) = (numbered("one", 20), numbered("two", 20));
    let (r1, r2) = tokio::join!(p1.send_batch(e1.clone()), p2.send_batch(e2.clone()));
    r1.check("send 1")?;
    r2.check("send 2")?;
    let g1 = receive_n(c1.as_ref(), 20).await?;
    let g2 = receive_n(c2.as_ref(), 20).await?;
    same_set(&payloads(&g1), &e1)?;
    same_set(&payloads(&g2), &e2)?;
    ack_all(g1);
    ack_all(g2);
    expect_quiet(c1.as_ref()).await?;
    Ok(None)
}

async fn start_earliest_latest(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("start", 2).await?;
    let producer = c.producer(&stream).await?;
    let old = numbered("old", 5);
    producer.send_batch(old.clone()).await.check("send")?;
    let earliest = c
        .consumer(&stream, &c.name("early"), StartPosition::Earliest)
        .await?;
    let latest = c
        .consumer(&stream, &c.name("late"), StartPosition::Latest)
        .await?;
    let new = numbered("new", 5);
    producer.send_batch(new.clone()).await.check("send")?;
    let e = receive_n(earliest.as_ref(), 10).await?;
    let all: Vec<Event> = old.iter().chain(new.iter()).cloned().collect();
    same_set(&payloads(&e), &all).map_err(|e| format!("earliest: {e}"))?;
    let l = receive_n(latest.as_ref(), 5).await?;
    same_set(&payloads(&l), &new).map_err(|e| format!("latest: {e}"))?;
    expect_quiet(latest.as_ref()).await?;
    ack_all(e);
    ack_all(l);
    Ok(None)
}

async fn start_at_timestamp(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("time", 2).await?;
    let producer = c.producer(&stream).await?;
    let old = numbered("before", 5);
    producer.send_batch(old).await.check("send")?;
    // Separate the two batches in time by a clock step, not as synchronisation.
    let cut = Timestamp::now().as_millis() + 20;
    while Timestamp::now().as_millis() <= cut {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let new = numbered("after", 5);
    producer.send_batch(new.clone()).await.check("send")?;
    let consumer = c
        .consumer(
            &stream,
            &c.name("g"),
            StartPosition::Timestamp(Timestamp::from_millis(cut)),
        )
        .await?;
    let got = receive_n(consumer.as_ref(), 5).await?;
    same_set(&payloads(&got), &new)?;
    expect_quiet(consumer.as_ref()).await?;
    ack_all(got);
    Ok(None)
}

async fn resume_after_restart_of_consumer(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("resume", 1).await?;
    let group = c.name("g");
    let producer = c.producer(&stream).await?;
    let first = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    let sent = numbered("res", 10);
    producer.send_batch(sent.clone()).await.check("send")?;
    let got = receive_n(first.as_ref(), 5).await?;
    // A log delivers a partition in order, so the first five are the first five sent; other
    // backends may deliver any five, and the group must then continue with the other five.
    let (done, remaining): (Vec<Event>, Vec<Event>) = if c.caps.ack == AckModel::Cumulative {
        same_set(&payloads(&got), &sent[..5])?;
        (sent[..5].to_vec(), sent[5..].to_vec())
    } else {
        let received = payloads(&got);
        sent.iter()
            .cloned()
            .partition(|e| received.contains(&e.payload))
    };
    ensure!(
        done.len() == 5,
        "the first consumer got unknown or repeated events"
    );
    ack_all(got);
    first.close().await.check("close")?;
    // Latest would skip the rest; the committed position must win.
    let second = c.consumer(&stream, &group, StartPosition::Latest).await?;
    let rest = receive_n(second.as_ref(), 5).await?;
    same_set(&payloads(&rest), &remaining)?;
    ack_all(rest);
    expect_quiet(second.as_ref()).await?;
    Ok(None)
}

/// `Consumer::lag` counts what the group has not acked, and follows acks and new events.
async fn lag(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("lag", 1).await?;
    let group = c.name("g");
    let producer = c.producer(&stream).await?;
    let consumer = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    producer
        .send_batch(numbered("lag", 10))
        .await
        .check("send")?;
    let got = receive_n(consumer.as_ref(), 4).await?;
    ack_all(got);
    consumer.commit().await.check("commit")?;
    // Backends refresh the figure periodically (Kafka: librdkafka statistics, every second).
    let wait_for = async |want: u64| -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let lag = consumer.lag();
            if lag == Some(want) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("lag is {lag:?}, expected Some({want})"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    wait_for(6).await?;
    producer
        .send_batch(numbered("lag-more", 5))
        .await
        .check("send")?;
    wait_for(11).await?;
    let rest = receive_n(consumer.as_ref(), 11).await?;
    ack_all(rest);
    consumer.commit().await.check("commit")?;
    wait_for(0).await?;
    Ok(None)
}

async fn unreachable_server(c: &mut Ctx) -> CaseOutcome {
    let url = c.harness.unreachable_url.clone().expect("gated");
    let started = Instant::now();
    let attempt = async {
        let backend = tributary::connect(&url).await?;
        let producer = backend.producer("conf-unreachable").await?;
        producer.send(Event::new("x")).await
    };
    match tokio::time::timeout(Duration::from_secs(60), attempt).await {
        Err(_) => Err("still hanging after 60 s".into()),
        Ok(Ok(_)) => Err("sending to an unreachable server succeeded".into()),
        Ok(Err(e)) => {
            ensure!(
                matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
                "expected unavailable or timeout, got {e}"
            );
            Ok(Some(format!(
                "failed after {:.1}s: {e}",
                started.elapsed().as_secs_f64()
            )))
        }
    }
}

async fn server_restart(c: &mut Ctx) -> CaseOutcome {
    let restart = c.harness.restart.clone().expect("gated");
    let stream = c.stream("restart", 1).await?;
    let group = c.name("g");
    let before = numbered("pre", 5);
    {
        let producer = c.producer(&stream).await?;
        let consumer = c.consumer(&stream, &group, StartPosition::Earliest).await?;
        producer.send_batch(before.clone()).await.check("send")?;
        producer.close().await.check("close producer")?;
        let got = receive_n(consumer.as_ref(), 5).await?;
        ack_all(got);
        consumer.close().await.check("close consumer")?;
    }
    c.backend = restart(c.backend.clone()).await.check("restart")?;
    let after = numbered("post", 5);
    let producer = c.producer(&stream).await?;
    producer
        .send_batch(after.clone())
        .await
        .check("send after restart")?;
    let consumer = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    let got = receive_n(consumer.as_ref(), 5).await?;
    same_set(&payloads(&got), &after).map_err(|e| format!("after restart: {e}"))?;
    ack_all(got);
    expect_quiet(consumer.as_ref()).await?;
    Ok(None)
}

async fn missing_stream(c: &mut Ctx) -> CaseOutcome {
    let name = c.name("missing");
    if c.caps.lifecycle.auto_create {
        let producer = c.producer(&name).await?;
        producer
            .send(Event::new("created"))
            .await
            .check("send to a new stream")?;
        let listed = c.backend.list_streams().await.check("list")?;
        ensure!(
            listed.contains(&name),
            "auto-created stream {name} is not listed"
        );
        return Ok(Some("auto-created".into()));
    }
    let produced = async { c.backend.producer(&name).await?.send(Event::new("x")).await };
    let err = produced
        .await
        .err()
        .ok_or("sending to a missing stream succeeded")?;
    ensure!(
        err.kind() == ErrorKind::NotFound,
        "send: expected not found, got {err}"
    );
    ensure!(
        err.to_string().contains(&name),
        "error does not name the stream: {err}"
    );
    let consumed = async {
        c.backend
            .consumer(&name, ConsumerOptions::new("g"))
            .await?
            .receive()
            .await
    };
    let err = consumed
        .await
        .err()
        .ok_or("consuming a missing stream succeeded")?;
    ensure!(
        err.kind() == ErrorKind::NotFound,
        "consume: expected not found, got {err}"
    );
    Ok(None)
}

async fn bad_configuration(c: &mut Ctx) -> CaseOutcome {
    let sep = if c.harness.url.contains('?') {
        '&'
    } else {
        '?'
    };
    let unknown = format!("{}{sep}tributary_no_such_option=1", c.harness.url);
    let err = tributary::connect(&unknown)
        .await
        .err()
        .ok_or("unknown option accepted")?;
    ensure!(
        err.kind() == ErrorKind::Config,
        "unknown option: expected config error, got {err}"
    );
    ensure!(
        err.to_string().contains("tributary_no_such_option"),
        "error does not name the option: {err}"
    );
    let scheme = c.harness.url.split("://").next().unwrap_or("memory");
    let err = tributary::connect(&format!("{scheme}://[malformed"))
        .await
        .err()
        .ok_or("malformed URL accepted")?;
    ensure!(
        err.kind() == ErrorKind::Config,
        "malformed URL: expected config error, got {err}"
    );
    let err = c
        .backend
        .consumer("whatever", ConsumerOptions::new(""))
        .await
        .err()
        .ok_or("empty group accepted")?;
    ensure!(
        err.kind() == ErrorKind::Config,
        "empty group: expected config error, got {err}"
    );
    let err = c
        .backend
        .create_stream("bad name/with slash", StreamSpec::default())
        .await
        .err()
        .ok_or("bad stream name accepted")?;
    ensure!(
        err.kind() == ErrorKind::Config,
        "bad stream name: expected config error, got {err}"
    );
    Ok(None)
}

async fn cancellation(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("cancel", 1).await?;
    let consumer = c
        .consumer(&stream, &c.name("g"), StartPosition::Earliest)
        .await?;
    let producer = c.producer(&stream).await?;
    // A receive dropped while waiting.
    ensure!(
        consumer
            .receive_timeout(Duration::from_millis(50))
            .await
            .check("receive")?
            .is_none(),
        "empty stream delivered"
    );
    // A send dropped before completion: the producer stays usable.
    // Polled at least once, then dropped mid-flight; the event may or may not be stored.
    let _ =
        tokio::time::timeout(Duration::from_micros(1), producer.send(Event::new("maybe"))).await;
    let sent = numbered("cx", 20);
    producer
        .send_batch(sent.clone())
        .await
        .check("send after a dropped send")?;
    // Receives cancelled at random points lose nothing.
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    let wanted = |got: &[Delivery]| {
        got.iter()
            .filter(|d| d.event.payload.as_ref() != b"maybe")
            .count()
    };
    while wanted(&got) < 20 && Instant::now() < deadline {
        if let Ok(r) = tokio::time::timeout(Duration::from_micros(50), consumer.receive()).await {
            got.push(r.check("receive")?);
        }
    }
    let mut got_payloads = payloads(&got);
    got_payloads.retain(|p| p.as_ref() != b"maybe");
    same_set(&got_payloads, &sent)?;
    ack_all(got);
    Ok(None)
}

async fn throughput(c: &mut Ctx) -> CaseOutcome {
    let n = c.harness.scale;
    let stream = c.stream("throughput", 4).await?;
    let consumer = c
        .consumer(&stream, &c.name("g"), StartPosition::Earliest)
        .await?;
    let producer = c.producer(&stream).await?;
    let started = Instant::now();
    let batch = 1000;
    let mut i = 0;
    while i < n {
        let events: Vec<Event> = (i..(i + batch).min(n))
            .map(|j| Event::new(format!("{j:08}")).with_key(format!("k{}", j % 64)))
            .collect();
        i += events.len();
        producer.send_batch(events).await.check("send_batch")?;
    }
    producer.flush().await.check("flush")?;
    let produce_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut seen = vec![false; n];
    let mut distinct = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while distinct < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(d) = consumer.receive_timeout(left).await.check("receive")? else {
            return Err(format!("received {distinct} of {n}"));
        };
        let idx: usize = std::str::from_utf8(&d.event.payload)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad payload")?;
        ensure!(idx < n, "unknown event {idx}");
        if !seen[idx] {
            seen[idx] = true;
            distinct += 1;
        }
        d.ack();
    }
    let consume_secs = started.elapsed().as_secs_f64();
    Ok(Some(format!(
        "{n} events: produce {:.0}/s, consume {:.0}/s",
        n as f64 / produce_secs,
        n as f64 / consume_secs
    )))
}
