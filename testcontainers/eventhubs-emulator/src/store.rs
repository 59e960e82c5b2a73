//! Hubs, partitions and their retained events, optionally backed by append-only files.
//!
//! On-disk layout under `--data-dir`: `<hub>/hub.json` (partition count, creation time,
//! consumer groups) and `<hub>/<partition>.log`, a sequence of records
//! `u32 length | i64 sequence | i64 offset | i64 enqueued-ms | AMQP-encoded message` (big
//! endian). A torn record at the end (crash during a write) is cut off at load.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use fe2o3_amqp::types::messaging::message::__private::{Deserializable, Serializable};
use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::Value;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::config::{
    Config, DEFAULT_CONSUMER_GROUP, HubConfig, validate_group_name, validate_hub_name,
};
use crate::filter::StartAt;

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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct HubMeta {
    name: String,
    partition_count: u32,
    created_ms: i64,
    consumer_groups: BTreeSet<String>,
}

/// One event hub.
pub(crate) struct Hub {
    pub(crate) name: String,
    pub(crate) created_ms: i64,
    pub(crate) partitions: Vec<Arc<Partition>>,
    groups: Mutex<BTreeSet<String>>,
    round_robin: AtomicUsize,
    dir: Option<PathBuf>,
}

impl Hub {
    fn create(meta: &HubMeta, max_events: usize, dir: Option<&Path>) -> std::io::Result<Hub> {
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir)?;
        }
        let partitions = (0..meta.partition_count)
            .map(|id| {
                Partition::open(id, max_events, dir.map(|d| d.join(format!("{id}.log"))))
                    .map(Arc::new)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Hub {
            name: meta.name.clone(),
            created_ms: meta.created_ms,
            partitions,
            groups: Mutex::new(meta.consumer_groups.clone()),
            round_robin: AtomicUsize::new(0),
            dir: dir.map(Path::to_path_buf),
        })
    }

    fn save_meta(&self) -> std::io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let meta = HubMeta {
            name: self.name.clone(),
            partition_count: self.partitions.len() as u32,
            created_ms: self.created_ms,
            consumer_groups: self
                .groups
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        };
        let tmp = dir.join("hub.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&meta).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, dir.join("hub.json"))
    }

    /// The hub's consumer groups, by name.
    pub(crate) fn groups(&self) -> Vec<String> {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn has_group(&self, group: &str) -> bool {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|g| g.eq_ignore_ascii_case(group))
    }

    fn add_group(&self, group: &str) -> std::io::Result<()> {
        if self.has_group(group) {
            return Ok(());
        }
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(group.to_string());
        self.save_meta()
    }

    /// Partition by id string (`"0"`, `"1"`, ...).
    pub(crate) fn partition(&self, id: &str) -> Result<Arc<Partition>, NotFound> {
        id.parse::<usize>()
            .ok()
            .filter(|_| !id.starts_with('+'))
            .and_then(|i| self.partitions.get(i).cloned())
            .ok_or_else(|| {
                NotFound(format!(
                    "The partition '{id}' of event hub '{}' could not be found (it has {} partitions)",
                    self.name,
                    self.partitions.len()
                ))
            })
    }

    /// Where an event without a partition id goes: the partition key's hash, else round robin.
    pub(crate) fn pick_partition(&self, partition_key: Option<&str>) -> Arc<Partition> {
        let n = self.partitions.len();
        let index = match partition_key {
            Some(key) => crate::hash::partition_for_key(key, n),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % n,
        };
        self.partitions[index].clone()
    }
}

/// Snapshot of a partition for `$management` READ.
pub(crate) struct PartitionInfo {
    pub(crate) begin_sequence: i64,
    pub(crate) last_sequence: i64,
    pub(crate) last_offset: i64,
    pub(crate) last_enqueued_ms: i64,
    pub(crate) empty: bool,
}

/// One partition: retained events plus the receivers that own it per consumer group.
pub(crate) struct Partition {
    pub(crate) id: u32,
    state: Mutex<PartitionState>,
    /// Next sequence number to be assigned; readers wait on changes.
    tail: watch::Sender<i64>,
    owners: Mutex<HashMap<String, GroupOwners>>,
}

struct PartitionState {
    events: VecDeque<Arc<Event>>,
    next_sequence: i64,
    next_offset: i64,
    last_enqueued_ms: i64,
    max_events: usize,
    log: Option<PartitionLog>,
}

