//! `kafka://` URLs to librdkafka configurations.

use std::time::Duration;

use rdkafka::ClientConfig;
use tributary::{Error, Result, Url, UrlOptions, is_secret_option, redact};

/// Options tributary itself reads from a `kafka://` URL; everything librdkafka knows is passed
/// through with the `rdkafka.`, `producer.` or `consumer.` prefix.
pub(crate) const KNOWN_OPTIONS: &[&str] = &[
    "hosts",
    "client_id",
    "timeout",
    "send_timeout",
    "commit_interval",
    "join_timeout",
    "auto_create",
    "partitions",
    "replication",
    "instance_id",
    "rdkafka.<librdkafka option>",
    "producer.<librdkafka option>",
    "consumer.<librdkafka option>",
];

/// Everything a `kafka://` URL configures.
#[derive(Clone)]
pub(crate) struct KafkaConfig {
    /// The URL with secrets masked, for messages.
    pub shown_url: String,
    pub bootstrap: String,
    pub common: Vec<(String, String)>,
    pub producer: Vec<(String, String)>,
    pub consumer: Vec<(String, String)>,
    /// Metadata, admin and connect calls.
    pub timeout: Duration,
    /// How long librdkafka keeps retrying one event before the send fails.
    pub send_timeout: Duration,
    pub commit_interval: Duration,
    /// How long `consumer()` waits for the group to assign partitions.
    pub join_timeout: Duration,
    pub auto_create: bool,
    pub partitions: u32,
    pub replication: i32,
    /// Static group membership: consumers join as `group.instance.id` `<instance_id>.<topic>`.
    pub instance_id: Option<String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The option lists may hold passwords: show the redacted URL only.
        f.debug_struct("KafkaConfig")
            .field("url", &self.shown_url)
            .finish_non_exhaustive()
    }
}

