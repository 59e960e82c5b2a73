//! Event sourcing: the stream is the source of truth, and the state a program serves (a
//! projection) is rebuilt at every start by replaying the stream from its first event, then
//! kept current by following the events that arrive while it runs.
//!
//! ```sh
//! cargo run -p tributary-examples --bin event_sourcing -- file:///tmp/bank --seed 5000 --live 100
//! cargo run -p tributary-examples --bin event_sourcing -- file:///tmp/bank --live 100   # rebuilds 5100, follows 100
//! cargo run -p tributary-examples --bin event_sourcing -- kafka://127.0.0.1:9092 --stream ledger --seed 5000
//! ```
//!
//! The ledger's events are `deposit N` and `withdraw N`, keyed by account. The projection is a
//! balance per account; a withdrawal larger than the balance bounces, so the view depends on
//! the order of each account's events, which every backend keeps per key.
//!
//! - `--seed N` first appends N events (as a batch, as an import would).
//! - The replay reads from the start with a group of its own (so it never shares or moves
//!   another reader's progress) until it has reached, on every partition, the end the stream
//!   had when the program started (`describe_stream`): the view is then complete, without
//!   guessing from a quiet period.
//! - `--live N` then has another task append N events one at a time (as a service taking
//!   requests would) while the projection follows them, and stops after applying them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tributary::{
    Backend, Consumer, ConsumerExt, ConsumerOptions, Error, ErrorKind, Event, StartPosition,
    StreamSpec,
};
use tributary_examples::Args;

const ACCOUNTS: u64 = 7;
/// Longest wait for the next event while the replay is behind or live events are expected.
const STALLED_AFTER: Duration = Duration::from_secs(30);

/// The `index`th command of the ledger: the same sequence in every run, so tests can check
/// the view against their own replay of it.
fn command(index: u64) -> Event {
    let account = format!("acct-{}", index % ACCOUNTS);
    let payload = if index % 3 == 2 {
        format!("withdraw {}", 10 + index % 90)
    } else {
        format!("deposit {}", 1 + index % 50)
    };
    Event::new(payload).with_key(account)
}

/// The projection: balances and bounced withdrawals, built only from events.
#[derive(Default)]
struct Ledger {
    balances: BTreeMap<String, u64>,
    bounced: u64,
    applied: u64,
}

impl Ledger {
    fn apply(&mut self, event: &Event) -> tributary::Result<()> {
        let malformed = || {
            Error::new(
                ErrorKind::Corrupt,
                format!(
                    "ledger event {:?} is not `deposit N` or `withdraw N`",
                    String::from_utf8_lossy(&event.payload)
                ),
            )
        };
        let account = String::from_utf8_lossy(event.key.as_deref().ok_or_else(malformed)?);
        let text = std::str::from_utf8(&event.payload).map_err(|_| malformed())?;
        let (verb, amount) = text.split_once(' ').ok_or_else(malformed)?;
        let amount: u64 = amount.parse().map_err(|_| malformed())?;
        let balance = self.balances.entry(account.into_owned()).or_default();
        match verb {
            "deposit" => *balance += amount,
            "withdraw" if *balance >= amount => *balance -= amount,
            "withdraw" => self.bounced += 1,
            _ => return Err(malformed()),
        }
        self.applied += 1;
        Ok(())
    }

    fn view(&self) -> String {
        let balances: Vec<String> = self
            .balances
            .iter()
            .map(|(account, balance)| format!("{account}={balance}"))
            .collect();
        format!(
            "view after {} events: {} bounced={}",
            self.applied,
            balances.join(" "),
            self.bounced
        )
    }
}

