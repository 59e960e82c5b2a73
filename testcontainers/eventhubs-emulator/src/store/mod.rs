//! Hubs, partitions and their retained events, optionally backed by append-only files.
//!
//! On-disk layout under `--data-dir`: `<hub>/hub.json` (partition count, creation time,
//! consumer groups) and `<hub>/<partition>.log`, a sequence of records
//! `u32 length | i64 sequence | i64 offset | i64 enqueued-ms | AMQP-encoded message` (big
//! endian). A torn record at the end (crash during a write) is cut off at load.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use fe2o3_amqp::types::messaging::message::__private::{Deserializable, Serializable};
use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::Value;

use crate::config::{
    Config, DEFAULT_CONSUMER_GROUP, HubConfig, validate_group_name, validate_hub_name,
};
mod hub;
mod log;
mod partition;

pub(crate) use hub::Hub;
use hub::HubMeta;
pub(crate) use partition::{Detach, Partition};

/// A decoded AMQP message as producers sent it.
pub(crate) type AmqpMessage = Message<Body<Value>>;

/// An event as retained in a partition.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) sequence: i64,
    pub(crate) offset: i64,
    pub(crate) enqueued_ms: i64,
    pub(crate) partition_key: Option<String>,
    pub(crate) message: AmqpMessage,
}

/// An event on its way in: the message and its encoded size (which advances the offset).
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) message: AmqpMessage,
    pub(crate) size: usize,
    pub(crate) partition_key: Option<String>,
}

/// Why a lookup failed; becomes `amqp:not-found` or a 404.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotFound(pub(crate) String);

/// All hubs of the emulated namespace.
pub(crate) struct Namespace {
    hubs: RwLock<HashMap<String, Arc<Hub>>>,
    auto_create: bool,
    auto_create_groups: bool,
    default_partitions: u32,
    max_events: usize,
    data_dir: Option<PathBuf>,
}

impl Namespace {
    /// Builds the namespace from the settings, reloading persisted hubs and events.
    pub(crate) fn open(config: &Config) -> std::io::Result<Namespace> {
        let ns = Namespace {
            hubs: RwLock::new(HashMap::new()),
            auto_create: config.auto_create,
            auto_create_groups: config
                .auto_create_consumer_groups
                .unwrap_or(config.auto_create),
            default_partitions: config.default_partitions.clamp(1, 1024),
            max_events: config.max_events_per_partition.max(1),
            data_dir: config.data_dir.clone(),
        };
        if let Some(dir) = &ns.data_dir {
            std::fs::create_dir_all(dir)?;
            for entry in std::fs::read_dir(dir)? {
                let path = entry?.path();
                let meta_path = path.join("hub.json");
                if !meta_path.is_file() {
                    continue;
                }
                let meta: HubMeta = match std::fs::read(&meta_path)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                {
                    Some(meta) => meta,
                    None => {
                        tracing::warn!(path = %meta_path.display(), "ignoring unreadable hub metadata");
                        continue;
                    }
                };
                if validate_hub_name(&meta.name).is_err() || meta.partition_count == 0 {
                    tracing::warn!(path = %meta_path.display(), "ignoring invalid hub metadata");
                    continue;
                }
                let hub = Hub::create(&meta, ns.max_events, Some(&path))?;
                tracing::info!(hub = %meta.name, "reloaded from {}", path.display());
                ns.hubs_mut()
                    .insert(meta.name.to_ascii_lowercase(), Arc::new(hub));
            }
        }
        for hub in &config.hubs {
            ns.ensure_hub(hub)?;
        }
        Ok(ns)
    }

    fn hubs_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Hub>>> {
        self.hubs.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a configured hub unless it exists (then adds its consumer groups).
    fn ensure_hub(&self, config: &HubConfig) -> std::io::Result<Arc<Hub>> {
        let key = config.name.to_ascii_lowercase();
        let mut hubs = self.hubs_mut();
        if let Some(hub) = hubs.get(&key) {
            for group in &config.consumer_groups {
                hub.add_group(group)?;
            }
            return Ok(hub.clone());
        }
        let mut groups: BTreeSet<String> = config.consumer_groups.iter().cloned().collect();
        groups.insert(DEFAULT_CONSUMER_GROUP.to_string());
        let meta = HubMeta {
            name: config.name.clone(),
            partition_count: config.partition_count.clamp(1, 1024),
            created_ms: now_millis(),
            consumer_groups: groups,
        };
        let dir = self.data_dir.as_ref().map(|d| d.join(&config.name));
        let hub = Arc::new(Hub::create(&meta, self.max_events, dir.as_deref())?);
        hub.save_meta()?;
        tracing::info!(hub = %config.name, partitions = meta.partition_count, "event hub created");
        hubs.insert(key, hub.clone());
        Ok(hub)
    }

    /// The hub called `name` (any case); created on first use when auto-creation is on.
    pub(crate) fn hub(&self, name: &str) -> Result<Arc<Hub>, NotFound> {
        let key = name.to_ascii_lowercase();
        if let Some(hub) = self
            .hubs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(hub.clone());
        }
        let missing = || {
            NotFound(format!(
                "The messaging entity '{name}' could not be found (emulator: not configured and auto-creation is off)"
            ))
        };
        if !self.auto_create {
            return Err(missing());
        }
        validate_hub_name(name).map_err(NotFound)?;
        self.ensure_hub(&HubConfig::new(name, self.default_partitions))
            .map_err(|e| NotFound(format!("cannot create event hub '{name}': {e}")))
    }

