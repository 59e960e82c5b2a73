//! `kinesis://REGION?…` URLs.

use std::path::PathBuf;
use std::time::Duration;

use tributary::{Error, Result, Url, UrlOptions, redact};

/// Every option the URL may carry; anything else is refused by name.
pub(crate) const KNOWN_OPTIONS: &[&str] = &[
    "endpoint",
    "profile",
    "timeout",
    "auto_create",
    "shards",
    "max_record_bytes",
    "aggregate",
    "aggregate_max_bytes",
    "linger",
    "max_requests_in_flight",
    "send_timeout",
    "checkpoints",
    "dynamodb_endpoint",
    "lease_table",
    "create_lease_table",
    "lease_ttl",
    "commit_interval",
    "poll_interval",
    "records_per_call",
    "fanout",
    "fanout_consumer",
    "fanout_resubscribe",
];

/// The service's largest record (data and partition key) for a stream whose maximum record
/// size was not raised.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;
/// The largest maximum record size a stream can be given (`UpdateMaxRecordSize`).
pub const SERVICE_MAX_RECORD_BYTES: usize = 10 << 20;
/// The service's limits on one `PutRecords` call.
pub(crate) const PUT_RECORDS_MAX_COUNT: usize = 500;
pub(crate) const PUT_RECORDS_MAX_BYTES: usize = 5 << 20;
/// The KPL's default aggregated record size.
pub(crate) const DEFAULT_AGGREGATE_BYTES: usize = 51_200;
/// `GetRecords` returns at most this many records per call.
pub(crate) const GET_RECORDS_MAX: i32 = 10_000;

/// Where a consumer group keeps its leases and checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointsAt {
    /// A DynamoDB table in the KCL 2.x lease schema (the default, as the KCL does).
    DynamoDb,
    /// In this process only: for tests and throw-away consumers.
    Memory,
    /// Files in a directory, shared by the processes of one host.
    Files(PathBuf),
}

/// A parsed `kinesis://` URL.
///
/// ```
/// let url = tributary::parse_url("kinesis://eu-west-1?aggregate=true&lease_ttl=20s").unwrap();
/// let config = tributary_kinesis::KinesisConfig::from_url(&url).unwrap();
/// assert_eq!(config.region.as_deref(), Some("eu-west-1"));
/// assert!(config.aggregate);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KinesisConfig {
    /// The URL with secrets masked, for messages.
    pub shown_url: String,
    /// The region (`kinesis://REGION`); `None` takes it from the AWS default chain.
    pub region: Option<String>,
    /// `endpoint`: the Kinesis endpoint, for an emulator or a VPC endpoint.
    pub endpoint: Option<String>,
    /// `profile`: the shared-config profile the default chain reads.
    pub profile: Option<String>,
    /// `timeout`: administrative calls and the connection check.
    pub timeout: Duration,
    /// `auto_create`: create a missing stream on first use.
    pub auto_create: bool,
    /// `shards`: shard count of streams created without an explicit count (auto-create).
    pub shards: u32,
    /// `max_record_bytes`: the stream's record size limit (data + partition key).
    pub max_record_bytes: usize,
    /// `aggregate`: pack events into KPL aggregated records.
    pub aggregate: bool,
    /// `aggregate_max_bytes`: the largest aggregated record.
    pub aggregate_max_bytes: usize,
    /// `linger`: how long the producer waits to fill a `PutRecords` call.
    pub linger: Duration,
    /// `max_requests_in_flight`: `PutRecords` calls one producer has open at once.
    pub max_requests_in_flight: usize,
    /// `send_timeout`: how long a send is retried (throttling, service errors) before it fails.
    pub send_timeout: Duration,
    /// `checkpoints`: where consumer groups keep leases and checkpoints.
    pub checkpoints: CheckpointsAt,
    /// `dynamodb_endpoint`: the DynamoDB endpoint (for dynalite or a VPC endpoint).
    pub dynamodb_endpoint: Option<String>,
    /// `lease_table`: the lease table's name; `{group}` and `{stream}` are replaced.
    pub lease_table: String,
    /// `create_lease_table`: create the lease table when it is missing.
    pub create_lease_table: bool,
    /// `lease_ttl`: how long a lease lasts without renewal (the KCL's failover time).
    pub lease_ttl: Duration,
    /// `commit_interval`: how often acked progress is checkpointed.
    pub commit_interval: Duration,
    /// `poll_interval`: the pause between `GetRecords` calls on a shard that has nothing new.
    pub poll_interval: Duration,
    /// `records_per_call`: the `Limit` of each `GetRecords` call.
    pub records_per_call: i32,
    /// `fanout`: read through enhanced fan-out (`SubscribeToShard`) instead of polling.
    pub fanout: bool,
    /// `fanout_consumer`: the registered stream consumer's name; default: the group's name.
    pub fanout_consumer: Option<String>,
    /// `fanout_resubscribe`: how long a `SubscribeToShard` subscription is kept before it is
    /// renewed (the service ends them after 5 minutes).
    pub fanout_resubscribe: Duration,
}

