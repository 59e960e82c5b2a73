//! `eventhubs://NAMESPACE[?…]` URLs, connection strings and the resulting configuration.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tributary::{Error, Result, Url, UrlOptions, redact};

use crate::blob::BlobStoreConfig;

mod connection_string;
mod storage;

use connection_string::ParsedConnection;
use storage::storage;

pub(crate) const KNOWN_OPTIONS: &[&str] = &[
    "endpoint",
    "connection_string_env",
    "shared_access_key_name",
    "shared_access_key",
    "credential",
    "consumer_group",
    "hubs",
    "checkpoints",
    "storage_account_url",
    "storage_account",
    "storage_account_key",
    "storage_sas_token",
    "storage_connection_string_env",
    "storage_container",
    "checkpoint_namespace",
    "prefetch",
    "owner_level",
    "lease_ttl",
    "balance_interval",
    "commit_interval",
    "timeout",
    "max_event_bytes",
    "application_id",
];

/// The variable read for a connection string when the URL names none.
pub const CONNECTION_STRING_VARIABLE: &str = "EVENTHUBS_CONNECTION_STRING";
/// The variable read for a storage connection string when the URL names no storage account.
pub const STORAGE_CONNECTION_STRING_VARIABLE: &str = "AZURE_STORAGE_CONNECTION_STRING";
/// The shared access key name and key of the official Event Hubs emulator (not secrets).
const EMULATOR_KEY_NAME: &str = "RootManageSharedAccessKey";
const EMULATOR_KEY: &str = "SAS_KEY_VALUE";
/// The service's message size limit on the Standard and Premium tiers (the Basic tier: 256
/// KiB), which counts the whole AMQP message.
pub(crate) const SERVICE_MAX_MESSAGE_BYTES: usize = 1_048_576;
/// Room under [`SERVICE_MAX_MESSAGE_BYTES`] for what the AMQP encoding adds to an event's key,
/// payload and headers: section and type codes, the SDK's message id, the partition key
/// annotation, `tributary-ts`, the mapping's mark, and about ten bytes per header (so an event
/// of the default maximum with up to ~1,500 headers still fits one message).
const AMQP_ROOM: usize = 16 * 1024;
/// The default `max_event_bytes`: the largest event, as tributary counts it (key, payload,
/// header names and values), that surely fits the service's message limit.
pub(crate) const DEFAULT_MAX_EVENT_BYTES: usize = SERVICE_MAX_MESSAGE_BYTES - AMQP_ROOM;

/// How the backend authenticates to Event Hubs.
#[derive(Clone)]
#[non_exhaustive]
pub enum Credential {
    /// A connection string with a shared access key or signature
    /// (`Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…[;EntityPath=…]`).
    ConnectionString(String),
    /// A Microsoft Entra ID credential of `azure_identity` (or your own).
    Token(Arc<dyn azure_core::credentials::TokenCredential>),
    /// Microsoft Entra ID through the default chain (`auth.rs`).
    DefaultChain,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::ConnectionString(_) => f.write_str("ConnectionString(***)"),
            Credential::Token(_) => f.write_str("Token"),
            Credential::DefaultChain => f.write_str("DefaultChain"),
        }
    }
}

/// Where a group's ownership and checkpoints are kept.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Checkpoints {
    /// Azure Blob Storage, in the layout of Microsoft's SDKs (the default when a storage
    /// account is configured).
    Blob(BlobStoreConfig),
    /// In this process only: groups are shared between consumers of one backend instance and
    /// forgotten when it closes (tests, single-process tools).
    Memory,
}