/// The last offset to read on each partition for the replay to be complete: the stream's end
/// now. `None` where the backend does not report ends as offsets.
async fn replay_targets(
    backend: &dyn Backend,
    stream: &str,
) -> tributary::Result<Option<HashMap<String, u64>>> {
    // A stream just created may not have a leader everywhere yet (Kafka): a retryable error
    // is tried again for a while.
    let deadline = Instant::now() + STALLED_AFTER;
    let info = loop {
        match backend.describe_stream(stream).await {
            Ok(info) => break info,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e),
        }
    };
    let mut targets = HashMap::new();
    for partition in info.partitions {
        let Some(next) = partition.next.as_ref().and_then(|p| p.as_offset()) else {
            return Ok(None);
        };
        let earliest = partition.earliest.as_ref().and_then(|p| p.as_offset());
        if next > earliest.unwrap_or(0) {
            targets.insert(partition.id.as_str().to_owned(), next - 1);
        }
    }
    Ok(Some(targets))
}

async fn next_event(consumer: &dyn Consumer, what: &str) -> tributary::Result<tributary::Delivery> {
    consumer
        .receive_timeout(STALLED_AFTER)
        .await?
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Timeout,
                format!("no event for {STALLED_AFTER:?} while {what}"),
            )
        })
}

#[tokio::main]
async fn main() -> tributary::Result<()> {
    let args = Args::from_env();
    let url = args.url_or("memory://");
    let stream = args.text("stream", "ledger");
    let seed = args.number("seed", 0) as u64;
    let live = args.number("live", 0) as u64;
    tributary_kafka::register();
    tributary_pubsub::register();
    let backend: Arc<dyn Backend> = tributary::connect(&url).await?;
    match backend
        .create_stream(&stream, StreamSpec::with_partitions(3))
        .await
    {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if seed > 0 {
        // Continue the sequence after what the stream already holds.
        let held = replay_targets(backend.as_ref(), &stream)
            .await?
            .map_or(0, |t| t.values().map(|last| last + 1).sum::<u64>());
        let producer = backend.producer(&stream).await?;
        for chunk in (held..held + seed).collect::<Vec<_>>().chunks(1000) {
            producer
                .send_batch(chunk.iter().map(|&i| command(i)).collect())
                .await?;
        }
        producer.close().await?;
    }

    // Rebuild: from the first event, up to the end the stream has now.
    let started = Instant::now();
    let mut behind = replay_targets(backend.as_ref(), &stream).await?.ok_or_else(|| {
        Error::config(format!(
            "{}: the backend does not report where stream `{stream}` ends, which the replay needs",
            backend.scheme()
        ))
    })?;
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let group = format!("projection-{}-{nonce}", std::process::id());
    let consumer: Arc<dyn Consumer> = Arc::from(
        backend
            .consumer(
                &stream,
                ConsumerOptions::new(group).start(StartPosition::Earliest),
            )
            .await?,
    );
    let mut ledger = Ledger::default();
    while !behind.is_empty() {
        let delivery = next_event(consumer.as_ref(), "replaying").await?;
        ledger.apply(&delivery.event)?;
        if let (Some(partition), Some(offset)) = (
            &delivery.partition,
            delivery.position.as_ref().and_then(|p| p.as_offset()),
        ) && behind
            .get(partition.as_str())
            .is_some_and(|&last| offset >= last)
        {
            behind.remove(partition.as_str());
        }
        delivery.ack();
    }
    println!(
        "rebuilt from {} events in {} ms",
        ledger.applied,
        started.elapsed().as_millis()
    );
    println!("{}", ledger.view());

    // Follow: another task appends while the projection applies what arrives.
    if live > 0 {
        let first = ledger.applied;
        let writer = {
            let backend = Arc::clone(&backend);
            let stream = stream.clone();
            tokio::spawn(async move {
                let producer = backend.producer(&stream).await?;
                for i in first..first + live {
                    producer.send(command(i)).await?;
                }
                producer.close().await
            })
        };
        for _ in 0..live {
            let delivery = next_event(consumer.as_ref(), "following live events").await?;
            ledger.apply(&delivery.event)?;
            delivery.ack();
        }
        writer
            .await
            .map_err(|e| Error::new(ErrorKind::Other, format!("writer task: {e}")))??;
        println!("followed {live} live events");
        println!("{}", ledger.view());
    }
    consumer.close().await?;
    backend.close().await
}
