//! Where a group's ownership and checkpoints go: the `checkpoints` and `storage_*` options,
//! or a storage connection string from the environment.

use std::sync::Arc;
use std::time::Duration;

use tributary::{Error, Result, UrlOptions};

use super::{Checkpoints, STORAGE_CONNECTION_STRING_VARIABLE};
use crate::blob::{BlobStoreConfig, StorageAuth};

/// The checkpoint store the storage options (or a storage connection string in the
/// environment) describe; in memory when they name no storage account.
pub(super) fn storage(
    options: &mut UrlOptions,
    env: &dyn Fn(&str) -> Option<String>,
    namespace: &str,
    consumer_group: Option<String>,
    timeout: Duration,
) -> Result<Checkpoints> {
    let kind = options.take_str("checkpoints");
    let account_url = options.take_str("storage_account_url");
    let account = options.take_str("storage_account");
    let key = options.take_str("storage_account_key");
    let sas = options.take_str("storage_sas_token");
    let variable = options
        .take_str("storage_connection_string_env")
        .unwrap_or_else(|| STORAGE_CONNECTION_STRING_VARIABLE.to_string());
    let container = options
        .take_str("storage_container")
        .unwrap_or_else(|| "eventhubs-checkpoints".to_string());
    let (account_url, auth) = match (
        &account_url,
        env(&variable).filter(|s| !s.trim().is_empty()),
    ) {
        (Some(url), _) => {
            let auth = match (key, sas) {
                (Some(key), _) => StorageAuth::AccountKey {
                    account: account.unwrap_or_else(|| account_from_url(url)),
                    key,
                },
                (None, Some(sas)) => StorageAuth::Sas(sas),
                (None, None) => {
                    StorageAuth::Token(Arc::new(crate::auth::DefaultChain::new().map_err(|e| {
                        Error::config(format!(
                            "cannot set up Microsoft Entra ID for Blob Storage: {e}"
                        ))
                    })?))
                }
            };
            (Some(url.trim_end_matches('/').to_string()), Some(auth))
        }
        (None, Some(text)) => {
            let (url, auth) = StorageAuth::from_connection_string(&text)
                .map_err(|e| e.context(format!("${variable}")))?;
            (Some(url), Some(auth))
        }
        (None, None) => (None, None),
    };
    match (kind.as_deref(), account_url, auth) {
        (Some("memory"), _, _) => Ok(Checkpoints::Memory),
        (None | Some("blob"), Some(url), Some(auth)) => {
            let mut config = BlobStoreConfig::new(url, container, auth, namespace);
            config.consumer_group = consumer_group;
            config.timeout = timeout;
            Ok(Checkpoints::Blob(config))
        }
        (Some("blob"), _, _) => Err(Error::config(format!(
            "option `checkpoints=blob` needs a storage account: `storage_account_url` (with `storage_account_key`, `storage_sas_token`, or Microsoft Entra ID) or a connection string in ${variable}"
        ))),
        (None, _, _) => Ok(Checkpoints::Memory),
        (Some(other), _, _) => Err(Error::config(format!(
            "option `checkpoints`: `{other}` is not known (use `blob` or `memory`)"
        ))),
    }
}

/// `https://ACCOUNT.blob.core.windows.net` or `http://host:port/ACCOUNT` (path style).
pub(super) fn account_from_url(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    match rest.split_once('/') {
        Some((_, path)) if !path.trim_matches('/').is_empty() => path
            .trim_matches('/')
            .split('/')
            .next()
            .unwrap_or("")
            .to_string(),
        _ => rest.split('.').next().unwrap_or("").to_string(),
    }
}
