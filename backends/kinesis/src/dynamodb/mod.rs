//! Leases and checkpoints in DynamoDB, in the KCL 2.x lease table schema (the `item` module), as a
//! [`CheckpointStore`].
//!
//! One table per group and stream (option `lease_table`, `{group}.{stream}` by default; give a
//! KCL application's table name to adopt its checkpoints), one item per shard keyed by the
//! shard id. Every write that depends on who holds a lease is a conditional write on
//! `leaseCounter` (and `leaseOwner`), so of two workers racing for a shard exactly one wins, and a
//! worker that lost its lease can neither renew it nor checkpoint under it.
//!
//! Like the KCL, the table keeps no expiry time (clocks of different hosts disagree): a worker
//! sees a lease expire when its `leaseCounter` has not moved for the lease duration since this
//! store instance first saw that value. Its owner's duration is read from
//! `tributaryLeaseMillis`; leases written by KCL workers use the store's `lease_ttl`.

pub(crate) mod item;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TableStatus,
};
use parking_lot::Mutex;
use tributary::backend::{
    Checkpoint, CheckpointKey, CheckpointStore, Lease, LeaseVersion, PartitionTopology,
};
use tributary::{Error, ErrorKind, PartitionId, Result, Timestamp};

use crate::error::map_sdk;
use item::{n, s};

/// How the store names tables and times leases.
#[derive(Debug, Clone)]
pub struct DynamoDbSettings {
    /// The table name; `{group}` and `{stream}` are replaced.
    pub table: String,
    /// Create a missing table (on-demand capacity, hash key `leaseKey`).
    pub create_table: bool,
    /// Lease duration assumed for leases that do not say theirs (written by KCL workers).
    pub lease_ttl: Duration,
    /// Deadline of each DynamoDB call.
    pub timeout: Duration,
}

/// The KCL-compatible DynamoDB lease table as a tributary [`CheckpointStore`].
pub struct DynamoDbCheckpointStore {
    client: Client,
    settings: DynamoDbSettings,
    /// Tables known to exist and be active.
    ready: Mutex<HashSet<String>>,
    /// Items known to exist (so `prepare` writes each once per process).
    prepared: Mutex<HashSet<(String, String)>>,
    /// Per (table, leaseKey): the counter last seen and when this instance first saw it.
    seen: Mutex<HashMap<(String, String), Seen>>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    counter: i64,
    wall: Timestamp,
}

impl std::fmt::Debug for DynamoDbCheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoDbCheckpointStore")
            .field("table", &self.settings.table)
            .finish_non_exhaustive()
    }
}

fn ddb_error<E, R>(err: SdkError<E, R>, what: &str) -> Error
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    map_sdk(err, "DynamoDB", what)
}

fn conditional_failed<E, R>(err: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    crate::error::code_of(err) == Some("ConditionalCheckFailedException")
}

