//! tributary's Event Hubs producer and consumer against the raw Rust SDK
//! (`azure_messaging_eventhubs`), on the same emulator, in the same run, doing the same work:
//!
//! - produce: events of 100 bytes with one of 20 keys and one header, in chunks of 1000; each
//!   chunk split by key into SDK batches sent concurrently (what `send_batch` does);
//! - consume: every event of a 4-partition hub from the start: the raw side reads the four
//!   partitions with the SDK's receivers (prefetch 300); tributary reads through a group (the
//!   core engine, acks and checkpoints in memory), acking each delivery.
//!
//! Best of two alternating rounds. `BENCH_EH_EVENTS` sets the count (default 100,000).
//!
//! ```sh
//! cargo bench -p tributary-eventhubs --bench eventhubs
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use azure_messaging_eventhubs::models::EventData;
use azure_messaging_eventhubs::{
    ConsumerClient, EventDataBatchOptions, OpenReceiverOptions, ProducerClient, StartLocation,
    StartPosition as SdkStart,
};
use futures::StreamExt;
use futures::future::try_join_all;
use tributary::{ConsumerExt, ConsumerOptions, Event, StartPosition};
use tributary_testcontainers::{Peer, require, unique_name};

const KEYS: usize = 20;
const CHUNK: usize = 1000;
const CONNECTION: &str = "Endpoint=sb://emulator.localhost/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE";

fn payload(i: usize) -> Vec<u8> {
    let mut body = format!("{i:>12}").into_bytes();
    body.resize(100, b'x');
    body
}

async fn raw_produce(endpoint: &str, hub: &str, events: usize) -> Duration {
    let producer = ProducerClient::builder()
        .with_custom_endpoint(endpoint.to_string())
        .open_with_connection_string(CONNECTION, Some(hub))
        .await
        .expect("producer");
    let started = Instant::now();
    for chunk in (0..events).collect::<Vec<_>>().chunks(CHUNK) {
        let mut by_key: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &i in chunk {
            by_key.entry(i % KEYS).or_default().push(i);
        }
        let producer = &producer;
        try_join_all(by_key.into_iter().map(|(key, numbers)| async move {
            let batch = producer
                .create_batch(Some(EventDataBatchOptions {
                    partition_key: Some(format!("key-{key}")),
                    ..Default::default()
                }))
                .await?;
            for i in numbers {
                let event = EventData::builder()
                    .with_body(payload(i))
                    .add_property("n".to_string(), i.to_string())
                    .build();
                assert!(
                    batch.try_add_event_data(event, None)?,
                    "a chunk fits one batch"
                );
            }
            producer.send_batch(batch, None).await
        }))
        .await
        .expect("send");
    }
    let elapsed = started.elapsed();
    producer.close().await.expect("close");
    elapsed
}

async fn raw_consume(endpoint: &str, hub: &str, events: usize) -> Duration {
    let consumer = ConsumerClient::builder()
        .with_custom_endpoint(endpoint.to_string())
        .open_with_connection_string(CONNECTION, Some(hub))
        .await
        .expect("consumer");
    let partitions = consumer
        .get_eventhub_properties()
        .await
        .expect("properties")
        .partition_ids;
    let started = Instant::now();
    let consumer = &consumer;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let readers = partitions.into_iter().map(|id| {
        let tx = tx.clone();
        async move {
            let receiver = consumer
                .open_receiver_on_partition(
                    id,
                    Some(OpenReceiverOptions {
                        start_position: Some(SdkStart {
                            location: StartLocation::Earliest,
                            inclusive: false,
                        }),
                        prefetch: Some(300),
                        ..Default::default()
                    }),
                )
                .await
                .expect("receiver");
            let stream = receiver.stream_events();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let event = event.expect("event");
                // Copy out what an application reads, as tributary does.
                let body = event.event_data().body().map(<[u8]>::to_vec);
                if tx.send(body.map_or(0, |b| b.len())).is_err() {
                    break;
                }
            }
        }
    });
    let all = futures::future::join_all(readers);
    let count = async {
        let mut got = 0;
        while got < events {
            rx.recv().await.expect("readers run");
            got += 1;
        }
    };
    tokio::select! {
        _ = all => panic!("readers ended early"),
        _ = count => {}
    }
    started.elapsed()
}

async fn tributary_produce(backend: &dyn tributary::Backend, hub: &str, events: usize) -> Duration {
    let producer = backend.producer(hub).await.expect("producer");
    let started = Instant::now();
    for chunk in (0..events).collect::<Vec<_>>().chunks(CHUNK) {
        let batch: Vec<Event> = chunk
            .iter()
            .map(|&i| {
                Event::new(payload(i))
                    .with_key(format!("key-{}", i % KEYS))
                    .with_header("n", i.to_string())
            })
            .collect();
        producer.send_batch(batch).await.expect("send");
    }
    let elapsed = started.elapsed();
    producer.close().await.expect("close");
    elapsed
}

async fn tributary_consume(backend: &dyn tributary::Backend, hub: &str, events: usize) -> Duration {
    let consumer = backend
        .consumer(
            hub,
            ConsumerOptions::new(unique_name("bench")).start(StartPosition::Earliest),
        )
        .await
        .expect("consumer");
    // From the join on, as the raw side from its receivers: the connection is open and the
    // group holds its first partitions (claiming them is not reading).
    let started = Instant::now();
    let mut got = 0;
    while got < events {
        let delivery = consumer
            .receive_timeout(Duration::from_secs(30))
            .await
            .expect("receive")
            .expect("an event within 30 s");
        delivery.ack();
        got += 1;
    }
    let elapsed = started.elapsed();
    consumer.close().await.expect("close");
    elapsed
}

fn rate(events: usize, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(server) = require(Peer::EventHubs) else {
        return;
    };
    let events: usize = std::env::var("BENCH_EH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let endpoint = format!("amqp://{}", server.address());
    tributary_eventhubs::register();
    let backend = tributary::connect(server.url()).await.expect("connect");
    let (mut raw_p, mut raw_c, mut trib_p, mut trib_c) = (0f64, 0f64, 0f64, 0f64);
    for round in 0..2 {
        let raw_hub = unique_name("bench-raw");
        let trib_hub = unique_name("bench-trib");
        let p = rate(events, raw_produce(&endpoint, &raw_hub, events).await);
        let t = rate(
            events,
            tributary_produce(&*backend, &trib_hub, events).await,
        );
        let c = rate(events, raw_consume(&endpoint, &raw_hub, events).await);
        let u = rate(
            events,
            tributary_consume(&*backend, &trib_hub, events).await,
        );
        println!(
            "round {round}: produce raw {p:.0}/s tributary {t:.0}/s; consume raw {c:.0}/s tributary {u:.0}/s"
        );
        raw_p = raw_p.max(p);
        trib_p = trib_p.max(t);
        raw_c = raw_c.max(c);
        trib_c = trib_c.max(u);
    }
    println!(
        "\nEvent Hubs emulator, {events} events of 100 B, {KEYS} keys, 4 partitions, best of 2:"
    );
    println!("| | raw azure_messaging_eventhubs | tributary | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| produce | {raw_p:.0}/s | {trib_p:.0}/s | {:.2} |",
        trib_p / raw_p
    );
    println!(
        "| consume | {raw_c:.0}/s | {trib_c:.0}/s | {:.2} |",
        trib_c / raw_c
    );
    backend.close().await.expect("close");
}
