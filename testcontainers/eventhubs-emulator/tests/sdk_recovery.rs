//! What a test can make happen to a client: receivers' links force-detached
//! (`Emulator::detach_receivers`) and connections cut (`Emulator::drop_connections`), each
//! seen through the official Rust SDK, which recovers from both without the application's
//! help.

mod common;

use std::time::Duration;

use azure_messaging_eventhubs::models::EventData;
use azure_messaging_eventhubs::{SendEventOptions, StartLocation};
use common::*;
use futures::StreamExt;
use tributary_eventhubs_emulator::{Config, HubConfig};

fn to_partition(id: &str) -> Option<SendEventOptions> {
    Some(SendEventOptions {
        partition_id: Some(id.into()),
    })
}

async fn send(
    producer: &azure_messaging_eventhubs::ProducerClient,
    partition: &str,
    bodies: &[&str],
) {
    for body in bodies {
        let event = EventData::builder().with_body(body.to_string()).build();
        tokio::time::timeout(
            Duration::from_secs(20),
            producer.send_event(event, to_partition(partition)),
        )
        .await
        .expect("the send returns")
        .expect("the send succeeds");
    }
}

/// `(sequence number, body)` of what one stream yields until `n` arrived; an error fails.
async fn read(
    stream: &mut (
             impl futures::Stream<
        Item = azure_messaging_eventhubs::Result<
            azure_messaging_eventhubs::models::ReceivedEventData,
        >,
    > + Unpin
         ),
    n: usize,
) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let event = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap_or_else(|_| panic!("event {} of {n} within 20 s (got {out:?})", out.len()))
            .expect("the stream goes on")
            .unwrap_or_else(|e| panic!("the receive recovers without an error: {e}"));
        out.push((
            event.sequence_number().expect("sequence number"),
            body(&event),
        ));
    }
    out
}

/// A forced detach ends a receiving link with `amqp:link:detach-forced`, which the SDK
/// recovers from inside the stream: the application sees no error and reads on. The SDK's
/// new link asks for the start position the receiver was opened with, so it reads again what
/// it had read (SDK 0.16; a client that resumes after its last event would read 3 next).
#[tokio::test]
async fn a_forced_detach_is_recovered_inside_the_stream_from_the_opening_position() {
    let emulator = start(Config::for_tests().with_hub(HubConfig::new("moved", 2))).await;
    let producer = producer(&emulator, "moved").await;
    let consumer = consumer(&emulator, "moved", None).await;
    send(&producer, "0", &["a", "b", "c"]).await;
    let receiver = consumer
        .open_receiver_on_partition("0".into(), from(StartLocation::Earliest, false))
        .await
        .expect("receiver opens");
    let mut stream = Box::pin(receiver.stream_events());
    let before = read(&mut stream, 3).await;
    assert_eq!(
        before,
        vec![(0, "a".into()), (1, "b".into()), (2, "c".into())]
    );

    assert_eq!(
        emulator.detach_receivers("moved", Some("1")),
        0,
        "nobody reads partition 1"
    );
    assert_eq!(emulator.detach_receivers("unknown", None), 0);
    assert_eq!(emulator.detach_receivers("moved", Some("0")), 1);
    send(&producer, "0", &["d"]).await;
    let after = read(&mut stream, 4).await;
    assert_eq!(
        after,
        vec![
            (0, "a".into()),
            (1, "b".into()),
            (2, "c".into()),
            (3, "d".into())
        ],
        "the SDK re-attached from the receiver's opening position"
    );
    drop(stream);
    receiver.close().await.expect("close");
}

/// A cut connection is recovered inside the receiver's stream as well, again from the
/// receiver's opening position (SDK 0.16).
#[tokio::test]
async fn a_cut_connection_is_recovered_inside_the_stream_from_the_opening_position() {
    let emulator = start(Config::for_tests().with_hub(HubConfig::new("cut", 1))).await;
    let producer = producer(&emulator, "cut").await;
    let consumer = consumer(&emulator, "cut", None).await;
    send(&producer, "0", &["a", "b"]).await;
    let receiver = consumer
        .open_receiver_on_partition("0".into(), from(StartLocation::Earliest, false))
        .await
        .expect("receiver opens");
    let mut stream = Box::pin(receiver.stream_events());
    let before = read(&mut stream, 2).await;
    assert_eq!(before, vec![(0, "a".into()), (1, "b".into())]);

    let cut = emulator.drop_connections();
    assert!(
        cut >= 2,
        "the producer's and the consumer's connections were cut ({cut})"
    );
    // A new producer: the cut one's next send did not return within 20 s (SDK 0.16's
    // sender, not what this test is about).
    let fresh = common::producer(&emulator, "cut").await;
    send(&fresh, "0", &["c"]).await;
    let after = read(&mut stream, 3).await;
    assert_eq!(
        after,
        vec![(0, "a".into()), (1, "b".into()), (2, "c".into())],
        "the SDK reconnected and re-attached from the receiver's opening position"
    );
    drop(stream);
    receiver.close().await.expect("close");
}