/// Everything the backend needs; built from a URL ([`EventHubsConfig::from_url`]) or by hand.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EventHubsConfig {
    /// The fully qualified namespace, `NAME.servicebus.windows.net`.
    pub namespace: String,
    /// Where the AMQP connection really goes (`amqp://127.0.0.1:5672` for an emulator: plain
    /// TCP), when not to the namespace itself.
    pub endpoint: Option<String>,
    /// How to authenticate.
    pub credential: Credential,
    /// The hub a connection string's `EntityPath` names (its key may be scoped to it).
    pub entity_path: Option<String>,
    /// Read every group through this consumer group instead of the one named like the group.
    pub consumer_group: Option<String>,
    /// Hubs `list_streams` reports (the data plane cannot enumerate a namespace's hubs).
    pub hubs: Vec<String>,
    /// Ownership and checkpoints.
    pub checkpoints: Checkpoints,
    /// Events each partition receiver asks for ahead (AMQP link credit).
    pub prefetch: u32,
    /// The owner level (epoch) of group receivers; `None` for non-exclusive receivers.
    pub owner_level: Option<i64>,
    /// How long a partition stays owned without renewal.
    pub lease_ttl: Duration,
    /// How often ownership is balanced.
    pub balance_interval: Duration,
    /// How often acked progress is written.
    pub commit_interval: Duration,
    /// Deadline of connects, management calls and sends.
    pub timeout: Duration,
    /// Largest event accepted (body, properties and partition key).
    pub max_event_bytes: usize,
    /// Sent to the service as the client's application id (user agent).
    pub application_id: Option<String>,
    pub(crate) shown_url: String,
}

impl EventHubsConfig {
    /// Parses an `eventhubs://` URL, reading a connection string from the environment where
    /// the URL says so (see the crate documentation for every option).
    pub fn from_url(url: &Url) -> Result<EventHubsConfig> {
        Self::from_url_with_env(url, &|name| std::env::var(name).ok())
    }

