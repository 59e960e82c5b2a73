//! [`PubSubConfig`]: everything the backend needs, from a `pubsub://PROJECT?…` URL or built in
//! code.

use std::fmt;
use std::time::Duration;

use tributary::{Error, Result, Url, UrlOptions, redact};

/// Options a `pubsub://` URL may carry (anything else is refused by name).
pub(crate) const KNOWN_OPTIONS: &[&str] = &[
    "endpoint",
    "timeout",
    "auto_create",
    "create_subscriptions",
    "ordering",
    "ack_deadline",
    "batch_count",
    "batch_bytes",
    "batch_delay",
    "max_event_bytes",
];

/// The service's limit on one message (data, attributes and ordering key).
pub const SERVICE_MAX_MESSAGE_BYTES: usize = 10_000_000;

/// The environment variable Google's clients read for an emulator's `host:port`.
pub const EMULATOR_HOST_VAR: &str = "PUBSUB_EMULATOR_HOST";

/// The configuration of a [`crate::PubSubBackend`].
///
/// Build it from a URL with [`PubSubConfig::from_url`] (what `tributary::connect` does) or
/// with [`PubSubConfig::new`] and by setting fields; every field has the URL option of the
/// same name (see the crate documentation for defaults and meaning).
///
/// ```no_run
/// # #[tokio::main] async fn main() -> tributary::Result<()> {
/// use std::time::Duration;
/// use tributary_pubsub::{PubSubBackend, PubSubConfig};
///
/// let mut config = PubSubConfig::new("my-project");
/// config.endpoint = Some("http://127.0.0.1:8085".into()); // an emulator
/// config.ordering = true;
/// config.ack_deadline = Duration::from_secs(60);
/// // Stamped, every error names the backend, the operation and the stream, as through
/// // `tributary::connect("pubsub://my-project?endpoint=…&ordering=true&ack_deadline=60s")`.
/// let backend = tributary::backend::stamped(PubSubBackend::connect(config).await?);
/// let producer = backend.producer("orders").await?;
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PubSubConfig {
    /// The Google Cloud project holding the topics and subscriptions.
    pub project: String,
    /// `http://host:port` of an emulator (plaintext, anonymous credentials); `None` for Google
    /// Cloud with Application Default Credentials.
    pub endpoint: Option<String>,
    /// Admin calls and the connection check.
    pub timeout: Duration,
    /// Create missing topics instead of answering "not found".
    pub auto_create: bool,
    /// Create a group's subscription on first use.
    pub create_subscriptions: bool,
    /// Create subscriptions with message ordering: per-key order, and the next event of a
    /// key waits for the previous one's ack.
    pub ordering: bool,
    /// Ack deadline of the subscriptions this backend creates and of its consumers' streaming
    /// pulls (10 s to 600 s); leases are extended while a delivery is held, and what a consumer
    /// that ends without nacking held comes back after it.
    pub ack_deadline: Duration,
    /// Messages that close a publisher batch.
    pub batch_count: u32,
    /// Bytes that close a publisher batch.
    pub batch_bytes: u32,
    /// How long a publisher batch waits for more messages after its first.
    pub batch_delay: Duration,
    /// Largest message accepted (data, attributes and ordering key), at most
    /// [`SERVICE_MAX_MESSAGE_BYTES`].
    pub max_event_bytes: usize,
}

impl fmt::Debug for PubSubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An endpoint could carry credentials in its user part; they never show.
        let endpoint = self
            .endpoint
            .as_deref()
            .map(|e| Url::parse(e).map_or_else(|_| "(not a URL)".to_owned(), |u| redact(&u)));
        f.debug_struct("PubSubConfig")
            .field("project", &self.project)
            .field("endpoint", &endpoint)
            .field("timeout", &self.timeout)
            .field("auto_create", &self.auto_create)
            .field("create_subscriptions", &self.create_subscriptions)
            .field("ordering", &self.ordering)
            .field("ack_deadline", &self.ack_deadline)
            .field("batch_count", &self.batch_count)
            .field("batch_bytes", &self.batch_bytes)
            .field("batch_delay", &self.batch_delay)
            .field("max_event_bytes", &self.max_event_bytes)
            .finish()
    }
}

