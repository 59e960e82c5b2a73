// Copyright (c) Microsoft Corporation.
// Licensed under the MIT license.

//! This sample demonstrates AMQP-over-WebSockets transport. It opens both a
//! [`ProducerClient`] and a [`ConsumerClient`] with
//! [`AmqpTransport::WebSocket`], sends a uniquely tagged event, and reads it
//! back. The clients talk to the broker over `wss://` on port 443 instead of
//! AMQP on port 5671, which is useful when a firewall blocks 5671.
//!
//! Environment:
//!   EVENTHUBS_CONNECTION_STRING  required, e.g.
//!     `Endpoint=sb://<ns>.servicebus.windows.net/;SharedAccessKeyName=<policy>;SharedAccessKey=<key>`
//!   EVENTHUB_NAME                required only if the connection string has no `EntityPath`

use azure_core::{time::Duration, Uuid};
use azure_messaging_eventhubs::{
    models::AmqpTransport, ConsumerClient, OpenReceiverOptions, ProducerClient, SendEventOptions,
    StartLocation, StartPosition,
};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let connection_string = std::env::var("EVENTHUBS_CONNECTION_STRING")?;
    // `None` when the connection string already carries an `EntityPath`.
    let eventhub_name = std::env::var("EVENTHUB_NAME").ok();

    let producer = ProducerClient::builder()
        .with_transport(AmqpTransport::WebSocket)
        .open_with_connection_string(&connection_string, eventhub_name.as_deref())
        .await?;
    println!("Opened producer over WebSockets.");

    // Pick a partition and capture its current tail, so we read only events we
    // enqueue after this point.
    let properties = producer.get_eventhub_properties().await?;
    let partition_id = properties.partition_ids[0].clone();
    let before = producer.get_partition_properties(&partition_id).await?;
    let start_sequence = before.last_enqueued_sequence_number;

    let marker = Uuid::new_v4().to_string();
    producer
        .send_event(
            marker.clone(),
            Some(SendEventOptions {
                partition_id: Some(partition_id.clone()),
            }),
        )
        .await?;
    println!("Sent event with marker {marker} to partition {partition_id}.");

    let consumer = ConsumerClient::builder()
        .with_transport(AmqpTransport::WebSocket)
        .open_with_connection_string(&connection_string, eventhub_name.as_deref())
        .await?;
    println!("Opened consumer over WebSockets.");

    let receiver = consumer
        .open_receiver_on_partition(
            partition_id.clone(),
            Some(OpenReceiverOptions {
                start_position: Some(StartPosition {
                    location: StartLocation::SequenceNumber(start_sequence),
                    inclusive: false,
                }),
                receive_timeout: Some(Duration::seconds(30)),
                ..Default::default()
            }),
        )
        .await?;

    let mut found = false;
    {
        let mut stream = receiver.stream_events();
        while let Some(event) = stream.next().await {
            let event = event?;
            if event.event_data().body() == Some(marker.as_bytes()) {
                found = true;
                println!("Received the marker event back over WebSockets.");
                break;
            }
        }
        // `stream` borrows `receiver`; drop it (end of block) before closing.
    }

    // `consumer.close()` detaches the receiver link too, so the order of these
    // two calls is free (#4931). Close the receiver first to show the intent.
    receiver.close().await?;
    consumer.close().await?;
    producer.close().await?;

    if found {
        println!("PASS: AMQP-over-WebSockets validated end to end.");
        Ok(())
    } else {
        Err("FAIL: did not receive the marker event within the timeout".into())
    }
}
