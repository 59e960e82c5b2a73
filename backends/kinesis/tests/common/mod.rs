//! Helpers shared by the Kinesis tests: a raw `aws-sdk-kinesis` client on the same emulator,
//! and reading a stream back record by record in shard order.
#![allow(dead_code)]

use std::time::Duration;

use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::types::{Record, ShardIteratorType};

pub const WAIT: Duration = Duration::from_secs(120);

/// The `host:port` of a fixture URL's `endpoint`.
pub fn endpoint(url: &str) -> String {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("endpoint="))
        .expect("the fixture URL names its endpoint")
        .to_owned()
}

pub fn raw_client(url: &str) -> aws_sdk_kinesis::Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint(url))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

/// The tributary URL for a fixture: local checkpoints unless a test passes its own.
pub fn url(server_url: &str, extra: &str) -> String {
    let mut url = server_url.to_owned();
    if !extra.contains("checkpoints=") && !extra.contains("dynamodb_endpoint=") {
        url.push_str("&checkpoints=memory");
    }
    if !extra.is_empty() {
        url.push('&');
        url.push_str(extra);
    }
    url
}

pub async fn connect(server_url: &str, extra: &str) -> std::sync::Arc<dyn tributary::Backend> {
    tributary_kinesis::register();
    tributary::connect(&url(server_url, extra))
        .await
        .expect("connect")
}

/// Every record of every shard (closed ones included), each shard in sequence order, until
/// `want` records were read or the deadline passes.
pub async fn read_all(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    want: usize,
) -> Vec<(String, Record)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut out = Vec::new();
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("list shards");
    let mut iterators = Vec::new();
    for shard in shards.shards() {
        let it = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("iterator")
            .shard_iterator
            .expect("an iterator");
        iterators.push((shard.shard_id().to_owned(), Some(it)));
    }
    while out.len() < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "read {} of {want} records before the deadline",
            out.len()
        );
        let mut progressed = false;
        for (shard, iterator) in &mut iterators {
            let Some(it) = iterator.clone() else { continue };
            let page = client
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .expect("get records");
            progressed |= !page.records().is_empty();
            out.extend(page.records().iter().map(|r| (shard.clone(), r.clone())));
            *iterator = page.next_shard_iterator().map(str::to_owned);
        }
        if !progressed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    out
}

/// A DynamoDB client for a fixture's endpoint (dynalite).
pub fn dynamodb_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "static"))
            .build(),
    )
}

/// The lease table store of the Kinesis backend's default layout, on a fixture's DynamoDB.
pub fn lease_store(
    endpoint: &str,
) -> std::sync::Arc<tributary_kinesis::dynamodb::DynamoDbCheckpointStore> {
    tributary_kinesis::dynamodb::DynamoDbCheckpointStore::new(
        dynamodb_client(endpoint),
        tributary_kinesis::dynamodb::DynamoDbSettings {
            table: "{group}.{stream}".into(),
            create_table: false,
            lease_ttl: Duration::from_secs(3),
            timeout: Duration::from_secs(10),
        },
    )
}

/// A ferrokinesis of the test's own, started with `options`; `None` after a loud skip when
/// it is not installed (a failure under `TRIBUTARY_REQUIRE_PEERS`).
pub fn own_kinesis(options: &[&str]) -> Option<tributary_testcontainers::Server> {
    let launcher = tributary_testcontainers::Launcher::from_env().expect("launcher");
    match launcher.start_kinesis_with(options) {
        Ok(server) => Some(server),
        Err(e) if !tributary_testcontainers::peers_required() => {
            eprintln!("SKIPPED: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}
