//! One event hub: its partitions, consumer groups and `hub.json`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{NotFound, Partition};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct HubMeta {
    pub(super) name: String,
    pub(super) partition_count: u32,
    pub(super) created_ms: i64,
    pub(super) consumer_groups: BTreeSet<String>,
}

/// One event hub.
pub(crate) struct Hub {
    pub(crate) name: String,
    pub(crate) created_ms: i64,
    pub(crate) partitions: Vec<Arc<Partition>>,
    pub(super) groups: Mutex<BTreeSet<String>>,
    pub(super) round_robin: AtomicUsize,
    pub(super) dir: Option<PathBuf>,
}

impl Hub {
    pub(super) fn create(
        meta: &HubMeta,
        max_events: usize,
        dir: Option<&Path>,
    ) -> std::io::Result<Hub> {
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

    pub(super) fn save_meta(&self) -> std::io::Result<()> {
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

    pub(super) fn has_group(&self, group: &str) -> bool {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|g| g.eq_ignore_ascii_case(group))
    }

    pub(super) fn add_group(&self, group: &str) -> std::io::Result<()> {
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
