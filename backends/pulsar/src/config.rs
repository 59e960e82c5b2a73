//! [`PulsarConfig`]: everything the backend needs, from a `pulsar://` URL or built in code.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tributary::{Error, Result, Url, UrlOptions, redact};

/// Options a `pulsar://` URL may carry (anything else is refused by name).
pub(crate) const KNOWN_OPTIONS: &[&str] = &[
    "admin",
    "token",
    "tls_trust_certs",
    "tls_allow_insecure",
    "tls_hostname_verification",
    "connect_timeout",
    "operation_timeout",
    "auto_create",
    "subscription",
    "batch_size",
    "batch_delay",
    "batch_bytes",
    "receiver_queue",
    "nack_delay",
    "nack_max_delay",
    "handover_grace",
    "max_event_bytes",
    "hosts",
];

/// How the members of a group (a Pulsar subscription) share a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SubscriptionType {
    /// One active member per partition, the others on standby (Kafka-like): per-key order
    /// holds while members join and leave. The default; see the crate documentation.
    #[default]
    Failover,
    /// Every member gets any event: more parallelism on few partitions, no order promise.
    Shared,
}

impl std::str::FromStr for SubscriptionType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "failover" => Ok(SubscriptionType::Failover),
            "shared" => Ok(SubscriptionType::Shared),
            "key_shared" | "exclusive" => Err(Error::config(format!(
                "option `subscription`: `{s}` is not offered (failover keeps per-key order across members; shared gives up order for parallelism)"
            ))),
            _ => Err(Error::config(format!(
                "option `subscription`: `{s}` is not a subscription type (failover or shared)"
            ))),
        }
    }
}

/// The configuration of a [`crate::PulsarBackend`].
///
/// Build it from a URL with [`PulsarConfig::from_url`] (what `tributary::connect` does) or
/// with [`PulsarConfig::new`] and by setting fields; every field has the URL option of the same
/// name (see the crate documentation for defaults and meaning).
///
/// ```
/// use std::time::Duration;
/// let mut config = tributary_pulsar::PulsarConfig::new("pulsar://broker:6650").unwrap();
/// config.namespace = "orders".into();
/// config.token = Some(std::env::var("PULSAR_TOKEN").unwrap_or_default());
/// config.operation_timeout = Duration::from_secs(10);
/// assert_eq!(config.admin_url, "http://broker:8080");
/// assert!(!format!("{config:?}").contains("PULSAR"), "the token never shows");
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct PulsarConfig {
    /// Binary-protocol endpoints, `pulsar://host:port` or `pulsar+ssl://host:port`, tried in
    /// order when connecting.
    pub service_urls: Vec<String>,
    /// Tenant of the streams (default `public`).
    pub tenant: String,
    /// Namespace of the streams (default `default`).
    pub namespace: String,
    /// The REST admin API, `http(s)://host:port` (default: the first host, port 8080, or
    /// `https` and 8443 for `pulsar+ssl`).
    pub admin_url: String,
    /// JWT for token authentication, on both the binary protocol and the admin API.
    pub token: Option<String>,
    /// PEM file of the certificates to trust for TLS (default: the public web roots).
    pub tls_trust_certs: Option<PathBuf>,
    /// Accept any server certificate (tests only).
    pub tls_allow_insecure: bool,
    /// Check that the server certificate names the host.
    pub tls_hostname_verification: bool,
    /// Connecting and reconnecting to a broker.
    pub connect_timeout: Duration,
    /// Every other wait: a send's receipt, a subscription, a lookup, an admin call.
    pub operation_timeout: Duration,
    /// Create missing streams (by the broker's auto-creation) instead of answering "not found".
    pub auto_create: bool,
    /// How the members of a group share a stream.
    pub subscription: SubscriptionType,
    /// Events per producer batch; 0 or 1 sends each event as its own message.
    pub batch_size: u32,
    /// How long a batch waits for more events after its first.
    pub batch_delay: Duration,
    /// Payload bytes that close a batch.
    pub batch_bytes: usize,
    /// Messages each partition's consumer prefetches.
    pub receiver_queue: u32,
    /// How long a nacked event waits before it is delivered again (doubled per attempt).
    pub nack_delay: Duration,
    /// The longest a nacked event waits.
    pub nack_max_delay: Duration,
    /// How long a member that takes a partition over from another, still connected, member
    /// holds the partition's events, so that member's last acks land first (0: not at all).
    pub handover_grace: Duration,
    /// Largest event accepted; default and ceiling: the broker's `maxMessageSize`.
    pub max_event_bytes: Option<usize>,
}

