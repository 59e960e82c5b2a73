//! Pulsar's REST admin API (`/admin/v2`): creating, deleting, listing and describing topics,
//! creating subscriptions at a position or time, and the broker's message size limit.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tributary::{Error, Result, Url};

use crate::config::{PulsarConfig, TopicName};
use crate::consumer::handover::{Acknowledged, find_subscription};
use crate::error::{BACKEND, timed_out};

/// A client of one cluster's admin API.
#[derive(Clone)]
pub(crate) struct Admin {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    timeout: Duration,
}

/// One ledger of a partition, from its internal statistics.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Ledger {
    pub ledger_id: u64,
    #[serde(default)]
    pub entries: u64,
}

/// The parts of `internalStats` the backend reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InternalStats {
    #[serde(default)]
    pub ledgers: Vec<Ledger>,
    /// Entries of the open ledger (the last of `ledgers`, which counts 0 until it closes).
    #[serde(default)]
    pub current_ledger_entries: u64,
}

impl InternalStats {
    /// The oldest ledger that holds entries.
    pub(crate) fn first_ledger_with_entries(&self) -> Option<u64> {
        let last = self.ledgers.len().checked_sub(1)?;
        self.ledgers.iter().enumerate().find_map(|(i, ledger)| {
            let entries = if i == last && ledger.entries == 0 {
                self.current_ledger_entries
            } else {
                ledger.entries
            };
            (entries > 0).then_some(ledger.ledger_id)
        })
    }
}

/// A subscription's backlog on a topic (summed over partitions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionBacklog {
    /// Messages not yet acknowledged (entries: a batched message counts once).
    pub backlog: u64,
    /// The subscription type the broker reports (`Failover`, `Shared`, …).
    pub kind: Option<String>,
    /// Consumers connected now.
    pub consumers: usize,
}

impl Admin {
    pub(crate) fn new(config: &PulsarConfig) -> Result<Admin> {
        let base = Url::parse(&config.admin_url)
            .map_err(|e| Error::config(format!("option `admin`: `{}`: {e}", config.admin_url)))?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.operation_timeout);
        if let Some(path) = &config.tls_trust_certs {
            let pem = std::fs::read(path).map_err(|e| {
                Error::config(format!(
                    "option `tls_trust_certs`: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::config(format!(
                    "option `tls_trust_certs`: {} holds no PEM certificates: {e}",
                    path.display()
                ))
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if config.tls_allow_insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        if !config.tls_hostname_verification {
            builder = builder.danger_accept_invalid_hostnames(true);
        }
        let http = builder
            .build()
            .map_err(|e| Error::config(format!("cannot create the admin API client: {e}")))?;
        Ok(Admin {
            http,
            base,
            token: config.token.clone(),
            timeout: config.operation_timeout,
        })
    }

    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("http URLs have paths");
            path.pop_if_empty().extend(["admin", "v2"]).extend(segments);
        }
        url
    }

