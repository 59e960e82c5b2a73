//! What is secret, and how it is kept out of logs, errors and metrics. One rule, shared by the
//! URL redactor, the option parser and the backends:
//!
//! - the password of a URL's user info (`kafka://user:PASSWORD@host`), whether or not the rest
//!   parses as a URL;
//! - every option under `sasl.` (credentials, OAuth settings with tokens in them, JAAS), and
//!   any option whose name says key, password, secret, token, credential, JAAS, OAuth, bearer,
//!   private, signature, SAS or connection string, misspellings included (`sasl.pasword`);
//! - in a URL, every option tributary does not know ([`SHOWN_OPTIONS`], and pass-through
//!   settings such as `rdkafka.acks` whose own name is not secret): an unknown option may be a
//!   credential under a name nobody foresaw;
//! - in an error about an option's value, the value unless it is a number or a size (a
//!   misplaced password is still a password: `fsync=hunter2` is not echoed);
//! - anything the bridge's configuration took from `${VAR}` (the bridge shows the reference,
//!   never the value).

use std::borrow::Cow;

use url::Url;

use crate::names::within_edits;

/// What a hidden value is shown as.
pub const MASK: &str = "***";

/// Options of tributary's backends whose values are settings, never credentials: their values
/// are shown in redacted URLs. A backend that adds a harmless option lists it here; until then
/// its value is masked, which is the safe way to be wrong.
pub const SHOWN_OPTIONS: &[&str] = &[
    // Local backend.
    "partitions",
    "auto_create",
    "max_event_bytes",
    "segment_bytes",
    "retention_bytes",
    "retention",
    "fsync",
    "fsync_interval",
    "group_lease",
    // Kafka.
    "hosts",
    "client_id",
    "timeout",
    "send_timeout",
    "commit_interval",
    "join_timeout",
    "revoke_grace",
    "replication",
    // Pub/Sub.
    "endpoint",
    "create_subscriptions",
    "ordering",
    "ack_deadline",
    "batch_count",
    "batch_bytes",
    "batch_delay",
];

/// Prefixes of options passed through to a client library (Kafka's librdkafka settings): shown
/// when the setting's own name is not secret.
const PASS_THROUGH: &[&str] = &["rdkafka.", "producer.", "consumer."];

/// Words that make an option secret wherever they appear in its name.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "jaas",
    "oauth",
    "bearer",
    "private",
    "signature",
    "apikey",
    "api_key",
    "connectionstring",
    "connection_string",
    "sharedaccess",
    "key",
];

/// Name segments that make an option secret (`sasl.` covers everything under it).
const SECRET_SEGMENTS: &[&str] = &["sasl", "sas", "sig", "pwd", "pass", "auth", "jwt"];

/// Secret words whose misspellings are secret too, with the edit distance still taken for them.
const MISSPELLABLE: &[(&str, usize)] = &[
    ("password", 2),
    ("passwd", 1),
    ("secret", 2),
    ("credential", 2),
    ("credentials", 2),
    ("token", 1),
];

/// Whether the value of an option named `name` (a URL option, a pass-through client setting)
/// must never be shown. See the module documentation for the rule.
///
/// ```
/// use tributary::backend::is_secret_option;
/// assert!(is_secret_option("rdkafka.sasl.oauthbearer.config"));
/// assert!(is_secret_option("rdkafka.sasl.pasword"));
/// assert!(is_secret_option("ssl.key.password"));
/// assert!(is_secret_option("pasword"));
/// assert!(!is_secret_option("partitions"));
/// assert!(!is_secret_option("rdkafka.ssl.ca.location"));
/// ```
pub fn is_secret_option(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if SECRET_WORDS.iter().any(|w| name.contains(w)) {
        return true;
    }
    name.split(['.', '_', '-']).any(|segment| {
        SECRET_SEGMENTS.contains(&segment)
            || MISSPELLABLE
                .iter()
                .any(|(word, distance)| within_edits(segment, word, *distance))
    })
}

/// Whether a URL option's value may be shown: tributary knows the option and its name is not
/// secret.
fn shown_in_url(name: &str) -> bool {
    if is_secret_option(name) {
        return false;
    }
    SHOWN_OPTIONS.contains(&name)
        || PASS_THROUGH
            .iter()
            .any(|p| name.len() > p.len() && name.starts_with(p))
}

/// An option's value for an error message: the value when it is a number or a size or a
/// duration (what a typo in those looks like), [`MASK`] otherwise.
///
/// ```
/// use tributary::backend::shown_value;
/// assert_eq!(shown_value("partitions", "0"), "0");
/// assert_eq!(shown_value("timeout", "10x"), "10x");
/// assert_eq!(shown_value("fsync", "hunter2"), "***");
/// assert_eq!(shown_value("sasl.password", "123456"), "***");
/// ```
pub fn shown_value<'a>(name: &str, value: &'a str) -> Cow<'a, str> {
    let numeric = value.len() <= 24
        && value
            .trim_start_matches(['-', '+'])
            .starts_with(|c: char| c.is_ascii_digit())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | ' '))
        && value.chars().filter(|c| c.is_ascii_alphabetic()).count() <= 3;
    if numeric && !is_secret_option(name) {
        Cow::Borrowed(value)
    } else {
        Cow::Borrowed(MASK)
    }
}

