//! Every send of the Rust SDK gets its outcome, however fast the emulator answers.
//!
//! fe2o3-amqp 0.16.2 recorded a delivery as unsettled only after handing its transfer to the
//! session; an outcome arriving in between was dropped and the send waited forever. Against the
//! emulator on a loaded machine about one sequential batch send in 25 hung here, until the
//! workspace patched the library (vendor/README.md).

mod common;

use std::time::Duration;

use azure_messaging_eventhubs::EventDataBatchOptions;
use common::*;
use tributary_eventhubs_emulator::{Config, HubConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_sequential_batch_sends_all_complete() {
    let emulator = start(Config::for_tests().with_hub(HubConfig::new("outcomes", 4))).await;
    let producer = producer(&emulator, "outcomes").await;
    for send in 0..300 {
        let batch = producer
            .create_batch(Some(EventDataBatchOptions {
                partition_key: Some(format!("key-{}", send % 7)),
                ..Default::default()
            }))
            .await
            .expect("batch");
        for i in 0..20 {
            assert!(
                batch
                    .try_add_event_data(format!("{send}-{i}").into_bytes(), None)
                    .expect("add")
            );
        }
        tokio::time::timeout(Duration::from_secs(10), producer.send_batch(batch, None))
            .await
            .unwrap_or_else(|_| panic!("send {send} got no outcome within 10 s"))
            .expect("send");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_sequential_management_requests_all_complete() {
    let emulator = start(Config::for_tests().with_hub(HubConfig::new("requests", 4))).await;
    let producer = producer(&emulator, "requests").await;
    for request in 0..300 {
        tokio::time::timeout(
            Duration::from_secs(10),
            producer.get_partition_properties(&(request % 4).to_string()),
        )
        .await
        .unwrap_or_else(|_| panic!("request {request} got no answer within 10 s"))
        .expect("partition properties");
    }
}
