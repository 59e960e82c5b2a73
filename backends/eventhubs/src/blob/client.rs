//! The few Blob Storage REST calls the checkpoint store needs, signed with the account key
//! (Shared Key), a SAS, or an Entra ID token.
//!
//! Why not `azure_storage_blob`: its 1.x line authenticates only with Entra ID tokens or a SAS
//! URL (no account key, which is what storage connection strings, Azurite and Microsoft's other
//! SDKs' checkpoint stores use), and it is built on a different `azure_core` than
//! `azure_messaging_eventhubs` 0.16, so one credential could not serve both. Five calls over
//! `reqwest` cost less than either.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tributary::{Error, Result, Timestamp};

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

/// Shared Key for the Blob service (version 2009-09-19 and later): HMAC-SHA256 over the verb,
/// the standard headers, the canonicalized `x-ms-` headers and the canonicalized resource.
fn shared_key_signature(
    account: &str,
    key: &[u8],
    verb: &str,
    account_url: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(String, String)],
) -> String {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let mut canonical_headers: Vec<(String, &str)> = headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-ms-"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim()))
        .collect();
    canonical_headers.sort();
    // The resource is /ACCOUNT followed by the URL's path; on a path-style endpoint (Azurite,
    // `http://host:port/ACCOUNT`) that path starts with the account name again.
    let url_path = account_url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|at| &rest[at..]))
        .unwrap_or("");
    let mut resource = format!("/{account}{url_path}{path}");
    let mut params: Vec<(String, &str)> = query
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), *v))
        .collect();
    params.sort();
    for (name, value) in params {
        resource.push('\n');
        resource.push_str(&name);
        resource.push(':');
        resource.push_str(value);
    }
    // Content-Length is empty when zero (API versions 2015-02-21 and later).
    let mut text = format!(
        "{verb}\n\n\n\n\n\n\n\n{}\n{}\n\n\n",
        header("if-match"),
        header("if-none-match")
    );
    for (name, value) in canonical_headers {
        text.push_str(&name);
        text.push(':');
        text.push_str(value);
        text.push('\n');
    }
    text.push_str(&resource);
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(text.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// Percent-encodes a blob path, keeping `/` and the unreserved characters.
fn encode_path(path: &str) -> String {
    encode(path, b"/")
}

fn encode_query(value: &str) -> String {
    encode(value, b"")
}

fn encode(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) || keep.contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// RFC 1123 in GMT, as `x-ms-date` wants it.
fn http_date(at: Timestamp) -> String {
    let time =
        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(at.as_millis()).unwrap_or_default();
    time.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn parse_http_date(text: &str) -> Option<Timestamp> {
    chrono::DateTime::parse_from_rfc2822(text.trim())
        .ok()
        .map(|t| Timestamp::from_millis(t.timestamp_millis()))
}

struct Listing {
    items: Vec<BlobItem>,
    next_marker: Option<String>,
}

/// A `<Blob>` element being read: name, ETag, last modified, metadata.
type PartialBlob = (String, String, Option<Timestamp>, BTreeMap<String, String>);

/// Reads a `List Blobs` answer: `<Blobs><Blob><Name/><Properties><Last-Modified/><Etag/>…
/// </Properties><Metadata><name>value</name>…</Metadata></Blob>…</Blobs><NextMarker/>`.
fn parse_listing(xml: &str) -> std::result::Result<Listing, String> {
    use xmlparser::{ElementEnd, Token, Tokenizer};
    let mut items = Vec::new();
    let mut next_marker = None;
    // The open elements, innermost last.
    let mut path: Vec<String> = Vec::new();
    let mut current: Option<PartialBlob> = None;
    for token in Tokenizer::from(xml.trim_start_matches('\u{feff}')) {
        match token.map_err(|e| e.to_string())? {
            Token::ElementStart { local, .. } => {
                let name = local.as_str().to_string();
                if name == "Blob" {
                    current = Some(Default::default());
                }
                path.push(name);
            }
            Token::ElementEnd { end, .. } => match end {
                ElementEnd::Open => {}
                ElementEnd::Empty | ElementEnd::Close(..) => {
                    let closed = path.pop();
                    if closed.as_deref() == Some("Blob")
                        && let Some((name, etag, last_modified, metadata)) = current.take()
                    {
                        let etag = if etag.starts_with('"') {
                            etag
                        } else {
                            format!("\"{etag}\"")
                        };
                        items.push(BlobItem {
                            name,
                            etag,
                            last_modified: last_modified.ok_or("a blob without Last-Modified")?,
                            metadata,
                        });
                    }
                }
            },
            Token::Text { text } | Token::Cdata { text, .. } => {
                let value = unescape(text.as_str());
                let depth = path.len();
                let parent = depth.checked_sub(2).map(|i| path[i].as_str());
                let element = path.last().map(String::as_str);
                match (&mut current, parent, element) {
                    (Some(blob), Some("Blob"), Some("Name")) => blob.0.push_str(&value),
                    (Some(blob), Some("Properties"), Some("Etag")) => blob.1.push_str(&value),
                    (Some(blob), Some("Properties"), Some("Last-Modified")) => {
                        blob.2 = parse_http_date(&value)
                    }
                    (Some(blob), Some("Metadata"), Some(name)) => {
                        blob.3
                            .entry(name.to_ascii_lowercase())
                            .or_default()
                            .push_str(&value);
                    }
                    (None, Some("EnumerationResults"), Some("NextMarker")) => {
                        next_marker = Some(value)
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Ok(Listing { items, next_marker })
}

fn unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_reads_names_etags_times_metadata_and_the_marker() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://127.0.0.1:1/devstoreaccount1" ContainerName="c"><Prefix>ns/hub/$default/ownership/</Prefix><Blobs><Blob><Name>ns/hub/$default/ownership/0</Name><Properties><Creation-Time>Mon, 30 Nov 2026 12:00:00 GMT</Creation-Time><Last-Modified>Mon, 30 Nov 2026 12:00:01 GMT</Last-Modified><Etag>0x8DB1</Etag><Content-Length>0</Content-Length></Properties><Metadata><ownerid>a&amp;b</ownerid></Metadata></Blob><Blob><Name>ns/hub/$default/ownership/1</Name><Properties><Last-Modified>Mon, 30 Nov 2026 12:00:02 GMT</Last-Modified><Etag>"0x8DB2"</Etag></Properties><Metadata><OwnerId></OwnerId></Metadata></Blob></Blobs><NextMarker>m2</NextMarker></EnumerationResults>"#;
        let page = parse_listing(xml).unwrap();
        assert_eq!(page.next_marker.as_deref(), Some("m2"));
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.items[0].name, "ns/hub/$default/ownership/0");
        assert_eq!(page.items[0].etag, "\"0x8DB1\"");
        assert_eq!(page.items[0].metadata["ownerid"], "a&b");
        assert_eq!(
            page.items[0].last_modified,
            parse_http_date("Mon, 30 Nov 2026 12:00:01 GMT").unwrap()
        );
        assert_eq!(page.items[1].etag, "\"0x8DB2\"");
        assert_eq!(page.items[1].metadata.get("ownerid"), None);
    }

    #[test]
    fn shared_key_signs_the_documented_string() {
        // The string to sign for a GET of a container listing on a path-style endpoint, signed
        // with a known key: recomputed here by hand, so a change in canonicalization shows.
        let key = BASE64.decode("a2V5").unwrap();
        let headers = vec![
            ("x-ms-version".to_string(), API_VERSION.to_string()),
            (
                "x-ms-date".to_string(),
                "Mon, 30 Nov 2026 12:00:00 GMT".to_string(),
            ),
        ];
        let signature = shared_key_signature(
            "acct",
            &key,
            "GET",
            "http://127.0.0.1:10000/acct",
            "/c",
            &[("restype", "container"), ("comp", "list")],
            &headers,
        );
        let text = format!(
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Mon, 30 Nov 2026 12:00:00 GMT\nx-ms-version:{API_VERSION}\n/acct/acct/c\ncomp:list\nrestype:container"
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(text.as_bytes());
        assert_eq!(signature, BASE64.encode(mac.finalize().into_bytes()));
    }

    #[test]
    fn paths_keep_slashes_and_encode_the_rest() {
        assert_eq!(
            encode_path("ns/hub/$default/ownership/0"),
            "ns/hub/%24default/ownership/0"
        );
        assert_eq!(encode_query("a b/c"), "a%20b%2Fc");
    }
}
