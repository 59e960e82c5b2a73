//! The Blob checkpoint store: ownership and checkpoint blobs (layout in the module above).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tributary::backend::Checkpoint;
use tributary::{Error, PartitionId, Position, Result, StartPosition, Timestamp};

use super::client::{BlobAuth, BlobContainer, BlobItem, Condition, WriteError, Written};

const OWNER_ID: &str = "ownerid";
const OFFSET: &str = "offset";
const SEQUENCE_NUMBER: &str = "sequencenumber";
const TRIBUTARY: &str = "tributarycheckpoint";
/// What other SDKs read as "before the first event".
const BEGINNING: &str = "-1";

/// How the store authenticates to Blob Storage.
#[derive(Clone)]
#[non_exhaustive]
pub enum StorageAuth {
    /// The account name and its key (base64), as in a storage connection string.
    AccountKey {
        /// Storage account name.
        account: String,
        /// The account key, base64 as the portal shows it.
        key: String,
    },
    /// A SAS token (`sv=…&sig=…`) with read, write, create and list rights on the container.
    Sas(String),
    /// Microsoft Entra ID (the role *Storage Blob Data Contributor* on the container).
    Token(Arc<dyn azure_core::credentials::TokenCredential>),
}

impl fmt::Debug for StorageAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageAuth::AccountKey { account, .. } => write!(f, "AccountKey({account}, ***)"),
            StorageAuth::Sas(_) => f.write_str("Sas(***)"),
            StorageAuth::Token(_) => f.write_str("EntraId"),
        }
    }
}

impl StorageAuth {
    /// Parses a storage connection string (`DefaultEndpointsProtocol=…;AccountName=…;
    /// AccountKey=…[;BlobEndpoint=…]`, or `…;SharedAccessSignature=…`; `UseDevelopmentStorage=true`
    /// means Azurite's development account on 127.0.0.1:10000). Returns the blob endpoint too.
    pub fn from_connection_string(text: &str) -> Result<(String, StorageAuth)> {
        let mut fields: HashMap<String, String> = HashMap::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| {
                Error::config(
                    "the storage connection string has a part without `=` (expected Name=Value;…)",
                )
            })?;
            fields.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
        if fields
            .get("usedevelopmentstorage")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Ok((
                "http://127.0.0.1:10000/devstoreaccount1".into(),
                StorageAuth::AccountKey {
                    account: "devstoreaccount1".into(),
                    key: "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==".into(),
                },
            ));
        }
        let account = fields.get("accountname").cloned();
        let endpoint = match (fields.get("blobendpoint"), &account) {
            (Some(endpoint), _) => endpoint.trim_end_matches('/').to_string(),
            (None, Some(account)) => {
                let protocol = fields
                    .get("defaultendpointsprotocol")
                    .map(String::as_str)
                    .unwrap_or("https");
                let suffix = fields
                    .get("endpointsuffix")
                    .map(String::as_str)
                    .unwrap_or("core.windows.net");
                format!("{protocol}://{account}.blob.{suffix}")
            }
            (None, None) => {
                return Err(Error::config(
                    "the storage connection string names neither AccountName nor BlobEndpoint",
                ));
            }
        };
        let auth = match (
            fields.get("accountkey"),
            fields.get("sharedaccesssignature"),
        ) {
            (Some(key), _) => StorageAuth::AccountKey {
                account: account.ok_or_else(|| {
                    Error::config("the storage connection string has AccountKey but no AccountName")
                })?,
                key: key.clone(),
            },
            (None, Some(sas)) => StorageAuth::Sas(sas.clone()),
            (None, None) => {
                return Err(Error::config(
                    "the storage connection string has neither AccountKey nor SharedAccessSignature",
                ));
            }
        };
        Ok((endpoint, auth))
    }

    fn to_client_auth(&self) -> Result<BlobAuth> {
        use base64::Engine as _;
        Ok(match self {
            StorageAuth::AccountKey { account, key } => BlobAuth::SharedKey {
                account: account.clone(),
                key: base64::engine::general_purpose::STANDARD
                    .decode(key.trim())
                    .map_err(|_| Error::config("the storage account key is not base64"))?,
            },
            StorageAuth::Sas(sas) => BlobAuth::Sas(sas.clone()),
            StorageAuth::Token(credential) => BlobAuth::Token(credential.clone()),
        })
    }
}

