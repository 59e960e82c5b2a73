//! Throughput: 100 000 events through the emulator with the official Rust SDK, in batches, then
//! read back from all partitions. Prints events/s both ways and the process's resident memory
//! (emulator and clients share the process).
//!
//! ```sh
//! cargo run --release -p tributary-eventhubs-emulator --example load [EVENTS] [BODY_BYTES]
//! ```

use std::time::{Duration, Instant};

use azure_messaging_eventhubs::models::EventData;
use azure_messaging_eventhubs::{
    ConsumerClient, EventDataBatchOptions, OpenReceiverOptions, ProducerClient, StartLocation,
    StartPosition,
};
use futures::StreamExt;
use tributary_eventhubs_emulator::{Config, Emulator, HubConfig};

const PARTITIONS: usize = 4;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let body_bytes: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let emulator =
        Emulator::start(Config::for_tests().with_hub(HubConfig::new("load", PARTITIONS as u32)))
            .await?;
    let connection =
        "Endpoint=sb://emulator.localhost/;SharedAccessKeyName=load;SharedAccessKey=load";
    let producer = ProducerClient::builder()
        .with_custom_endpoint(emulator.endpoint())
        .open_with_connection_string(connection, Some("load"))
        .await?;
    let rss_before = rss_mib();

    let body = vec![b'x'; body_bytes];
    let started = Instant::now();
    let mut sent = 0;
    let mut batches = 0;
    while sent < total {
        let partition = (batches % PARTITIONS).to_string();
        let batch = producer
            .create_batch(Some(EventDataBatchOptions {
                partition_id: Some(partition),
                ..Default::default()
            }))
            .await?;
        while sent < total
            && batch
                .try_add_event_data(EventData::builder().with_body(body.clone()).build(), None)?
        {
            sent += 1;
        }
        producer.send_batch(batch, None).await?;
        batches += 1;
    }
    let send_time = started.elapsed();

    let consumer = ConsumerClient::builder()
        .with_custom_endpoint(emulator.endpoint())
        .open_with_connection_string(connection, Some("load"))
        .await?;
    let started = Instant::now();
    let mut readers = Vec::new();
    for p in 0..PARTITIONS {
        let receiver = consumer
            .open_receiver_on_partition(
                p.to_string(),
                Some(OpenReceiverOptions {
                    start_position: Some(StartPosition {
                        location: StartLocation::Earliest,
                        inclusive: false,
                    }),
                    prefetch: Some(1000),
                    ..Default::default()
                }),
            )
            .await?;
        readers.push(receiver);
    }
    let counts = futures::future::join_all(readers.iter().map(|receiver| async move {
        let stream = receiver.stream_events();
        futures::pin_mut!(stream);
        let mut n = 0usize;
        while let Ok(Some(Ok(_))) =
            tokio::time::timeout(Duration::from_secs(3), stream.next()).await
        {
            n += 1;
        }
        n
    }))
    .await;
    // The last 3 s of each reader are the idle timeout that ends it, not reading.
    let receive_time = started.elapsed().saturating_sub(Duration::from_secs(3));
    let received: usize = counts.iter().sum();

    println!(
        "events: {total} x {body_bytes} B bodies in {batches} batches over {PARTITIONS} partitions"
    );
    println!(
        "send:    {:>8.0} events/s ({:.2} s)",
        total as f64 / send_time.as_secs_f64(),
        send_time.as_secs_f64()
    );
    println!(
        "receive: {:>8.0} events/s ({:.2} s, {received} received, per partition {counts:?})",
        received as f64 / receive_time.as_secs_f64(),
        receive_time.as_secs_f64()
    );
    println!(
        "resident memory (emulator + SDK clients in one process): {:.1} MiB before sending, {:.1} MiB at the end",
        rss_before,
        rss_mib()
    );
    if received != total {
        return Err(format!("received {received} of {total} events").into());
    }
    emulator.shutdown().await;
    Ok(())
}
