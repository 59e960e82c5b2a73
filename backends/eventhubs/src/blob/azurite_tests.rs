//! The store's blob layout against a real Blob service (Azurite from the fixtures): names,
//! metadata and conditional writes, as Microsoft's SDKs' stores read and write them.

use tributary::{PartitionId, Position, StartPosition};
use tributary_testcontainers::{
    AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY, Peer, require_peer, unique_name,
};

use super::client::{BlobAuth, BlobContainer, Condition};
use super::{BlobCheckpointStore, BlobStoreConfig, StorageAuth};
use tributary::backend::Checkpoint;

fn store(url: &str, container: &str) -> BlobCheckpointStore {
    BlobCheckpointStore::new(BlobStoreConfig::new(
        url,
        container,
        StorageAuth::AccountKey {
            account: AZURITE_ACCOUNT.into(),
            key: AZURITE_ACCOUNT_KEY.into(),
        },
        "MyNs.servicebus.windows.net",
    ))
    .unwrap()
}

#[tokio::test]
async fn ownership_claims_are_conditional_and_named_like_the_sdks() {
    let azurite = require_peer!(Peer::Azurite);
    let container = unique_name("own");
    let store = store(azurite.url(), &container);
    let p0 = PartitionId::new("0");
    let first = store
        .write_ownership("$Default", "Orders", &p0, "a", None)
        .await
        .unwrap()
        .expect("the first claim wins");
    assert!(
        store
            .write_ownership("$Default", "Orders", &p0, "b", None)
            .await
            .unwrap()
            .is_none(),
        "a second create loses"
    );
    let second = store
        .write_ownership("$Default", "Orders", &p0, "b", Some(&first.etag))
        .await
        .unwrap()
        .expect("a steal with the seen ETag wins");
    assert_ne!(second.etag, first.etag);
    assert!(
        store
            .write_ownership("$Default", "Orders", &p0, "a", Some(&first.etag))
            .await
            .unwrap()
            .is_none(),
        "the old ETag no longer works"
    );
    let listed = store.list_ownership("$DEFAULT", "orders").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].owner, "b");
    assert_eq!(listed[0].etag, second.etag);

    // The blob is where the other SDKs look: lower-cased names, `ownerid` metadata.
    let raw = BlobContainer::new(
        azurite.url(),
        &container,
        BlobAuth::SharedKey {
            account: AZURITE_ACCOUNT.into(),
            key: base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                AZURITE_ACCOUNT_KEY,
            )
            .unwrap(),
        },
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    let items = raw.list("").await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].name,
        "myns.servicebus.windows.net/orders/$default/ownership/0"
    );
    assert_eq!(
        items[0].metadata.get("ownerid").map(String::as_str),
        Some("b")
    );
    // Released: an empty owner, as the Python processor writes it.
    raw.set_metadata(
        &items[0].name,
        &[("ownerid", "")],
        Condition::Matches(&second.etag),
    )
    .await
    .expect("release");
    assert_eq!(
        store.list_ownership("$Default", "Orders").await.unwrap()[0].owner,
        ""
    );
}

#[tokio::test]
async fn checkpoints_carry_offset_and_sequence_number() {
    let azurite = require_peer!(Peer::Azurite);
    let container = unique_name("cp");
    let store = store(azurite.url(), &container);
    let p1 = PartitionId::new("1");
    store
        .offsets
        .record("$Default", "orders", "1", 41, "8192".into());
    store
        .write_checkpoint(
            "$Default",
            "orders",
            &p1,
            &Checkpoint::Processed(Position::new("41")),
        )
        .await
        .unwrap();
    let p2 = PartitionId::new("2");
    store
        .write_checkpoint(
            "$Default",
            "orders",
            &p2,
            &Checkpoint::Start(StartPosition::Latest),
        )
        .await
        .unwrap();
    let checkpoints = store.list_checkpoints("$Default", "orders").await.unwrap();
    assert_eq!(checkpoints[&p1], Checkpoint::Processed(Position::new("41")));
    assert_eq!(checkpoints[&p2], Checkpoint::Start(StartPosition::Latest));
    let raw = BlobContainer::new(
        azurite.url(),
        &container,
        BlobAuth::SharedKey {
            account: AZURITE_ACCOUNT.into(),
            key: base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                AZURITE_ACCOUNT_KEY,
            )
            .unwrap(),
        },
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    let items = raw
        .list("myns.servicebus.windows.net/orders/$default/checkpoint/")
        .await
        .unwrap();
    let one = items.iter().find(|i| i.name.ends_with("/1")).unwrap();
    assert_eq!(one.metadata.get("offset").map(String::as_str), Some("8192"));
    assert_eq!(
        one.metadata.get("sequencenumber").map(String::as_str),
        Some("41")
    );
    let two = items.iter().find(|i| i.name.ends_with("/2")).unwrap();
    assert_eq!(two.metadata.get("offset").map(String::as_str), Some("-1"));
    assert_eq!(
        two.metadata.get("tributarycheckpoint").map(String::as_str),
        Some("start:latest")
    );
    // A later checkpoint replaces all metadata, tributary's entry included.
    store
        .write_checkpoint(
            "$Default",
            "orders",
            &p2,
            &Checkpoint::Processed(Position::new("3")),
        )
        .await
        .unwrap();
    assert_eq!(
        store.list_checkpoints("$Default", "orders").await.unwrap()[&p2],
        Checkpoint::Processed(Position::new("3"))
    );
}

#[tokio::test]
async fn a_wrong_key_is_unauthorized_without_showing_it() {
    let azurite = require_peer!(Peer::Azurite);
    let store = BlobCheckpointStore::new(BlobStoreConfig::new(
        azurite.url(),
        unique_name("bad"),
        StorageAuth::AccountKey {
            account: AZURITE_ACCOUNT.into(),
            key: "d3Jvbmc=".into(),
        },
        "ns",
    ))
    .unwrap();
    let error = store.list_ownership("g", "h").await.unwrap_err();
    assert_eq!(error.kind(), tributary::ErrorKind::Unauthorized, "{error}");
    assert!(!error.to_string().contains("d3Jvbmc"), "{error}");
}

#[tokio::test]
async fn the_store_keeps_the_contract() {
    let azurite = require_peer!(Peer::Azurite);
    let store = store(azurite.url(), &unique_name("contract"));
    tributary_conformance::checkpoint_store_contract(&store).await;
}