/// Where the store keeps its blobs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BlobStoreConfig {
    /// The blob endpoint: `https://ACCOUNT.blob.core.windows.net`, or
    /// `http://127.0.0.1:PORT/devstoreaccount1` for Azurite.
    pub account_url: String,
    /// The container (created on first use when missing).
    pub container: String,
    /// How to authenticate.
    pub auth: StorageAuth,
    /// The Event Hubs namespace as it appears in blob names (`myhub.servicebus.windows.net`).
    pub namespace: String,
    /// When set, every group's ownership and checkpoints are kept under this consumer group's
    /// name instead of the group's own (the backend's `consumer_group` option).
    pub consumer_group: Option<String>,
    /// How long an ownership lives after its last write, for leases read from a listing.
    pub ownership_ttl: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl BlobStoreConfig {
    /// A configuration with a 30 s ownership time and 30 s request timeout.
    pub fn new(
        account_url: impl Into<String>,
        container: impl Into<String>,
        auth: StorageAuth,
        namespace: impl Into<String>,
    ) -> Self {
        BlobStoreConfig {
            account_url: account_url.into(),
            container: container.into(),
            auth,
            namespace: namespace.into(),
            consumer_group: None,
            ownership_ttl: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
        }
    }
}

/// The service's offset of each sequence number a group's readers have read and not yet
/// checkpointed, so a checkpoint written by position (the sequence number) can carry the
/// offset other SDKs start from. Filled by the partition readers, emptied by checkpoints;
/// keyed by (group, hub, partition). A store that writes no offsets (checkpoints in memory)
/// gets a book that keeps nothing: nothing would ever empty it, so it would hold one entry per
/// event read for as long as the reader lives.
#[derive(Debug, Clone)]
pub(crate) struct OffsetBook(Option<Arc<Mutex<HashMap<BookKey, Page>>>>);

/// (group, hub, partition).
type BookKey = (String, String, String);

/// One partition's offsets by sequence number.
type Page = Arc<Mutex<BTreeMap<i64, String>>>;

/// A reader's page of the book: recording an event's offset takes neither the whole book's
/// lock (which every partition's reader would contend for) nor a key built per event.
#[derive(Debug, Clone)]
pub(crate) struct PartitionOffsets(Option<Page>);

impl PartitionOffsets {
    pub(crate) fn record(&self, sequence: i64, offset: String) {
        if let Some(page) = &self.0 {
            page.lock().insert(sequence, offset);
        }
    }
}

impl OffsetBook {
    /// A book for the Blob store, which takes an offset with each checkpoint.
    pub(crate) fn keeping() -> Self {
        OffsetBook(Some(Arc::default()))
    }

    /// A book that keeps nothing, for stores that never ask for an offset.
    pub(crate) fn off() -> Self {
        OffsetBook(None)
    }

    fn key(group: &str, hub: &str, partition: &str) -> BookKey {
        (group.to_string(), hub.to_string(), partition.to_string())
    }

    pub(crate) fn record(
        &self,
        group: &str,
        hub: &str,
        partition: &str,
        sequence: i64,
        offset: String,
    ) {
        let Some(book) = &self.0 else { return };
        let page = book
            .lock()
            .entry(Self::key(group, hub, partition))
            .or_default()
            .clone();
        page.lock().insert(sequence, offset);
    }

    /// A fresh page for a partition's new reader; what an earlier reader recorded (and may
    /// still record) is forgotten.
    pub(crate) fn open(&self, group: &str, hub: &str, partition: &str) -> PartitionOffsets {
        PartitionOffsets(self.0.as_ref().map(|book| {
            let page = Page::default();
            book.lock()
                .insert(Self::key(group, hub, partition), page.clone());
            page
        }))
    }

    /// The offset of `sequence`, forgetting it and everything before.
    pub(crate) fn take(
        &self,
        group: &str,
        hub: &str,
        partition: &str,
        sequence: i64,
    ) -> Option<String> {
        let page = self
            .0
            .as_ref()?
            .lock()
            .get(&Self::key(group, hub, partition))?
            .clone();
        let mut entries = page.lock();
        let offset = entries.get(&sequence).cloned();
        *entries = entries.split_off(&(sequence + 1));
        offset
    }
}

