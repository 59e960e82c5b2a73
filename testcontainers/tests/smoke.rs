//! Every fixture serves a plain client of its platform: one message produced and consumed on
//! each real server, all started by the fixtures in this one test binary.

use std::time::Duration;

use tributary_testcontainers::{Peer, Server, require_peer, unique_name};

const WAIT: Duration = Duration::from_secs(60);

fn report(server: &Server) {
    let rss = server
        .resident_bytes()
        .map(|b| format!("{} MiB", b >> 20))
        .unwrap_or_else(|| "n/a".into());
    println!(
        "{} ({:?}) serving at {} after {:.1} s, resident {rss}, log {}",
        server.peer(),
        server.mode(),
        server.url(),
        server.startup_time().as_secs_f64(),
        server
            .log_path()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_round_trip_with_rdkafka() {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let server = require_peer!(Peer::Kafka);
    report(&server);
    let topic = unique_name("smoke");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", server.address())
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let headers = OwnedHeaders::new().insert(Header {
        key: "h",
        value: Some(&b"\x00\xff"[..]),
    });
    let delivery = producer
        .send(
            FutureRecord::to(&topic)
                .key("k1")
                .payload("hello kafka")
                .headers(headers)
                .timestamp(1_700_000_000_123),
            WAIT,
        )
        .await
        .map_err(|(e, _)| e)
        .expect("send");
    assert_eq!(delivery.offset, 0);

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", server.address())
        .set("group.id", unique_name("smoke-group"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let message = tokio::time::timeout(WAIT, consumer.recv())
        .await
        .expect("a message within 60 s")
        .expect("recv");
    assert_eq!(message.payload(), Some(&b"hello kafka"[..]));
    assert_eq!(message.key(), Some(&b"k1"[..]));
    assert_eq!(message.timestamp().to_millis(), Some(1_700_000_000_123));
    let header = message.headers().expect("headers").get(0);
    assert_eq!((header.key, header.value), ("h", Some(&b"\x00\xff"[..])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulsar_round_trip_with_the_pulsar_crate() {
    use futures::StreamExt;
    use pulsar::consumer::InitialPosition;
    use pulsar::{Consumer, ConsumerOptions, Pulsar, SubType, TokioExecutor};

    let server = require_peer!(Peer::Pulsar);
    report(&server);
    let topic = format!("persistent://public/default/{}", unique_name("smoke"));
    let pulsar: Pulsar<TokioExecutor> =
        Pulsar::builder(format!("pulsar://{}", server.address()), TokioExecutor)
            .build()
            .await
            .expect("client");
    let mut consumer: Consumer<Vec<u8>, TokioExecutor> = pulsar
        .consumer()
        .with_topic(&topic)
        .with_subscription("smoke")
        .with_subscription_type(SubType::Exclusive)
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build()
        .await
        .expect("consumer");
    let mut producer = pulsar
        .producer()
        .with_topic(&topic)
        .build()
        .await
        .expect("producer");
    let receipt = producer
        .create_message()
        .with_content(b"hello pulsar".to_vec())
        .with_key("k1")
        .with_property("h", "v")
        .send_non_blocking()
        .await
        .expect("send")
        .await
        .expect("receipt");
    assert!(receipt.message_id.is_some());

    let message = tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("a message within 60 s")
        .expect("stream open")
        .expect("message");
    assert_eq!(message.payload.data, b"hello pulsar");
    assert_eq!(message.key().as_deref(), Some("k1"));
    let properties = &message.metadata().properties;
    assert!(
        properties.iter().any(|p| p.key == "h" && p.value == "v"),
        "{properties:?}"
    );
    consumer.ack(&message).await.expect("ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_round_trip_with_google_cloud_pubsub() {
    use google_cloud_auth::credentials::anonymous;
    use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};
    use google_cloud_pubsub::model::Message;

    let server = require_peer!(Peer::PubSub);
    report(&server);
    let endpoint = format!("http://{}", server.address());
    let topic = format!("projects/tributary-test/topics/{}", unique_name("smoke"));
    let subscription = format!(
        "projects/tributary-test/subscriptions/{}",
        unique_name("smoke")
    );

    let topics = TopicAdmin::builder()
        .with_endpoint(&endpoint)
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await
        .expect("topic admin");
    topics
        .create_topic()
        .set_name(&topic)
        .send()
        .await
        .expect("create topic");
    let subscriptions = SubscriptionAdmin::builder()
        .with_endpoint(&endpoint)
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await
        .expect("subscription admin");
    subscriptions
        .create_subscription()
        .set_name(&subscription)
        .set_topic(&topic)
        .send()
        .await
        .expect("create subscription");

    let publisher = Publisher::builder(&topic)
        .with_endpoint(&endpoint)
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await
        .expect("publisher");
    let id = publisher
        .publish(
            Message::new()
                .set_data("hello pubsub")
                .set_attributes([("h", "v")]),
        )
        .await
        .expect("publish");
    assert!(!id.is_empty());

    let subscriber = Subscriber::builder()
        .with_endpoint(&endpoint)
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await
        .expect("subscriber");
    let mut stream = subscriber.subscribe(&subscription).build();
    let (message, handler) = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a message within 60 s")
        .expect("stream open")
        .expect("message");
    assert_eq!(&message.data[..], b"hello pubsub");
    assert_eq!(message.attributes.get("h").map(String::as_str), Some("v"));
    handler.ack();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_round_trip_with_aws_sdk_kinesis() {
    use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};

    let server = require_peer!(Peer::Kinesis);
    report(&server);
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://{}", server.address()))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .build();
    let client = aws_sdk_kinesis::Client::from_conf(config);
    let stream = unique_name("smoke");
    client
        .create_stream()
        .stream_name(&stream)
        .shard_count(1)
        .send()
        .await
        .expect("create stream");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = client
            .describe_stream_summary()
            .stream_name(&stream)
            .send()
            .await
            .expect("describe");
        if status
            .stream_description_summary()
            .map(|s| s.stream_status())
            == Some(&StreamStatus::Active)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream never became ACTIVE"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let put = client
        .put_record()
        .stream_name(&stream)
        .partition_key("k1")
        .data(Blob::new("hello kinesis"))
        .send()
        .await
        .expect("put record");
    let shards = client
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .expect("list shards");
    let shard = shards.shards()[0].shard_id().to_string();
    assert_eq!(put.shard_id(), shard);
    let iterator = client
        .get_shard_iterator()
        .stream_name(&stream)
        .shard_id(&shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("shard iterator")
        .shard_iterator
        .expect("an iterator");
    let records = client
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await
        .expect("get records");
    let record = &records.records()[0];
    assert_eq!(record.data().as_ref(), b"hello kinesis");
    assert_eq!(record.partition_key(), Some("k1"));
    assert_eq!(record.sequence_number(), put.sequence_number());
}

/// dynalite answers the DynamoDB calls a lease table relies on: a table created, a conditional
/// put refused with `ConditionalCheckFailedException`, a conditional update applied, and the
/// table still there after a restart (the fixture keeps its data on disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_conditional_writes_with_aws_sdk_dynamodb() {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
        ScalarAttributeType, TableStatus,
    };

    let server = require_peer!(Peer::DynamoDb);
    report(&server);
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(server.url())
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .build();
    let client = aws_sdk_dynamodb::Client::from_conf(config);
    let table = unique_name("smoke-leases");
    client
        .create_table()
        .table_name(&table)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("leaseKey")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("leaseKey")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");
    // DynamoDB (and dynalite, even with `--createTableMs 0`, which flips the status on its
    // next event-loop turn) answers CREATING first: a lease table is usable once ACTIVE, as
    // the SDKs' `table_exists` waiter has it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut status;
    loop {
        status = client
            .describe_table()
            .table_name(&table)
            .send()
            .await
            .expect("describe table")
            .table
            .and_then(|t| t.table_status);
        if status == Some(TableStatus::Active) || std::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status,
        Some(TableStatus::Active),
        "table `{table}` never became ACTIVE"
    );

    let put = || {
        client
            .put_item()
            .table_name(&table)
            .item("leaseKey", AttributeValue::S("shardId-000000000000".into()))
            .item("leaseCounter", AttributeValue::N("1".into()))
            .condition_expression("attribute_not_exists(leaseKey)")
            .send()
    };
    put().await.expect("first conditional put");
    let refused = put().await.expect_err("second conditional put must fail");
    assert!(
        refused
            .as_service_error()
            .is_some_and(|e| e.is_conditional_check_failed_exception()),
        "{refused:?}"
    );
    let updated = client
        .update_item()
        .table_name(&table)
        .key("leaseKey", AttributeValue::S("shardId-000000000000".into()))
        .update_expression("SET leaseCounter = leaseCounter + :one, leaseOwner = :owner")
        .condition_expression("leaseCounter = :seen")
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .expression_attribute_values(":seen", AttributeValue::N("1".into()))
        .expression_attribute_values(":owner", AttributeValue::S("worker-1".into()))
        .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
        .send()
        .await
        .expect("conditional update");
    let item = updated.attributes.expect("new item");
    assert_eq!(item["leaseCounter"], AttributeValue::N("2".into()));
    assert_eq!(item["leaseOwner"], AttributeValue::S("worker-1".into()));

    server.restart().expect("restart dynalite");
    let item = client
        .get_item()
        .table_name(&table)
        .key("leaseKey", AttributeValue::S("shardId-000000000000".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get item after restart")
        .item
        .expect("the item survived the restart");
    assert_eq!(item["leaseCounter"], AttributeValue::N("2".into()));
}

/// The fixture's URL is `eventhubs://<namespace>?endpoint=amqp://HOST:PORT`: the namespace names
/// audiences, the endpoint is where the socket goes.
fn eventhubs_endpoint(url: &str) -> (String, String) {
    let rest = url.strip_prefix("eventhubs://").expect("eventhubs URL");
    let (namespace, query) = rest.split_once('?').expect("endpoint option");
    let endpoint = query.strip_prefix("endpoint=").expect("endpoint option");
    (
        namespace.trim_end_matches('/').to_string(),
        endpoint.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventhubs_round_trip_with_azure_messaging_eventhubs() {
    use azure_messaging_eventhubs::models::EventData;
    use azure_messaging_eventhubs::{
        ConsumerClient, OpenReceiverOptions, ProducerClient, SendEventOptions, StartLocation,
        StartPosition,
    };
    use futures::StreamExt;

    let server = require_peer!(Peer::EventHubs);
    report(&server);
    let (namespace, endpoint) = eventhubs_endpoint(server.url());
    let connection = format!(
        "Endpoint=sb://{namespace}/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=any"
    );
    let hub = unique_name("smoke");
    let producer = ProducerClient::builder()
        .with_custom_endpoint(endpoint.clone())
        .open_with_connection_string(&connection, Some(&hub))
        .await
        .expect("producer");
    producer
        .send_event(
            EventData::builder().with_body(b"hello".to_vec()).build(),
            Some(SendEventOptions {
                partition_id: Some("0".into()),
            }),
        )
        .await
        .expect("send");
    producer.close().await.expect("close producer");

    let consumer = ConsumerClient::builder()
        .with_custom_endpoint(endpoint)
        .open_with_connection_string(&connection, Some(&hub))
        .await
        .expect("consumer");
    let receiver = consumer
        .open_receiver_on_partition(
            "0".into(),
            Some(OpenReceiverOptions {
                start_position: Some(StartPosition {
                    location: StartLocation::Earliest,
                    inclusive: false,
                }),
                ..Default::default()
            }),
        )
        .await
        .expect("receiver");
    let stream = receiver.stream_events();
    futures::pin_mut!(stream);
    let event = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event in time")
        .expect("stream open")
        .expect("event");
    assert_eq!(event.event_data().body(), Some(&b"hello"[..]));
}
