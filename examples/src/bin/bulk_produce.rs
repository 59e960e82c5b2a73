//! Producing many events: three ways, with the rate of each.
//!
//! ```sh
//! cargo run --release -p tributary-examples --bin bulk_produce -- file:///tmp/bulk --events 100000
//! cargo run --release -p tributary-examples --bin bulk_produce -- kafka://127.0.0.1:9092
//! ```
//!
//! A `send` returns once the backend has stored the event, so awaiting one send at a time pays
//! a full round trip (and, on `file://` with `fsync=always`, a disk flush) per event: about 170
//! events/s against a Kafka broker. Hand the backend many events at once instead:
//! - `send_batch`: one call, events stored in order (about 237,000 events/s on the same Kafka);
//! - many `send`s in flight together (about 150,000 events/s): the backend batches them, but
//!   sends in flight at the same time may be stored in any order, even for one key. Use it for
//!   independent events; use `send_batch` (or one send at a time) where a key's order matters.

use std::time::Instant;
use tributary::futures::{self, StreamExt};
use tributary::{Event, Producer};
use tributary_examples::Args;

const STREAM: &str = "bulk";

#[tokio::main]
async fn main() -> tributary::Result<()> {
    let args = Args::from_env();
    let url = args.url_or("memory://");
    let events = args.number("events", 100_000);
    tributary_kafka::register();
    tributary_pubsub::register();

    let backend = tributary::connect(&url).await?;
    let producer = backend.producer(STREAM).await?;

    // The slow way, on a sample only: one send, awaited, then the next.
    let sample = (events / 100).clamp(1, 1_000);
    let started = Instant::now();
    for i in 0..sample {
        producer.send(order("one-by-one", i)).await?;
    }
    report("one awaited send at a time", sample, started);

    // Many sends in flight at once (here up to 1,000); the backend batches them.
    let started = Instant::now();
    let mut in_flight = futures::stream::iter(0..events)
        .map(|i| producer.send(order("concurrent", i)))
        .buffer_unordered(1_000);
    while let Some(receipt) = in_flight.next().await {
        receipt?;
    }
    report("concurrent sends (1,000 in flight)", events, started);

    // Batches: one call per 1,000 events, stored in order.
    let started = Instant::now();
    send_in_batches(producer.as_ref(), events, 1_000).await?;
    report("send_batch (1,000 per batch)", events, started);

    producer.close().await?;
    backend.close().await?;
    println!("{} events in `{STREAM}`", sample + 2 * events);
    Ok(())
}

async fn send_in_batches(
    producer: &dyn Producer,
    events: usize,
    batch: usize,
) -> tributary::Result<()> {
    for start in (0..events).step_by(batch) {
        let chunk: Vec<Event> = (start..(start + batch).min(events))
            .map(|i| order("batched", i))
            .collect();
        // On error, some of the chunk may be stored: resending it is safe for consumers that
        // tolerate duplicates, which at-least-once delivery asks of them anyway.
        producer.send_batch(chunk).await?;
    }
    Ok(())
}

fn order(how: &str, i: usize) -> Event {
    Event::new(format!(r#"{{"order":{i},"via":"{how}"}}"#))
        .with_key(format!("customer-{}", i % 100))
}

fn report(how: &str, events: usize, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{how:<36} {events:>8} events in {secs:>7.3}s: {:>9.0} events/s",
        events as f64 / secs
    );
}
