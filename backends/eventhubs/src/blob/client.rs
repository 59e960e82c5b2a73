//! The few Blob Storage REST calls the checkpoint store needs, signed with the account key
//! (Shared Key), a SAS, or an Entra ID token.
//!
//! Why not `azure_storage_blob`: its 1.x line authenticates only with Entra ID tokens or a SAS
//! URL (no account key, which is what storage connection strings, Azurite and Microsoft's other
//! SDKs' checkpoint stores use), and it is built on a different `azure_core` than
//! `azure_messaging_eventhubs` 0.16, so one credential could not serve both. Five calls over
//! `reqwest` cost less than either.
//!
//! This file is the calls and what their answers mean; `signing.rs` is what makes a request
//! acceptable to the service (the Shared Key signature, percent-encoding, HTTP dates), and
//! `listing.rs` reads the XML of a `List Blobs` answer: both are formats fixed by the service,
//! each tested against its documented form.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tributary::{Error, Result, Timestamp};

use listing::parse_listing;
use signing::{encode_path, encode_query, http_date, parse_http_date, shared_key_signature};

mod listing;
mod signing;

/// The REST API version sent with every request (Azurite is started with
/// `--skipApiVersionCheck`, so a newer one than it knows is fine).
const API_VERSION: &str = "2023-11-03";
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// How requests are authorised.
#[derive(Clone)]
pub(crate) enum BlobAuth {
    /// Shared Key with the account's key (decoded from base64).
    SharedKey { account: String, key: Vec<u8> },
    /// A SAS token (`sv=…&sig=…`) appended to every URL.
    Sas(String),
    /// Entra ID: a bearer token for `https://storage.azure.com/.default`.
    Token(Arc<dyn azure_core::credentials::TokenCredential>),
}

impl fmt::Debug for BlobAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key or the signature.
        match self {
            BlobAuth::SharedKey { account, .. } => write!(f, "SharedKey({account})"),
            BlobAuth::Sas(_) => f.write_str("Sas(***)"),
            BlobAuth::Token(_) => f.write_str("EntraId"),
        }
    }
}

/// One blob as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobItem {
    pub name: String,
    /// Quoted, as the `ETag` header gives it (the form `If-Match` takes).
    pub etag: String,
    pub last_modified: Timestamp,
    /// Names lower-cased (the service keeps metadata names case-insensitively).
    pub metadata: BTreeMap<String, String>,
}

/// What a successful write reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Written {
    pub etag: String,
    pub last_modified: Timestamp,
}

/// A write's precondition.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Condition<'a> {
    None,
    /// Only if the blob does not exist.
    Absent,
    /// Only if the blob's ETag is this one.
    Matches(&'a str),
}

/// Why a conditional write did nothing.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The precondition failed (412) or the blob exists (409 on `If-None-Match: *`).
    Conflict,
    /// The blob does not exist (404 on a metadata update).
    Missing,
    Other(Error),
}

/// A container in one storage account.
#[derive(Clone)]
pub(crate) struct BlobContainer {
    http: reqwest::Client,
    /// `https://ACCOUNT.blob.core.windows.net` or `http://127.0.0.1:P/devstoreaccount1`, no
    /// trailing slash.
    account_url: String,
    container: String,
    auth: BlobAuth,
}

impl fmt::Debug for BlobContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobContainer")
            .field("account_url", &self.account_url)
            .field("container", &self.container)
            .field("auth", &self.auth)
            .finish()
    }
}

