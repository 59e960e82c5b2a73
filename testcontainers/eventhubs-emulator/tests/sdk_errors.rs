//! Refusals through the official Rust SDK: size limit, unknown entities, SAS tokens, epochs.

mod common;

use std::time::Duration;

use azure_messaging_eventhubs::models::EventData;
use azure_messaging_eventhubs::{
    OpenReceiverOptions, SendEventOptions, StartLocation, StartPosition,
};
use common::*;
use futures::StreamExt;
use tributary_eventhubs_emulator::{Config, HubConfig};

/// The SDK reports a missing entity as a 404 from `$management` or as `amqp:not-found` on a link.
fn is_not_found(text: &str) -> bool {
    text.contains("NotFound") || text.contains("404")
}

fn event(body: &str) -> EventData {
    EventData::builder().with_body(body.to_string()).build()
}

fn to_partition(id: &str) -> Option<SendEventOptions> {
    Some(SendEventOptions {
        partition_id: Some(id.into()),
    })
}

#[tokio::test]
async fn too_large_message_is_rejected_and_the_link_stays_usable() {
    let mut config = Config::for_tests().with_hub(HubConfig::new("small", 1));
    config.max_message_size = 64 * 1024;
    let emulator = start(config).await;
    let producer = producer(&emulator, "small").await;
    // 200 KiB: the SDK (fe2o3-amqp) cuts a message larger than the advertised max-message-size
    // into max-message-size transfers. With exactly two pieces its last transfer carries a new
    // delivery id, which no receiver can reassemble; the emulator then detaches the link with
    // amqp:link:message-size-exceeded, but the SDK never completes that send (it waits for a
    // disposition forever). Three or more pieces reassemble fine and get a Rejected outcome.
    let big = EventData::builder()
        .with_body(vec![7u8; 200 * 1024])
        .build();
    let error = tokio::time::timeout(
        Duration::from_secs(20),
        producer.send_event(big, to_partition("0")),
    )
    .await
    .expect("the rejection arrives")
    .expect_err("a 200 KiB event exceeds the 64 KiB limit");
    let text = format!("{error:?}");
    assert!(
        text.contains("LinkPayloadSizeExceeded") && text.contains("exceeds the limit"),
        "{text}"
    );
    // The batch API sizes itself from the advertised limit.
    let batch = producer.create_batch(None).await.expect("batch");
    assert!(
        !batch
            .try_add_event_data(
                EventData::builder().with_body(vec![0u8; 70 * 1024]).build(),
                None
            )
            .expect("add")
    );
    producer
        .send_event(event("small"), to_partition("0"))
        .await
        .expect("small event still goes");
    let props = producer
        .get_partition_properties("0")
        .await
        .expect("properties");
    assert_eq!(
        props.last_enqueued_sequence_number, 0,
        "only the small event was stored"
    );
}

#[tokio::test]
async fn unknown_entities_are_not_found() {
    let mut config = Config::for_tests().with_hub(HubConfig::new("known", 2));
    config.auto_create = false;
    let emulator = start(config).await;

    let producer = producer(&emulator, "missing").await;
    let error = producer
        .get_eventhub_properties()
        .await
        .expect_err("no such hub");
    let text = format!("{error:?}");
    assert!(is_not_found(&text) && text.contains("missing"), "{text}");
    let error = producer
        .send_event(event("x"), None)
        .await
        .expect_err("cannot send to a missing hub");
    assert!(is_not_found(&format!("{error:?}")), "{error:?}");

    let known = common::producer(&emulator, "known").await;
    let error = known
        .get_partition_properties("7")
        .await
        .expect_err("no partition 7");
    assert!(is_not_found(&format!("{error:?}")), "{error:?}");
    let error = known
        .send_event(event("x"), to_partition("9"))
        .await
        .expect_err("no partition 9");
    assert!(is_not_found(&format!("{error:?}")), "{error:?}");

    for (hub, group, partition) in [
        ("missing", None, "0"),
        ("known", Some("nobody"), "0"),
        ("known", None, "5"),
    ] {
        let consumer = consumer(&emulator, hub, group).await;
        let receiver = consumer
            .open_receiver_on_partition(partition.into(), None)
            .await;
        let text = match receiver {
            Err(e) => format!("{e:?}"),
            Ok(receiver) => {
                let stream = receiver.stream_events();
                futures::pin_mut!(stream);
                match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
                    Ok(Some(Err(e))) => format!("{e:?}"),
                    other => {
                        panic!("{hub}/{group:?}/{partition}: expected an error, got {other:?}")
                    }
                }
            }
        };
        assert!(is_not_found(&text), "{hub}/{group:?}/{partition}: {text}");
    }
}