/// A partition's append-only file. Retention drops events from memory at once; the file is
/// rewritten with only the retained ones whenever it holds twice as many records as are kept,
/// so its size stays within about twice the retention, at an amortised cost of one extra
/// write per event.
struct PartitionLog {
    path: PathBuf,
    file: BufWriter<File>,
    /// Records in the file, retained or not.
    records: usize,
}

impl PartitionLog {
    fn open(path: PathBuf, valid: u64, records: usize) -> std::io::Result<PartitionLog> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        // A torn last record would corrupt everything appended after it.
        file.set_len(valid)?;
        Ok(PartitionLog {
            path,
            file: BufWriter::new(file),
            records,
        })
    }

    /// Replaces the file with one holding `events` only: written beside it, synced, then
    /// renamed over it, so a crash leaves either the old file or the new one.
    fn compact(&mut self, events: &VecDeque<Arc<Event>>) -> std::io::Result<()> {
        self.file.flush()?;
        let fresh = self.path.with_extension("compacting");
        let mut out = BufWriter::new(File::create(&fresh)?);
        for event in events {
            write_record(&mut out, event)?;
        }
        out.flush()?;
        out.get_ref().sync_all()?;
        drop(out);
        std::fs::rename(&fresh, &self.path)?;
        let file = OpenOptions::new().append(true).open(&self.path)?;
        self.file = BufWriter::new(file);
        self.records = events.len();
        Ok(())
    }

    fn needs_compaction(&self, retained: usize, max_events: usize) -> bool {
        self.records > retained && self.records >= 2 * max_events.max(1)
    }
}