    /// Sends a request; 2xx gives the body, anything else an error naming what was done.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
        what: &str,
    ) -> Result<(StatusCode, Value)> {
        let mut request = self.http.request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| self.transport(e, what))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.transport(e, what))?;
        if status.is_success() {
            let value = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            return Ok((status, value));
        }
        let reason = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| text.chars().take(200).collect());
        let message = format!("{what}: the admin API answered {status}: {reason}");
        let error = match status {
            StatusCode::NOT_FOUND => Error::not_found(message),
            StatusCode::CONFLICT => Error::already_exists(message),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::unauthorized(message),
            StatusCode::BAD_REQUEST | StatusCode::PRECONDITION_FAILED => Error::config(message),
            s if s.is_server_error() => Error::unavailable(message).with_retryable(true),
            _ => Error::other(message),
        };
        Err(error)
    }

    fn transport(&self, error: reqwest::Error, what: &str) -> Error {
        if error.is_timeout() {
            return timed_out(what, self.timeout, "operation_timeout");
        }
        Error::unavailable(format!(
            "{what}: the admin API at {} (option `admin`) cannot be reached: {error}",
            self.base
        ))
        .with_retryable(true)
    }

    fn topic_segments<'a>(topic: &'a TopicName, rest: &[&'a str]) -> Vec<&'a str> {
        Self::local_segments(topic, &topic.local, rest)
    }

    /// The path of one topic or partition of `topic`'s namespace by its local name.
    fn local_segments<'a>(topic: &'a TopicName, local: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
        let mut segments = vec![
            "persistent",
            topic.tenant.as_str(),
            topic.namespace.as_str(),
            local,
        ];
        segments.extend_from_slice(rest);
        segments
    }

    /// Partitions of a topic: `Some(0)` non-partitioned, `Some(n)` partitioned, `None` missing.
    pub(crate) async fn partitions(&self, topic: &TopicName) -> Result<Option<u32>> {
        let what = format!("look up `{}`", topic.full());
        let url = self.endpoint(&Self::topic_segments(topic, &["partitions"]));
        let (_, body) = self.call(Method::GET, url, None, &what).await?;
        let partitions = body.get("partitions").and_then(Value::as_u64).unwrap_or(0);
        if partitions > 0 {
            return Ok(Some(partitions as u32));
        }
        let url = self.endpoint(&Self::topic_segments(topic, &["stats"]));
        match self.call(Method::GET, url, None, &what).await {
            Ok(_) => Ok(Some(0)),
            Err(e) if e.kind() == tributary::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn create(&self, topic: &TopicName, partitions: u32) -> Result<()> {
        let what = format!("create `{}`", topic.full());
        let result = if partitions > 1 {
            let url = self.endpoint(&Self::topic_segments(topic, &["partitions"]));
            self.call(Method::PUT, url, Some(Value::from(partitions)), &what)
                .await
        } else {
            let url = self.endpoint(&Self::topic_segments(topic, &[]));
            self.call(Method::PUT, url, None, &what).await
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == tributary::ErrorKind::AlreadyExists => Err(
                Error::already_exists(format!("Pulsar topic `{}` already exists", topic.full())),
            ),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn delete(&self, topic: &TopicName) -> Result<()> {
        let what = format!("delete `{}`", topic.full());
        let partitions = self.partitions(topic).await?.ok_or_else(|| {
            Error::not_found(format!("Pulsar topic `{}` does not exist", topic.full()))
        })?;
        let rest: &[&str] = if partitions > 0 { &["partitions"] } else { &[] };
        let mut url = self.endpoint(&Self::topic_segments(topic, rest));
        url.query_pairs_mut().append_pair("force", "true");
        self.call(Method::DELETE, url, None, &what).await.map(drop)
    }

    /// Topics of a namespace, partitioned ones once (not per partition), system topics left out.
    pub(crate) async fn list(&self, tenant: &str, namespace: &str) -> Result<Vec<String>> {
        let what = format!("list the topics of `{tenant}/{namespace}`");
        let prefix = format!("persistent://{tenant}/{namespace}/");
        let names = |body: Value| -> Vec<String> {
            body.as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter_map(|n| n.strip_prefix(&prefix).map(str::to_owned))
                .collect()
        };
        let url = self.endpoint(&["persistent", tenant, namespace, "partitioned"]);
        let partitioned = names(self.call(Method::GET, url, None, &what).await?.1);
        let url = self.endpoint(&["persistent", tenant, namespace]);
        let plain = names(self.call(Method::GET, url, None, &what).await?.1);
        let mut all: Vec<String> = plain
            .into_iter()
            .filter(|n| !n.contains("-partition-"))
            .chain(partitioned)
            .filter(|n| !n.starts_with("__"))
            .collect();
        all.sort();
        all.dedup();
        Ok(all)
    }

    /// Internal statistics of one non-partitioned topic or partition (full name).
    pub(crate) async fn internal_stats(
        &self,
        topic: &TopicName,
        partition: Option<u32>,
    ) -> Result<InternalStats> {
        let local = match partition {
            Some(i) => format!("{}-partition-{i}", topic.local),
            None => topic.local.clone(),
        };
        let url = self.endpoint(&Self::local_segments(topic, &local, &["internalStats"]));
        let what = format!("describe `{}`", topic.full());
        let (_, body) = self.call(Method::GET, url, None, &what).await?;
        serde_json::from_value(body)
            .map_err(|e| Error::other(format!("{what}: unexpected internal statistics: {e}")))
    }

    /// Backlog per subscription, summed over partitions.
    pub(crate) async fn backlogs(
        &self,
        topic: &TopicName,
        partitioned: bool,
    ) -> Result<BTreeMap<String, SubscriptionBacklog>> {
        let what = format!("read the statistics of `{}`", topic.full());
        let last = if partitioned {
            "partitioned-stats"
        } else {
            "stats"
        };
        let url = self.endpoint(&Self::topic_segments(topic, &[last]));
        let (_, body) = self.call(Method::GET, url, None, &what).await?;
        let mut out = BTreeMap::new();
        if let Some(subscriptions) = body.get("subscriptions").and_then(Value::as_object) {
            for (name, stats) in subscriptions {
                out.insert(
                    name.clone(),
                    SubscriptionBacklog {
                        backlog: stats.get("msgBacklog").and_then(Value::as_u64).unwrap_or(0),
                        kind: stats.get("type").and_then(Value::as_str).map(str::to_owned),
                        consumers: stats
                            .get("consumers")
                            .and_then(Value::as_array)
                            .map_or(0, Vec::len),
                    },
                );
            }
        }
        Ok(out)
    }

    /// Creates `subscription` on one topic or partition (`local` is its local name) at a
    /// message id (`(-1, -1)` earliest); `false` when it existed already (then it is left
    /// as it is: a group's position wins over a start position).
    pub(crate) async fn create_subscription(
        &self,
        topic: &TopicName,
        local: &str,
        subscription: &str,
        ledger: i64,
        entry: i64,
    ) -> Result<bool> {
        let url = self.endpoint(&Self::local_segments(
            topic,
            local,
            &["subscription", subscription],
        ));
        let what = format!("create subscription `{subscription}` on `{local}`");
        let body = serde_json::json!({ "ledgerId": ledger, "entryId": entry });
        match self.call(Method::PUT, url, Some(body), &what).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == tributary::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Moves a subscription on one topic or partition (`local`) to the first message
    /// published at or after `millis`.
    pub(crate) async fn reset_cursor(
        &self,
        topic: &TopicName,
        local: &str,
        subscription: &str,
        millis: i64,
    ) -> Result<()> {
        let stamp = millis.max(0).to_string();
        let url = self.endpoint(&Self::local_segments(
            topic,
            local,
            &["subscription", subscription, "resetcursor", &stamp],
        ));
        let what = format!("move subscription `{subscription}` of `{local}` to {millis} ms");
        self.call(Method::POST, url, None, &what).await.map(drop)
    }

    /// The URL of one topic or partition given by its full name, `persistent://t/n/local`.
    fn full_topic_endpoint(&self, full: &str, last: &str) -> Result<Url> {
        let segments: Vec<&str> = full
            .strip_prefix("persistent://")
            .map(|rest| rest.split('/').collect())
            .unwrap_or_default();
        match segments.as_slice() {
            [tenant, namespace, local] => {
                Ok(self.endpoint(&["persistent", tenant, namespace, local, last]))
            }
            _ => Err(Error::other(format!(
                "`{full}` is not a full persistent topic name"
            ))),
        }
    }

    /// Names of the consumers connected to `subscription` on one topic or partition (full
    /// name).
    pub(crate) async fn subscription_consumers(
        &self,
        full: &str,
        subscription: &str,
    ) -> Result<Vec<String>> {
        let url = self.full_topic_endpoint(full, "stats")?;
        let what = format!("read the consumers of `{subscription}` on `{full}`");
        let (_, body) = self.call(Method::GET, url, None, &what).await?;
        let consumers = body
            .get("subscriptions")
            .and_then(|subs| find_subscription(subs, subscription))
            .and_then(|sub| sub.get("consumers"))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|c| c.get("consumerName").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(consumers)
    }

    /// How many messages `subscription` has not acknowledged on one topic or partition (full
    /// name), as the broker counts them now.
    pub(crate) async fn subscription_backlog(&self, full: &str, subscription: &str) -> Result<u64> {
        let url = self.full_topic_endpoint(full, "stats")?;
        let what = format!("read the backlog of `{subscription}` on `{full}`");
        let (_, body) = self.call(Method::GET, url, None, &what).await?;
        body.get("subscriptions")
            .and_then(|subs| find_subscription(subs, subscription))
            .and_then(|sub| sub.get("msgBacklog"))
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                Error::other(format!("{what}: the statistics show no backlog for it"))
                    .with_backend(BACKEND)
            })
    }

    /// What `subscription` has acknowledged on one topic or partition (full name), as the
    /// broker holds it now (acks update the cursor in memory as they arrive).
    pub(crate) async fn acknowledged(
        &self,
        full: &str,
        subscription: &str,
    ) -> Result<Acknowledged> {
        let url = self.full_topic_endpoint(full, "internalStats")?;
        let what = format!("read the cursor of `{subscription}` on `{full}`");
        let (_, body) = self.call(Method::GET, url, None, &what).await?;
        let cursor = body
            .get("cursors")
            .and_then(|cursors| find_subscription(cursors, subscription))
            .ok_or_else(|| {
                Error::not_found(format!("{what}: the topic has no such subscription"))
            })?;
        Acknowledged::from_cursor(cursor)
    }

    /// The broker's `maxMessageSize`, if the admin API tells (it needs the superuser role).
    pub(crate) async fn max_message_size(&self) -> Result<Option<usize>> {
        let url = self.endpoint(&["brokers", "configuration", "runtime"]);
        let (_, body) = self
            .call(Method::GET, url, None, "read the broker's configuration")
            .await?;
        Ok(body
            .get("maxMessageSize")
            .and_then(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .or_else(|| v.as_u64().map(|n| n.to_string()))
            })
            .and_then(|v| v.parse().ok()))
    }
}
