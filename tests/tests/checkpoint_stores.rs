//! The store contract against the stores in core. Other stores (DynamoDB, Blob) call the same
//! function from their own crates' tests.

use tributary::backend::{FileCheckpointStore, MemoryCheckpointStore};
use tributary_conformance::checkpoint_store_contract;

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    checkpoint_store_contract(&MemoryCheckpointStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint_store_contract(&FileCheckpointStore::open(dir.path()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_store_state_survives_a_reopen() {
    use tributary::backend::{Checkpoint, CheckpointKey, CheckpointStore};
    use tributary::{PartitionId, Position};
    let dir = tempfile::tempdir().unwrap();
    let key = CheckpointKey::new("g", "orders/eu", PartitionId::from(0));
    {
        let store = FileCheckpointStore::open(dir.path()).unwrap();
        let lease = store
            .claim(&key, "a", std::time::Duration::from_secs(30), None)
            .await
            .unwrap()
            .unwrap();
        store
            .checkpoint(&lease, &Checkpoint::Processed(Position::from_offset(42)))
            .await
            .unwrap()
            .unwrap();
    }
    let reopened = FileCheckpointStore::open(dir.path()).unwrap();
    assert_eq!(
        reopened.checkpoints("g", "orders/eu").await.unwrap()[&PartitionId::from(0)],
        Checkpoint::Processed(Position::from_offset(42))
    );
    assert_eq!(
        reopened.leases("g", "orders/eu").await.unwrap()[0].owner,
        "a"
    );
}