impl KafkaConfig {
    pub(crate) fn from_url(url: &Url) -> Result<KafkaConfig> {
        let shown_url = redact(url);
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| {
            Error::config(format!(
                "`{shown_url}` names no broker: expected kafka://host:port[,host:port]"
            ))
        })?;
        let mut options = UrlOptions::new(url)?;
        // `kafka://a:9092,b:9092` arrives as the first host plus a `hosts` option with them all.
        let bootstrap = options
            .take_str("hosts")
            .unwrap_or_else(|| match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => format!("{host}:9092"),
            });
        let mut common = vec![("bootstrap.servers".to_string(), bootstrap.clone())];
        let client_id = options
            .take_str("client_id")
            .unwrap_or_else(|| "tributary".into());
        common.push(("client.id".into(), client_id));
        let timeout = options
            .take_duration("timeout")?
            .unwrap_or(Duration::from_secs(30));
        let send_timeout = options
            .take_duration("send_timeout")?
            .unwrap_or(Duration::from_secs(60));
        let commit_interval = options
            .take_duration("commit_interval")?
            .unwrap_or(Duration::from_millis(500));
        let join_timeout = options
            .take_duration("join_timeout")?
            .unwrap_or(Duration::from_secs(60));
        let auto_create = options.take_bool("auto_create")?.unwrap_or(false);
        let partitions = options.take::<u32>("partitions")?.unwrap_or(1);
        if partitions == 0 {
            return Err(Error::config("option `partitions`: must be at least 1"));
        }
        let replication = options.take::<i32>("replication")?.unwrap_or(-1);
        let instance_id = options.take_str("instance_id");
        if let Some(id) = &instance_id {
            check_instance_id(id)?;
        }
        if replication == 0 || replication < -1 {
            return Err(Error::config(
                "option `replication`: a positive factor, or -1 for the broker's default",
            ));
        }

        if !url.username().is_empty() {
            let user = percent_decode(url.username());
            let password = url.password().map(percent_decode).unwrap_or_default();
            common.push(("sasl.username".into(), user));
            common.push(("sasl.password".into(), password));
            common.push(("sasl.mechanisms".into(), "PLAIN".into()));
            // Credentials never travel in clear text unless the URL asks for it explicitly.
            common.push(("security.protocol".into(), "SASL_SSL".into()));
        }
        let timeout_ms = timeout.as_millis().to_string();
        common.push(("socket.connection.setup.timeout.ms".into(), timeout_ms));
        // Never let a metadata request create a topic: a broker with broker-side creation on
        // (Kafka's default) would make it with its own `num.partitions`, before tributary can
        // create it with `partitions`. `auto_create` creates topics explicitly instead.
        common.push(("allow.auto.create.topics".into(), "false".into()));

        let mut producer = vec![
            ("enable.idempotence".to_string(), "true".to_string()),
            (
                "message.timeout.ms".into(),
                send_timeout.as_millis().to_string(),
            ),
            ("linger.ms".into(), "5".into()),
            // Java's partitioner (murmur2 of the key), which every Java-compatible client and
            // the local backend use, instead of librdkafka's own (CRC32): the same key lands on
            // the same partition whoever sends it.
            ("partitioner".into(), "murmur2_random".into()),
        ];
        let mut consumer = vec![
            ("enable.auto.commit".to_string(), "false".to_string()),
            ("enable.auto.offset.store".into(), "false".into()),
            // Bounds the prefetch buffer librdkafka keeps per consumer (its default is 64 MiB).
            ("queued.max.messages.kbytes".into(), "16384".into()),
            ("enable.partition.eof".into(), "false".into()),
            // librdkafka's default backs a full prefetch queue off for a whole second; the
            // consumer drains it into its own bounded queue, so retry fetching soon.
            ("fetch.queue.backoff.ms".into(), "20".into()),
        ];
        let passthrough = |prefix: &str,
                           into: &mut Vec<(String, String)>,
                           options: &mut UrlOptions|
         -> Result<()> {
            for (name, value) in options.take_prefixed(prefix) {
                if name.is_empty() {
                    return Err(Error::config(format!(
                        "option `{prefix}` needs a librdkafka option name after the dot"
                    )));
                }
                into.retain(|(n, _)| *n != name);
                into.push((name, value));
            }
            Ok(())
        };
        passthrough("rdkafka.", &mut common, &mut options)?;
        passthrough("producer.", &mut producer, &mut options)?;
        passthrough("consumer.", &mut consumer, &mut options)?;
        options.finish(KNOWN_OPTIONS)?;

        Ok(KafkaConfig {
            shown_url,
            bootstrap,
            common,
            producer,
            consumer,
            timeout,
            send_timeout,
            commit_interval,
            join_timeout,
            auto_create,
            partitions,
            replication,
            instance_id,
        })
    }

    /// Common options first, so a `producer.`/`consumer.` option overrides an `rdkafka.` one.
    fn build(&self, extra: &[(String, String)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (name, value) in self.common.iter().chain(extra) {
            config.set(name, value);
        }
        config
    }

    /// Configuration for admin and metadata clients.
    pub(crate) fn admin(&self) -> ClientConfig {
        self.build(&[])
    }

    pub(crate) fn producer(&self) -> ClientConfig {
        self.build(&self.producer)
    }

    pub(crate) fn consumer_base(&self) -> ClientConfig {
        self.build(&self.consumer)
    }

    pub(crate) fn consumer(&self, group: &str, start_earliest: bool) -> ClientConfig {
        let mut config = self.consumer_base();
        config.set("group.id", group);
        // Only a fallback: tributary resolves the start of uncommitted partitions itself.
        if !self.consumer.iter().any(|(n, _)| n == "auto.offset.reset") {
            config.set(
                "auto.offset.reset",
                if start_earliest { "earliest" } else { "latest" },
            );
        }
        config
    }

    /// `text` with the value of every secret option masked (for messages that quote what
    /// librdkafka said).
    pub(crate) fn mask_secrets(&self, text: &str) -> String {
        let mut masked = text.to_string();
        for (name, value) in self
            .common
            .iter()
            .chain(&self.producer)
            .chain(&self.consumer)
        {
            // The values that are secret themselves (not `sasl.mechanisms` or a user name,
            // which a message about a refused login should show).
            let secret = is_secret_option(name) || name.contains("oauthbearer.config");
            if secret && !value.is_empty() {
                masked = masked.replace(value.as_str(), "***");
            }
        }
        masked
    }

    /// A librdkafka option value for messages, masked when it may be a secret.
    pub(crate) fn shown_value(name: &str, value: &str) -> String {
        if is_secret_option(name) || name.starts_with("sasl.") || name.starts_with("ssl.key") {
            "***".into()
        } else {
            value.into()
        }
    }
}

