//! The Kafka backend's configuration, from a `kafka://` URL or built in code, and the
//! librdkafka configurations made from it.

use std::time::Duration;

use rdkafka::ClientConfig;
use tributary::backend::{UrlOptions, is_secret_option, redact};
use tributary::{Error, Result, Url};

/// Options tributary itself reads from a `kafka://` URL; everything librdkafka knows is passed
/// through with the `rdkafka.`, `producer.` or `consumer.` prefix.
const KNOWN_OPTIONS: &[&str] = &[
    "hosts",
    "client_id",
    "timeout",
    "send_timeout",
    "commit_interval",
    "join_timeout",
    "revoke_grace",
    "auto_create",
    "partitions",
    "replication",
    "instance_id",
    "rdkafka.<librdkafka option>",
    "producer.<librdkafka option>",
    "consumer.<librdkafka option>",
];

/// Everything the Kafka backend is configured with: from a URL
/// ([`from_url`](KafkaConfig::from_url), what `tributary::connect("kafka://…")` uses) or built
/// in code ([`new`](KafkaConfig::new), then set fields), for
/// [`KafkaBackend::connect`](crate::KafkaBackend::connect). Each field names its URL option.
///
/// ```no_run
/// # async fn demo() -> tributary::Result<()> {
/// use std::time::Duration;
/// use tributary_kafka::{KafkaBackend, KafkaConfig};
///
/// let mut config = KafkaConfig::new("broker-1:9093,broker-2:9093");
/// config.auto_create = true;
/// config.partitions = 12;
/// config.commit_interval = Duration::from_millis(200);
/// // Secrets from wherever the program keeps them, never from a URL in a log.
/// let password = std::env::var("KAFKA_PASSWORD").unwrap_or_default();
/// config.librdkafka.extend([
///     ("security.protocol".to_string(), "SASL_SSL".to_string()),
///     ("sasl.mechanisms".to_string(), "SCRAM-SHA-512".to_string()),
///     ("sasl.username".to_string(), "alice".to_string()),
///     ("sasl.password".to_string(), password),
/// ]);
/// let backend = tributary::backend::stamped(KafkaBackend::connect(config).await?);
/// # Ok(()) }
/// ```
///
/// `Debug` shows every option with the values of secret ones masked.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaConfig {
    /// `host:port` of one or more brokers, comma-separated (the URL's authority:
    /// `kafka://a:9092,b:9092`; the port defaults to 9092).
    pub bootstrap: String,
    /// `client.id` of every client (`client_id`, default `tributary`).
    pub client_id: String,
    /// Connect, metadata and admin calls (`timeout`, default 30 s).
    pub timeout: Duration,
    /// How long one event may be retried before its send fails (`send_timeout`, default 60 s;
    /// librdkafka's `message.timeout.ms`).
    pub send_timeout: Duration,
    /// How often acked positions are committed, besides on revoke, `commit()` and close
    /// (`commit_interval`, default 500 ms).
    pub commit_interval: Duration,
    /// How long `consumer()` waits for the group to assign partitions (`join_timeout`, default
    /// 60 s).
    pub join_timeout: Duration,
    /// How long a rebalance that takes partitions from a consumer waits for the deliveries of
    /// those partitions still out to be settled, so that their acks are committed and the next
    /// owner does not read them again (`revoke_grace`, default 5 s; `0s` does not wait). Only
    /// while deliveries of those partitions are out; the group's rebalance waits with it.
    pub revoke_grace: Duration,
    /// Create missing topics on `producer()`/`consumer()` (`auto_create`, default false).
    pub auto_create: bool,
    /// Partitions of topics `auto_create` makes (`partitions`, default 1).
    pub partitions: u32,
    /// Replication factor of created topics (`replication`); `None`: the broker's default.
    pub replication: Option<u16>,
    /// Static group membership (`instance_id`): consumers join as `group.instance.id`
    /// `<instance_id>.<topic>`, so a restarted process gets its partitions back at once. See
    /// the crate documentation, "Restarts and takeovers".
    pub instance_id: Option<String>,
    /// librdkafka options for every client (`rdkafka.NAME=VALUE`), applied over tributary's
    /// own settings; a later entry wins over an earlier one of the same name.
    pub librdkafka: Vec<(String, String)>,
    /// librdkafka options for producers only (`producer.NAME=VALUE`), applied last.
    pub producer: Vec<(String, String)>,
    /// librdkafka options for consumers only (`consumer.NAME=VALUE`), applied last.
    pub consumer: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |options: &[(String, String)]| -> Vec<String> {
            options
                .iter()
                .map(|(name, value)| format!("{name}={}", shown_value(name, value)))
                .collect()
        };
        f.debug_struct("KafkaConfig")
            .field("bootstrap", &self.bootstrap)
            .field("client_id", &self.client_id)
            .field("timeout", &self.timeout)
            .field("send_timeout", &self.send_timeout)
            .field("commit_interval", &self.commit_interval)
            .field("join_timeout", &self.join_timeout)
            .field("revoke_grace", &self.revoke_grace)
            .field("auto_create", &self.auto_create)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("instance_id", &self.instance_id)
            .field("librdkafka", &shown(&self.librdkafka))
            .field("producer", &shown(&self.producer))
            .field("consumer", &shown(&self.consumer))
            .finish()
    }
}

