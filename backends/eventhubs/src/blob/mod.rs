//! Partition ownership and checkpoints in Azure Blob Storage, in the layout Microsoft's Event
//! Hubs SDKs share (the Python, .NET, Java and JavaScript Blob checkpoint stores), so a group can
//! move between tributary and those processors without reprocessing.
//!
//! # Layout
//! One container (option `storage_container`). Per partition, two empty block blobs whose
//! names are lower-cased (Event Hubs partition ids are digits), as those SDKs write and look
//! them up:
//!
//! | blob | metadata |
//! |---|---|
//! | `NAMESPACE/HUB/CONSUMERGROUP/ownership/PARTITION` | `ownerid` = the owning processor's id (empty: released) |
//! | `NAMESPACE/HUB/CONSUMERGROUP/checkpoint/PARTITION` | `offset` = the service's offset of the last processed event, `sequencenumber` = its sequence number |
//!
//! `NAMESPACE` is the fully qualified namespace (`myhub.servicebus.windows.net`). Ownership
//! has no expiry field: like the SDKs, an ownership is live until its blob's `Last-Modified`
//! plus the lease time (`lease_ttl`), and every claim, renewal and release is a write
//! conditional on the ETag the writer last saw (`If-Match`, or `If-None-Match: *` to create),
//! so of two claimants exactly one wins. Microsoft's Rust SDK 0.16 writes the same names
//! without lower-casing them: with a consumer group such as `$Default` its blobs differ from
//! everyone else's.
//!
//! # What tributary adds
//! Checkpoints other than "processed up to here" have no slot in that layout. tributary writes
//! them with one more metadata entry, `tributarycheckpoint` (`start:earliest`,
//! `start:latest`, `start:@MILLIS`, `start:position:P` or `ended`), and with `offset` =
//! `sequencenumber` = `-1`, which the other SDKs read as "from the beginning": never a skip.
//! (The backend pins a new group's start to a real event where it can, so in practice only
//! `start:earliest` on an empty partition is written.) A checkpoint written by another SDK
//! replaces all metadata and so reads as what it says.
//!
//! A checkpoint write cannot be conditional on the ownership blob (Blob Storage has no
//! transaction across two blobs). The store therefore renews the ownership (a conditional
//! write) right before writing the checkpoint and writes nothing when that fails; the
//! remaining window, between the two writes, is the same as in Microsoft's SDKs.

// `client.rs` (with `client/`): the few signed REST calls; `store.rs`: the layout above over
// them; `leases.rs`: the store as a `CheckpointStore`; `config.rs`: the public configuration
// and connection strings; `offsets.rs`: the offsets that ride along with checkpoints.
pub(crate) mod client;
mod config;
mod leases;
mod offsets;
mod store;

pub use config::{BlobStoreConfig, StorageAuth};
pub(crate) use offsets::{OffsetBook, PartitionOffsets};
pub use store::BlobCheckpointStore;

#[cfg(test)]
mod azurite_tests;
