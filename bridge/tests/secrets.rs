//! Secrets never reach `bridge validate`, the daemon's log, its start error, its operations
//! endpoint or the command line's errors: passwords in user info (parseable or not), options
//! under `sasl.`, misspelt secret options, values from `${VAR}`, and option values.

mod harness;

use std::time::Duration;

use harness::{Daemon, closed_port, http_get, run, validate};

const SECRETS: [&str; 6] = [
    "SECRETPW1",
    "SECRETPW2",
    "SECRETPW3",
    "SECRETPW4",
    "SECRETPW5",
    "SECRETPW6",
];

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
    }
}

/// A Kafka sink URL with a SASL password, on a port nothing listens on.
fn plain_sink() -> String {
    format!(
        "kafka://127.0.0.1:{}?rdkafka.security.protocol=sasl_plaintext&rdkafka.sasl.mechanisms=PLAIN&rdkafka.sasl.username=bridge&rdkafka.sasl.password=SECRETPW1&timeout=1s",
        closed_port()
    )
}

/// A Kafka sink URL with an OAuth setting holding a token (refused by this build of
/// librdkafka, which has no OpenSSL: the refusal must not show it either).
const OAUTH_SINK: &str = "kafka://127.0.0.1:1?rdkafka.security.protocol=sasl_plaintext&rdkafka.sasl.mechanisms=OAUTHBEARER&rdkafka.sasl.oauthbearer.config=principal%3Dbridge%20extension_token%3DSECRETPW1";

fn route(name: &str, source: &str, sink: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nsource = {{ url = \"{source}\", stream = \"in\" }}\nsink = {{ url = \"{sink}\", stream = \"out\" }}\n"
    )
}

#[test]
fn validate_shows_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("BRIDGE_TEST_SECRET", "SECRETPW3")];
    // A good file: its routes are described, with the secrets masked.
    let good = format!(
        "{}{}",
        route("plain", "memory://", &plain_sink()),
        route(
            "env",
            "memory://",
            "kafka://bridge:${BRIDGE_TEST_SECRET}@127.0.0.1:1?client_id=${BRIDGE_TEST_SECRET}&rdkafka.security.protocol=sasl_plaintext"
        ),
    );
    let (code, out) = validate(dir.path(), "good.toml", &good, &env);
    println!("validate, good file:\n{out}");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("rdkafka.sasl.password=***"), "{out}");
    assert!(
        out.contains("${BRIDGE_TEST_SECRET}"),
        "the reference is shown: {out}"
    );
    assert_no_secret("validate", &out);
    // A bad file: the problems are named, the secrets are not.
    let bad = format!(
        "{}{}{}{}",
        route("oauth", "memory://", OAUTH_SINK),
        route(
            "misspelt",
            "memory://",
            "kafka://127.0.0.1:1?rdkafka.sasl.pasword=SECRETPW2&bogus=SECRETPW6"
        ),
        route(
            "no-scheme",
            "user:${BRIDGE_TEST_SECRET}@host:1",
            "memory://"
        ),
        route("fsync", "file:///tmp/x?fsync=SECRETPW5", "memory://"),
    );
    let (code, out) = validate(dir.path(), "bad.toml", &bad, &env);
    println!("validate, bad file:\n{out}");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("route[2].source.url"), "{out}");
    assert_no_secret("validate", &out);
}

#[test]
fn the_daemon_shows_no_secret_in_its_log_start_error_or_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    // librdkafka refuses the misspelt option: the daemon does not start, and says why.
    let config = dir.path().join("refused.toml");
    std::fs::write(
        &config,
        route(
            "misspelt",
            "memory://",
            "kafka://127.0.0.1:1?rdkafka.sasl.pasword=SECRETPW2",
        ),
    )
    .unwrap();
    let (code, out) = run(&["bridge", "--config", config.to_str().unwrap()], &[], "");
    println!("start refused:\n{out}");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("sasl.pasword"), "the option is named: {out}");
    assert_no_secret("the start error", &out);

    // A broker that cannot be reached: the daemon runs, reports, and stops on SIGTERM.
    let config = dir.path().join("unreachable.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n{}",
            route("plain", "memory://", &plain_sink())
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, &[("RUST_LOG", "info")]);
    let log = daemon.wait_for_log("route `plain`: memory://", Duration::from_secs(30));
    assert!(log.contains("rdkafka.sasl.password=***"), "{log}");
    let addr = daemon.addr(Duration::from_secs(60));
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (_, body) = http_get(&addr, path);
        assert_no_secret(path, &body);
    }
    let (_, _, log) = daemon.terminate(Duration::from_secs(60));
    println!("daemon log:\n{log}");
    assert_no_secret("the daemon's log", &log);
}

#[test]
fn command_line_errors_show_no_secret() {
    let (code, out) = run(&["produce", "u:SECRETPW4@h:1", "s"], &[], "x\n");
    println!("produce: {out}");
    assert_ne!(code, Some(0));
    assert_no_secret("produce", &out);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}?fsync=SECRETPW5", dir.path().display());
    let (code, out) = run(&["consume", &url, "s", "--idle-exit", "1s"], &[], "");
    println!("consume: {out}");
    assert_ne!(code, Some(0));
    assert!(out.contains("fsync"), "the option is named: {out}");
    assert_no_secret("consume", &out);
}
