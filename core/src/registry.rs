//! `connect(url)`: URL schemes to backends, and the option parser every backend shares.

use crate::names::closest_name;
use crate::redact::{redact, redact_text, shown_value};
use crate::{Backend, Error, Result};
use futures::future::BoxFuture;
use parking_lot::RwLock;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use url::Url;

/// Builds a backend from a parsed URL.
pub type BackendFactory =
    Arc<dyn Fn(Url) -> BoxFuture<'static, Result<Arc<dyn Backend>>> + Send + Sync>;

/// Schemes tributary knows, with the crate that provides each. Listed even when not compiled in,
/// so `kafka://` without the Kafka backend says how to get it instead of "unknown scheme".
pub const KNOWN_SCHEMES: &[(&str, &str)] = &[
    ("memory", "tributary (built in)"),
    ("file", "tributary (built in)"),
    ("kafka", "tributary-kafka"),
    ("pulsar", "tributary-pulsar"),
    ("pulsar+ssl", "tributary-pulsar"),
    ("kinesis", "tributary-kinesis"),
    ("pubsub", "tributary-pubsub"),
    ("eventhubs", "tributary-eventhubs"),
];

/// Maps URL schemes to backend factories.
#[derive(Clone)]
pub struct Registry {
    /// By scheme: the name connect errors carry as their backend, and the factory.
    factories: HashMap<String, (&'static str, BackendFactory)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut schemes: Vec<_> = self.factories.keys().collect();
        schemes.sort();
        f.debug_struct("Registry")
            .field("schemes", &schemes)
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry with the built-in `memory://` and `file://` schemes.
    pub fn new() -> Self {
        let mut registry = Registry {
            factories: HashMap::new(),
        };
        registry.register("memory", |url| Box::pin(crate::local::connect_url(url)));
        registry.register("file", |url| Box::pin(crate::local::connect_url(url)));
        registry
    }

    /// Adds or replaces the constructor for `scheme`: one line per backend.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tributary::Result<()> {
    /// use tributary::local::{LocalBackend, LocalConfig};
    /// let mut registry = tributary::Registry::new();
    /// registry.register_backend("scratch", |url| async move {
    ///     let mut url = url;
    ///     url.set_scheme("memory").ok();
    ///     LocalBackend::open(LocalConfig::from_url(&url)?).await
    /// });
    /// let backend = registry.connect("scratch://").await?;
    /// assert_eq!(backend.scheme(), "memory");
    /// # Ok(()) }
    /// ```
    pub fn register_backend<B, F, Fut>(&mut self, scheme: &str, constructor: F)
    where
        B: Backend + 'static,
        F: Fn(Url) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<B>> + Send + 'static,
    {
        self.register(scheme, move |url| {
            let built = constructor(url);
            Box::pin(async move { Ok(Arc::new(built.await?) as Arc<dyn Backend>) })
        });
    }

    /// Adds or replaces the factory for `scheme` (a factory that already returns a shared
    /// backend; [`register_backend`](Registry::register_backend) is the shorter form).
    pub fn register(
        &mut self,
        scheme: &str,
        factory: impl Fn(Url) -> BoxFuture<'static, Result<Arc<dyn Backend>>> + Send + Sync + 'static,
    ) {
        let scheme = scheme.to_ascii_lowercase();
        let name = backend_name(&scheme);
        self.factories.insert(scheme, (name, Arc::new(factory)));
    }

    /// Schemes with a factory, sorted.
    pub fn schemes(&self) -> Vec<String> {
        let mut s: Vec<_> = self.factories.keys().cloned().collect();
        s.sort();
        s
    }

    /// Connects to the backend named by `url`. Every error of the backend returned, its
    /// producers and consumers names the backend, the operation and the stream
    /// ([`crate::backend::stamped`]).
    pub async fn connect(&self, url: &str) -> Result<Arc<dyn Backend>> {
        let parsed = parse_url(url)?;
        let scheme = parsed.scheme().to_owned();
        match self.factories.get(&scheme) {
            Some((name, factory)) => {
                // A constructor's errors come before any stamping layer exists, so they are
                // stamped here: backends never name themselves.
                let backend = factory(parsed)
                    .await
                    .map_err(crate::backend::mark(name, "connect", None))?;
                Ok(crate::backend::stamp_arc(backend))
            }
            None => Err(unknown_scheme(&scheme, &self.schemes())),
        }
    }
}

/// `scheme` as a `'static` backend name ([`Error::backend`]): the known schemes' own, others
/// kept once for the life of the program (a program registers a handful of schemes).
fn backend_name(scheme: &str) -> &'static str {
    static OTHERS: LazyLock<parking_lot::Mutex<Vec<&'static str>>> =
        LazyLock::new(Default::default);
    if let Some((known, _)) = KNOWN_SCHEMES.iter().find(|(s, _)| *s == scheme) {
        return known;
    }
    let mut others = OTHERS.lock();
    if let Some(name) = others.iter().find(|n| **n == scheme) {
        return name;
    }
    let name: &'static str = Box::leak(scheme.to_owned().into_boxed_str());
    others.push(name);
    name
}