impl KinesisConfig {
    /// Reads a `kinesis://REGION?…` URL. Unknown options, bad values and values outside the
    /// service's limits are errors naming the option.
    pub fn from_url(url: &Url) -> Result<KinesisConfig> {
        let shown_url = redact(url);
        if url.scheme() != "kinesis" {
            return Err(Error::config(format!(
                "`{shown_url}` is not a kinesis:// URL"
            )));
        }
        let region = url.host_str().filter(|h| !h.is_empty()).map(str::to_owned);
        if let Some(region) = &region
            && !region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(Error::config(format!(
                "`{region}` in `{shown_url}` is not an AWS region (like us-east-1)"
            )));
        }
        if !matches!(url.path(), "" | "/") {
            return Err(Error::config(format!(
                "`{shown_url}` has a path; a Kinesis URL is kinesis://REGION?options"
            )));
        }
        let mut options = UrlOptions::new(url)?;
        let endpoint = take_endpoint(&mut options, "endpoint")?;
        let dynamodb_endpoint = take_endpoint(&mut options, "dynamodb_endpoint")?;
        let checkpoints = match options.take_str("checkpoints").as_deref() {
            None | Some("dynamodb") => CheckpointsAt::DynamoDb,
            Some("memory") => CheckpointsAt::Memory,
            Some(other) => match other.strip_prefix("file:") {
                Some(path) if path.starts_with('/') => {
                    CheckpointsAt::Files(PathBuf::from(path.trim_start_matches("//")))
                }
                _ => {
                    return Err(Error::config(format!(
                        "option `checkpoints`: `{other}` is not dynamodb, memory or file:/ABSOLUTE/DIR"
                    )));
                }
            },
        };
        let config = KinesisConfig {
            shown_url,
            region,
            endpoint,
            profile: options.take_str("profile"),
            timeout: options
                .take_duration("timeout")?
                .unwrap_or(Duration::from_secs(30)),
            auto_create: options.take_bool("auto_create")?.unwrap_or(false),
            shards: options.take::<u32>("shards")?.unwrap_or(1),
            max_record_bytes: options
                .take_size("max_record_bytes")?
                .map_or(DEFAULT_MAX_RECORD_BYTES, |n| n as usize),
            aggregate: options.take_bool("aggregate")?.unwrap_or(false),
            aggregate_max_bytes: options
                .take_size("aggregate_max_bytes")?
                .map_or(DEFAULT_AGGREGATE_BYTES, |n| n as usize),
            linger: options
                .take_duration("linger")?
                .unwrap_or(Duration::from_millis(5)),
            max_requests_in_flight: options
                .take::<usize>("max_requests_in_flight")?
                .unwrap_or(8),
            send_timeout: options
                .take_duration("send_timeout")?
                .unwrap_or(Duration::from_secs(120)),
            checkpoints,
            dynamodb_endpoint,
            lease_table: options
                .take_str("lease_table")
                .unwrap_or_else(|| "{group}.{stream}".to_owned()),
            create_lease_table: options.take_bool("create_lease_table")?.unwrap_or(true),
            lease_ttl: options
                .take_duration("lease_ttl")?
                .unwrap_or(Duration::from_secs(10)),
            commit_interval: options
                .take_duration("commit_interval")?
                .unwrap_or(Duration::from_secs(1)),
            poll_interval: options
                .take_duration("poll_interval")?
                .unwrap_or(Duration::from_millis(250)),
            records_per_call: options
                .take::<i32>("records_per_call")?
                .unwrap_or(GET_RECORDS_MAX),
            fanout: options.take_bool("fanout")?.unwrap_or(false),
            fanout_consumer: options.take_str("fanout_consumer"),
            fanout_resubscribe: options
                .take_duration("fanout_resubscribe")?
                .unwrap_or(Duration::from_secs(270)),
        };
        options.finish(KNOWN_OPTIONS)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let fail =
            |option: &str, why: String| Err(Error::config(format!("option `{option}`: {why}")));
        if !(1..=10_000).contains(&self.shards) {
            return fail("shards", format!("{} is outside 1..=10000", self.shards));
        }
        if !(1024..=SERVICE_MAX_RECORD_BYTES).contains(&self.max_record_bytes) {
            return fail(
                "max_record_bytes",
                format!(
                    "{} is outside 1024..={SERVICE_MAX_RECORD_BYTES} (Kinesis records are at most 10 MiB)",
                    self.max_record_bytes
                ),
            );
        }
        if !(1024..=self.max_record_bytes).contains(&self.aggregate_max_bytes) {
            return fail(
                "aggregate_max_bytes",
                format!(
                    "{} is outside 1024..={} (max_record_bytes)",
                    self.aggregate_max_bytes, self.max_record_bytes
                ),
            );
        }
        if !(1..=64).contains(&self.max_requests_in_flight) {
            return fail(
                "max_requests_in_flight",
                format!("{} is outside 1..=64", self.max_requests_in_flight),
            );
        }
        if !(1..=GET_RECORDS_MAX).contains(&self.records_per_call) {
            return fail(
                "records_per_call",
                format!(
                    "{} is outside 1..={GET_RECORDS_MAX} (GetRecords' limit)",
                    self.records_per_call
                ),
            );
        }
        if self.poll_interval < Duration::from_millis(200) {
            return fail(
                "poll_interval",
                format!(
                    "{:?} is below 200ms: Kinesis allows 5 GetRecords calls per second per shard",
                    self.poll_interval
                ),
            );
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return fail("lease_ttl", format!("{:?} is below 1s", self.lease_ttl));
        }
        if self
            .lease_table
            .replace("{group}", "")
            .replace("{stream}", "")
            .contains(['{', '}'])
        {
            return fail(
                "lease_table",
                format!(
                    "`{}` has a placeholder other than {{group}} and {{stream}}",
                    self.lease_table
                ),
            );
        }
        if !(Duration::from_secs(6)..=Duration::from_secs(300)).contains(&self.fanout_resubscribe) {
            return fail(
                "fanout_resubscribe",
                format!(
                    "{:?} is outside 6s..=5m (a subscription lasts 5 minutes, and cannot be renewed within 5 seconds)",
                    self.fanout_resubscribe
                ),
            );
        }
        if let Some(name) = &self.fanout_consumer {
            check_consumer_name(name)?;
        }
        if self.checkpoints == CheckpointsAt::DynamoDb
            && self.dynamodb_endpoint.is_none()
            && self
                .endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"))
        {
            return fail(
                "dynamodb_endpoint",
                "the Kinesis endpoint is a local emulator (http://), so consumer groups need a local DynamoDB too: give dynamodb_endpoint=http://HOST:PORT, or checkpoints=memory or checkpoints=file:/DIR".to_owned(),
            );
        }
        Ok(())
    }

    /// Whether the endpoint is a local emulator (plain HTTP), where any credentials do.
    pub(crate) fn emulated(&self) -> bool {
        self.endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
    }
}

