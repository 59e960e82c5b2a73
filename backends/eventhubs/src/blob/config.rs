//! Where the Blob checkpoint store keeps its blobs and how it signs in: the public
//! configuration, and storage connection strings as the Azure SDKs and Azurite write them.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tributary::{Error, Result};

use super::client::BlobAuth;

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

    pub(super) fn to_client_auth(&self) -> Result<BlobAuth> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
