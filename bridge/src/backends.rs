//! The backends compiled into this program, and checking a URL for them without connecting:
//! what `bridge validate` needs to agree with what the daemon will refuse at start.

use tributary::backend::{KNOWN_SCHEMES, parse_url, within_edits};
use tributary::{Error, Result, Url};

/// Schemes this program can connect to (its cargo features decide).
pub fn compiled_schemes() -> Vec<&'static str> {
    let mut schemes = vec!["memory", "file"];
    if cfg!(feature = "kafka") {
        schemes.push("kafka");
    }
    if cfg!(feature = "pubsub") {
        schemes.push("pubsub");
    }
    if cfg!(feature = "pulsar") {
        schemes.extend(["pulsar", "pulsar+ssl"]);
    }
    if cfg!(feature = "eventhubs") {
        schemes.push("eventhubs");
    }
    if cfg!(feature = "kinesis") {
        schemes.push("kinesis");
    }
    schemes
}

/// Makes every backend compiled in reachable through `tributary::connect`.
pub fn register() {
    #[cfg(feature = "kafka")]
    tributary_kafka::register();
    #[cfg(feature = "pubsub")]
    tributary_pubsub::register();
    #[cfg(feature = "pulsar")]
    tributary_pulsar::register();
    #[cfg(feature = "eventhubs")]
    tributary_eventhubs::register();
    #[cfg(feature = "kinesis")]
    tributary_kinesis::register();
}

/// Checks `url` as connecting to it would, without connecting: the scheme is compiled in, and
/// the backend's own parser accepts every option (Kafka: librdkafka's settings too).
pub fn check_url(url: &str) -> Result<()> {
    let parsed = parse_url(url)?;
    check(&parsed)
}

fn check(url: &Url) -> Result<()> {
    match url.scheme() {
        "memory" | "file" => tributary::local::LocalConfig::from_url(url).map(drop),
        #[cfg(feature = "kafka")]
        "kafka" => tributary_kafka::check_url(url),
        #[cfg(feature = "pubsub")]
        "pubsub" => tributary_pubsub::check_url(url),
        #[cfg(feature = "pulsar")]
        "pulsar" | "pulsar+ssl" => tributary_pulsar::PulsarConfig::from_url(url).map(drop),
        #[cfg(feature = "eventhubs")]
        "eventhubs" => tributary_eventhubs::EventHubsConfig::from_url(url).map(drop),
        #[cfg(feature = "kinesis")]
        "kinesis" => tributary_kinesis::KinesisConfig::from_url(url).map(drop),
        scheme => Err(match KNOWN_SCHEMES.iter().find(|(s, _)| *s == scheme) {
            // The bridge's features are named after the backend crates (`pulsar+ssl://` is
            // served by the `pulsar` feature), not after the schemes.
            Some((_, krate)) => Error::config(format!(
                "`{scheme}://` needs the {krate} backend, which is not compiled into this program (build it with the `{}` feature of tributary-bridge)",
                krate.strip_prefix("tributary-").unwrap_or(krate)
            )),
            None => {
                let compiled: Vec<String> = compiled_schemes()
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect();
                let hint = compiled_schemes()
                    .into_iter()
                    .chain(KNOWN_SCHEMES.iter().map(|(s, _)| *s))
                    .find(|known| within_edits(scheme, known, 1))
                    .map(|known| format!(" (did you mean `{known}://`?)"))
                    .unwrap_or_default();
                Error::config(format!(
                    "unknown URL scheme `{scheme}://`{hint}; this program serves {}",
                    compiled.join(", ")
                ))
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_as_connecting_would_without_connecting() {
        for (url, needle) in [
            (
                "kafak://h:1",
                "unknown URL scheme `kafak://` (did you mean `kafka://`?)",
            ),
            ("kinesis://h:1", "needs the tributary-kinesis backend"),
            ("memory://a/path", "memory URLs take no path"),
            ("file:///tmp/x?fsync=bogus", "option `fsync`"),
            ("memory://?partitons=2", "unknown option `partitons`"),
        ] {
            let e = check_url(url).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
        }
        check_url("memory://").unwrap();
        check_url("file:///tmp/x?fsync=never").unwrap();
    }

    #[cfg(not(feature = "pulsar"))]
    #[test]
    fn a_scheme_names_the_feature_of_its_crate_not_itself() {
        let e = check_url("pulsar+ssl://h:6651").unwrap_err().to_string();
        assert!(
            e.contains("needs the tributary-pulsar backend") && e.contains("the `pulsar` feature"),
            "{e}"
        );
    }
}