fn take_endpoint(options: &mut UrlOptions, name: &str) -> Result<Option<String>> {
    let Some(endpoint) = options.take_str(name) else {
        return Ok(None);
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(Error::config(format!(
            "option `{name}`: `{endpoint}` must start with http:// (an emulator) or https://"
        )));
    }
    Ok(Some(endpoint.trim_end_matches('/').to_owned()))
}

/// A stream name as Kinesis accepts it, or a configuration error saying the rule.
pub(crate) fn check_stream_name(stream: &str) -> Result<()> {
    let valid = (1..=128).contains(&stream.len())
        && stream
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        return Ok(());
    }
    Err(Error::config(format!(
        "`{stream}` is not a valid Kinesis stream name: 1 to 128 characters of letters, digits, _ - and ."
    )))
}

/// A registered stream consumer's name (enhanced fan-out).
pub(crate) fn check_consumer_name(name: &str) -> Result<()> {
    let valid = (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        return Ok(());
    }
    Err(Error::config(format!(
        "`{name}` is not a valid enhanced fan-out consumer name (option `fanout_consumer`, default the group name): 1 to 128 characters of letters, digits, _ - and ."
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> Result<KinesisConfig> {
        KinesisConfig::from_url(&tributary::parse_url(url)?)
    }

    #[test]
    fn defaults() {
        let c = config("kinesis://us-east-1").unwrap();
        assert_eq!(c.region.as_deref(), Some("us-east-1"));
        assert_eq!(c.endpoint, None);
        assert_eq!(c.checkpoints, CheckpointsAt::DynamoDb);
        assert_eq!(c.max_record_bytes, 1 << 20);
        assert_eq!(c.lease_ttl, Duration::from_secs(10));
        assert_eq!(c.lease_table, "{group}.{stream}");
        assert!(!c.aggregate && !c.fanout && !c.auto_create);
        assert_eq!(config("kinesis://").unwrap().region, None);
    }

    #[test]
    fn emulator_urls() {
        let c = config(
            "kinesis://us-east-1?endpoint=http://127.0.0.1:4567/&dynamodb_endpoint=http://127.0.0.1:8000&lease_table=kcl-app",
        )
        .unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:4567"));
        assert!(c.emulated());
        assert_eq!(c.lease_table, "kcl-app");
        let files =
            config("kinesis://us-east-1?endpoint=http://h:1&checkpoints=file:/var/lib/x").unwrap();
        assert_eq!(files.checkpoints, CheckpointsAt::Files("/var/lib/x".into()));
        let memory = config("kinesis://us-east-1?endpoint=http://h:1&checkpoints=memory").unwrap();
        assert_eq!(memory.checkpoints, CheckpointsAt::Memory);
    }

    #[test]
    fn bad_options_are_named() {
        for (url, needle) in [
            ("kinesis://us-east-1?endpont=http://x", "endpont"),
            ("kinesis://us-east-1?endpoint=localhost:4567", "endpoint"),
            (
                "kinesis://us-east-1?endpoint=http://h:1",
                "dynamodb_endpoint",
            ),
            ("kinesis://us-east-1?checkpoints=redis", "checkpoints"),
            ("kinesis://us-east-1?poll_interval=50ms", "poll_interval"),
            (
                "kinesis://us-east-1?records_per_call=20000",
                "records_per_call",
            ),
            (
                "kinesis://us-east-1?max_record_bytes=20MiB",
                "max_record_bytes",
            ),
            (
                "kinesis://us-east-1?aggregate_max_bytes=2MiB",
                "aggregate_max_bytes",
            ),
            ("kinesis://us-east-1?aggregate=maybe", "aggregate"),
            ("kinesis://us-east-1?shards=0", "shards"),
            (
                "kinesis://us-east-1?fanout_consumer=a%20b",
                "fanout_consumer",
            ),
            (
                "kinesis://us-east-1?fanout_resubscribe=6m",
                "fanout_resubscribe",
            ),
            ("kinesis://us_east_1", "region"),
            ("kinesis://us-east-1?lease_table=%7Bapp%7D", "lease_table"),
            ("kinesis://us-east-1/path", "path"),
        ] {
            let e = config(url).unwrap_err();
            assert_eq!(e.kind(), tributary::ErrorKind::Config, "{url}");
            assert!(e.to_string().contains(needle), "{url}: {e}");
        }
    }
}
