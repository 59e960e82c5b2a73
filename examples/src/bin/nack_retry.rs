//! Retrying failed events with nack, and parking the ones that keep failing in a dead-letter
//! stream.
//!
//! ```sh
//! cargo run -p tributary-examples --bin nack_retry -- file:///tmp/payments
//! ```
//!
//! Fifty payments; every fifth fails once (a timeout downstream, say) and succeeds when it
//! comes back; `payment-13` fails every time. A failed event is nacked, so the backend delivers
//! it again, before any later event of its key where the backend keeps per-key order
//! (`Capabilities::ordering`). After `MAX_ATTEMPTS` the event goes to `payments-dlq` with the
//! reason in a header, and is acked so it stops blocking its key.

use std::collections::HashMap;
use std::time::Duration;
use tributary::{ConsumerExt, ConsumerOptions, Delivery, Event, StartPosition};
use tributary_examples::Args;

const STREAM: &str = "payments";
const DEAD_LETTERS: &str = "payments-dlq";
const MAX_ATTEMPTS: u32 = 3;
const PAYMENTS: usize = 50;

#[tokio::main]
async fn main() -> tributary::Result<()> {
    let url = Args::from_env().url_or("memory://");
    tributary_kafka::register();
    tributary_pubsub::register();
    let backend = tributary::connect(&url).await?;

    let consumer = backend
        .consumer(
            STREAM,
            ConsumerOptions::new("settlement").start(StartPosition::Earliest),
        )
        .await?;
    let producer = backend.producer(STREAM).await?;
    let payments: Vec<Event> = (0..PAYMENTS)
        .map(|i| Event::new(format!("payment-{i}")).with_key(format!("account-{}", i % 4)))
        .collect();
    producer.send_batch(payments).await?;
    let dead_letters = backend.producer(DEAD_LETTERS).await?;

    // Backends that do not count deliveries (`Capabilities::delivery_attempts`) leave
    // `attempt` empty; count them here instead.
    let mut attempts_seen: HashMap<String, u32> = HashMap::new();
    let (mut settled, mut retried, mut parked) = (0, 0, 0);
    while settled < PAYMENTS {
        // `receive_timeout` comes from `ConsumerExt`: a bounded wait instead of `receive()`.
        let Some(delivery) = consumer.receive_timeout(Duration::from_secs(30)).await? else {
            return Err(tributary::Error::timeout(format!(
                "{settled} of {PAYMENTS} payments settled, then nothing for 30 s"
            )));
        };
        let payment = String::from_utf8_lossy(&delivery.event.payload).into_owned();
        let counted = attempts_seen.entry(payment.clone()).or_default();
        *counted += 1;
        let attempt = delivery.attempt.unwrap_or(*counted);
        match settle_payment(&payment, attempt) {
            Ok(()) => {
                delivery.ack();
                settled += 1;
                retried += usize::from(attempt > 1);
            }
            Err(reason) if attempt >= MAX_ATTEMPTS => {
                park(dead_letters.as_ref(), delivery, &reason, attempt).await?;
                println!("{payment}: dead-lettered after {attempt} attempts ({reason})");
                settled += 1;
                parked += 1;
            }
            Err(reason) => {
                println!("{payment}: attempt {attempt} failed ({reason}); retrying");
                delivery.nack();
            }
        }
    }
    println!(
        "{} payments settled ({retried} after a retry), {parked} dead-lettered",
        PAYMENTS - parked
    );
    consumer.close().await?;
    producer.close().await?;
    dead_letters.close().await?;
    backend.close().await?;
    Ok(())
}

/// The "business logic": every fifth payment fails on its first attempt, one always fails.
fn settle_payment(payment: &str, attempt: u32) -> Result<(), String> {
    let n: usize = payment
        .trim_start_matches("payment-")
        .parse()
        .map_err(|_| "not a payment")?;
    if n == 13 {
        return Err("account closed".into());
    }
    if n.is_multiple_of(5) && attempt == 1 {
        return Err("bank timed out".into());
    }
    Ok(())
}

/// Sends the event to the dead-letter stream with why, then acks it: once the dead-letter
/// stream has stored it, the original may go.
async fn park(
    dead_letters: &dyn tributary::Producer,
    delivery: Delivery,
    reason: &str,
    attempts: u32,
) -> tributary::Result<()> {
    let parked = delivery
        .event
        .clone()
        .with_header("dlq-reason", reason.to_owned())
        .with_header("dlq-attempts", attempts.to_string());
    dead_letters.send(parked).await?;
    delivery.ack();
    Ok(())
}
