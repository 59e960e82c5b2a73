//! Emulator settings: the entities it serves and its limits, from code, flags or a JSON file in
//! the shape of the official emulator's `Config.json`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The consumer group every event hub has, as in the service.
pub const DEFAULT_CONSUMER_GROUP: &str = "$Default";

/// One event hub the emulator serves from the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// The event hub's name (matched case-insensitively, as the service does).
    pub name: String,
    /// Number of partitions, ids `"0"` to `"N-1"`.
    pub partition_count: u32,
    /// Consumer groups besides `$Default`, which always exists.
    pub consumer_groups: Vec<String>,
}

impl HubConfig {
    /// A hub with `partition_count` partitions and only the `$Default` consumer group.
    pub fn new(name: impl Into<String>, partition_count: u32) -> Self {
        HubConfig {
            name: name.into(),
            partition_count,
            consumer_groups: Vec::new(),
        }
    }

    /// Adds a consumer group.
    pub fn with_consumer_group(mut self, group: impl Into<String>) -> Self {
        self.consumer_groups.push(group.into());
        self
    }
}

/// Everything the emulator needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port (see [`crate::Emulator::local_addr`]).
    pub bind: SocketAddr,
    /// The namespace name reported in logs; clients may use any host name.
    pub namespace: String,
    /// Hubs that exist from the start.
    pub hubs: Vec<HubConfig>,
    /// Create unknown hubs on first use instead of answering `amqp:not-found`.
    pub auto_create: bool,
    /// Create unknown consumer groups on first use instead of answering `amqp:not-found`;
    /// `None` follows [`Config::auto_create`]. Separate for tests that make hubs through the
    /// admin API but name consumer groups on the fly.
    pub auto_create_consumer_groups: Option<bool>,
    /// Serve the HTTP admin API (create, list and delete hubs and consumer groups, see
    /// `admin.rs`) on the AMQP port, told apart by the connection's first bytes. What Azure
    /// does in Resource Manager; for test fixtures, never on by default.
    pub admin: bool,
    /// Partition count of auto-created hubs.
    pub default_partitions: u32,
    /// Largest message (a single event or a whole batch) a producer may send, in bytes;
    /// advertised on every link attach.
    pub max_message_size: u64,
    /// Oldest events are dropped beyond this many per partition.
    pub max_events_per_partition: usize,
    /// Shared access keys (`name -> key`) that SAS tokens must be signed with. Empty: every
    /// token is accepted.
    pub shared_access_keys: BTreeMap<String, String>,
    /// Keep events in append-only files under this directory and reload them at start.
    pub data_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 5672)),
            namespace: "emulator".into(),
            hubs: Vec::new(),
            auto_create: true,
            auto_create_consumer_groups: None,
            admin: false,
            default_partitions: 4,
            max_message_size: 1024 * 1024,
            max_events_per_partition: 1_000_000,
            shared_access_keys: BTreeMap::new(),
            data_dir: None,
        }
    }
}

impl Config {
    /// Default settings listening on `127.0.0.1` on a free port: what tests want.
    pub fn for_tests() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Config::default()
        }
    }

    /// Adds a hub that exists from the start.
    pub fn with_hub(mut self, hub: HubConfig) -> Self {
        self.hubs.push(hub);
        self
    }

    /// Adds a shared access key that SAS tokens are verified against.
    pub fn with_shared_access_key(
        mut self,
        name: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        self.shared_access_keys.insert(name.into(), key.into());
        self
    }

    /// Merges a JSON configuration file (see [`ConfigFile`]) into these settings.
    pub fn load_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let file: ConfigFile = serde_json::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            source: e,
        })?;
        self.apply(file)
    }

    /// Merges a parsed configuration file into these settings.
    pub fn apply(&mut self, file: ConfigFile) -> Result<(), ConfigError> {
        for namespace in file.user_config.namespace_config {
            if let Some(kind) = &namespace.kind
                && !kind.eq_ignore_ascii_case("EventHub")
            {
                // The official file format also describes other products; skip them.
                continue;
            }
            if let Some(name) = namespace.name {
                self.namespace = name;
            }
            for entity in namespace.entities {
                let partition_count = entity.partition_count.get()?;
                if partition_count == 0 || partition_count > 1024 {
                    return Err(ConfigError::Invalid(format!(
                        "event hub {:?}: partition count {partition_count} is not in 1..=1024",
                        entity.name
                    )));
                }
                validate_hub_name(&entity.name).map_err(ConfigError::Invalid)?;
                self.hubs.push(HubConfig {
                    name: entity.name,
                    partition_count,
                    consumer_groups: entity.consumer_groups.into_iter().map(|g| g.name).collect(),
                });
            }
        }
        for key in file.user_config.shared_access_keys {
            self.shared_access_keys.insert(key.name, key.key);
        }
        Ok(())
    }
}