    /// The consumer group `group` of `hub`; created on first use when auto-creation is on.
    pub(crate) fn check_group(&self, hub: &Hub, group: &str) -> Result<(), NotFound> {
        if hub.has_group(group) {
            return Ok(());
        }
        if self.auto_create_groups {
            return hub
                .add_group(group)
                .map_err(|e| NotFound(format!("cannot create consumer group '{group}': {e}")));
        }
        Err(NotFound(format!(
            "The consumer group '{group}' of event hub '{}' could not be found",
            hub.name
        )))
    }

    /// Creates a hub (the admin API). `Ok(false)`: a hub of that name exists already, and is
    /// left as it is.
    pub(crate) fn create_hub(&self, config: &HubConfig) -> Result<bool, AdminError> {
        validate_hub_name(&config.name).map_err(AdminError::Invalid)?;
        if !(1..=1024).contains(&config.partition_count) {
            return Err(AdminError::Invalid(format!(
                "partition count {} is not in 1..=1024",
                config.partition_count
            )));
        }
        for group in &config.consumer_groups {
            validate_group_name(group).map_err(AdminError::Invalid)?;
        }
        let key = config.name.to_ascii_lowercase();
        if self
            .hubs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key)
        {
            return Ok(false);
        }
        self.ensure_hub(config).map_err(AdminError::Io)?;
        Ok(true)
    }

    /// Removes a hub and its files (the admin API). Links attached to it keep the partitions
    /// they hold until they detach; new links get `amqp:not-found`.
    pub(crate) fn delete_hub(&self, name: &str) -> Result<(), AdminError> {
        let removed = self.hubs_mut().remove(&name.to_ascii_lowercase());
        let Some(hub) = removed else {
            return Err(AdminError::NotFound(format!(
                "event hub {name:?} does not exist"
            )));
        };
        if let Some(dir) = &hub.dir {
            std::fs::remove_dir_all(dir).map_err(AdminError::Io)?;
        }
        tracing::info!(hub = %hub.name, "event hub deleted");
        Ok(())
    }

    /// Adds a consumer group to a hub (the admin API); `Ok(false)` when it exists.
    pub(crate) fn create_group(&self, hub: &str, group: &str) -> Result<bool, AdminError> {
        validate_group_name(group).map_err(AdminError::Invalid)?;
        let hub = self
            .existing(hub)
            .ok_or_else(|| AdminError::NotFound(format!("event hub {hub:?} does not exist")))?;
        if hub.has_group(group) {
            return Ok(false);
        }
        hub.add_group(group).map_err(AdminError::Io)?;
        Ok(true)
    }

    /// Ends the links of the receivers reading `hub` (only `partition`'s, if named) with
    /// [`Detach::Forced`]; how many were told.
    pub(crate) fn detach_receivers(
        &self,
        hub: &str,
        partition: Option<&str>,
    ) -> Result<usize, NotFound> {
        let hub = self
            .existing(hub)
            .ok_or_else(|| NotFound(format!("event hub {hub:?} does not exist")))?;
        let reason = format!(
            "The link to event hub '{}' is force detached by the emulator, as the service does when it moves a partition; reattach",
            hub.name
        );
        Ok(match partition {
            Some(id) => hub.partition(id)?.force_detach(&reason),
            None => hub.partitions.iter().map(|p| p.force_detach(&reason)).sum(),
        })
    }

    /// The hub called `name` if it exists, never creating it.
    pub(crate) fn existing(&self, name: &str) -> Option<Arc<Hub>> {
        self.hubs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    /// Every hub, by name.
    pub(crate) fn all(&self) -> Vec<Arc<Hub>> {
        let mut hubs: Vec<_> = self
            .hubs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        hubs.sort_by(|a, b| a.name.cmp(&b.name));
        hubs
    }
}

/// Why an admin request failed.
#[derive(Debug)]
pub(crate) enum AdminError {
    /// The name or count is not acceptable.
    Invalid(String),
    /// No such hub.
    NotFound(String),
    /// The data directory could not be written.
    Io(std::io::Error),
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The partition key producers put in the message annotations, if any.
pub(crate) fn partition_key_of(message: &AmqpMessage) -> Option<String> {
    use fe2o3_amqp::types::messaging::annotations::OwnedKey;
    let annotations = message.message_annotations.as_ref()?;
    match annotations
        .0
        .get(&OwnedKey::Symbol("x-opt-partition-key".into()))?
    {
        Value::String(key) => Some(key.clone()),
        _ => None,
    }
}

/// AMQP encoding of a message (its wire size, and what the log stores).
pub(crate) fn encode(message: &AmqpMessage) -> Result<Vec<u8>, serde_amqp::Error> {
    serde_amqp::to_vec(&Serializable(message))
}

/// Decodes one AMQP-encoded message (a batch entry, or a log record).
pub(crate) fn decode(bytes: &[u8]) -> Result<AmqpMessage, serde_amqp::Error> {
    let decoded: Deserializable<AmqpMessage> = serde_amqp::from_slice(bytes)?;
    Ok(decoded.0)
}