impl fmt::Debug for PulsarConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PulsarConfig")
            .field("service_urls", &self.service_urls)
            .field("tenant", &self.tenant)
            .field("namespace", &self.namespace)
            .field("admin_url", &self.admin_url)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("tls_trust_certs", &self.tls_trust_certs)
            .field("tls_allow_insecure", &self.tls_allow_insecure)
            .field("tls_hostname_verification", &self.tls_hostname_verification)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("auto_create", &self.auto_create)
            .field("subscription", &self.subscription)
            .field("batch_size", &self.batch_size)
            .field("batch_delay", &self.batch_delay)
            .field("batch_bytes", &self.batch_bytes)
            .field("receiver_queue", &self.receiver_queue)
            .field("nack_delay", &self.nack_delay)
            .field("nack_max_delay", &self.nack_max_delay)
            .field("handover_grace", &self.handover_grace)
            .field("max_event_bytes", &self.max_event_bytes)
            .finish()
    }
}

impl PulsarConfig {
    /// Defaults for one broker address (`pulsar://host:port` or `pulsar+ssl://host:port`).
    pub fn new(service_url: &str) -> Result<PulsarConfig> {
        Self::from_url(&tributary::parse_url(service_url)?)
    }

    /// Reads a `pulsar://host:port[,host:port…][/tenant/namespace][?option=value&…]` URL;
    /// an unknown option or a bad value is an error that names it.
    pub fn from_url(url: &Url) -> Result<PulsarConfig> {
        let shown = redact(url);
        let tls = match url.scheme() {
            "pulsar" => false,
            "pulsar+ssl" => true,
            other => {
                return Err(Error::config(format!(
                    "`{other}://` is not a Pulsar URL: expected pulsar://host:6650 or pulsar+ssl://host:6651"
                )));
            }
        };
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| {
            Error::config(format!(
                "`{shown}` names no broker: expected pulsar://host:6650"
            ))
        })?;
        let default_port = if tls { 6651 } else { 6650 };
        let (tenant, namespace) = tenant_and_namespace(url, &shown)?;
        let mut options = UrlOptions::new(url)?;
        let scheme = url.scheme();
        let first = format!("{host}:{}", url.port().unwrap_or(default_port));
        let service_urls = match options.take_str("hosts") {
            Some(list) => list
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| {
                    if h.contains(':') {
                        format!("{scheme}://{h}")
                    } else {
                        format!("{scheme}://{h}:{default_port}")
                    }
                })
                .collect(),
            None => vec![format!("{scheme}://{first}")],
        };
        let admin_url = match options.take_str("admin") {
            Some(admin) => {
                let parsed = Url::parse(&admin).map_err(|e| {
                    Error::config(format!("option `admin`: `{admin}` is not a URL: {e}"))
                })?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                    return Err(Error::config(format!(
                        "option `admin`: `{admin}` must be http://host:port or https://host:port"
                    )));
                }
                admin.trim_end_matches('/').to_owned()
            }
            None if tls => format!("https://{host}:8443"),
            None => format!("http://{host}:8080"),
        };
        let config = PulsarConfig {
            service_urls,
            tenant,
            namespace,
            admin_url,
            token: options.take_str("token").filter(|t| !t.is_empty()),
            tls_trust_certs: options.take_str("tls_trust_certs").map(PathBuf::from),
            tls_allow_insecure: options.take_bool("tls_allow_insecure")?.unwrap_or(false),
            tls_hostname_verification: options
                .take_bool("tls_hostname_verification")?
                .unwrap_or(true),
            connect_timeout: options
                .take_duration("connect_timeout")?
                .unwrap_or(Duration::from_secs(10)),
            operation_timeout: options
                .take_duration("operation_timeout")?
                .unwrap_or(Duration::from_secs(30)),
            auto_create: options.take_bool("auto_create")?.unwrap_or(false),
            subscription: options
                .take_str("subscription")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or_default(),
            batch_size: options.take::<u32>("batch_size")?.unwrap_or(0),
            batch_delay: options
                .take_duration("batch_delay")?
                .unwrap_or(Duration::from_millis(5)),
            batch_bytes: options
                .take_size("batch_bytes")?
                .map(|n| n as usize)
                .unwrap_or(128 * 1024),
            receiver_queue: options.take::<u32>("receiver_queue")?.unwrap_or(1000),
            nack_delay: options
                .take_duration("nack_delay")?
                .unwrap_or(Duration::from_millis(100)),
            nack_max_delay: options
                .take_duration("nack_max_delay")?
                .unwrap_or(Duration::from_secs(10)),
            handover_grace: options
                .take_duration("handover_grace")?
                .unwrap_or(Duration::from_secs(1)),
            max_event_bytes: options.take_size("max_event_bytes")?.map(|n| n as usize),
        };
        options.finish(KNOWN_OPTIONS)?;
        config.check()?;
        Ok(config)
    }

    /// Refuses values that cannot work, naming the option.
    pub(crate) fn check(&self) -> Result<()> {
        let positive = [
            ("connect_timeout", self.connect_timeout),
            ("operation_timeout", self.operation_timeout),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(Error::config(format!(
                    "option `{name}` must be more than 0"
                )));
            }
        }
        if self.receiver_queue == 0 {
            return Err(Error::config("option `receiver_queue` must be at least 1"));
        }
        if self.nack_max_delay < self.nack_delay {
            return Err(Error::config(format!(
                "option `nack_max_delay` ({:?}) is below `nack_delay` ({:?})",
                self.nack_max_delay, self.nack_delay
            )));
        }
        if self.service_urls.is_empty() {
            return Err(Error::config(
                "no broker address: expected pulsar://host:6650",
            ));
        }
        for name in [&self.tenant, &self.namespace] {
            check_segment("namespace path", name)?;
        }
        Ok(())
    }

    /// Whether producers batch events into one message.
    pub(crate) fn batching(&self) -> bool {
        self.batch_size > 1
    }

    /// `persistent://tenant/namespace/stream`, or the stream itself when it is a full name.
    pub(crate) fn topic(&self, stream: &str) -> Result<TopicName> {
        TopicName::parse(stream, &self.tenant, &self.namespace)
    }
}