impl Partition {
    fn open(id: u32, max_events: usize, log_path: Option<PathBuf>) -> std::io::Result<Partition> {
        let mut state = PartitionState {
            events: VecDeque::new(),
            next_sequence: 0,
            next_offset: 0,
            last_enqueued_ms: 0,
            max_events,
            log: None,
        };
        if let Some(path) = log_path {
            let (valid, records) = load_log(&path, &mut state)?;
            let mut log = PartitionLog::open(path, valid, records)?;
            // A file written with a larger retention (or before compaction existed).
            if log.records > state.events.len() {
                log.compact(&state.events)?;
            }
            state.log = Some(log);
        }
        let tail = watch::Sender::new(state.next_sequence);
        Ok(Partition {
            id,
            state: Mutex::new(state),
            tail,
            owners: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PartitionState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends events; returns an error only when persisting fails (nothing is then kept).
    pub(crate) fn append(&self, incoming: Vec<Incoming>) -> std::io::Result<()> {
        let mut state = self.lock();
        let now = now_millis().max(state.last_enqueued_ms);
        let mut events = Vec::with_capacity(incoming.len());
        let mut offset = state.next_offset;
        for (i, inc) in incoming.into_iter().enumerate() {
            events.push(Arc::new(Event {
                sequence: state.next_sequence + i as i64,
                offset,
                enqueued_ms: now,
                partition_key: inc.partition_key,
                message: inc.message,
            }));
            offset += inc.size.max(1) as i64;
        }
        if let Some(log) = state.log.as_mut() {
            for event in &events {
                write_record(&mut log.file, event)?;
            }
            log.file.flush()?;
            log.records += events.len();
        }
        state.next_sequence += events.len() as i64;
        state.next_offset = offset;
        state.last_enqueued_ms = now;
        state.events.extend(events);
        while state.events.len() > state.max_events {
            state.events.pop_front();
        }
        let PartitionState {
            events,
            max_events,
            log,
            ..
        } = &mut *state;
        if let Some(log) = log.as_mut()
            && log.needs_compaction(events.len(), *max_events)
            && let Err(e) = log.compact(events)
        {
            // The events are stored (the file still holds them, and more): only its size
            // is not reclaimed this time.
            tracing::warn!(path = %log.path.display(), error = %e, "cannot compact a partition file");
        }
        let next = state.next_sequence;
        drop(state);
        self.tail.send_replace(next);
        Ok(())
    }

    /// The sequence number a reader starting at `start` reads first.
    pub(crate) fn resolve(&self, start: &StartAt) -> i64 {
        let state = self.lock();
        let begin = state
            .events
            .front()
            .map_or(state.next_sequence, |e| e.sequence);
        let first_where = |pred: &dyn Fn(&Event) -> bool| {
            let i = state.events.partition_point(|e| !pred(e));
            state
                .events
                .get(i)
                .map_or(state.next_sequence, |e| e.sequence)
        };
        let at = match *start {
            StartAt::Earliest => begin,
            StartAt::Latest => state.next_sequence,
            StartAt::Sequence { value, inclusive } => {
                if inclusive {
                    value
                } else {
                    value.saturating_add(1)
                }
            }
            StartAt::Offset { value, inclusive } => first_where(&|e| {
                if inclusive {
                    e.offset >= value
                } else {
                    e.offset > value
                }
            }),
            StartAt::EnqueuedTime { millis, inclusive } => first_where(&|e| {
                if inclusive {
                    e.enqueued_ms >= millis
                } else {
                    e.enqueued_ms > millis
                }
            }),
        };
        at.clamp(begin, state.next_sequence)
    }

    /// Up to `max` events from sequence number `from` on (from the oldest retained one if
    /// `from` was dropped already).
    pub(crate) fn read(&self, from: i64, max: usize) -> Vec<Arc<Event>> {
        let state = self.lock();
        let begin = state
            .events
            .front()
            .map_or(state.next_sequence, |e| e.sequence);
        let skip = (from.max(begin) - begin) as usize;
        state.events.iter().skip(skip).take(max).cloned().collect()
    }

    /// Watches the next sequence number to be assigned.
    pub(crate) fn subscribe(&self) -> watch::Receiver<i64> {
        self.tail.subscribe()
    }

    pub(crate) fn info(&self) -> PartitionInfo {
        let state = self.lock();
        let last = state.events.back();
        PartitionInfo {
            begin_sequence: state
                .events
                .front()
                .map_or(state.next_sequence, |e| e.sequence),
            last_sequence: state.next_sequence - 1,
            last_offset: last.map_or(-1, |e| e.offset),
            last_enqueued_ms: state.last_enqueued_ms,
            empty: state.events.is_empty(),
        }
    }

    /// Registers a receiver of consumer group `group` with an owner level (epoch) or none.
    /// Receivers it displaces get a message on their `stolen` channel; a receiver with a
    /// lower epoch than the current owner is refused.
    pub(crate) fn claim(
        self: &Arc<Self>,
        group: &str,
        epoch: Option<i64>,
        link_id: u64,
    ) -> Result<Claim, String> {
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        let owners = owners.entry(group.to_ascii_lowercase()).or_default();
        let (tx, rx) = oneshot::channel();
        match epoch {
            Some(epoch) => {
                if let Some(current) = owners.epoch
                    && epoch < current
                {
                    return Err(format!(
                        "Receiver with epoch '{epoch}' cannot be created because a receiver with a higher epoch of '{current}' already exists for partition '{}' of consumer group '{group}'",
                        self.id
                    ));
                }
                let reason = format!(
                    "New receiver with higher epoch of '{epoch}' is created hence current receiver is getting disconnected (partition '{}', consumer group '{group}')",
                    self.id
                );
                for (_, stolen) in owners.receivers.drain() {
                    let _ = stolen.send(reason.clone());
                }
                owners.epoch = Some(epoch);
            }
            None => {
                if let Some(current) = owners.epoch {
                    return Err(format!(
                        "Receiver without epoch cannot be created because a receiver with epoch '{current}' already exists for partition '{}' of consumer group '{group}'",
                        self.id
                    ));
                }
            }
        }
        owners.receivers.insert(link_id, tx);
        Ok(Claim {
            partition: self.clone(),
            group: group.to_ascii_lowercase(),
            link_id,
            stolen: rx,
        })
    }

    fn release(&self, group: &str, link_id: u64) {
        let mut all = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(owners) = all.get_mut(group) {
            owners.receivers.remove(&link_id);
            if owners.receivers.is_empty() {
                // The owner level lapses with its last receiver, as in the service.
                all.remove(group);
            }
        }
    }
}

#[derive(Default)]
struct GroupOwners {
    epoch: Option<i64>,
    receivers: HashMap<u64, oneshot::Sender<String>>,
}

/// A receiver's registration on a partition; dropping it deregisters the receiver.
pub(crate) struct Claim {
    partition: Arc<Partition>,
    group: String,
    link_id: u64,
    /// Fires with a reason when a receiver with a higher owner level takes over.
    pub(crate) stolen: oneshot::Receiver<String>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.partition.release(&self.group, self.link_id);
    }
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

fn write_record(log: &mut impl Write, event: &Event) -> std::io::Result<()> {
    let body = encode(&event.message).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len() + 24).map_err(std::io::Error::other)?;
    log.write_all(&len.to_be_bytes())?;
    log.write_all(&event.sequence.to_be_bytes())?;
    log.write_all(&event.offset.to_be_bytes())?;
    log.write_all(&event.enqueued_ms.to_be_bytes())?;
    log.write_all(&body)
}

/// Loads a partition log into `state`; returns the length of its valid prefix and how many
/// records that prefix holds.
fn load_log(path: &Path, state: &mut PartitionState) -> std::io::Result<(u64, usize)> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    }
    let mut at = 0usize;
    let mut records = 0usize;
    let be = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
    while let Some(len_bytes) = bytes.get(at..at + 4) {
        let len = u32::from_be_bytes(len_bytes.try_into().unwrap_or([0; 4])) as usize;
        let Some(record) = bytes.get(at + 4..at + 4 + len).filter(|_| len >= 24) else {
            break;
        };
        let Ok(message) = decode(&record[24..]) else {
            tracing::warn!(path = %path.display(), at, "undecodable record; the log is cut here");
            break;
        };
        let event = Event {
            sequence: be(&record[0..8]),
            offset: be(&record[8..16]),
            enqueued_ms: be(&record[16..24]),
            partition_key: partition_key_of(&message),
            message,
        };
        state.next_sequence = event.sequence + 1;
        state.next_offset = event.offset + (len - 24).max(1) as i64;
        state.last_enqueued_ms = event.enqueued_ms;
        state.events.push_back(Arc::new(event));
        if state.events.len() > state.max_events {
            state.events.pop_front();
        }
        at += 4 + len;
        records += 1;
    }
    if at < bytes.len() {
        tracing::warn!(path = %path.display(), "dropping {} bytes of a torn record", bytes.len() - at);
    }
    Ok((at as u64, records))
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::types::messaging::AmqpValue;

