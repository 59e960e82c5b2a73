//! Every send of the Rust SDK gets its outcome, however fast the emulator answers.
//!
//! fe2o3-amqp 0.16 records a delivery as unsettled only after handing its transfer to the
//! session; an outcome arriving in between was dropped and the send waited forever. Against the
//! emulator without its outcome pause, about one sequential batch send in 25 hung here.

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