fn tenant_and_namespace(url: &Url, shown: &str) -> Result<(String, String)> {
    let segments: Vec<&str> = url.path().split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [] => Ok(("public".into(), "default".into())),
        [tenant, namespace] => Ok((tenant.to_string(), namespace.to_string())),
        _ => Err(Error::config(format!(
            "`{shown}`: the path must be /tenant/namespace (or nothing, for public/default)"
        ))),
    }
}

/// Pulsar's rule for tenant, namespace and topic names: letters, digits and `-_=:.`.
fn check_segment(what: &str, name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=' | ':' | '.'));
    if valid {
        Ok(())
    } else {
        Err(Error::config(format!(
            "`{name}` is not a valid Pulsar {what}: 1 to 255 letters, digits and - _ = : ."
        )))
    }
}

/// A persistent topic's full name, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicName {
    pub tenant: String,
    pub namespace: String,
    pub local: String,
}

impl TopicName {
    /// A stream name is a topic in the URL's namespace, or a full `persistent://t/n/topic`.
    pub(crate) fn parse(stream: &str, tenant: &str, namespace: &str) -> Result<TopicName> {
        let (tenant, namespace, local) = match stream.split_once("://") {
            None => (tenant.to_owned(), namespace.to_owned(), stream.to_owned()),
            Some(("persistent", rest)) => {
                let parts: Vec<&str> = rest.split('/').collect();
                match parts.as_slice() {
                    [t, n, local] => (t.to_string(), n.to_string(), local.to_string()),
                    _ => {
                        return Err(Error::config(format!(
                            "`{stream}` is not a topic name: expected persistent://tenant/namespace/topic"
                        )));
                    }
                }
            }
            Some((domain, _)) => {
                return Err(Error::config(format!(
                    "`{stream}`: only persistent topics are streams (`{domain}://` topics keep nothing)"
                )));
            }
        };
        check_segment("tenant", &tenant)?;
        check_segment("namespace", &namespace)?;
        check_segment("topic name", &local)?;
        if local.contains("-partition-") {
            return Err(Error::config(format!(
                "`{local}`: `-partition-` is reserved for the partitions of a partitioned topic"
            )));
        }
        Ok(TopicName {
            tenant,
            namespace,
            local,
        })
    }