/// Longest `instance_id`: Kafka allows 249 characters for `group.instance.id`, which also
/// holds the topic.
const MAX_INSTANCE_ID: usize = 64;

/// Kafka accepts letters, digits, `.`, `_` and `-` in a `group.instance.id`.
fn check_instance_id(id: &str) -> Result<()> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() || id.len() > MAX_INSTANCE_ID || !id.chars().all(legal) {
        return Err(Error::config(format!(
            "option `instance_id`: `{id}` must be 1 to {MAX_INSTANCE_ID} letters, digits, `.`, `_` or `-` (it names this process in the consumer group)"
        )));
    }
    Ok(())
}

fn percent_decode(raw: &str) -> String {
    url::form_urlencoded::parse(format!("x={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> Result<KafkaConfig> {
        KafkaConfig::from_url(&tributary::parse_url(url)?)
    }

    fn get<'a>(list: &'a [(String, String)], name: &str) -> Option<&'a str> {
        list.iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn defaults_are_safe() {
        let c = config("kafka://127.0.0.1:9092").unwrap();
        assert_eq!(c.bootstrap, "127.0.0.1:9092");
        assert_eq!(get(&c.producer, "enable.idempotence"), Some("true"));
        assert_eq!(get(&c.producer, "partitioner"), Some("murmur2_random"));
        assert_eq!(get(&c.consumer, "enable.auto.commit"), Some("false"));
        assert_eq!(get(&c.common, "allow.auto.create.topics"), Some("false"));
        assert!(!c.auto_create);
    }

    #[test]
    fn several_brokers_and_passthrough() {
        let c = config("kafka://a:1,b:2?rdkafka.socket.keepalive.enable=true&producer.linger.ms=20&consumer.fetch.min.bytes=1000").unwrap();
        assert_eq!(c.bootstrap, "a:1,b:2");
        assert_eq!(get(&c.common, "socket.keepalive.enable"), Some("true"));
        assert_eq!(get(&c.producer, "linger.ms"), Some("20"));
        assert_eq!(get(&c.consumer, "fetch.min.bytes"), Some("1000"));
    }

    #[test]
    fn bad_options_are_named() {
        let e = config("kafka://h:1?lingerms=5").unwrap_err();
        assert!(e.to_string().contains("unknown option `lingerms`"), "{e}");
        let e = config("kafka://h:1?timeout=soon").unwrap_err();
        assert!(e.to_string().contains("option `timeout`"), "{e}");
        let e = config("kafka://h:1?partitions=0").unwrap_err();
        assert!(e.to_string().contains("partitions"), "{e}");
        let e = config("kafka://h:1?instance_id=a/b").unwrap_err();
        assert!(e.to_string().contains("option `instance_id`"), "{e}");
        assert!(config("kafka://h:1?instance_id=").is_err());
        assert!(config("kafka://h:1?instance_id=bridge-0.eu_1").is_ok());
        let e = config("kafka://h:1?rdkafka.=x").unwrap_err();
        assert!(e.to_string().contains("rdkafka."), "{e}");
        assert!(config("kafka://").is_err());
    }

    #[test]
    fn credentials_go_to_sasl_and_never_into_messages() {
        let c = config("kafka://alice:s%40cret@broker:9093").unwrap();
        assert_eq!(get(&c.common, "sasl.username"), Some("alice"));
        assert_eq!(get(&c.common, "sasl.password"), Some("s@cret"));
        assert_eq!(get(&c.common, "security.protocol"), Some("SASL_SSL"));
        assert!(!format!("{c:?}").contains("s%40cret"));
        assert!(!c.shown_url.contains("cret"), "{}", c.shown_url);
        assert_eq!(
            c.mask_secrets("login as alice with s@cret failed"),
            "login as alice with *** failed"
        );
    }
}
