//! The README's first example, as a program. Run it on durable storage:
//!
//! ```sh
//! cargo run -p tributary-examples --bin readme -- file:///tmp/tributary-readme
//! ```
//!
//! Each run sends one event and receives the oldest one its group has not acked yet, so run
//! after run the group walks forward through the stream. The lines between the markers are the
//! README's, word for word (a test checks it), except that the URL comes from the command line.

use tributary::{ConsumerOptions, Event, StartPosition};

#[tokio::main]
async fn main() -> tributary::Result<()> {
    let url = tributary_examples::Args::from_env().url_or("file:///tmp/tributary-readme");
    // README begin
    let backend = tributary::connect(&url).await?;
    let producer = backend.producer("orders").await?;
    let event = Event::new(r#"{"total":42}"#)
        .with_key("customer-7")
        .with_header("trace", "abc");
    producer.send(event).await?; // one at a time is slow: see bulk_produce for volume

    let consumer = backend
        .consumer(
            "orders",
            ConsumerOptions::new("billing").start(StartPosition::Earliest),
        )
        .await?;
    let delivery = consumer.receive().await?;
    // ... process ...
    delivery.ack(); // nack() or dropping it redelivers to the group

    consumer.close().await?; // commits the acks and hands the group on at once
    backend.close().await?;
    // README end
    println!("sent one event, received and acked the group's next one");
    Ok(())
}
