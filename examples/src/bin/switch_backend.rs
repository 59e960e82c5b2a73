//! The same program on any backend: only the URL changes.
//!
//! ```sh
//! cargo run -p tributary-examples --bin switch_backend -- memory://
//! cargo run -p tributary-examples --bin switch_backend -- file:///tmp/greetings
//! cargo run -p tributary-examples --bin switch_backend -- kafka://127.0.0.1:9092
//! cargo run -p tributary-examples --bin switch_backend -- pubsub://my-project
//! ```
//!
//! `memory://` and `file://` are built into `tributary`. Every other backend is a crate of its
//! own (so a program compiles only the clients it uses): depend on it and call its
//! `register()` once, before the first `connect`. What differs between backends is declared in
//! their `Capabilities`, so a program can check before it relies on something.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tributary::{ConsumerExt, ConsumerOptions, ErrorKind, Event, StartPosition, StreamSpec};
use tributary_examples::Args;

const EVENTS: usize = 100;

#[tokio::main]
async fn main() -> tributary::Result<()> {
    let url = Args::from_env().url_or("memory://");
    tributary_kafka::register();
    tributary_pubsub::register();
    let backend = tributary::connect(&url).await?;
    let caps = backend.capabilities();
    println!(
        "{}: per-key order {:?}, acks {:?}, receipts with positions {}, largest event {:?} bytes",
        backend.scheme(),
        caps.ordering,
        caps.ack,
        caps.receipts.position,
        caps.max_event_bytes
    );

    // A stream of its own per run. Kafka and Pub/Sub do not create streams on first use
    // unless asked (`?auto_create=true`); creating it explicitly works everywhere it is allowed.
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let stream = format!("greetings-{millis}");
    match backend
        .create_stream(&stream, StreamSpec::with_partitions(4))
        .await
    {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }

    // The group exists before the events: Pub/Sub keeps nothing for subscriptions made later.
    let consumer = backend
        .consumer(
            &stream,
            ConsumerOptions::new("greeter").start(StartPosition::Earliest),
        )
        .await?;
    let producer = backend.producer(&stream).await?;
    let greetings: Vec<Event> = (0..EVENTS)
        .map(|i| Event::new(format!("hello {i}")).with_key(format!("friend-{}", i % 5)))
        .collect();
    let receipts = producer.send_batch(greetings).await?;
    println!(
        "sent {} events; first receipt {:?}",
        receipts.len(),
        receipts[0]
    );

    let mut received = 0;
    while received < EVENTS {
        let Some(delivery) = consumer.receive_timeout(Duration::from_secs(30)).await? else {
            return Err(tributary::Error::timeout(format!(
                "received {received} of {EVENTS} events from `{stream}`"
            )));
        };
        delivery.ack();
        received += 1;
    }
    println!("received and acked {received} events from `{stream}`");
    consumer.close().await?;
    producer.close().await?;
    backend.delete_stream(&stream).await?;
    backend.close().await?;
    Ok(())
}
