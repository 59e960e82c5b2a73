//! The DynamoDB lease table against a real DynamoDB API (dynalite): the store contract every
//! checkpoint store keeps, and the items checked attribute by attribute against the KCL 2.x
//! lease schema, both ways (what tributary writes reads as a KCL lease; a KCL application's
//! items read as tributary checkpoints).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::AttributeValue;
use tributary::backend::{Checkpoint, CheckpointKey, CheckpointStore, PartitionTopology};
use tributary::{PartitionId, Position, StartPosition};
use tributary_kinesis::dynamodb::{DynamoDbCheckpointStore, DynamoDbSettings};
use tributary_testcontainers::{Peer, require_peer, unique_name};

fn client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

fn store(endpoint: &str, table: &str) -> Arc<DynamoDbCheckpointStore> {
    DynamoDbCheckpointStore::new(
        client(endpoint),
        DynamoDbSettings {
            table: table.to_owned(),
            create_table: true,
            lease_ttl: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
        },
    )
}

async fn item(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    shard: &str,
) -> HashMap<String, AttributeValue> {
    client
        .get_item()
        .table_name(table)
        .key("leaseKey", AttributeValue::S(shard.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item
        .expect("the lease item exists")
}

/// The attribute names and DynamoDB types of an item, sorted: what the KCL's serializer reads.
fn shape(item: &HashMap<String, AttributeValue>) -> Vec<(String, &'static str)> {
    let mut shape: Vec<_> = item
        .iter()
        .map(|(name, value)| {
            let kind = match value {
                AttributeValue::S(_) => "S",
                AttributeValue::N(_) => "N",
                AttributeValue::Ss(_) => "SS",
                AttributeValue::B(_) => "B",
                _ => "other",
            };
            (name.clone(), kind)
        })
        .collect();
    shape.sort();
    shape
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_store_keeps_the_contract() {
    let server = require_peer!(Peer::DynamoDb);
    let store = store(server.url(), "{group}.{stream}");
    tributary_conformance::checkpoint_store_contract(store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_items_follow_the_kcl_schema() {
    let server = require_peer!(Peer::DynamoDb);
    let table = unique_name("kcl-schema");
    let store = store(server.url(), &table);
    let raw = client(server.url());
    let (group, stream) = ("billing", "orders");
    let parent = "shardId-000000000000";
    let child = "shardId-000000000002";
    let merged = "shardId-000000000003";
    store
        .prepare(
            group,
            stream,
            &[
                PartitionTopology::root(PartitionId::new(parent)),
                PartitionTopology {
                    id: PartitionId::new(child),
                    parents: vec![PartitionId::new(parent)],
                },
                PartitionTopology {
                    id: PartitionId::new(merged),
                    parents: vec![PartitionId::new(parent), PartitionId::new(child)],
                },
            ],
        )
        .await
        .unwrap();

    // A new lease: KCL's initial attributes, parents as a string set.
    let fresh = item(&raw, &table, merged).await;
    assert_eq!(fresh["leaseKey"], s(merged));
    assert_eq!(fresh["leaseCounter"], n(0));
    assert_eq!(fresh["ownerSwitchesSinceCheckpoint"], n(0));
    let AttributeValue::Ss(parents) = &fresh["parentShardId"] else {
        panic!(
            "parentShardId must be a string set: {:?}",
            fresh["parentShardId"]
        )
    };
    let mut parents = parents.clone();
    parents.sort();
    assert_eq!(parents, [parent, child]);
    assert!(
        !fresh.contains_key("leaseOwner"),
        "an unowned lease has no leaseOwner"
    );
    assert!(
        !item(&raw, &table, parent)
            .await
            .contains_key("parentShardId")
    );

    // Claimed and checkpointed: every KCL attribute with its KCL type.
    let key = CheckpointKey::new(group, stream, PartitionId::new(child));
    let ttl = Duration::from_secs(10);
    let lease = store
        .claim(&key, "worker-a", ttl, None)
        .await
        .unwrap()
        .unwrap();
    let sequence = "49590338271490256608559692538361571095921575989136588898";
    let lease = store
        .checkpoint(
            &lease,
            &Checkpoint::Processed(Position::new(format!("{sequence}:3"))),
        )
        .await
        .unwrap()
        .unwrap();
    let held = item(&raw, &table, child).await;
    assert_eq!(
        shape(&held),
        [
            ("checkpoint".to_owned(), "S"),
            ("checkpointSubSequenceNumber".to_owned(), "N"),
            ("leaseCounter".to_owned(), "N"),
            ("leaseKey".to_owned(), "S"),
            ("leaseOwner".to_owned(), "S"),
            ("ownerSwitchesSinceCheckpoint".to_owned(), "N"),
            ("parentShardId".to_owned(), "SS"),
            ("tributaryLeaseMillis".to_owned(), "N"),
            ("tributaryStream".to_owned(), "S"),
        ]
    );
    assert_eq!(held["leaseOwner"], s("worker-a"));
    assert_eq!(held["checkpoint"], s(sequence));
    assert_eq!(held["checkpointSubSequenceNumber"], n(3));
    assert_eq!(
        held["leaseCounter"],
        n(2),
        "claim and checkpoint each bump the counter"
    );
    assert_eq!(
        held["leaseCounter"],
        AttributeValue::N(lease.version.0.clone())
    );
    assert_eq!(held["tributaryLeaseMillis"], n(10_000));

    // A take by another worker counts an owner switch; a checkpoint resets the count.
    let stolen = store
        .claim(&key, "worker-b", ttl, Some(&lease))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        item(&raw, &table, child).await["ownerSwitchesSinceCheckpoint"],
        n(1)
    );
    let stolen = store
        .checkpoint(&stolen, &Checkpoint::Ended)
        .await
        .unwrap()
        .unwrap();
    let ended = item(&raw, &table, child).await;
    assert_eq!(ended["checkpoint"], s("SHARD_END"));
    assert_eq!(ended["checkpointSubSequenceNumber"], n(0));
    assert_eq!(ended["ownerSwitchesSinceCheckpoint"], n(0));

    // Release removes the owner, as the KCL's eviction does, and bumps the counter.
    store.release(&stolen).await.unwrap();
    let released = item(&raw, &table, child).await;
    assert!(!released.contains_key("leaseOwner"));
    assert_eq!(released["leaseCounter"], n(5));

    // Starting points in KCL form.
    let key = CheckpointKey::new(group, stream, PartitionId::new(parent));
    let lease = store
        .claim(&key, "worker-a", ttl, None)
        .await
        .unwrap()
        .unwrap();
    let lease = store
        .checkpoint(&lease, &Checkpoint::Start(StartPosition::Earliest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        item(&raw, &table, parent).await["checkpoint"],
        s("TRIM_HORIZON")
    );
    store
        .checkpoint(&lease, &Checkpoint::Start(StartPosition::Latest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item(&raw, &table, parent).await["checkpoint"], s("LATEST"));
}

/// A table written by a KCL application (items exactly as the KCL's `DynamoDBLeaseSerializer`
/// writes them) is adopted: its checkpoints are the group's, its owners are seen, and a take
/// is fenced by its `leaseCounter`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kcl_applications_table_is_adopted() {
    let server = require_peer!(Peer::DynamoDb);
    let table = unique_name("kcl-app");
    let store = store(server.url(), &table);
    let raw = client(server.url());
    store.ensure_table(&table).await.unwrap();
    let sequence = "49590338271490256608559692538361571095921575989136588898";
    let kcl_items = [
        vec![
            ("leaseKey", s("shardId-000000000000")),
            ("leaseOwner", s("kcl-worker-1")),
            ("leaseCounter", n(41)),
            ("ownerSwitchesSinceCheckpoint", n(0)),
            ("checkpoint", s("SHARD_END")),
            ("checkpointSubSequenceNumber", n(0)),
            (
                "childShardIds",
                AttributeValue::Ss(vec!["shardId-000000000001".into()]),
            ),
            ("startingHashKey", s("0")),
            (
                "endingHashKey",
                s("340282366920938463463374607431768211455"),
            ),
        ],
        vec![
            ("leaseKey", s("shardId-000000000001")),
            ("leaseOwner", s("kcl-worker-2")),
            ("leaseCounter", n(7)),
            ("ownerSwitchesSinceCheckpoint", n(2)),
            ("checkpoint", s(sequence)),
            ("checkpointSubSequenceNumber", n(5)),
            ("pendingCheckpoint", s(sequence)),
            ("pendingCheckpointSubSequenceNumber", n(9)),
            (
                "parentShardId",
                AttributeValue::Ss(vec!["shardId-000000000000".into()]),
            ),
        ],
        vec![
            ("leaseKey", s("shardId-000000000002")),
            ("leaseCounter", n(0)),
            ("ownerSwitchesSinceCheckpoint", n(0)),
            ("checkpoint", s("TRIM_HORIZON")),
            ("checkpointSubSequenceNumber", n(0)),
        ],
    ];
    for attributes in kcl_items {
        let mut put = raw.put_item().table_name(&table);
        for (name, value) in attributes {
            put = put.item(name, value);
        }
        put.send().await.expect("put a KCL item");
    }
    let checkpoints = store.checkpoints("any-group", "orders").await.unwrap();
    assert_eq!(
        checkpoints[&PartitionId::new("shardId-000000000000")],
        Checkpoint::Ended
    );
    assert_eq!(
        checkpoints[&PartitionId::new("shardId-000000000001")],
        Checkpoint::Processed(Position::new(format!("{sequence}:5")))
    );
    assert_eq!(
        checkpoints[&PartitionId::new("shardId-000000000002")],
        Checkpoint::Start(StartPosition::Earliest)
    );
    let leases = store.leases("any-group", "orders").await.unwrap();
    let owner_of = |shard: &str| {
        leases
            .iter()
            .find(|l| l.key.partition.as_str() == shard)
            .map(|l| (l.owner.clone(), l.version.0.clone()))
    };
    assert_eq!(
        owner_of("shardId-000000000001"),
        Some(("kcl-worker-2".into(), "7".into()))
    );
    assert_eq!(owner_of("shardId-000000000002"), None, "no owner, no lease");
    // A KCL lease seen for the first time lasts the store's lease time from now.
    let kcl = leases
        .iter()
        .find(|l| l.owner == "kcl-worker-2")
        .unwrap()
        .clone();
    assert!(!kcl.is_free(tributary::Timestamp::now()));

    // Taking it over is fenced by the KCL's counter, and the KCL's pending checkpoint is cleared
    // by the first checkpoint.
    let key = CheckpointKey::new(
        "any-group",
        "orders",
        PartitionId::new("shardId-000000000001"),
    );
    let mut stale = kcl.clone();
    stale.version.0 = "6".into();
    assert!(
        store
            .claim(&key, "tributary-1", Duration::from_secs(10), Some(&stale))
            .await
            .unwrap()
            .is_none()
    );
    let taken = store
        .claim(&key, "tributary-1", Duration::from_secs(10), Some(&kcl))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.version.0, "8");
    let after_take = item(&raw, &table, "shardId-000000000001").await;
    assert_eq!(after_take["ownerSwitchesSinceCheckpoint"], n(3));
    store
        .checkpoint(
            &taken,
            &Checkpoint::Processed(Position::new(format!("{sequence}:6"))),
        )
        .await
        .unwrap()
        .unwrap();
    let after = item(&raw, &table, "shardId-000000000001").await;
    assert!(!after.contains_key("pendingCheckpoint"));
    assert!(!after.contains_key("pendingCheckpointSubSequenceNumber"));
    assert_eq!(after["checkpointSubSequenceNumber"], n(6));
    assert_eq!(
        after["parentShardId"],
        AttributeValue::Ss(vec!["shardId-000000000000".into()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_table_is_never_read_for_two_streams() {
    let server = require_peer!(Peer::DynamoDb);
    let table = unique_name("shared-table");
    let store = store(server.url(), &table);
    let key = CheckpointKey::new("g", "orders", PartitionId::new("shardId-000000000000"));
    store
        .claim(&key, "a", Duration::from_secs(10), None)
        .await
        .unwrap()
        .unwrap();
    let err = store.checkpoints("g", "payments").await.unwrap_err();
    assert_eq!(err.kind(), tributary::ErrorKind::Config);
    assert!(err.to_string().contains("lease_table"), "{err}");
}