/// Event hub names the emulator accepts: what the service allows, which also keeps them safe
/// as directory names under `--data-dir`.
pub(crate) fn validate_hub_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid event hub name (1 to 256 letters, digits, '-', '_' or '.')"
        ))
    }
}

/// Consumer group names the emulator accepts: the service's rule (1 to 50 letters, digits,
/// periods, hyphens and underscores, starting and ending with a letter or digit), plus the
/// built-in `$Default`.
pub(crate) fn validate_group_name(name: &str) -> Result<(), String> {
    let ok = name.eq_ignore_ascii_case(DEFAULT_CONSUMER_GROUP)
        || (!name.is_empty()
            && name.len() <= 50
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid consumer group name (1 to 50 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
        ))
    }
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("cannot parse {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// The JSON configuration file: the official emulator's `Config.json` shape, plus an optional
/// `SharedAccessKeys` list.
///
/// ```json
/// {
///   "UserConfig": {
///     "NamespaceConfig": [{
///       "Type": "EventHub",
///       "Name": "emulatorNs1",
///       "Entities": [{
///         "Name": "eh1",
///         "PartitionCount": "2",
///         "ConsumerGroups": [{ "Name": "cg1" }]
///       }]
///     }],
///     "SharedAccessKeys": [{ "Name": "RootManageSharedAccessKey", "Key": "SAS_KEY_VALUE" }]
///   }
/// }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigFile {
    /// The only section the emulator reads.
    pub user_config: UserConfig,
}

/// `UserConfig` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserConfig {
    /// Namespaces; the emulator serves all their event hubs from one endpoint.
    #[serde(default)]
    pub namespace_config: Vec<NamespaceConfig>,
    /// Keys SAS tokens must be signed with (an emulator extension).
    #[serde(default)]
    pub shared_access_keys: Vec<SharedAccessKeyConfig>,
}

/// One namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NamespaceConfig {
    /// `EventHub`; other types are ignored.
    #[serde(default, rename = "Type")]
    pub kind: Option<String>,
    /// The namespace name.
    #[serde(default)]
    pub name: Option<String>,
    /// Its event hubs.
    #[serde(default)]
    pub entities: Vec<EntityConfig>,
}

/// One event hub.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntityConfig {
    /// The event hub name.
    pub name: String,
    /// Partition count, a number or a string of digits (the official file uses strings).
    pub partition_count: Count,
    /// Consumer groups besides `$Default`.
    #[serde(default)]
    pub consumer_groups: Vec<ConsumerGroupConfig>,
}

/// A number that may be written as a JSON string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Count {
    /// `2`
    Number(u32),
    /// `"2"`
    Text(String),
}

impl Count {
    fn get(&self) -> Result<u32, ConfigError> {
        match self {
            Count::Number(n) => Ok(*n),
            Count::Text(s) => s.trim().parse().map_err(|_| {
                ConfigError::Invalid(format!("partition count {s:?} is not a number"))
            }),
        }
    }
}

/// One consumer group.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConsumerGroupConfig {
    /// Its name.
    pub name: String,
}

/// One shared access key.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SharedAccessKeyConfig {
    /// The key name (`skn` in tokens).
    pub name: String,
    /// The key itself.
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_config_shape_parses() {
        let json = r#"{"UserConfig":{"NamespaceConfig":[{"Type":"EventHub","Name":"emulatorNs1",
            "Entities":[{"Name":"eh1","PartitionCount":"2","ConsumerGroups":[{"Name":"cg1"}]},
                        {"Name":"eh2","PartitionCount":3,"ConsumerGroups":[]}]}],
            "LoggingConfig":{"Type":"File"}}}"#;
        let mut config = Config::default();
        config.apply(serde_json::from_str(json).unwrap()).unwrap();
        assert_eq!(config.namespace, "emulatorNs1");
        assert_eq!(
            config.hubs,
            vec![
                HubConfig::new("eh1", 2).with_consumer_group("cg1"),
                HubConfig::new("eh2", 3)
            ]
        );
    }

    #[test]
    fn bad_values_are_errors() {
        let mut config = Config::default();
        let zero = r#"{"UserConfig":{"NamespaceConfig":[{"Entities":[{"Name":"a","PartitionCount":0}]}]}}"#;
        assert!(config.apply(serde_json::from_str(zero).unwrap()).is_err());
        let name = r#"{"UserConfig":{"NamespaceConfig":[{"Entities":[{"Name":"../x","PartitionCount":1}]}]}}"#;
        assert!(config.apply(serde_json::from_str(name).unwrap()).is_err());
        let text = r#"{"UserConfig":{"NamespaceConfig":[{"Entities":[{"Name":"a","PartitionCount":"x"}]}]}}"#;
        assert!(config.apply(serde_json::from_str(text).unwrap()).is_err());
    }
}