impl BlobContainer {
    pub(crate) fn new(
        account_url: &str,
        container: &str,
        auth: BlobAuth,
        timeout: Duration,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| {
                Error::config(format!("cannot build the Blob Storage HTTP client: {e}"))
            })?;
        Ok(BlobContainer {
            http,
            account_url: account_url.trim_end_matches('/').to_string(),
            container: container.to_string(),
            auth,
        })
    }

    /// `account/container`, for messages.
    pub(crate) fn describe(&self) -> String {
        format!("{}/{}", self.account_url, self.container)
    }

    /// Creates the container unless it exists.
    pub(crate) async fn ensure_container(&self) -> Result<()> {
        let response = self
            .send(reqwest::Method::PUT, None, &[("restype", "container")], &[])
            .await?;
        match response.status().as_u16() {
            201 | 409 => Ok(()),
            _ => Err(self.failure("create the container", response).await),
        }
    }

    /// Every blob whose name starts with `prefix`, with metadata.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<BlobItem>> {
        let mut items = Vec::new();
        let mut marker = String::new();
        loop {
            let mut query = vec![
                ("restype", "container"),
                ("comp", "list"),
                ("prefix", prefix),
                ("include", "metadata"),
            ];
            if !marker.is_empty() {
                query.push(("marker", &marker));
            }
            let response = self.send(reqwest::Method::GET, None, &query, &[]).await?;
            if response.status().as_u16() != 200 {
                return Err(self.failure("list blobs", response).await);
            }
            let body = response.text().await.map_err(|e| {
                Error::unavailable(format!("list blobs in {}: {e}", self.describe()))
            })?;
            let page = parse_listing(&body).map_err(|e| {
                Error::corrupt(format!(
                    "list blobs in {}: unreadable answer: {e}",
                    self.describe()
                ))
            })?;
            items.extend(page.items);
            match page.next_marker {
                Some(next) if !next.is_empty() => marker = next,
                _ => return Ok(items),
            }
        }
    }

    /// One blob's ETag, time and metadata; `None` when it does not exist.
    pub(crate) async fn properties(&self, blob: &str) -> Result<Option<BlobItem>> {
        let response = self
            .send(reqwest::Method::HEAD, Some(blob), &[], &[])
            .await?;
        match response.status().as_u16() {
            200 => {
                let headers = response.headers();
                let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
                let metadata = headers
                    .iter()
                    .filter_map(|(name, value)| {
                        let name = name.as_str().strip_prefix("x-ms-meta-")?;
                        Some((name.to_ascii_lowercase(), value.to_str().ok()?.to_string()))
                    })
                    .collect();
                Ok(Some(BlobItem {
                    name: blob.to_string(),
                    etag: text("etag").unwrap_or_default().to_string(),
                    last_modified: text("last-modified")
                        .and_then(parse_http_date)
                        .unwrap_or_else(Timestamp::now),
                    metadata,
                }))
            }
            404 => Ok(None),
            _ => Err(self.failure("read blob properties", response).await),
        }
    }

    /// Replaces a blob's metadata (the blob must exist).
    pub(crate) async fn set_metadata(
        &self,
        blob: &str,
        metadata: &[(&str, &str)],
        condition: Condition<'_>,
    ) -> std::result::Result<Written, WriteError> {
        let headers = meta_headers(metadata, condition);
        let response = self
            .send(
                reqwest::Method::PUT,
                Some(blob),
                &[("comp", "metadata")],
                &headers,
            )
            .await
            .map_err(WriteError::Other)?;
        self.written("set blob metadata", response).await
    }

    /// Creates or replaces an empty block blob with `metadata`.
    pub(crate) async fn put_empty(
        &self,
        blob: &str,
        metadata: &[(&str, &str)],
        condition: Condition<'_>,
    ) -> std::result::Result<Written, WriteError> {
        let mut headers = meta_headers(metadata, condition);
        headers.push(("x-ms-blob-type".into(), "BlockBlob".into()));
        let response = self
            .send(reqwest::Method::PUT, Some(blob), &[], &headers)
            .await
            .map_err(WriteError::Other)?;
        self.written("upload blob", response).await
    }

    async fn written(
        &self,
        what: &str,
        response: reqwest::Response,
    ) -> std::result::Result<Written, WriteError> {
        match response.status().as_u16() {
            200 | 201 => {
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let etag = header("etag").ok_or_else(|| {
                    WriteError::Other(Error::corrupt(format!(
                        "{what} in {}: the answer has no ETag",
                        self.describe()
                    )))
                })?;
                let last_modified = header("last-modified")
                    .and_then(|v| parse_http_date(&v))
                    .unwrap_or_else(Timestamp::now);
                Ok(Written {
                    etag,
                    last_modified,
                })
            }
            404 => Err(WriteError::Missing),
            409 | 412 => Err(WriteError::Conflict),
            _ => Err(WriteError::Other(self.failure(what, response).await)),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        blob: Option<&str>,
        query: &[(&str, &str)],
        headers: &[(String, String)],
    ) -> Result<reqwest::Response> {
        let mut path = format!("/{}", encode_path(&self.container));
        if let Some(blob) = blob {
            path.push('/');
            path.push_str(&encode_path(blob));
        }
        let mut url = format!("{}{path}", self.account_url);
        let mut separator = '?';
        for (name, value) in query {
            url.push(separator);
            separator = '&';
            url.push_str(name);
            url.push('=');
            url.push_str(&encode_query(value));
        }
        let date = http_date(Timestamp::now());
        let mut all: Vec<(String, String)> = headers.to_vec();
        all.push(("x-ms-date".into(), date));
        all.push(("x-ms-version".into(), API_VERSION.into()));
        let authorization = match &self.auth {
            BlobAuth::SharedKey { account, key } => {
                let signature = shared_key_signature(
                    account,
                    key,
                    method.as_str(),
                    &self.account_url,
                    &path,
                    query,
                    &all,
                );
                Some(format!("SharedKey {account}:{signature}"))
            }
            BlobAuth::Sas(sas) => {
                url.push(separator);
                url.push_str(sas.trim_start_matches('?'));
                None
            }
            BlobAuth::Token(credential) => {
                let token = credential
                    .get_token(&[STORAGE_SCOPE], None)
                    .await
                    .map_err(|e| {
                        Error::unauthorized(format!(
                            "no Entra ID token for Blob Storage ({}): {e}",
                            self.describe()
                        ))
                    })?;
                Some(format!("Bearer {}", token.token.secret()))
            }
        };
        let mut request = self
            .http
            .request(method, &url)
            .header("content-length", "0");
        for (name, value) in &all {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        request.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                Error::timeout(format!("Blob Storage at {}: {e}", self.describe()))
            } else {
                Error::unavailable(format!("Blob Storage at {}: {e}", self.describe()))
            };
            kind.with_retryable(true)
        })
    }

    async fn failure(&self, what: &str, response: reqwest::Response) -> Error {
        let status = response.status().as_u16();
        let code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let message = format!("{what} in {}: HTTP {status} {code}", self.describe());
        match status {
            401 | 403 => Error::unauthorized(message),
            404 => Error::not_found(message),
            408 | 429 | 500 | 502 | 503 | 504 => Error::unavailable(message).with_retryable(true),
            400 => Error::config(message),
            _ => Error::other(message),
        }
    }
}

fn meta_headers(metadata: &[(&str, &str)], condition: Condition<'_>) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = metadata
        .iter()
        .map(|(name, value)| (format!("x-ms-meta-{name}"), (*value).to_string()))
        .collect();
    match condition {
        Condition::None => {}
        Condition::Absent => headers.push(("if-none-match".into(), "*".into())),
        Condition::Matches(etag) => headers.push(("if-match".into(), etag.to_string())),
    }
    headers
}