    /// `persistent://tenant/namespace/topic`.
    pub(crate) fn full(&self) -> String {
        format!(
            "persistent://{}/{}/{}",
            self.tenant, self.namespace, self.local
        )
    }

    /// The full name of partition `index` of a partitioned topic.
    pub(crate) fn partition(&self, index: u32) -> String {
        format!("{}-partition-{index}", self.full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> Result<PulsarConfig> {
        PulsarConfig::from_url(&tributary::parse_url(url)?)
    }

    #[test]
    fn defaults_and_paths() {
        let c = config("pulsar://b:6650").unwrap();
        assert_eq!(c.service_urls, ["pulsar://b:6650"]);
        assert_eq!(
            (c.tenant.as_str(), c.namespace.as_str()),
            ("public", "default")
        );
        assert_eq!(c.admin_url, "http://b:8080");
        assert_eq!(c.subscription, SubscriptionType::Failover);
        assert!(!c.batching());
        let c = config("pulsar+ssl://b/acme/orders?admin=https://admin:443/").unwrap();
        assert_eq!(c.service_urls, ["pulsar+ssl://b:6651"]);
        assert_eq!(
            (c.tenant.as_str(), c.namespace.as_str()),
            ("acme", "orders")
        );
        assert_eq!(c.admin_url, "https://admin:443");
        let c = config("pulsar://a:1,b:2,c").unwrap();
        assert_eq!(
            c.service_urls,
            ["pulsar://a:1", "pulsar://b:2", "pulsar://c:6650"]
        );
        assert_eq!(
            config("pulsar+ssl://b").unwrap().admin_url,
            "https://b:8443"
        );
    }

    #[test]
    fn topic_names() {
        let c = config("pulsar://b").unwrap();
        assert_eq!(
            c.topic("orders").unwrap().full(),
            "persistent://public/default/orders"
        );
        assert_eq!(
            c.topic("persistent://t/n/x").unwrap().partition(3),
            "persistent://t/n/x-partition-3"
        );
        for bad in [
            "",
            "a/b",
            "non-persistent://t/n/x",
            "x-partition-1",
            "persistent://t/x",
            "sp ace",
        ] {
            let e = c.topic(bad).unwrap_err();
            assert_eq!(e.kind(), tributary::ErrorKind::Config, "{bad}: {e}");
        }
    }

    #[test]
    fn bad_options_are_named_and_secrets_hidden() {
        for (url, needle) in [
            ("pulsar://b?subscription=exclusive", "subscription"),
            ("pulsar://b?subscription=x", "subscription"),
            ("pulsar://b?connect_timeout=0", "connect_timeout"),
            ("pulsar://b?receiver_queue=0", "receiver_queue"),
            (
                "pulsar://b?nack_delay=5s&nack_max_delay=1s",
                "nack_max_delay",
            ),
            ("pulsar://b?admin=ftp://x", "admin"),
            ("pulsar://b?batch_size=many", "batch_size"),
            ("pulsar://b/a/b/c", "tenant/namespace"),
            ("pulsar://b?tokn=x", "tokn"),
            ("kafka://b", "not a Pulsar URL"),
        ] {
            let e = config(url).unwrap_err();
            assert_eq!(e.kind(), tributary::ErrorKind::Config, "{url}");
            assert!(e.to_string().contains(needle), "{url}: {e}");
        }
        let c = config("pulsar://b?token=s3cret").unwrap();
        assert_eq!(c.token.as_deref(), Some("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
