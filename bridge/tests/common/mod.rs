//! What the bridge's test files share: waits that always end (a deadline, and a message saying
//! what never happened) and readers that take `n` events from a stream.
//!
//! Every wait in these tests goes through here, so none can spin forever when a route or a
//! daemon dies; the test runner's per-test deadline (`.config/nextest.toml`) is only the last
//! resort, and says much less.
#![allow(dead_code)] // each test file is its own crate and uses a part of this

pub mod intercept;

use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary::{Backend, Consumer, ConsumerOptions, Event, StartPosition};

/// How often the waits look again. Short: the conditions are cheap counter reads.
const POLL: Duration = Duration::from_millis(10);

/// Waits until `done()` holds, looking every 10 ms; after `within` the test fails with
/// "`what`: not within …" and what `state()` reports then (counters, lag).
pub async fn wait_until(
    what: &str,
    within: Duration,
    mut done: impl FnMut() -> bool,
    state: impl FnOnce() -> String,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            panic!("{what}: not within {within:?}; {}", state());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] for a condition that needs `.await` (reading a stream's description).
pub async fn wait_until_async<F: Future<Output = bool>>(
    what: &str,
    within: Duration,
    poll: Duration,
    mut done: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        // The check itself is under the deadline too: a backend that hangs fails the wait.
        match tokio::time::timeout(remaining, done()).await {
            Ok(true) => return,
            Ok(false) if tokio::time::Instant::now() < deadline => tokio::time::sleep(poll).await,
            _ => panic!("{what}: not within {within:?}"),
        }
    }
}

/// [`wait_until`] for tests without a runtime (they drive child processes): tries `attempt`
/// every `poll` (it may be an HTTP request) until it gives a value; each miss says what it saw,
/// and the last of those is in the failure.
pub fn wait_until_blocking<T>(
    what: &str,
    within: Duration,
    poll: Duration,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("{what}: not within {within:?}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(poll),
        }
    }
}

/// The lines of a child's output, each waited for until a common deadline: a child that hangs
/// silently fails the test instead of blocking it. A thread reads the pipe as fast as the child
/// writes, so the child never stalls on a full pipe while the test is busy elsewhere.
pub struct TimedLines {
    lines: std::sync::mpsc::Receiver<String>,
    what: String,
    deadline: Instant,
    /// Every line read so far, also those [`TimedLines::find`] passed over.
    read: String,
}

/// Reads `reader` line by line on a thread; `what` names the output in failures, and every
/// line must come before `within` from now (see [`TimedLines::extend`]).
pub fn lines_within(
    reader: impl std::io::Read + Send + 'static,
    what: &str,
    within: Duration,
) -> TimedLines {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end even when nobody listens any more: a child writing to a pipe
        // nobody drains would block.
        for line in std::io::BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    TimedLines {
        lines: rx,
        what: what.to_string(),
        deadline: Instant::now() + within,
        read: String::new(),
    }
}

impl TimedLines {
    /// Moves the deadline to `within` from now, for a later phase of the test.
    pub fn extend(&mut self, within: Duration) {
        self.deadline = Instant::now() + within;
    }

    /// The next line, `None` at the end of the output; fails the test at the deadline.
    pub fn next_line(&mut self) -> Option<String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => {
                self.read.push_str(&line);
                self.read.push('\n');
                Some(line)
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("{}: no line (or end) before the deadline", self.what)
            }
        }
    }

    /// Reads until `pick` returns a value; the output ending first fails the test with what
    /// it said.
    pub fn find<T>(&mut self, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let mut seen = String::new();
        while let Some(line) = self.next_line() {
            if let Some(value) = pick(&line) {
                return value;
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        panic!("{}: the output ended first; it said:\n{seen}", self.what)
    }

    /// Every line read so far, from the first: what a test looks for may have come before the
    /// line a [`TimedLines::find`] waited for.
    pub fn read_so_far(&self) -> &str {
        &self.read
    }

    /// Everything up to the end of the output, one string.
    pub fn rest(&mut self) -> String {
        let mut rest = String::new();
        while let Some(line) = self.next_line() {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    }
}

impl Iterator for TimedLines {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        self.next_line()
    }
}

/// Waits for `child` to exit; at `within` it is killed and the test fails naming `what`.
pub fn wait_child(
    child: &mut std::process::Child,
    what: &str,
    within: Duration,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {within:?} (killed)");
        }
        std::thread::sleep(POLL);
    }
}

/// Reads `stream` from the earliest position with a new consumer group, acking each event,
/// until `done(events so far)`. Each receive has `quiet` to deliver: after that the test fails
/// with the stream, the count so far and the reader's lag (above zero: the events are there and
/// the reader is stuck; zero: they never arrived).
pub async fn read_until(
    backend: &Arc<dyn Backend>,
    stream: &str,
    quiet: Duration,
    done: impl FnMut(&[Event]) -> bool,
) -> Vec<Event> {
    let consumer = reader(backend, stream).await;
    let out = take_until(consumer.as_ref(), stream, quiet, done).await;
    consumer.close().await.unwrap();
    out
}

/// The first `n` events of `stream` (see [`read_until`]).
pub async fn read_n(
    backend: &Arc<dyn Backend>,
    stream: &str,
    n: usize,
    quiet: Duration,
) -> Vec<Event> {
    read_until(backend, stream, quiet, |events| events.len() >= n).await
}

/// Exactly `n` events: [`read_n`], then nothing more may come within 300 ms.
pub async fn read_exactly(
    backend: &Arc<dyn Backend>,
    stream: &str,
    n: usize,
    quiet: Duration,
) -> Vec<Event> {
    let consumer = reader(backend, stream).await;
    let out = take_until(consumer.as_ref(), stream, quiet, |events| events.len() >= n).await;
    let extra = tokio::time::timeout(Duration::from_millis(300), consumer.receive()).await;
    assert!(extra.is_err(), "{stream}: more than {n} events");
    consumer.close().await.unwrap();
    out
}

/// Reads until `n` distinct events (by payload) arrived, keeping repeats: at least once means
/// a batch interrupted by an outage may be there twice.
pub async fn read_distinct(
    backend: &Arc<dyn Backend>,
    stream: &str,
    n: usize,
    quiet: Duration,
) -> Vec<Event> {
    let mut distinct = std::collections::HashSet::new();
    read_until(backend, stream, quiet, |events| {
        if let Some(last) = events.last() {
            distinct.insert(last.payload.clone());
        }
        distinct.len() >= n
    })
    .await
}

async fn reader(backend: &Arc<dyn Backend>, stream: &str) -> Box<dyn Consumer> {
    backend
        .consumer(
            stream,
            ConsumerOptions::new(tributary_testcontainers::unique_name("check"))
                .start(StartPosition::Earliest),
        )
        .await
        .unwrap()
}

async fn take_until(
    consumer: &dyn Consumer,
    stream: &str,
    quiet: Duration,
    mut done: impl FnMut(&[Event]) -> bool,
) -> Vec<Event> {
    let mut out = Vec::new();
    while !done(&out) {
        let delivery = tokio::time::timeout(quiet, consumer.receive())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{stream}: {} events, then nothing for {quiet:?}; the reader's lag {:?}",
                    out.len(),
                    consumer.lag()
                )
            })
            .unwrap();
        out.push(delivery.event.clone());
        delivery.ack();
    }
    out
}
