//! A worker that consumes a stream as a group member, stops, and on its next start resumes
//! where the group left off.
//!
//! ```sh
//! cargo run -p tributary-examples --bin consume_resume -- file:///tmp/shop --seed 1000 --max 600
//! cargo run -p tributary-examples --bin consume_resume -- file:///tmp/shop    # the other 400
//! cargo run -p tributary-examples --bin consume_resume -- file:///tmp/shop    # nothing left
//! ```
//!
//! `--seed N` first sends N orders; `--max N` stops after N events. Without `--max` the worker
//! stops once it has caught up (nothing new for a second). Progress is the group's: acked
//! events are committed when the consumer closes (and periodically before), so the next run,
//! in this process or another, starts after them. An event received but not acked when the
//! worker stops is delivered again to the next one.

use std::sync::Arc;
use std::time::Duration;
use tributary::futures::StreamExt;
use tributary::{Consumer, ConsumerOptions, Event, StartPosition};
use tributary_examples::Args;

const STREAM: &str = "orders";
const GROUP: &str = "billing";
const CAUGHT_UP_AFTER: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> tributary::Result<()> {
    let args = Args::from_env();
    let url = args.url_or("memory://");
    let seed = args.number("seed", 0);
    let max = args.number("max", usize::MAX);
    tributary_kafka::register();
    tributary_pubsub::register();
    let backend = tributary::connect(&url).await?;

    // The group's start position applies only the first time: after that, its commits win.
    let options = ConsumerOptions::new(GROUP).start(StartPosition::Earliest);
    let consumer: Arc<dyn Consumer> = Arc::from(backend.consumer(STREAM, options).await?);

    if seed > 0 {
        let producer = backend.producer(STREAM).await?;
        let orders: Vec<Event> = (0..seed)
            .map(|i| Event::new(format!("order-{i}")).with_key(format!("customer-{}", i % 10)))
            .collect();
        producer.send_batch(orders).await?;
        producer.close().await?;
    }

    // Deliveries as a `futures::Stream`; it ends when the consumer is closed.
    let mut deliveries = tributary::deliveries(Arc::clone(&consumer));
    let mut processed = 0;
    while processed < max {
        let delivery = match tokio::time::timeout(CAUGHT_UP_AFTER, deliveries.next()).await {
            Err(_) => break,   // nothing new: caught up
            Ok(None) => break, // the consumer was closed
            Ok(Some(delivery)) => delivery?,
        };
        println!(
            "processed {}",
            String::from_utf8_lossy(&delivery.event.payload)
        );
        delivery.ack();
        processed += 1;
    }
    // Stop the stream first (a receive it was waiting in is cancel-safe: nothing is lost),
    // then close the consumer, which commits every ack and hands its partitions to the group.
    drop(deliveries);
    consumer.close().await?;
    backend.close().await?;
    eprintln!("{processed} events processed; the next run resumes after them");
    Ok(())
}