impl DynamoDbCheckpointStore {
    /// A store using `client` (region, credentials and endpoint already set).
    pub fn new(client: Client, settings: DynamoDbSettings) -> Arc<Self> {
        Arc::new(DynamoDbCheckpointStore {
            client,
            settings,
            ready: Mutex::new(HashSet::new()),
            prepared: Mutex::new(HashSet::new()),
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// The table holding `group`'s leases on `stream`.
    pub fn table_for(&self, group: &str, stream: &str) -> Result<String> {
        let name = self
            .settings
            .table
            .replace("{group}", group)
            .replace("{stream}", stream);
        let valid = (3..=255).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err(Error::config(format!(
                "lease table name `{name}` (option `lease_table` = `{}`, group `{group}`, stream `{stream}`) is not a valid DynamoDB table name: 3 to 255 characters of letters, digits, _ - and .",
                self.settings.table
            )));
        }
        Ok(name)
    }

    async fn timed<T, E, R>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = std::result::Result<T, SdkError<E, R>>>,
    ) -> Result<std::result::Result<T, SdkError<E, R>>> {
        tokio::time::timeout(self.settings.timeout, call)
            .await
            .map_err(|_| {
                Error::timeout(format!(
                    "{what}: DynamoDB did not answer within {:?} (option `timeout`)",
                    self.settings.timeout
                ))
            })
    }

    /// Makes sure the table exists and is active (creating it when allowed).
    pub async fn ensure_table(&self, table: &str) -> Result<()> {
        if self.ready.lock().contains(table) {
            return Ok(());
        }
        let what = format!("describe lease table `{table}`");
        let described = self
            .timed(&what, self.client.describe_table().table_name(table).send())
            .await?;
        let mut status = match described {
            Ok(out) => out.table.and_then(|t| t.table_status),
            Err(e) => {
                let e = ddb_error(e, &what);
                if e.kind() != ErrorKind::NotFound {
                    return Err(e);
                }
                if !self.settings.create_table {
                    return Err(Error::not_found(format!(
                        "lease table `{table}` does not exist in DynamoDB (create it with hash key leaseKey (S), or drop create_lease_table=false)"
                    )));
                }
                self.create_table(table).await?;
                None
            }
        };
        let deadline = Instant::now() + self.settings.timeout.max(Duration::from_secs(60));
        let mut pause = Duration::from_millis(20);
        while status != Some(TableStatus::Active) {
            if Instant::now() >= deadline {
                return Err(Error::timeout(format!(
                    "lease table `{table}` did not become ACTIVE in time"
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            status = self
                .timed(&what, self.client.describe_table().table_name(table).send())
                .await?
                .map_err(|e| ddb_error(e, &what))?
                .table
                .and_then(|t| t.table_status);
        }
        self.ready.lock().insert(table.to_owned());
        Ok(())
    }

    async fn create_table(&self, table: &str) -> Result<()> {
        let what = format!("create lease table `{table}`");
        let call = self
            .client
            .create_table()
            .table_name(table)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(item::LEASE_KEY)
                    .key_type(KeyType::Hash)
                    .build()
                    .expect("complete key schema"),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(item::LEASE_KEY)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .expect("complete attribute definition"),
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send();
        match self.timed(&what, call).await? {
            Ok(_) => Ok(()),
            // Another worker created it first.
            Err(e) if crate::error::code_of(&e) == Some("ResourceInUseException") => Ok(()),
            Err(e) => Err(ddb_error(e, &what)),
        }
    }

    /// Every item of the table (consistent reads), checked to belong to `stream`.
    async fn items(
        &self,
        table: &str,
        stream: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>> {
        self.ensure_table(table).await?;
        let what = format!("scan lease table `{table}`");
        let mut items = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let call = self
                .client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send();
            let page = self
                .timed(&what, call)
                .await?
                .map_err(|e| ddb_error(e, &what))?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        for it in &items {
            if let Some(other) = item::string(it, item::STREAM)
                && other != stream
            {
                return Err(Error::config(format!(
                    "lease table `{table}` holds leases of stream `{other}`, not `{stream}`: give each stream its own table (option `lease_table` with {{stream}})"
                )));
            }
        }
        Ok(items)
    }

    /// When the lease in `it` expires, as this store instance sees it.
    fn expiry(&self, table: &str, it: &HashMap<String, AttributeValue>) -> Timestamp {
        let key = item::string(it, item::LEASE_KEY)
            .unwrap_or_default()
            .to_owned();
        let counter = item::number(it, item::LEASE_COUNTER).unwrap_or(0);
        let ttl = item::number(it, item::LEASE_MILLIS)
            .and_then(|ms| u64::try_from(ms).ok())
            .map_or(self.settings.lease_ttl, Duration::from_millis);
        let mut seen = self.seen.lock();
        let entry = seen
            .entry((table.to_owned(), key))
            .and_modify(|s| {
                if s.counter != counter {
                    *s = Seen {
                        counter,
                        wall: Timestamp::now(),
                    };
                }
            })
            .or_insert_with(|| Seen {
                counter,
                wall: Timestamp::now(),
            });
        Timestamp::from_millis(
            entry
                .wall
                .as_millis()
                .saturating_add(ttl.as_millis() as i64),
        )
    }

    fn saw(&self, table: &str, key: &str, counter: i64) {
        self.seen.lock().insert(
            (table.to_owned(), key.to_owned()),
            Seen {
                counter,
                wall: Timestamp::now(),
            },
        );
    }

    fn lease(
        &self,
        key: &CheckpointKey,
        owner: &str,
        counter: i64,
        expires_at: Timestamp,
    ) -> Lease {
        Lease {
            key: key.clone(),
            owner: owner.to_owned(),
            expires_at,
            version: LeaseVersion(counter.to_string()),
        }
    }
}

fn version_of(lease: &Lease) -> Result<i64> {
    lease.version.0.parse::<i64>().map_err(|_| {
        Error::other(format!(
            "lease version `{}` of shard `{}` is not a DynamoDB leaseCounter",
            lease.version.0, lease.key.partition
        ))
    })
}

fn new_counter(attributes: Option<&HashMap<String, AttributeValue>>) -> Option<i64> {
    attributes.and_then(|a| item::number(a, item::LEASE_COUNTER))
}

#[async_trait]
impl CheckpointStore for DynamoDbCheckpointStore {
    fn kind(&self) -> &'static str {
        "dynamodb"
    }

    async fn prepare(
        &self,
        group: &str,
        stream: &str,
        partitions: &[PartitionTopology],
    ) -> Result<()> {
        let table = self.table_for(group, stream)?;
        self.ensure_table(&table).await?;
        for partition in partitions {
            let id = partition.id.as_str();
            if self
                .prepared
                .lock()
                .contains(&(table.clone(), id.to_owned()))
            {
                continue;
            }
            let mut call = self
                .client
                .put_item()
                .table_name(&table)
                .item(item::LEASE_KEY, s(id))
                .item(item::LEASE_COUNTER, n(0))
                .item(item::OWNER_SWITCHES, n(0))
                .item(item::STREAM, s(stream))
                .condition_expression("attribute_not_exists(leaseKey)");
            if !partition.parents.is_empty() {
                call = call.item(
                    item::PARENT_SHARD_ID,
                    AttributeValue::Ss(partition.parents.iter().map(|p| p.to_string()).collect()),
                );
            }
            let what = format!("create the lease of shard `{id}` in `{table}`");
            match self.timed(&what, call.send()).await? {
                Ok(_) => {}
                Err(e) if conditional_failed(&e) => {}
                Err(e) => return Err(ddb_error(e, &what)),
            }
            self.prepared.lock().insert((table.clone(), id.to_owned()));
        }
        Ok(())
    }

    async fn checkpoints(
        &self,
        group: &str,
        stream: &str,
    ) -> Result<HashMap<PartitionId, Checkpoint>> {
        let table = self.table_for(group, stream)?;
        let items = self.items(&table, stream).await?;
        Ok(items
            .iter()
            .filter_map(|it| {
                let key = item::string(it, item::LEASE_KEY)?;
                Some((PartitionId::new(key), item::from_item(it)?))
            })
            .collect())
    }

    async fn leases(&self, group: &str, stream: &str) -> Result<Vec<Lease>> {
        let table = self.table_for(group, stream)?;
        let items = self.items(&table, stream).await?;
        let mut leases = Vec::new();
        for it in &items {
            let Some(key) = item::string(it, item::LEASE_KEY) else {
                continue;
            };
            let expires_at = self.expiry(&table, it);
            let Some(owner) = item::string(it, item::LEASE_OWNER).filter(|o| !o.is_empty()) else {
                continue;
            };
            let counter = item::number(it, item::LEASE_COUNTER).unwrap_or(0);
            leases.push(self.lease(
                &CheckpointKey::new(group, stream, PartitionId::new(key)),
                owner,
                counter,
                expires_at,
            ));
        }
        Ok(leases)
    }

    async fn claim(
        &self,
        key: &CheckpointKey,
        owner: &str,
        ttl: Duration,
        expected: Option<&Lease>,
    ) -> Result<Option<Lease>> {
        let table = self.table_for(&key.group, &key.stream)?;
        self.ensure_table(&table).await?;
        let shard = key.partition.as_str();
        let mut call = self
            .client
            .update_item()
            .table_name(&table)
            .key(item::LEASE_KEY, s(shard))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":ttl", n(ttl.as_millis()))
            .expression_attribute_values(":stream", s(&key.stream))
            .return_values(ReturnValue::AllNew);
        let set = "leaseOwner = :owner, tributaryLeaseMillis = :ttl, tributaryStream = if_not_exists(tributaryStream, :stream), leaseCounter = if_not_exists(leaseCounter, :zero) + :one";
        call = match expected {
            None => call
                .update_expression(format!(
                    "SET {set}, ownerSwitchesSinceCheckpoint = if_not_exists(ownerSwitchesSinceCheckpoint, :zero)"
                ))
                .condition_expression("attribute_not_exists(leaseOwner)"),
            Some(seen) => {
                // A take from another owner counts as an owner switch, as in the KCL.
                let switches = if !seen.owner.is_empty() && seen.owner != owner {
                    "ownerSwitchesSinceCheckpoint = if_not_exists(ownerSwitchesSinceCheckpoint, :zero) + :one"
                } else {
                    "ownerSwitchesSinceCheckpoint = if_not_exists(ownerSwitchesSinceCheckpoint, :zero)"
                };
                call.update_expression(format!("SET {set}, {switches}"))
                    .condition_expression("leaseCounter = :seen")
                    .expression_attribute_values(":seen", n(version_of(seen)?))
            }
        };
        let what = format!("claim shard `{shard}` in `{table}`");
        match self.timed(&what, call.send()).await? {
            Ok(out) => {
                let counter = new_counter(out.attributes()).unwrap_or(0);
                self.saw(&table, shard, counter);
                self.prepared.lock().insert((table, shard.to_owned()));
                let expires_at = Timestamp::from_millis(
                    Timestamp::now()
                        .as_millis()
                        .saturating_add(ttl.as_millis() as i64),
                );
                Ok(Some(self.lease(key, owner, counter, expires_at)))
            }
            Err(e) if conditional_failed(&e) => Ok(None),
            Err(e) => Err(ddb_error(e, &what)),
        }
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        let table = self.table_for(&lease.key.group, &lease.key.stream)?;
        let shard = lease.key.partition.as_str();
        let call = self
            .client
            .update_item()
            .table_name(&table)
            .key(item::LEASE_KEY, s(shard))
            .update_expression(
                "SET leaseCounter = leaseCounter + :one, tributaryLeaseMillis = :ttl",
            )
            .condition_expression("leaseCounter = :seen AND leaseOwner = :owner")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ttl", n(ttl.as_millis()))
            .expression_attribute_values(":seen", n(version_of(lease)?))
            .expression_attribute_values(":owner", s(&lease.owner))
            .return_values(ReturnValue::UpdatedNew)
            .send();
        let what = format!("renew the lease of shard `{shard}` in `{table}`");
        match self.timed(&what, call).await? {
            Ok(out) => {
                let counter = new_counter(out.attributes()).unwrap_or(0);
                self.saw(&table, shard, counter);
                let expires_at = Timestamp::from_millis(
                    Timestamp::now()
                        .as_millis()
                        .saturating_add(ttl.as_millis() as i64),
                );
                Ok(Some(self.lease(
                    &lease.key,
                    &lease.owner,
                    counter,
                    expires_at,
                )))
            }
            Err(e) if conditional_failed(&e) => Ok(None),
            Err(e) => Err(ddb_error(e, &what)),
        }
    }

    async fn checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Option<Lease>> {
        let table = self.table_for(&lease.key.group, &lease.key.stream)?;
        let shard = lease.key.partition.as_str();
        let stored = item::to_stored(checkpoint).ok_or_else(|| {
            Error::unsupported(format!(
                "checkpoint {checkpoint:?} of shard `{shard}` has no form in the lease table"
            ))
        })?;
        let mut set = "checkpoint = :checkpoint, checkpointSubSequenceNumber = :sub, ownerSwitchesSinceCheckpoint = :zero, leaseCounter = leaseCounter + :one".to_owned();
        // The KCL's two-phase checkpoint, if one was pending, is settled by this one.
        let mut remove = format!(
            "{}, {}",
            item::PENDING_CHECKPOINT,
            item::PENDING_CHECKPOINT_SUB
        );
        let mut call = self
            .client
            .update_item()
            .table_name(&table)
            .key(item::LEASE_KEY, s(shard))
            .condition_expression("leaseCounter = :seen AND leaseOwner = :owner")
            .expression_attribute_values(":checkpoint", s(&stored.checkpoint))
            .expression_attribute_values(":sub", n(stored.sub_sequence))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":seen", n(version_of(lease)?))
            .expression_attribute_values(":owner", s(&lease.owner))
            .return_values(ReturnValue::UpdatedNew);
        match &stored.start {
            Some(start) => {
                set.push_str(", tributaryStart = :start");
                call = call.expression_attribute_values(":start", s(start));
            }
            None => remove.push_str(", tributaryStart"),
        }
        let call = call
            .update_expression(format!("SET {set} REMOVE {remove}"))
            .send();
        let what = format!("checkpoint shard `{shard}` in `{table}`");
        match self.timed(&what, call).await? {
            Ok(out) => {
                let counter = new_counter(out.attributes()).unwrap_or(0);
                self.saw(&table, shard, counter);
                Ok(Some(self.lease(
                    &lease.key,
                    &lease.owner,
                    counter,
                    lease.expires_at,
                )))
            }
            Err(e) if conditional_failed(&e) => Ok(None),
            Err(e) => Err(ddb_error(e, &what)),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let table = self.table_for(&lease.key.group, &lease.key.stream)?;
        let shard = lease.key.partition.as_str();
        let call = self
            .client
            .update_item()
            .table_name(&table)
            .key(item::LEASE_KEY, s(shard))
            .update_expression("SET leaseCounter = leaseCounter + :one REMOVE leaseOwner")
            .condition_expression("leaseCounter = :seen AND leaseOwner = :owner")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":seen", n(version_of(lease)?))
            .expression_attribute_values(":owner", s(&lease.owner))
            .send();
        let what = format!("release the lease of shard `{shard}` in `{table}`");
        match self.timed(&what, call).await? {
            Ok(_) => Ok(()),
            // Already someone else's: nothing to give up.
            Err(e) if conditional_failed(&e) => Ok(()),
            Err(e) => Err(ddb_error(e, &what)),
        }
    }
}