impl KafkaConfig {
    /// The defaults, for the brokers at `bootstrap` (`host:port[,host:port…]`).
    pub fn new(bootstrap: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            bootstrap: bootstrap.into(),
            client_id: "tributary".into(),
            timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            commit_interval: Duration::from_millis(500),
            join_timeout: Duration::from_secs(60),
            revoke_grace: Duration::from_secs(5),
            auto_create: false,
            partitions: 1,
            replication: None,
            instance_id: None,
            librdkafka: Vec::new(),
            producer: Vec::new(),
            consumer: Vec::new(),
        }
    }

    /// Reads a `kafka://host:port[,host:port…][?option=value&…]` URL (options in the crate
    /// documentation). `user:password@` becomes SASL/PLAIN over TLS. Unknown options, bad
    /// values and empty librdkafka option names are `Config` errors naming the option; a
    /// secret's value is never shown.
    pub fn from_url(url: &Url) -> Result<KafkaConfig> {
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
        let mut config = KafkaConfig::new(bootstrap);
        if let Some(client_id) = options.take_str("client_id") {
            config.client_id = client_id;
        }
        let durations = [
            ("timeout", &mut config.timeout),
            ("send_timeout", &mut config.send_timeout),
            ("commit_interval", &mut config.commit_interval),
            ("join_timeout", &mut config.join_timeout),
            ("revoke_grace", &mut config.revoke_grace),
        ];
        for (name, field) in durations {
            if let Some(value) = options.take_duration(name)? {
                *field = value;
            }
        }
        if let Some(auto_create) = options.take_bool("auto_create")? {
            config.auto_create = auto_create;
        }
        if let Some(partitions) = options.take::<u32>("partitions")? {
            config.partitions = partitions;
        }
        config.replication = match options.take::<i32>("replication")? {
            None | Some(-1) => None,
            Some(n) => Some(u16::try_from(n).map_err(|_| {
                Error::config(
                    "option `replication`: a positive factor, or -1 for the broker's default",
                )
            })?),
        };
        config.instance_id = options.take_str("instance_id");

        if !url.username().is_empty() {
            let user = percent_decode(url.username());
            let password = url.password().map(percent_decode).unwrap_or_default();
            config.librdkafka.extend([
                ("sasl.username".to_string(), user),
                ("sasl.password".to_string(), password),
                ("sasl.mechanisms".to_string(), "PLAIN".to_string()),
                // Credentials never travel in clear text unless the URL asks for it explicitly.
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
            ]);
        }
        let lists = [
            ("rdkafka.", &mut config.librdkafka),
            ("producer.", &mut config.producer),
            ("consumer.", &mut config.consumer),
        ];
        for (prefix, into) in lists {
            into.extend(options.take_prefixed(prefix));
        }
        options.finish(KNOWN_OPTIONS)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what librdkafka would not (it checks its own options when a client is made).
    pub(crate) fn validate(&self) -> Result<()> {
        if self.bootstrap.trim().is_empty() {
            return Err(Error::config(
                "no Kafka broker given: `bootstrap` must name at least one host:port",
            ));
        }
        if self.partitions == 0 {
            return Err(Error::config("option `partitions`: must be at least 1"));
        }
        if self.replication == Some(0) {
            return Err(Error::config(
                "option `replication`: a positive factor, or -1 for the broker's default",
            ));
        }
        if let Some(id) = &self.instance_id {
            check_instance_id(id)?;
        }
        let lists = [
            ("rdkafka.", &self.librdkafka),
            ("producer.", &self.producer),
            ("consumer.", &self.consumer),
        ];
        for (prefix, list) in lists {
            if list.iter().any(|(name, _)| name.is_empty()) {
                return Err(Error::config(format!(
                    "option `{prefix}` needs a librdkafka option name after the dot"
                )));
            }
        }
        Ok(())
    }

    /// How the cluster is named in messages (no credentials: they are never in `bootstrap`).
    pub(crate) fn shown(&self) -> String {
        format!("kafka://{}", self.bootstrap)
    }

    /// tributary's settings for every client, then the caller's.
    fn common(&self) -> Vec<(String, String)> {
        let mut options = vec![
            ("bootstrap.servers".to_string(), self.bootstrap.clone()),
            ("client.id".into(), self.client_id.clone()),
            (
                "socket.connection.setup.timeout.ms".into(),
                self.timeout.as_millis().to_string(),
            ),
            // Never let a metadata request create a topic: a broker with broker-side creation
            // on (Kafka's default) would make it with its own `num.partitions`, before
            // tributary can create it with `partitions`. `auto_create` creates topics itself.
            ("allow.auto.create.topics".into(), "false".into()),
        ];
        options.extend(self.librdkafka.iter().cloned());
        options
    }

    /// Whether the caller set librdkafka option `name` for every client or for `role`'s.
    pub(crate) fn sets(&self, role: &[(String, String)], name: &str) -> bool {
        self.librdkafka.iter().chain(role).any(|(n, _)| n == name)
    }

    /// Options in order (a later one wins), into a client configuration.
    fn build(options: impl IntoIterator<Item = (String, String)>) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (name, value) in options {
            config.set(name, value);
        }
        config
    }

    /// Configuration for admin and metadata clients.
    pub(crate) fn admin(&self) -> ClientConfig {
        Self::build(self.common())
    }

    pub(crate) fn producer_config(&self) -> ClientConfig {
        let defaults = [
            ("enable.idempotence", "true".to_string()),
            (
                "message.timeout.ms",
                self.send_timeout.as_millis().to_string(),
            ),
            // Batches under load at the price of up to 5 ms for an event sent alone (5.6 ms
            // send to receive at the median, 0.2 ms with 0: the bench's latency mode); the
            // crate docs tell when to set `producer.linger.ms=0`.
            ("linger.ms", "5".to_string()),
            // Java's partitioner (murmur2 of the key), which every Java-compatible client and
            // the local backend use, instead of librdkafka's own (CRC32): the same key lands
            // on the same partition whoever sends it.
            ("partitioner", "murmur2_random".to_string()),
        ];
        Self::build(
            self.common()
                .into_iter()
                .chain(defaults.map(|(n, v)| (n.to_string(), v)))
                .chain(self.producer.iter().cloned()),
        )
    }

    pub(crate) fn consumer_base(&self) -> ClientConfig {
        let defaults = [
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            // Bounds the prefetch buffer librdkafka keeps per consumer (its default is 64 MiB).
            ("queued.max.messages.kbytes", "16384"),
            ("enable.partition.eof", "false"),
            // librdkafka's default backs a full prefetch queue off for a whole second; the
            // consumer drains it into its own bounded queue, so retry fetching soon.
            ("fetch.queue.backoff.ms", "20"),
        ];
        Self::build(
            self.common()
                .into_iter()
                .chain(defaults.map(|(n, v)| (n.to_string(), v.to_string())))
                .chain(self.consumer.iter().cloned()),
        )
    }

    pub(crate) fn consumer_config(&self, group: &str, start_earliest: bool) -> ClientConfig {
        let mut config = self.consumer_base();
        config.set("group.id", group);
        // Only a fallback: tributary resolves the start of uncommitted partitions itself.
        if !self.sets(&self.consumer, "auto.offset.reset") {
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
            .librdkafka
            .iter()
            .chain(&self.producer)
            .chain(&self.consumer)
        {
            // The values that are secret themselves (not `sasl.mechanisms` or a user name,
            // which a message about a refused login should show).
            let shown_anyway = ["sasl.username", "sasl.mechanism", "sasl.mechanisms"]
                .iter()
                .any(|public| name.ends_with(public));
            let secret =
                (is_secret_option(name) || name.contains("oauthbearer.config")) && !shown_anyway;
            if secret && !value.is_empty() {
                masked = masked.replace(value.as_str(), "***");
            }
        }
        masked
    }
}