impl PubSubConfig {
    /// Defaults for `project` on Google Cloud (Application Default Credentials); set
    /// [`endpoint`](PubSubConfig::endpoint) for an emulator.
    pub fn new(project: impl Into<String>) -> PubSubConfig {
        PubSubConfig {
            project: project.into(),
            endpoint: None,
            timeout: Duration::from_secs(30),
            auto_create: false,
            create_subscriptions: true,
            ordering: false,
            ack_deadline: Duration::from_secs(30),
            batch_count: 100,
            batch_bytes: 1_000_000,
            batch_delay: Duration::from_millis(10),
            max_event_bytes: SERVICE_MAX_MESSAGE_BYTES,
        }
    }

    /// Reads a `pubsub://PROJECT[?option=value&…]` URL; an unknown option or a bad value is an
    /// error that names it. Without an `endpoint` option, `$PUBSUB_EMULATOR_HOST` (if set)
    /// names an emulator, as for Google's own clients.
    pub fn from_url(url: &Url) -> Result<PubSubConfig> {
        Self::from_url_and_env(url, std::env::var(EMULATOR_HOST_VAR).ok())
    }

    pub(crate) fn from_url_and_env(
        url: &Url,
        emulator_host: Option<String>,
    ) -> Result<PubSubConfig> {
        let project = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| {
            Error::config(format!(
                "`{}` names no project: expected pubsub://PROJECT",
                redact(url)
            ))
        })?;
        let mut config = PubSubConfig::new(project);
        let mut options = UrlOptions::new(url)?;
        // An explicit option wins over the environment, which wins over Google Cloud.
        config.endpoint = options.take_str("endpoint").or_else(|| {
            emulator_host
                .filter(|h| !h.is_empty())
                .map(|h| format!("http://{h}"))
        });
        if let Some(timeout) = options.take_duration("timeout")? {
            config.timeout = timeout;
        }
        if let Some(auto_create) = options.take_bool("auto_create")? {
            config.auto_create = auto_create;
        }
        if let Some(create) = options.take_bool("create_subscriptions")? {
            config.create_subscriptions = create;
        }
        if let Some(ordering) = options.take_bool("ordering")? {
            config.ordering = ordering;
        }
        if let Some(deadline) = options.take_duration("ack_deadline")? {
            config.ack_deadline = deadline;
        }
        if let Some(count) = options.take::<u32>("batch_count")? {
            config.batch_count = count;
        }
        if let Some(bytes) = options.take_size("batch_bytes")? {
            config.batch_bytes = bytes.min(u64::from(u32::MAX)) as u32;
        }
        if let Some(delay) = options.take_duration("batch_delay")? {
            config.batch_delay = delay;
        }
        if let Some(max) = options.take_size("max_event_bytes")? {
            config.max_event_bytes = usize::try_from(max).unwrap_or(usize::MAX);
        }
        options.finish(KNOWN_OPTIONS)?;
        config.check()?;
        Ok(config)
    }

    /// Refuses what the service would refuse later, naming the option; run by
    /// [`PubSubBackend::connect`](crate::PubSubBackend::connect) for configs built in code.
    pub(crate) fn check(&self) -> Result<()> {
        if self.project.is_empty() {
            return Err(Error::config(
                "no project: expected pubsub://PROJECT or PubSubConfig::new(\"PROJECT\")",
            ));
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(Error::config(format!(
                "option `endpoint`: `{endpoint}` must start with http:// (emulator) or https://"
            )));
        }
        let deadline = self.ack_deadline.as_secs();
        if !(10..=600).contains(&deadline) {
            return Err(Error::config(format!(
                "option `ack_deadline`: {deadline}s is outside Pub/Sub's 10s..600s"
            )));
        }
        if self.max_event_bytes > SERVICE_MAX_MESSAGE_BYTES {
            return Err(Error::config(format!(
                "option `max_event_bytes`: {} is above Pub/Sub's limit of {SERVICE_MAX_MESSAGE_BYTES} bytes",
                self.max_event_bytes
            )));
        }
        Ok(())
    }

    /// Checks a topic or subscription id against Pub/Sub's naming rules, so a bad name is a
    /// configuration error naming it rather than a transport error from the service.
    pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
        let valid_chars = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '%'));
        let starts_with_letter = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        if (3..=255).contains(&name.len())
            && valid_chars
            && starts_with_letter
            && !name.starts_with("goog")
        {
            return Ok(());
        }
        Err(Error::config(format!(
            "`{name}` is not a valid Pub/Sub {what} name: 3 to 255 characters, starting with a letter, of letters, digits and - _ . ~ + %, not starting with `goog`"
        )))
    }

    pub(crate) fn topic(&self, stream: &str) -> String {
        format!("projects/{}/topics/{stream}", self.project)
    }

    /// The subscription that plays the role of `group` on `stream`.
    pub(crate) fn subscription(&self, stream: &str, group: &str) -> String {
        format!("projects/{}/subscriptions/{stream}.{group}", self.project)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, env: Option<&str>) -> Result<PubSubConfig> {
        PubSubConfig::from_url_and_env(&tributary::parse_url(url)?, env.map(str::to_owned))
    }

    #[test]
    fn endpoint_from_option_then_environment() {
        assert_eq!(config("pubsub://p", None).unwrap().endpoint, None);
        assert_eq!(
            config("pubsub://p", Some("127.0.0.1:8085"))
                .unwrap()
                .endpoint
                .as_deref(),
            Some("http://127.0.0.1:8085")
        );
        let c = config("pubsub://p?endpoint=http://h:1", Some("127.0.0.1:8085")).unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://h:1"));
        assert_eq!(c.topic("t"), "projects/p/topics/t");
        assert_eq!(c.subscription("t", "g"), "projects/p/subscriptions/t.g");
    }

    #[test]
    fn bad_options_are_named() {
        for (url, needle) in [
            ("pubsub://p?ack_deadline=2s", "ack_deadline"),
            ("pubsub://p?endpoint=h:1", "endpoint"),
            ("pubsub://p?batch_count=x", "batch_count"),
            ("pubsub://p?max_event_bytes=20MiB", "max_event_bytes"),
            ("pubsub://p?orderng=true", "orderng"),
        ] {
            let e = config(url, None).unwrap_err();
            assert!(e.to_string().contains(needle), "{url}: {e}");
        }
        assert!(config("pubsub://", None).is_err());
    }

    #[test]
    fn the_url_and_the_code_build_the_same_config() {
        let mut built = PubSubConfig::new("p");
        built.endpoint = Some("http://h:1".into());
        built.ordering = true;
        built.ack_deadline = Duration::from_secs(60);
        built.batch_bytes = 2048;
        let parsed = config(
            "pubsub://p?endpoint=http://h:1&ordering=true&ack_deadline=60s&batch_bytes=2KiB",
            None,
        )
        .unwrap();
        assert_eq!(parsed, built);
        assert_eq!(config("pubsub://p", None).unwrap(), PubSubConfig::new("p"));
    }

    #[test]
    fn configs_from_code_are_checked_too() {
        let mut c = PubSubConfig::new("p");
        c.ack_deadline = Duration::from_secs(5);
        assert!(c.check().unwrap_err().to_string().contains("ack_deadline"));
        let mut c = PubSubConfig::new("p");
        c.max_event_bytes = SERVICE_MAX_MESSAGE_BYTES + 1;
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .contains("max_event_bytes")
        );
        let mut c = PubSubConfig::new("p");
        c.endpoint = Some("h:1".into());
        assert!(c.check().unwrap_err().to_string().contains("endpoint"));
        assert!(PubSubConfig::new("").check().is_err());
    }

    #[test]
    fn debug_hides_credentials_in_the_endpoint() {
        let mut c = PubSubConfig::new("p");
        c.endpoint = Some("http://user:hunter2@h:1".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("h:1"), "{shown}");
    }
}