/// A partition's ownership as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ownership {
    pub partition: PartitionId,
    /// Empty when released.
    pub owner: String,
    pub etag: String,
    pub last_modified: Timestamp,
}

/// (ownership blob, ETag).
pub(super) type WrittenVersion = (String, String);

/// Ownership and checkpoints in Blob Storage (see the module documentation for the layout).
#[derive(Clone)]
pub struct BlobCheckpointStore {
    pub(super) container: BlobContainer,
    config: BlobStoreConfig,
    pub(crate) offsets: OffsetBook,
    prepared: Arc<tokio::sync::OnceCell<()>>,
    /// When the ownership versions this instance wrote lapse, and for how long they were
    /// taken: (blob, ETag) → (expiry by this clock, lease time). A version written elsewhere lapses at its `Last-Modified` + `ownership_ttl`.
    pub(super) written: Arc<Mutex<HashMap<WrittenVersion, (Timestamp, Duration)>>>,
}

impl fmt::Debug for BlobCheckpointStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobCheckpointStore")
            .field("container", &self.container)
            .field("namespace", &self.config.namespace)
            .finish_non_exhaustive()
    }
}

impl BlobCheckpointStore {
    /// A store on `config`'s container; nothing is contacted until first use.
    pub fn new(config: BlobStoreConfig) -> Result<Self> {
        let container = BlobContainer::new(
            &config.account_url,
            &config.container,
            config.auth.to_client_auth()?,
            config.timeout,
        )?;
        Ok(BlobCheckpointStore {
            container,
            config,
            offsets: OffsetBook::keeping(),
            prepared: Arc::new(tokio::sync::OnceCell::new()),
            written: Arc::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BlobStoreConfig {
        &self.config
    }

    /// Creates the container if it does not exist (done once, on first use).
    pub async fn ensure_container(&self) -> Result<()> {
        self.prepared
            .get_or_try_init(|| self.container.ensure_container())
            .await
            .map(|_| ())
    }

    pub(super) fn consumer_group<'a>(&'a self, group: &'a str) -> &'a str {
        self.config.consumer_group.as_deref().unwrap_or(group)
    }

    fn prefix(&self, group: &str, hub: &str, kind: &str) -> String {
        format!(
            "{}/{}/{}/{kind}/",
            self.config.namespace,
            hub,
            self.consumer_group(group)
        )
        .to_lowercase()
    }

    pub(super) fn blob_name(
        &self,
        group: &str,
        hub: &str,
        kind: &str,
        partition: &PartitionId,
    ) -> String {
        // Event Hubs partition ids are digits, which lower-casing leaves alone; other ids (the
        // contract test's) keep their case so they read back as written.
        format!("{}{}", self.prefix(group, hub, kind), partition.as_str())
    }

    fn partition_of(name: &str) -> PartitionId {
        PartitionId::new(name.rsplit('/').next().unwrap_or(name))
    }

    pub(crate) async fn list_ownership(&self, group: &str, hub: &str) -> Result<Vec<Ownership>> {
        self.ensure_container().await?;
        let items = self
            .container
            .list(&self.prefix(group, hub, "ownership"))
            .await
            .map_err(|e| e.context(format!("ownership of `{hub}` for group `{group}`")))?;
        Ok(items
            .into_iter()
            .map(|item: BlobItem| Ownership {
                partition: Self::partition_of(&item.name),
                owner: item.metadata.get(OWNER_ID).cloned().unwrap_or_default(),
                etag: item.etag,
                last_modified: item.last_modified,
            })
            .collect())
    }

    /// Writes `owner` into the ownership blob if its ETag is still `expected` (`None`: only if
    /// the blob does not exist). `Ok(None)`: someone else wrote first.
    pub(crate) async fn write_ownership(
        &self,
        group: &str,
        hub: &str,
        partition: &PartitionId,
        owner: &str,
        expected: Option<&str>,
    ) -> Result<Option<Ownership>> {
        self.ensure_container().await?;
        let blob = self.blob_name(group, hub, "ownership", partition);
        let metadata = [(OWNER_ID, owner)];
        let written = match expected {
            Some(etag) => {
                self.container
                    .set_metadata(&blob, &metadata, Condition::Matches(etag))
                    .await
            }
            None => {
                self.container
                    .put_empty(&blob, &metadata, Condition::Absent)
                    .await
            }
        };
        match written {
            Ok(Written {
                etag,
                last_modified,
            }) => Ok(Some(Ownership {
                partition: partition.clone(),
                owner: owner.to_string(),
                etag,
                last_modified,
            })),
            // Deleted under us: whatever the caller saw is gone, so it lost.
            Err(WriteError::Conflict | WriteError::Missing) => Ok(None),
            Err(WriteError::Other(e)) => Err(e.context(format!(
                "ownership of partition {partition} of `{hub}` for group `{group}`"
            ))),
        }
    }

    pub(crate) async fn list_checkpoints(
        &self,
        group: &str,
        hub: &str,
    ) -> Result<HashMap<PartitionId, Checkpoint>> {
        self.ensure_container().await?;
        let items = self
            .container
            .list(&self.prefix(group, hub, "checkpoint"))
            .await
            .map_err(|e| e.context(format!("checkpoints of `{hub}` for group `{group}`")))?;
        let mut checkpoints = HashMap::new();
        for item in items {
            let partition = Self::partition_of(&item.name);
            if let Some(stored) = decode(&item.metadata) {
                checkpoints.insert(partition, stored);
            } else {
                tracing::warn!(
                    blob = %item.name,
                    "checkpoint blob without a readable sequencenumber; ignored"
                );
            }
        }
        Ok(checkpoints)
    }

    pub(crate) async fn write_checkpoint(
        &self,
        group: &str,
        hub: &str,
        partition: &PartitionId,
        checkpoint: &Checkpoint,
    ) -> Result<()> {
        self.ensure_container().await?;
        let blob = self.blob_name(group, hub, "checkpoint", partition);
        let (offset, sequence, tributary) = match checkpoint {
            Checkpoint::Processed(position) => {
                let sequence: i64 = position.as_str().parse().map_err(|_| {
                    Error::config(format!(
                        "position `{position}` of partition {partition} of `{hub}` is not an Event Hubs sequence number"
                    ))
                })?;
                let offset = self
                    .offsets
                    .take(group, hub, partition.as_str(), sequence)
                    .unwrap_or_default();
                (offset, sequence.to_string(), None)
            }
            Checkpoint::Start(StartPosition::Earliest) => {
                (BEGINNING.to_string(), BEGINNING.to_string(), None)
            }
            Checkpoint::Start(start) => (
                BEGINNING.to_string(),
                BEGINNING.to_string(),
                Some(match start {
                    StartPosition::Latest => "start:latest".to_string(),
                    StartPosition::Timestamp(t) => format!("start:@{}", t.as_millis()),
                    StartPosition::Position(p) => format!("start:position:{p}"),
                    StartPosition::Earliest => unreachable!("matched above"),
                }),
            ),
            Checkpoint::Ended => (
                BEGINNING.to_string(),
                BEGINNING.to_string(),
                Some("ended".to_string()),
            ),
            other => {
                return Err(Error::unsupported(format!(
                    "the Blob checkpoint store cannot keep {other:?}"
                )));
            }
        };
        let mut metadata = vec![
            (OFFSET, offset.as_str()),
            (SEQUENCE_NUMBER, sequence.as_str()),
        ];
        if let Some(value) = &tributary {
            metadata.push((TRIBUTARY, value.as_str()));
        }
        let mut written = self
            .container
            .set_metadata(&blob, &metadata, Condition::None)
            .await;
        if let Err(WriteError::Missing) = written {
            written = self
                .container
                .put_empty(&blob, &metadata, Condition::None)
                .await;
        }
        match written {
            Ok(_) => Ok(()),
            Err(WriteError::Conflict | WriteError::Missing) => Err(Error::unavailable(format!(
                "checkpoint of partition {partition} of `{hub}` for group `{group}`: the blob changed during the write"
            ))
            .with_retryable(true)),
            Err(WriteError::Other(e)) => Err(e
                .context(format!(
                    "checkpoint of partition {partition} of `{hub}` for group `{group}`"
                ))),
        }
    }
}

/// Reads a checkpoint blob's metadata: tributary's own entry first, else the SDKs'
/// `sequencenumber` (`-1`: from the beginning).
fn decode(metadata: &BTreeMap<String, String>) -> Option<Checkpoint> {
    if let Some(value) = metadata.get(TRIBUTARY) {
        if value == "ended" {
            return Some(Checkpoint::Ended);
        }
        let start = value.strip_prefix("start:")?;
        return Some(Checkpoint::Start(match start {
            "earliest" => StartPosition::Earliest,
            "latest" => StartPosition::Latest,
            _ => {
                if let Some(millis) = start.strip_prefix('@') {
                    StartPosition::Timestamp(Timestamp::from_millis(millis.parse().ok()?))
                } else {
                    StartPosition::Position(Position::new(start.strip_prefix("position:")?))
                }
            }
        }));
    }
    let sequence: i64 = metadata.get(SEQUENCE_NUMBER)?.trim().parse().ok()?;
    if sequence < 0 {
        return Some(Checkpoint::Start(StartPosition::Earliest));
    }
    Some(Checkpoint::Processed(Position::new(sequence.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn checkpoints_of_other_sdks_read_as_processed_positions() {
        assert_eq!(
            decode(&meta(&[("offset", "4096"), ("sequencenumber", "41")])),
            Some(Checkpoint::Processed(Position::new("41")))
        );
        assert_eq!(
            decode(&meta(&[("offset", "-1"), ("sequencenumber", "-1")])),
            Some(Checkpoint::Start(StartPosition::Earliest))
        );
        assert_eq!(decode(&meta(&[("offset", "12")])), None);
    }

    #[test]
    fn tributary_entries_win_over_the_fallback() {
        assert_eq!(
            decode(&meta(&[
                ("tributarycheckpoint", "start:@1700000000000"),
                ("sequencenumber", "-1")
            ])),
            Some(Checkpoint::Start(StartPosition::Timestamp(
                Timestamp::from_millis(1_700_000_000_000)
            )))
        );
        assert_eq!(
            decode(&meta(&[("tributarycheckpoint", "start:position:17")])),
            Some(Checkpoint::Start(StartPosition::Position(Position::new(
                "17"
            ))))
        );
        assert_eq!(
            decode(&meta(&[("tributarycheckpoint", "ended")])),
            Some(Checkpoint::Ended)
        );
        assert_eq!(
            decode(&meta(&[("tributarycheckpoint", "start:latest")])),
            Some(Checkpoint::Start(StartPosition::Latest))
        );
    }

    #[test]
    fn the_offset_book_hands_out_and_forgets() {
        let book = OffsetBook::keeping();
        for sequence in 0..5 {
            book.record("g", "hub", "0", sequence, format!("o{sequence}"));
        }
        book.record("other", "hub", "0", 2, "x2".into());
        assert_eq!(book.take("g", "hub", "0", 2).as_deref(), Some("o2"));
        assert_eq!(
            book.take("g", "hub", "0", 1),
            None,
            "forgotten with everything before 2"
        );
        assert_eq!(book.take("g", "hub", "0", 4).as_deref(), Some("o4"));
        assert_eq!(book.take("g", "hub", "1", 0), None);
        assert_eq!(
            book.take("other", "hub", "0", 2).as_deref(),
            Some("x2"),
            "groups apart"
        );
    }

    #[test]
    fn connection_strings_give_endpoint_and_auth() {
        let (endpoint, auth) = StorageAuth::from_connection_string(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        assert_eq!(endpoint, "https://acct.blob.core.windows.net");
        assert!(matches!(auth, StorageAuth::AccountKey { ref account, .. } if account == "acct"));
        assert_eq!(format!("{auth:?}"), "AccountKey(acct, ***)");
        let (endpoint, _) = StorageAuth::from_connection_string(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:1234/devstoreaccount1;",
        )
        .unwrap();
        assert_eq!(endpoint, "http://127.0.0.1:1234/devstoreaccount1");
        let (_, auth) = StorageAuth::from_connection_string(
            "BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature=sv=1&sig=x",
        )
        .unwrap();
        assert!(matches!(auth, StorageAuth::Sas(_)));
        let error = StorageAuth::from_connection_string("AccountName=a").unwrap_err();
        assert!(error.to_string().contains("neither AccountKey"), "{error}");
    }
}