    pub(crate) fn from_url_with_env(
        url: &Url,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<EventHubsConfig> {
        let shown_url = redact(url);
        if url.scheme() != "eventhubs" {
            return Err(Error::config(format!(
                "`{shown_url}` is not an eventhubs:// URL"
            )));
        }
        let mut options = UrlOptions::new(url)?;
        let connection_variable = options
            .take_str("connection_string_env")
            .unwrap_or_else(|| CONNECTION_STRING_VARIABLE.to_string());
        let connection_string = env(&connection_variable).filter(|s| !s.trim().is_empty());
        let host = url.host_str().unwrap_or("").to_string();
        let mut endpoint = options.take_str("endpoint");
        let mut entity_path = None;
        let mut namespace = normalise_namespace(&host);
        // The namespace as Microsoft's SDKs write it into blob names: a connection string's
        // endpoint host, with its port when it names one (the Python processor's emulator case).
        let mut checkpoint_namespace = None;
        let key_name = options.take_str("shared_access_key_name");
        let key = options.take_str("shared_access_key");
        let credential_option = options.take_str("credential");
        let credential = if let Some(text) = &connection_string {
            let parsed = ParsedConnection::parse(text).map_err(|e| {
                e.context(format!("the connection string in ${connection_variable}"))
            })?;
            if namespace.is_empty() {
                namespace = parsed.namespace.clone();
            } else if !parsed.namespace.eq_ignore_ascii_case(&namespace) {
                return Err(Error::config(format!(
                    "`{shown_url}` names namespace `{namespace}` but the connection string in ${connection_variable} is for `{}`",
                    parsed.namespace
                )));
            }
            if parsed.development_emulator && endpoint.is_none() {
                endpoint = Some(format!("amqp://{}", parsed.host_port));
            }
            entity_path = parsed.entity_path.clone();
            checkpoint_namespace = Some(parsed.netloc.clone());
            Credential::ConnectionString(parsed.for_sdk)
        } else if key_name.is_some() || key.is_some() {
            let (Some(key_name), Some(key)) = (key_name, key) else {
                return Err(Error::config(
                    "options `shared_access_key_name` and `shared_access_key` go together",
                ));
            };
            Credential::ConnectionString(format!(
                "Endpoint=sb://{namespace}/;SharedAccessKeyName={key_name};SharedAccessKey={key}"
            ))
        } else if endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("amqp://"))
        {
            // A plain-TCP endpoint is an emulator: sign with the official emulator's key, which
            // an emulator without configured keys accepts like any other.
            Credential::ConnectionString(format!(
                "Endpoint=sb://{namespace}/;SharedAccessKeyName={EMULATOR_KEY_NAME};SharedAccessKey={EMULATOR_KEY}"
            ))
        } else {
            match credential_option.as_deref() {
                None | Some("default") => Credential::DefaultChain,
                Some(other) => {
                    return Err(Error::config(format!(
                        "option `credential`: `{other}` is not known (use `default`, the Microsoft Entra ID chain; or give a connection string in ${connection_variable})"
                    )));
                }
            }
        };
        if namespace.is_empty() {
            return Err(Error::config(format!(
                "`{shown_url}` names no namespace: use eventhubs://NAME.servicebus.windows.net, or set ${connection_variable} to a connection string"
            )));
        }
        if let Some(endpoint) = &endpoint
            && !(endpoint.starts_with("amqp://") || endpoint.starts_with("amqps://"))
        {
            return Err(Error::config(format!(
                "option `endpoint`: `{endpoint}` is not an amqp:// or amqps:// address"
            )));
        }

        let timeout = options
            .take_duration("timeout")?
            .unwrap_or(Duration::from_secs(30));
        let consumer_group = options.take_str("consumer_group").filter(|s| !s.is_empty());
        let hubs = options
            .take_str("hubs")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let checkpoint_namespace = options
            .take_str("checkpoint_namespace")
            .or(checkpoint_namespace)
            .unwrap_or_else(|| namespace.clone());
        let checkpoints = storage(
            &mut options,
            env,
            &checkpoint_namespace,
            consumer_group.clone(),
            timeout,
        )?;
        let prefetch = options.take::<u32>("prefetch")?.unwrap_or(300);
        if prefetch == 0 {
            return Err(Error::config("option `prefetch`: must be at least 1"));
        }
        let owner_level = match options.take_str("owner_level").as_deref() {
            None => Some(0),
            Some("none") => None,
            Some(text) => Some(text.parse::<i64>().map_err(|_| {
                Error::config(format!(
                    "option `owner_level`: `{text}` is not an integer (or `none`)"
                ))
            })?),
        };
        let lease_ttl = options
            .take_duration("lease_ttl")?
            .unwrap_or(Duration::from_secs(30));
        let balance_interval = options
            .take_duration("balance_interval")?
            .unwrap_or(Duration::from_secs(10));
        if balance_interval >= lease_ttl {
            return Err(Error::config(format!(
                "option `balance_interval` ({balance_interval:?}) must be shorter than `lease_ttl` ({lease_ttl:?}), or partitions would lapse between renewals"
            )));
        }
        let commit_interval = options
            .take_duration("commit_interval")?
            .unwrap_or(Duration::from_secs(1));
        let max_event_bytes = options
            .take_size("max_event_bytes")?
            .map(|v| v as usize)
            .unwrap_or(DEFAULT_MAX_EVENT_BYTES);
        let application_id = options.take_str("application_id");
        options.finish(KNOWN_OPTIONS)?;
        Ok(EventHubsConfig {
            namespace,
            endpoint,
            credential,
            entity_path,
            consumer_group,
            hubs,
            checkpoints,
            prefetch,
            owner_level,
            lease_ttl,
            balance_interval,
            commit_interval,
            timeout,
            max_event_bytes,
            application_id,
            shown_url,
        })
    }

    /// The URL, with secrets masked, for messages.
    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }
}

/// `orders` is short for `orders.servicebus.windows.net`.
fn normalise_namespace(host: &str) -> String {
    if host.is_empty() || host.contains('.') || host.contains(':') {
        host.to_string()
    } else {
        format!("{host}.servicebus.windows.net")
    }
}

#[cfg(test)]
mod tests {
    use super::storage::account_from_url;
    use super::*;
    use crate::blob::StorageAuth;
    use std::collections::HashMap;