    use super::*;

    fn incoming(text: &str) -> Incoming {
        Incoming {
            message: Message::builder()
                .body(Body::Value(AmqpValue(Value::String(text.into()))))
                .build(),
            size: text.len(),
            partition_key: None,
        }
    }

    fn body(event: &Event) -> String {
        match &event.message.body {
            Body::Value(AmqpValue(Value::String(s))) => s.clone(),
            other => panic!("unexpected body {other:?}"),
        }
    }

    #[test]
    fn the_data_file_stays_within_twice_the_retention_and_reloads_the_retained_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let partition = Partition::open(0, 10, Some(path.clone())).unwrap();
        let mut largest = 0;
        for batch in 0..50 {
            partition
                .append(
                    (0..7)
                        .map(|i| incoming(&format!("e{}", batch * 7 + i)))
                        .collect(),
                )
                .unwrap();
            largest = largest.max(std::fs::metadata(&path).unwrap().len());
        }
        let records = partition.lock().log.as_ref().unwrap().records;
        assert!(records < 2 * 10 + 7, "{records} records in the file");
        // No record here is larger than one with the longest body.
        let sample = dir.path().join("sample.log");
        Partition::open(1, 10, Some(sample.clone()))
            .unwrap()
            .append(vec![incoming("e999")])
            .unwrap();
        let one_record = std::fs::metadata(&sample).unwrap().len();
        assert!(
            largest <= (2 * 10 + 7) as u64 * one_record,
            "the file grew to {largest} bytes ({one_record} per record) for 10 retained events"
        );
        drop(partition);

        // A restart sees the retained events, numbered as before, and appends after them.
        let reopened = Partition::open(0, 10, Some(path.clone())).unwrap();
        let kept = reopened.read(0, 100);
        let bodies: Vec<String> = kept.iter().map(|e| body(e)).collect();
        let want: Vec<String> = (340..350).map(|i| format!("e{i}")).collect();
        assert_eq!(bodies, want);
        assert_eq!(kept[0].sequence, 340);
        reopened.append(vec![incoming("after")]).unwrap();
        assert_eq!(reopened.info().last_sequence, 350);
    }

    #[test]
    fn a_file_written_with_a_larger_retention_is_compacted_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let partition = Partition::open(0, 1000, Some(path.clone())).unwrap();
        partition
            .append((0..100).map(|i| incoming(&format!("e{i}"))).collect())
            .unwrap();
        drop(partition);
        let before = std::fs::metadata(&path).unwrap().len();
        let reopened = Partition::open(0, 5, Some(path.clone())).unwrap();
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after * 10 < before, "{before} -> {after} bytes");
        assert_eq!(reopened.read(0, 100).len(), 5);
        assert_eq!(reopened.info().begin_sequence, 95);
    }
}