fn unknown_scheme(scheme: &str, registered: &[String]) -> Error {
    match KNOWN_SCHEMES.iter().find(|(s, _)| *s == scheme) {
        Some((_, krate)) => Error::config(format!(
            "`{scheme}://` needs the {krate} crate, which is not compiled into this program: \
             add {krate} to your dependencies and call `{}::register()` at start-up",
            krate.replace('-', "_")
        )),
        None => Error::config(format!(
            "unknown URL scheme `{scheme}://`; available: {}",
            registered
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Parses a URL, turning the parser's terse errors into ones that show the expected form.
pub fn parse_url(url: &str) -> Result<Url> {
    let trimmed = url.trim();
    if trimmed.is_empty() {
        return Err(Error::config(
            "empty URL: expected something like memory://, file:///var/lib/tributary or kafka://host:9092",
        ));
    }
    if !trimmed.contains("://") {
        // Quoted as given (a URL parser would rewrite `file:rel` into `file:///rel`), less
        // anything before an `@` that could be a password.
        let shown = match trimmed.rfind('@') {
            Some(at) => format!("***{}", &trimmed[at..]),
            None => trimmed.to_owned(),
        };
        return Err(Error::config(format!(
            "`{shown}` is not a URL: expected scheme://…, e.g. memory://, file:///var/lib/tributary or kafka://host:9092"
        )));
    }
    let (first, hosts) = split_host_list(trimmed);
    let mut url = Url::parse(&first)
        .map_err(|e| Error::config(format!("malformed URL `{}`: {e}", redact_text(trimmed))))?;
    if let Some(hosts) = hosts {
        if url.query_pairs().any(|(k, _)| k == "hosts") {
            return Err(Error::config(
                "the URL names several hosts and also has a `hosts` option: use one or the other",
            ));
        }
        url.query_pairs_mut().append_pair("hosts", &hosts);
    }
    Ok(url)
}

/// `kafka://a:9092,b:9092/x?y` → (`kafka://a:9092/x?y`, `Some("a:9092,b:9092")`): URL parsers
/// reject host lists, which Kafka and Pulsar users write as a matter of course. The full list
/// reaches the backend as the `hosts` option.
fn split_host_list(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    if !hosts.contains(',') {
        return (url.to_owned(), None);
    }
    let first = hosts.split(',').next().unwrap_or_default();
    (
        format!("{scheme}://{userinfo}{first}{tail}"),
        Some(hosts.to_owned()),
    )
}

/// The query options of a backend URL, consumed one by one; [`UrlOptions::finish`] rejects any
/// left over, naming them, so a typo never silently falls back to a default.
///
/// ```
/// let url = url::Url::parse("memory://?partitions=4&fsync=never").unwrap();
/// let mut opts = tributary::UrlOptions::new(&url).unwrap();
/// assert_eq!(opts.take::<u32>("partitions").unwrap(), Some(4));
/// let err = opts.finish(&["partitions"]).unwrap_err();
/// assert!(err.to_string().contains("unknown option `fsync`"));
///
/// // A near miss says what was probably meant.
/// let url = url::Url::parse("memory://?partitons=4").unwrap();
/// let err = tributary::UrlOptions::new(&url).unwrap().finish(&["partitions"]).unwrap_err();
/// assert!(err.to_string().contains("unknown option `partitons` (did you mean `partitions`?)"));
/// ```
#[derive(Debug)]
pub struct UrlOptions {
    values: BTreeMap<String, String>,
}

impl UrlOptions {
    /// Collects the query; a repeated option is an error.
    pub fn new(url: &Url) -> Result<Self> {
        let mut values = BTreeMap::new();
        for (k, v) in url.query_pairs() {
            if k.is_empty() {
                return Err(Error::config(format!(
                    "empty option name in `{}`",
                    redact(url)
                )));
            }
            if values.insert(k.to_string(), v.to_string()).is_some() {
                return Err(Error::config(format!("option `{k}` is given twice")));
            }
        }
        Ok(UrlOptions { values })
    }

    /// Removes and returns an option's raw value.
    pub fn take_str(&mut self, name: &str) -> Option<String> {
        self.values.remove(name)
    }

    /// Removes and parses an option; a bad value is an error naming the option and the value.
    pub fn take<T: FromStr>(&mut self, name: &str) -> Result<Option<T>> {
        match self.values.remove(name) {
            None => Ok(None),
            Some(raw) => raw.parse::<T>().map(Some).map_err(|_| {
                Error::config(format!(
                    "option `{name}`: `{}` is not a valid {}",
                    shown_value(name, &raw),
                    short_type_name::<T>()
                ))
            }),
        }
    }

    /// Removes a boolean option (`true|false|1|0|yes|no`).
    pub fn take_bool(&mut self, name: &str) -> Result<Option<bool>> {
        match self.values.remove(name).as_deref() {
            None => Ok(None),
            Some("true" | "1" | "yes" | "on") => Ok(Some(true)),
            Some("false" | "0" | "no" | "off") => Ok(Some(false)),
            Some(other) => Err(Error::config(format!(
                "option `{name}`: `{}` is not a boolean (true or false)",
                shown_value(name, other)
            ))),
        }
    }

    /// Removes a duration option: plain milliseconds or a number with `ms`, `s`, `m`, `h`, `d`.
    pub fn take_duration(&mut self, name: &str) -> Result<Option<Duration>> {
        match self.values.remove(name) {
            None => Ok(None),
            Some(raw) => parse_duration(&raw).map(Some).ok_or_else(|| {
                Error::config(format!(
                    "option `{name}`: `{}` is not a duration (e.g. 500ms, 10s, 7d)",
                    shown_value(name, &raw)
                ))
            }),
        }
    }

    /// Removes a byte-size option: plain bytes or a number with `KiB`, `MiB`, `GiB` (or `k`, `m`, `g`).
    pub fn take_size(&mut self, name: &str) -> Result<Option<u64>> {
        match self.values.remove(name) {
            None => Ok(None),
            Some(raw) => parse_size(&raw).map(Some).ok_or_else(|| {
                Error::config(format!(
                    "option `{name}`: `{}` is not a size (e.g. 1048576, 64MiB, 1GiB)",
                    shown_value(name, &raw)
                ))
            }),
        }
    }

    /// Options not yet taken whose names start with `prefix`, removed (for pass-through maps).
    pub fn take_prefixed(&mut self, prefix: &str) -> Vec<(String, String)> {
        let keys: Vec<_> = self
            .values
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        keys.into_iter()
            .map(|k| {
                let v = self.values.remove(&k).expect("key listed");
                (k[prefix.len()..].to_owned(), v)
            })
            .collect()
    }

    /// Fails if any option was not taken, naming it and listing the `known` ones.
    pub fn finish(self, known: &[&str]) -> Result<()> {
        if self.values.is_empty() {
            return Ok(());
        }
        let unknown: Vec<_> = self
            .values
            .keys()
            .map(|k| match closest_name(k, known.iter().copied()) {
                Some(meant) => format!("`{k}` (did you mean `{meant}`?)"),
                None => format!("`{k}`"),
            })
            .collect();
        let noun = if unknown.len() == 1 {
            "option"
        } else {
            "options"
        };
        Err(Error::config(format!(
            "unknown {noun} {}; known options: {}",
            unknown.join(", "),
            known.join(", ")
        )))
    }
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    match full {
        "u8" | "u16" | "u32" | "u64" | "usize" => "non-negative integer",
        "i8" | "i16" | "i32" | "i64" | "isize" => "integer",
        "f32" | "f64" => "number",
        _ => full.rsplit("::").next().unwrap_or(full),
    }
}

/// Parses `250`, `250ms`, `10s`, `5m`, `2h`, `7d`.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (n, unit) = raw.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" | "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// Parses `1048576`, `64KiB`, `64MiB`, `1GiB` (also `k`, `m`, `g`, `KB`, `MB`, `GB` as binary units).
pub fn parse_size(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (n, unit) = raw.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

static GLOBAL: LazyLock<RwLock<Registry>> = LazyLock::new(|| RwLock::new(Registry::new()));

/// Adds a backend to the process-wide registry used by [`connect`]: backend crates' one-line
/// `register()`. See [`Registry::register_backend`].
pub fn register_backend<B, F, Fut>(scheme: &str, constructor: F)
where
    B: Backend + 'static,
    F: Fn(Url) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<B>> + Send + 'static,
{
    GLOBAL.write().register_backend(scheme, constructor);
}

/// Adds a factory to the process-wide registry used by [`connect`] (the longer form of
/// [`register_backend`], for factories that return a shared backend).
pub fn register_scheme(
    scheme: &str,
    factory: impl Fn(Url) -> BoxFuture<'static, Result<Arc<dyn Backend>>> + Send + Sync + 'static,
) {
    GLOBAL.write().register(scheme, factory);
}

/// Connects to the backend a URL names, through the process-wide registry.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tributary::Result<()> {
/// use tributary::{Event, ConsumerOptions, StartPosition};
/// let backend = tributary::connect("memory://").await?;
/// let producer = backend.producer("orders").await?;
/// producer.send(Event::new("hello").with_key("k")).await?;
/// let consumer = backend
///     .consumer("orders", ConsumerOptions::new("billing").start(StartPosition::Earliest))
///     .await?;
/// let delivery = consumer.receive().await?;
/// assert_eq!(delivery.event.payload.as_ref(), b"hello");
/// delivery.ack();
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<Arc<dyn Backend>> {
    let registry = global();
    registry.connect(url).await
}

/// A copy of the process-wide registry (every backend registered so far), for a program that
/// wants to hold its own and add to it.
pub fn global() -> Registry {
    GLOBAL.read().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999999999999"), None);
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("-1"), None);
    }

    #[test]
    fn host_lists_become_the_hosts_option() {
        let u = parse_url("kafka://u:p@a:1,b:2/x?acks=all").unwrap();
        assert_eq!(u.host_str(), Some("a"));
        assert_eq!(u.port(), Some(1));
        assert_eq!(u.password(), Some("p"));
        let hosts: Vec<_> = u
            .query_pairs()
            .filter(|(k, _)| k == "hosts")
            .map(|(_, v)| v.into_owned())
            .collect();
        assert_eq!(hosts, ["a:1,b:2"]);
        assert!(u.query_pairs().any(|(k, v)| k == "acks" && v == "all"));
        assert!(parse_url("kafka://a:1,b:2?hosts=c:3").is_err());
        assert_eq!(parse_url("memory://").unwrap().query(), None);
    }

    #[test]
    fn secrets_never_show() {
        let u = Url::parse("kafka://user:hunter2@h:9092?sasl.password=pw&rdkafka.acks=all&acks=x")
            .unwrap();
        let shown = redact(&u);
        assert!(
            !shown.contains("hunter2") && !shown.contains("pw&"),
            "{shown}"
        );
        // A pass-through setting is shown; an option no backend knows is not.
        assert!(shown.contains("rdkafka.acks=all&acks=***"), "{shown}");
        let e = parse_url("kafka://user:hunter2@[bad").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = parse_url("user:hunter2@host:1").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let url = Url::parse("memory://?partitions=hunter2&auto_create=hunter3").unwrap();
        let mut options = UrlOptions::new(&url).unwrap();
        let e = options.take::<u32>("partitions").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = options.take_bool("auto_create").unwrap_err();
        assert!(!e.to_string().contains("hunter3"), "{e}");
    }

    #[tokio::test]
    async fn unknown_and_uncompiled_schemes_say_what_to_do() {
        let e = connect("kafka://localhost:9092").await.unwrap_err();
        assert!(e.to_string().contains("tributary-kafka"), "{e}");
        // The TLS scheme names its crate too, not "unknown scheme".
        let e = connect("pulsar+ssl://localhost:6651").await.unwrap_err();
        assert!(e.to_string().contains("tributary-pulsar"), "{e}");
        let e = connect("nats://x").await.unwrap_err();
        assert!(
            e.to_string().contains("unknown URL scheme `nats://`"),
            "{e}"
        );
        assert!(e.to_string().contains("memory://"), "{e}");
    }

    /// A backend's constructor need not name its backend: the registry does, as it does for
    /// every error of the backend once connected.
    #[tokio::test]
    async fn a_failing_constructors_error_names_the_backend_and_the_operation() {
        let mut registry = Registry::new();
        registry.register_backend("broken", |_url| async {
            Err::<crate::local::LocalBackend, _>(Error::unavailable("no broker answered"))
        });
        let Err(e) = registry.connect("broken://host:1").await else {
            panic!("the constructor fails")
        };
        assert_eq!(e.backend(), Some("broken"), "{e:?}");
        assert_eq!(e.operation(), Some("connect"), "{e:?}");
        assert_eq!(e.stream(), None, "connecting names no stream: {e:?}");
        assert_eq!(e.kind(), crate::ErrorKind::Unavailable);

        // A backend that names itself keeps its own name.
        registry.register_backend("alias", |_url| async {
            Err::<crate::local::LocalBackend, _>(Error::config("bad option").with_backend("kafka"))
        });
        let Err(e) = registry.connect("alias://").await else {
            panic!("the constructor fails")
        };
        assert_eq!(e.backend(), Some("kafka"), "{e:?}");

        // The built-in schemes too, through the global registry.
        let e = connect("file:///dev/null/not-a-directory")
            .await
            .unwrap_err();
        assert_eq!(e.backend(), Some("file"), "{e:?}");
        assert_eq!(e.operation(), Some("connect"), "{e:?}");
    }
}