    fn parse(url: &str, env: &[(&str, &str)]) -> Result<EventHubsConfig> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EventHubsConfig::from_url_with_env(&Url::parse(url).unwrap(), &|name| {
            env.get(name).cloned()
        })
    }

    #[test]
    fn a_namespace_url_uses_entra_id() {
        let config = parse("eventhubs://orders", &[]).unwrap();
        assert_eq!(config.namespace, "orders.servicebus.windows.net");
        assert!(matches!(config.credential, Credential::DefaultChain));
        assert!(matches!(config.checkpoints, Checkpoints::Memory));
        assert_eq!(config.owner_level, Some(0));
    }

    #[test]
    fn a_connection_string_from_the_environment() {
        let config = parse(
            "eventhubs://",
            &[(
                CONNECTION_STRING_VARIABLE,
                "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0;EntityPath=hub1",
            )],
        )
        .unwrap();
        assert_eq!(config.namespace, "ns.servicebus.windows.net");
        assert_eq!(config.entity_path.as_deref(), Some("hub1"));
        assert_eq!(format!("{:?}", config.credential), "ConnectionString(***)");
        assert!(!format!("{config:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn the_development_emulator_flag_points_at_plain_amqp() {
        let config = parse(
            "eventhubs://",
            &[(
                "MY_CS",
                "Endpoint=sb://127.0.0.1:5673;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true",
            )],
        );
        assert!(config.is_err(), "the variable is only read when named");
        let config = parse(
            "eventhubs://?connection_string_env=MY_CS",
            &[(
                "MY_CS",
                "Endpoint=sb://127.0.0.1:5673;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true",
            )],
        )
        .unwrap();
        assert_eq!(config.namespace, "127.0.0.1");
        assert_eq!(config.endpoint.as_deref(), Some("amqp://127.0.0.1:5673"));
        // Blob names use the endpoint as the Python processor does: with its port.
        let config = parse(
            "eventhubs://?connection_string_env=MY_CS&checkpoints=blob&storage_account_url=http://127.0.0.1:2/a&storage_account_key=a2V5",
            &[(
                "MY_CS",
                "Endpoint=sb://127.0.0.1:5673;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true",
            )],
        )
        .unwrap();
        let Checkpoints::Blob(store) = &config.checkpoints else {
            panic!("blob")
        };
        assert_eq!(store.namespace, "127.0.0.1:5673");
        let Credential::ConnectionString(sdk) = &config.credential else {
            panic!("a connection string")
        };
        assert_eq!(
            sdk,
            "Endpoint=sb://127.0.0.1/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE"
        );
    }

    #[test]
    fn iot_hub_service_strings_say_which_string_to_use() {
        let error = parse(
            "eventhubs://",
            &[(
                CONNECTION_STRING_VARIABLE,
                "HostName=hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=c2VjcmV0",
            )],
        )
        .unwrap_err();
        assert!(error.to_string().contains("Built-in endpoints"), "{error}");
        assert!(!error.to_string().contains("c2VjcmV0"));
    }

    #[test]
    fn storage_options_build_a_blob_store() {
        let config = parse(
            "eventhubs://emulator.localhost?endpoint=amqp://127.0.0.1:1&storage_account_url=http://127.0.0.1:2/devstoreaccount1&storage_account_key=a2V5&storage_container=cp",
            &[],
        )
        .unwrap();
        let Checkpoints::Blob(store) = &config.checkpoints else {
            panic!("blob")
        };
        assert_eq!(store.account_url, "http://127.0.0.1:2/devstoreaccount1");
        assert_eq!(store.container, "cp");
        assert_eq!(store.namespace, "emulator.localhost");
        assert!(
            matches!(&store.auth, StorageAuth::AccountKey { account, .. } if account == "devstoreaccount1")
        );
        assert!(
            !config.shown_url().contains("a2V5"),
            "{}",
            config.shown_url()
        );
        assert_eq!(
            account_from_url("https://acct.blob.core.windows.net"),
            "acct"
        );
    }

    #[test]
    fn bad_options_are_named() {
        for (url, expected) in [
            ("eventhubs://ns?prefetch=0", "prefetch"),
            ("eventhubs://ns?owner_level=high", "owner_level"),
            (
                "eventhubs://ns?lease_ttl=5s&balance_interval=10s",
                "balance_interval",
            ),
            ("eventhubs://ns?checkpoints=blob", "checkpoints=blob"),
            ("eventhubs://ns?shared_access_key=x", "go together"),
            ("eventhubs://ns?endpoint=http://x", "endpoint"),
            ("eventhubs://ns?colour=red", "colour"),
            ("eventhubs://", "names no namespace"),
        ] {
            let error = parse(url, &[]).unwrap_err();
            assert!(error.to_string().contains(expected), "{url}: {error}");
        }
    }
}
