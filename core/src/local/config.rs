//! The local backend's configuration: every field is also a URL option.

use super::*;

/// Where the local backend keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// In this process only.
    Memory,
    /// Under this directory, durable across restarts.
    File(PathBuf),
}

/// Configuration of the local backend; every field is also a URL option.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LocalConfig {
    /// Memory or a directory.
    pub storage: Storage,
    /// Partitions of auto-created streams (`partitions`, default 4).
    pub default_partitions: u32,
    /// Create streams on first use (`auto_create`, default true).
    pub auto_create: bool,
    /// Largest event accepted (`max_event_bytes`, default 1 MiB, like Kafka).
    pub max_event_bytes: usize,
    /// Segment size (`segment_bytes`, default 64 MiB for files, 8 MiB in memory; memory segments
    /// also hold at most 1,024 records).
    pub segment_bytes: u64,
    /// Per-partition size limit (`retention_bytes`, default unlimited).
    pub retention_bytes: Option<u64>,
    /// Age limit (`retention`, e.g. `7d`, default unlimited).
    pub retention_age: Option<Duration>,
    /// Durability of file writes (`fsync=always|interval|never`, `fsync_interval=100ms`).
    pub fsync: FsyncPolicy,
    /// How long a process keeps a consumer group of a `file://` stream after it dies
    /// (`group_lease`, default 15s); another process can take the group over after that.
    pub group_lease: Duration,
    /// Readers step over lost or damaged records of `file://` streams with a warning
    /// (`skip_damaged`, default false: reaching them is a `Corrupt` error naming them).
    pub skip_damaged: bool,
    /// Under `fsync=always`, write each segment with zeros before it takes records and
    /// overwrite it in place (`preallocate`, default false): a segment's fdatasync then commits
    /// no size change (with the stream journal segments sync only at its checkpoints and at
    /// rolls, so this buys little), at the cost of a partition's active
    /// segment written whole when it starts (64 MiB of zeros per partition by default) and the
    /// next one prepared once it is half full: up to 1.5 segments of disk per partition beyond
    /// its records. Off by default, as Kafka's `log.preallocate`.
    pub preallocate: bool,
    /// Capacity of a `file://` stream's write-ahead journal under `fsync=always`
    /// (`journal_bytes`, default 64 MiB, at least 64 KiB): each write round is made durable by
    /// one fdatasync of the journal, and the partitions' segments are synced when it fills.
    pub journal_bytes: u64,
}

pub(super) const OPTIONS: &[&str] = &[
    "partitions",
    "auto_create",
    "max_event_bytes",
    "segment_bytes",
    "retention_bytes",
    "retention",
    "fsync",
    "fsync_interval",
    "group_lease",
    "skip_damaged",
    "preallocate",
    "journal_bytes",
];

impl LocalConfig {
    /// Defaults for `storage`.
    pub fn new(storage: Storage) -> Self {
        let file = matches!(storage, Storage::File(_));
        LocalConfig {
            storage,
            default_partitions: 4,
            auto_create: true,
            max_event_bytes: 1 << 20,
            segment_bytes: if file { 64 << 20 } else { 8 << 20 },
            retention_bytes: None,
            retention_age: None,
            fsync: FsyncPolicy::Always,
            group_lease: Duration::from_secs(15),
            skip_damaged: false,
            preallocate: false,
            journal_bytes: super::journal::DEFAULT_BYTES,
        }
    }

