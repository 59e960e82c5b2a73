//! `pubsub://PROJECT?…` URLs.

use std::time::Duration;

use tributary::{Error, Result, Url, UrlOptions, redact};

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
pub(crate) const SERVICE_MAX_MESSAGE_BYTES: usize = 10_000_000;

#[derive(Debug, Clone)]
pub(crate) struct PubSubConfig {
    pub shown_url: String,
    pub project: String,
    /// `Some` for an emulator (plaintext, anonymous credentials); `None` for Google Cloud with
    /// Application Default Credentials.
    pub endpoint: Option<String>,
    pub timeout: Duration,
    pub auto_create: bool,
    pub create_subscriptions: bool,
    pub ordering: bool,
    pub ack_deadline: Duration,
    pub batch_count: u32,
    pub batch_bytes: u32,
    pub batch_delay: Duration,
    pub max_event_bytes: usize,
}

impl PubSubConfig {
    pub(crate) fn from_url(url: &Url, emulator_host: Option<String>) -> Result<PubSubConfig> {
        let shown_url = redact(url);
        let project = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                Error::config(format!(
                    "`{shown_url}` names no project: expected pubsub://PROJECT"
                ))
            })?
            .to_string();
        let mut options = UrlOptions::new(url)?;
        // An explicit option wins over the environment, which wins over Google Cloud.
        let endpoint = options.take_str("endpoint").or_else(|| {
            emulator_host
                .filter(|h| !h.is_empty())
                .map(|h| format!("http://{h}"))
        });
        if let Some(endpoint) = &endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(Error::config(format!(
                "option `endpoint`: `{endpoint}` must start with http:// (emulator) or https://"
            )));
        }
        let config = PubSubConfig {
            shown_url,
            project,
            endpoint,
            timeout: options
                .take_duration("timeout")?
                .unwrap_or(Duration::from_secs(30)),
            auto_create: options.take_bool("auto_create")?.unwrap_or(false),
            create_subscriptions: options.take_bool("create_subscriptions")?.unwrap_or(true),
            ordering: options.take_bool("ordering")?.unwrap_or(false),
            ack_deadline: options
                .take_duration("ack_deadline")?
                .unwrap_or(Duration::from_secs(30)),
            batch_count: options.take::<u32>("batch_count")?.unwrap_or(100),
            batch_bytes: options
                .take_size("batch_bytes")?
                .unwrap_or(1_000_000)
                .min(u32::MAX as u64) as u32,
            batch_delay: options
                .take_duration("batch_delay")?
                .unwrap_or(Duration::from_millis(10)),
            max_event_bytes: options
                .take_size("max_event_bytes")?
                .map(|n| n as usize)
                .unwrap_or(SERVICE_MAX_MESSAGE_BYTES),
        };
        options.finish(KNOWN_OPTIONS)?;
        let deadline = config.ack_deadline.as_secs();
        if !(10..=600).contains(&deadline) {
            return Err(Error::config(format!(
                "option `ack_deadline`: {deadline}s is outside Pub/Sub's 10s..600s"
            )));
        }
        if config.max_event_bytes > SERVICE_MAX_MESSAGE_BYTES {
            return Err(Error::config(format!(
                "option `max_event_bytes`: {} is above Pub/Sub's limit of {SERVICE_MAX_MESSAGE_BYTES} bytes",
                config.max_event_bytes
            )));
        }
        Ok(config)
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
        ))
        .with_backend("pubsub"))
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
        PubSubConfig::from_url(&tributary::parse_url(url)?, env.map(str::to_owned))
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
}