/// A librdkafka option value for messages, masked when it may be a secret.
pub(crate) fn shown_value(name: &str, value: &str) -> String {
    if name.starts_with("ssl.key") {
        tributary::backend::MASK.into()
    } else {
        tributary::backend::shown_value(name, value).into_owned()
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

    fn get(config: &ClientConfig, name: &str) -> Option<String> {
        config.get(name).map(str::to_string)
    }

    #[test]
    fn defaults_are_safe() {
        let c = config("kafka://127.0.0.1:9092").unwrap();
        assert_eq!(c.bootstrap, "127.0.0.1:9092");
        let producer = c.producer_config();
        assert_eq!(
            get(&producer, "enable.idempotence").as_deref(),
            Some("true")
        );
        assert_eq!(
            get(&producer, "partitioner").as_deref(),
            Some("murmur2_random")
        );
        let consumer = c.consumer_config("g", true);
        assert_eq!(
            get(&consumer, "enable.auto.commit").as_deref(),
            Some("false")
        );
        assert_eq!(get(&consumer, "group.id").as_deref(), Some("g"));
        for client in [c.admin(), producer, consumer] {
            assert_eq!(
                get(&client, "allow.auto.create.topics").as_deref(),
                Some("false")
            );
        }
        assert!(!c.auto_create);
        assert_eq!(
            c,
            KafkaConfig::new("127.0.0.1:9092"),
            "the URL's defaults are new()'s"
        );
    }

    #[test]
    fn several_brokers_and_passthrough() {
        let c = config("kafka://a:1,b:2?rdkafka.socket.keepalive.enable=true&producer.linger.ms=20&consumer.fetch.min.bytes=1000&replication=3").unwrap();
        assert_eq!(c.bootstrap, "a:1,b:2");
        assert_eq!(c.replication, Some(3));
        assert_eq!(
            get(&c.admin(), "socket.keepalive.enable").as_deref(),
            Some("true")
        );
        assert_eq!(
            get(&c.producer_config(), "linger.ms").as_deref(),
            Some("20")
        );
        assert_eq!(
            get(&c.consumer_config("g", false), "fetch.min.bytes").as_deref(),
            Some("1000")
        );
        assert_eq!(
            config("kafka://a:1?replication=-1").unwrap().replication,
            None
        );
        assert_eq!(
            config("kafka://a:1?revoke_grace=250ms")
                .unwrap()
                .revoke_grace,
            Duration::from_millis(250)
        );
        assert_eq!(
            config("kafka://a:1?revoke_grace=0s").unwrap().revoke_grace,
            Duration::ZERO
        );
    }

    #[test]
    fn bad_options_are_named() {
        let e = config("kafka://h:1?lingerms=5").unwrap_err();
        assert!(e.to_string().contains("unknown option `lingerms`"), "{e}");
        let e = config("kafka://h:1?timeout=soon").unwrap_err();
        assert!(e.to_string().contains("option `timeout`"), "{e}");
        let e = config("kafka://h:1?revoke_grace=-1s").unwrap_err();
        assert!(e.to_string().contains("option `revoke_grace`"), "{e}");
        let e = config("kafka://h:1?partitions=0").unwrap_err();
        assert!(e.to_string().contains("partitions"), "{e}");
        let e = config("kafka://h:1?replication=0").unwrap_err();
        assert!(e.to_string().contains("replication"), "{e}");
        let e = config("kafka://h:1?instance_id=a/b").unwrap_err();
        assert!(e.to_string().contains("option `instance_id`"), "{e}");
        assert!(config("kafka://h:1?instance_id=").is_err());
        assert!(config("kafka://h:1?instance_id=bridge-0.eu_1").is_ok());
        let e = config("kafka://h:1?rdkafka.=x").unwrap_err();
        assert!(e.to_string().contains("rdkafka."), "{e}");
        assert!(config("kafka://").is_err());
        let mut typed = KafkaConfig::new("");
        assert!(typed.validate().is_err());
        typed.bootstrap = "h:1".into();
        typed.instance_id = Some("bad id".into());
        assert!(typed.validate().is_err());
    }

    #[test]
    fn credentials_go_to_sasl_and_never_into_messages() {
        let c = config("kafka://alice:s%40cret@broker:9093").unwrap();
        let admin = c.admin();
        assert_eq!(get(&admin, "sasl.username").as_deref(), Some("alice"));
        assert_eq!(get(&admin, "sasl.password").as_deref(), Some("s@cret"));
        assert_eq!(
            get(&admin, "security.protocol").as_deref(),
            Some("SASL_SSL")
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("cret"), "{shown}");
        assert!(shown.contains("sasl.username=***"), "{shown}");
        assert!(!c.shown().contains("cret"), "{}", c.shown());
        assert_eq!(
            c.mask_secrets("login as alice with s@cret failed"),
            "login as alice with *** failed"
        );
    }
}