    /// Parses `memory://[name]?…` or `file:///absolute/path?…`.
    pub fn from_url(url: &Url) -> Result<Self> {
        let storage = match url.scheme() {
            "memory" => {
                if url.path() != "" && url.path() != "/" {
                    return Err(Error::config(format!(
                        "`{}`: memory URLs take no path; use memory:// or memory://NAME to share one instance in this process",
                        redact(url)
                    )));
                }
                Storage::Memory
            }
            "file" => {
                match url.host_str() {
                    None | Some("") | Some("localhost") => {}
                    Some(host) => {
                        return Err(Error::config(format!(
                            "`{}`: file URLs need an absolute path with three slashes, e.g. file:///var/lib/tributary \
                             (`{host}` was read as a host name)",
                            redact(url)
                        )));
                    }
                }
                let path = url.to_file_path().map_err(|_| {
                    Error::config(format!("`{}`: not a valid local path", redact(url)))
                })?;
                if path.as_os_str().is_empty() || path == Path::new("/") {
                    return Err(Error::config(format!(
                        "`{}`: give the directory to store streams in, e.g. file:///var/lib/tributary",
                        redact(url)
                    )));
                }
                Storage::File(path)
            }
            other => {
                return Err(Error::config(format!(
                    "the local backend serves memory:// and file://, not {other}://"
                )));
            }
        };
        let file = matches!(storage, Storage::File(_));
        let mut config = LocalConfig::new(storage);
        let mut opts = UrlOptions::new(url)?;
        if let Some(p) = opts.take::<u32>("partitions")? {
            if p == 0 || p > 10_000 {
                return Err(Error::config(format!(
                    "option `partitions`: {p} is out of range 1..=10000"
                )));
            }
            config.default_partitions = p;
        }
        if let Some(v) = opts.take_bool("auto_create")? {
            config.auto_create = v;
        }
        if let Some(v) = opts.take_size("max_event_bytes")? {
            if v == 0 || v > (64 << 20) {
                return Err(Error::config(format!(
                    "option `max_event_bytes`: {v} is out of range 1..=67108864"
                )));
            }
            config.max_event_bytes = v as usize;
        }
        if let Some(v) = opts.take_size("segment_bytes")? {
            if v < 1024 {
                return Err(Error::config(format!(
                    "option `segment_bytes`: {v} is below the minimum of 1024"
                )));
            }
            config.segment_bytes = v;
        }
        config.retention_bytes = opts.take_size("retention_bytes")?;
        config.retention_age = opts.take_duration("retention")?;
        let fsync = opts.take_str("fsync");
        let interval = opts.take_duration("fsync_interval")?;
        let group_lease = opts.take_duration("group_lease")?;
        let skip_damaged = opts.take_bool("skip_damaged")?;
        let preallocate = opts.take_bool("preallocate")?;
        let journal_bytes = opts.take_size("journal_bytes")?;
        if !file
            && (fsync.is_some()
                || interval.is_some()
                || group_lease.is_some()
                || skip_damaged.is_some()
                || preallocate.is_some()
                || journal_bytes.is_some())
        {
            return Err(Error::config(
                "options `fsync`, `fsync_interval`, `group_lease`, `skip_damaged`, `preallocate` and `journal_bytes` apply to file:// only",
            ));
        }
        if let Some(v) = journal_bytes {
            let min = super::journal::MIN_BYTES;
            if v < min || v > super::journal::MAX_BYTES {
                return Err(Error::config(format!(
                    "option `journal_bytes`: {v} is out of range {min}..={}",
                    super::journal::MAX_BYTES
                )));
            }
            config.journal_bytes = v;
        }
        config.skip_damaged = skip_damaged.unwrap_or(false);
        config.preallocate = preallocate.unwrap_or(false);
        config.fsync = match (fsync.as_deref(), interval) {
            (None | Some("always"), None) => FsyncPolicy::Always,
            (Some("interval"), i) | (None, i @ Some(_)) => {
                FsyncPolicy::Interval(i.unwrap_or(Duration::from_millis(100)))
            }
            (Some("never"), None) => FsyncPolicy::Never,
            (Some(v @ ("always" | "never")), Some(_)) => {
                return Err(Error::config(format!(
                    "option `fsync_interval` needs fsync=interval, not fsync={v}"
                )));
            }
            (Some(other), _) => {
                return Err(Error::config(format!(
                    "option `fsync`: `{}` is not one of always, interval, never",
                    shown_value("fsync", other)
                )));
            }
        };
        if config.preallocate && config.fsync != FsyncPolicy::Always {
            return Err(Error::config(
                "option `preallocate` applies to fsync=always only (without a sync per write there is no size change to save)",
            ));
        }
        if journal_bytes.is_some() && config.fsync != FsyncPolicy::Always {
            return Err(Error::config(
                "option `journal_bytes` applies to fsync=always only (the other modes keep no journal)",
            ));
        }
        if let Some(lease) = group_lease {
            config.group_lease = lease.max(Duration::from_millis(100));
        }
        opts.finish(OPTIONS)?;
        Ok(config)
    }

    pub(super) fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            retention_bytes: self.retention_bytes,
            retention_age: self.retention_age,
            preallocate: self.preallocate,
        }
    }
}