/// The URL with its password, secret options, unknown options and fragment masked, safe for
/// logs and error messages.
///
/// ```
/// let url = url::Url::parse("kafka://alice:hunter2@h:9092?sasl.password=pw&acks_x=1&timeout=5s").unwrap();
/// assert_eq!(
///     tributary::backend::redact(&url),
///     "kafka://alice:***@h:9092?sasl.password=***&acks_x=***&timeout=5s"
/// );
/// ```
pub fn redact(url: &Url) -> String {
    redact_text(url.as_str())
}

/// [`redact`] for text that may not parse as a URL (`user:pw@host:1`, `kafka://a:1,b:2/x`, a
/// configuration value with `${VAR}` in it): the same parts are masked, found by their
/// punctuation, and everything else is kept as written.
///
/// ```
/// use tributary::backend::redact_text;
/// assert_eq!(redact_text("u:hunter2@h:1"), "u:***@h:1");
/// assert_eq!(redact_text("kafka://u:pw@a:1,b:2?rdkafka.sasl.pasword=x"), "kafka://u:***@a:1,b:2?rdkafka.sasl.pasword=***");
/// assert_eq!(redact_text("file:///d?fsync=always"), "file:///d?fsync=always");
/// ```
pub fn redact_text(text: &str) -> String {
    let (scheme, rest) = match text.find("://") {
        Some(at) => text.split_at(at + 3),
        None => ("", text),
    };
    // User info ends at the last `@` before the query, so a password holding `/` or `#`
    // (invalid, but this text may be invalid) is still masked whole.
    let query_start = rest.find('?').unwrap_or(rest.len());
    let host_start = rest[..query_start].rfind('@').map_or(0, |at| at + 1);
    let authority_end = rest[host_start..]
        .find(['/', '?', '#'])
        .map_or(rest.len(), |end| host_start + end);
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = String::with_capacity(text.len());
    out.push_str(scheme);
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..=colon]);
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = match tail.find('#') {
        Some(at) => (&tail[..at], Some(())),
        None => (tail, None),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((name, _)) => {
                        let decoded = decode(name);
                        out.push_str(name);
                        out.push('=');
                        if shown_in_url(&decoded) {
                            out.push_str(&pair[name.len() + 1..]);
                        } else {
                            out.push_str(MASK);
                        }
                    }
                    // A flag, or the tail of a value holding an unencoded `&`.
                    None if shown_in_url(&decode(pair)) => out.push_str(pair),
                    None => out.push_str(MASK),
                }
            }
        }
        None => out.push_str(before_fragment),
    }
    if fragment.is_some() {
        out.push('#');
        out.push_str(MASK);
    }
    out
}

fn decode(name: &str) -> String {
    url::form_urlencoded::parse(format!("{name}=").as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issues_secrets_are_masked() {
        for (text, secret) in [
            ("u:SECRETPW@h:1", "SECRETPW"),
            ("file:///d?fsync=always&x=SECRETPW", "SECRETPW"),
            (
                "kafka://h:1?rdkafka.sasl.oauthbearer.config=principal=p%20extension_token=SECRETPW",
                "SECRETPW",
            ),
            ("kafka://h:1?rdkafka.sasl.pasword=SECRETPW", "SECRETPW"),
            ("kafka://h:1?rdkafka.pasword=SECRETPW", "SECRETPW"),
            ("kafka://h:1?rdkafka.ssl.key.pem=SECRETPW", "SECRETPW"),
            (
                "kafka://h:1?consumer.ssl.keystore.password=SECRETPW",
                "SECRETPW",
            ),
            ("kafka://u:SECRETPW@[bad", "SECRETPW"),
            (
                "eventhubs://ns?connection_string=Endpoint;SharedAccessKey=SECRETPW",
                "SECRETPW",
            ),
            ("kinesis://r?access_key=AK&secret_key=SECRETPW", "SECRETPW"),
            ("pubsub://p#SECRETPW", "SECRETPW"),
            ("memory://x?unknown_option=SECRETPW", "SECRETPW"),
            ("user:pa:ss@word@host", "ss@word"),
            ("kafka://u:pa/SECRETPW@h:1/t", "SECRETPW"),
            ("kafka://h:1?sasl.password=a&SECRETPW", "SECRETPW"),
        ] {
            let shown = redact_text(text);
            assert!(!shown.contains(secret), "{text} → {shown}");
        }
        let url = Url::parse("kafka://alice:SECRETPW@h:1?rdkafka.acks=all&partitions=4").unwrap();
        assert_eq!(
            redact(&url),
            "kafka://alice:***@h:1?rdkafka.acks=all&partitions=4"
        );
    }

    #[test]
    fn settings_stay_readable() {
        for text in [
            "file:///var/lib/app?fsync=interval&fsync_interval=50ms",
            "kafka://a:9092,b:9092/x?rdkafka.acks=all&client_id=bridge",
            "kafka://${BROKERS}?timeout=5s",
            "memory://",
            "not a url at all",
        ] {
            assert_eq!(redact_text(text), text);
        }
    }

    #[test]
    fn secret_names_include_misspellings_but_not_lookalikes() {
        for name in [
            "sasl.username",
            "password",
            "pasword",
            "passwrod",
            "ssl.key.password",
            "ssl_keystore_location",
            "secert",
            "tokn",
            "sas_key",
            "api_key",
            "credentails",
        ] {
            assert!(is_secret_option(name), "{name}");
        }
        for name in [
            "partitions",
            "timeout",
            "retention",
            "record",
            "ssl.ca.location",
            "acks",
            "topic",
            "ordering",
        ] {
            assert!(!is_secret_option(name), "{name}");
        }
    }
}