#[tokio::test]
async fn sas_tokens_are_verified_when_a_key_is_configured() {
    let emulator = start(
        Config::for_tests()
            .with_hub(HubConfig::new("secured", 1))
            .with_shared_access_key(KEY_NAME, KEY),
    )
    .await;
    let bad = producer_with_key(&emulator, "secured", "not-the-key").await;
    let refused = match bad {
        Err(e) => format!("{e:?}"),
        Ok(bad) => format!(
            "{:?}",
            bad.send_event(event("nope"), to_partition("0"))
                .await
                .expect_err("a token signed with the wrong key is refused")
        ),
    };
    assert!(
        refused.contains("401") || refused.contains("Unauthorized"),
        "{refused}"
    );

    let good = producer(&emulator, "secured").await;
    good.send_event(event("yes"), to_partition("0"))
        .await
        .expect("a good token works");
    let props = good
        .get_partition_properties("0")
        .await
        .expect("management with a good token");
    assert_eq!(
        props.last_enqueued_sequence_number, 0,
        "the refused event was not stored"
    );
    let consumer = consumer(&emulator, "secured", None).await;
    let receiver = consumer
        .open_receiver_on_partition("0".into(), from(StartLocation::Earliest, false))
        .await
        .expect("receiver");
    assert_eq!(
        bodies(&receive(&receiver, 1, Duration::from_secs(3)).await),
        ["yes"]
    );
}

fn owner(level: i64) -> Option<OpenReceiverOptions> {
    Some(OpenReceiverOptions {
        owner_level: Some(level),
        start_position: Some(StartPosition {
            location: StartLocation::Earliest,
            inclusive: false,
        }),
        ..Default::default()
    })
}

#[tokio::test]
async fn higher_owner_level_steals_the_partition() {
    let emulator = start(Config::for_tests().with_hub(HubConfig::new("owned", 1))).await;
    let producer = producer(&emulator, "owned").await;
    producer
        .send_event(event("first"), to_partition("0"))
        .await
        .expect("send");

    let consumer_a = consumer(&emulator, "owned", None).await;
    let old = consumer_a
        .open_receiver_on_partition("0".into(), owner(1))
        .await
        .expect("epoch 1 receiver");
    let stream = old.stream_events();
    futures::pin_mut!(stream);
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("first event in time")
        .expect("stream open")
        .expect("first event");
    assert_eq!(body(&first), "first");

    let consumer_b = consumer(&emulator, "owned", None).await;
    let new = consumer_b
        .open_receiver_on_partition("0".into(), owner(2))
        .await
        .expect("epoch 2 receiver");
    // Attach the new receiver by reading from it.
    assert_eq!(
        bodies(&receive(&new, 1, Duration::from_secs(5)).await),
        ["first"]
    );

    let ended = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the old receiver ends in time");
    let text = format!("{ended:?}");
    assert!(
        text.contains("stolen") || text.contains("ConsumerDisconnected") || ended.is_none(),
        "old receiver: {text}"
    );

    // A lower owner level is refused while epoch 2 holds the partition.
    let consumer_c = consumer(&emulator, "owned", None).await;
    let lower = consumer_c
        .open_receiver_on_partition("0".into(), owner(1))
        .await;
    let text = match lower {
        Err(e) => format!("{e:?}"),
        Ok(lower) => {
            let stream = lower.stream_events();
            futures::pin_mut!(stream);
            format!(
                "{:?}",
                tokio::time::timeout(Duration::from_secs(10), stream.next()).await
            )
        }
    };
    assert!(
        text.contains("stolen") || text.contains("ConsumerDisconnected"),
        "lower epoch: {text}"
    );

    // The owner keeps receiving.
    producer
        .send_event(event("second"), to_partition("0"))
        .await
        .expect("send");
    assert_eq!(
        bodies(&receive(&new, 1, Duration::from_secs(5)).await),
        ["second"]
    );
}
