//! Kafka beyond the shared plaintext broker: a broker with TLS and SASL listeners and a
//! throwaway certificate authority, and Kafka's own tools, for tests that check tributary
//! against what Kafka itself reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::native::{KafkaExtras, kafka as start_kafka};
use crate::{Launcher, Mode, Peer, PeerError, Reason, Server, peers_dir, peers_required};

/// A broker with, beside its plaintext listener, a TLS listener (`SSL`) and a SASL-over-TLS
/// listener (`SASL_SSL`) taking SCRAM-SHA-512 and PLAIN, with certificates from a certificate
/// authority made for this broker alone. Native mode only. Stops (and its certificates and
/// data go) when dropped.
#[derive(Debug)]
pub struct SecureKafka {
    /// The broker; its `url()` and `address()` are the plaintext listener's (for setup).
    pub server: Server,
    /// `host:port` of the TLS listener.
    pub ssl_address: String,
    /// `host:port` of the SASL_SSL listener.
    pub sasl_ssl_address: String,
    /// The certificate authority that signed the broker's certificate (PEM).
    pub ca_file: PathBuf,
    /// A user known to SCRAM-SHA-512 and PLAIN.
    pub user: String,
    /// Its password (random per broker).
    pub password: String,
}

/// Starts a [`SecureKafka`]: makes the CA and the broker's key and certificate with `openssl`
/// (SAN `127.0.0.1` and `localhost`), starts the broker, and creates the SCRAM user with
/// Kafka's own `ConfigCommand`.
pub fn start_secure() -> Result<SecureKafka, PeerError> {
    let peer = Peer::Kafka;
    let launcher =
        Launcher::from_env().map_err(|e| PeerError::new(peer, Reason::Unsupported, e))?;
    if launcher.mode != Mode::Native {
        return Err(PeerError::new(
            peer,
            Reason::Unsupported,
            "the TLS/SASL broker is only started in native mode",
        ));
    }
    let user = "alice".to_string();
    let password = format!("pw-{}", random_hex());
    let plain_users = format!("user_{user}=\"{password}\"");
    let extras = KafkaExtras {
        listeners: vec![("SSL", "SSL"), ("SASL_SSL", "SASL_SSL")],
        prepare: Some(Box::new(|data: &Path| make_certificates(&data.join("tls")))),
        settings: Some(Box::new(move |_ports: &[u16], data: &Path| {
            vec![
                "ssl.keystore.type=PEM".into(),
                format!(
                    "ssl.keystore.location={}",
                    data.join("tls/broker-keystore.pem").display()
                ),
                "sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN".into(),
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;".into(),
                format!("listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"),
            ]
        })),
    };
    let (server, ports) = start_kafka(&launcher, &extras)?;
    let data = server
        .data_dir
        .clone()
        .expect("a native broker has a data directory");
    let scram = Command::new(tool("kafka-run-class"))
        .arg("kafka.admin.ConfigCommand")
        .args(["--bootstrap-server", server.address(), "--alter"])
        .args([
            "--add-config",
            &format!("SCRAM-SHA-512=[password={password}]"),
        ])
        .args(["--entity-type", "users", "--entity-name", &user])
        .env("KAFKA_HEAP_OPTS", "-Xmx256m")
        .env("KAFKA_TIERED_STOP", "1")
        .output()
        .map_err(|e| {
            PeerError::new(peer, Reason::StartFailed, format!("run ConfigCommand: {e}"))
        })?;
    if !scram.status.success() {
        return Err(PeerError::new(
            peer,
            Reason::StartFailed,
            format!(
                "creating the SCRAM user failed: {}",
                String::from_utf8_lossy(&scram.stderr)
            ),
        ));
    }
    Ok(SecureKafka {
        server,
        ssl_address: format!("127.0.0.1:{}", ports[0]),
        sasl_ssl_address: format!("127.0.0.1:{}", ports[1]),
        ca_file: data.join("tls/ca.pem"),
        user,
        password,
    })
}

/// [`start_secure`], or `None` after a loud skip notice when it cannot run (a panic under
/// `TRIBUTARY_REQUIRE_PEERS=1`).
pub fn require_secure() -> Option<SecureKafka> {
    match start_secure() {
        Ok(kafka) => Some(kafka),
        Err(error) if peers_required() => {
            panic!("{error}\n  (TRIBUTARY_REQUIRE_PEERS is set, so a missing server is a failure)")
        }
        Err(error) => {
            crate::skipped(&error);
            None
        }
    }
}

/// A CA, and the broker's key and certificate signed by it, in `dir`: `ca.pem` for clients,
/// `broker-keystore.pem` (key and certificate chain) for the broker.
fn make_certificates(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let openssl = |args: &[&str]| -> Result<(), String> {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| format!("run openssl (is it installed?): {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tributary test CA",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "broker.key",
        "-out",
        "broker.csr",
        "-subj",
        "/CN=localhost",
    ])?;
    std::fs::write(
        dir.join("san.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .map_err(|e| format!("write san.cnf: {e}"))?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "broker.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "broker.pem",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
    ])?;
    // Kafka reads a PEM keystore: the unencrypted PKCS#8 key, then the certificate chain.
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).map_err(|e| format!("read {name}: {e}"))
    };
    let keystore = format!(
        "{}{}{}",
        read("broker.key")?,
        read("broker.pem")?,
        read("ca.pem")?
    );
    std::fs::write(dir.join("broker-keystore.pem"), keystore)
        .map_err(|e| format!("write the keystore: {e}"))
}

fn random_hex() -> String {
    let mut bytes = [0u8; 12];
    if let Ok(mut urandom) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut urandom, &mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A program from the installed Kafka's `bin/` (`kafka-console-producer`, `kafka-run-class`…).
pub fn tool(name: &str) -> PathBuf {
    peers_dir().join("kafka/current/bin").join(name)
}

/// The lines `kafka-console-consumer` (the Java client) prints for the first `max_messages`
/// records of `topic`, read from the beginning, with these `--formatter-property` settings
/// (`print.headers=true`, `key.separator=|`, …). A JVM start; the tool gives up after 60 s
/// without a record (and then fewer lines come back), and is killed, with an error, if it has
/// not finished within `deadline`.
pub async fn console_consume(
    bootstrap: &str,
    topic: &str,
    max_messages: usize,
    formatter: &[&str],
    deadline: std::time::Duration,
) -> Result<Vec<String>, String> {
    let mut command = tokio::process::Command::new(tool("kafka-console-consumer"));
    command
        .args(["--bootstrap-server", bootstrap, "--topic", topic])
        .args([
            "--from-beginning",
            "--max-messages",
            &max_messages.to_string(),
        ])
        .args(["--timeout-ms", "60000"])
        .kill_on_drop(true);
    for property in formatter {
        command.args(["--formatter-property", property]);
    }
    let output = tokio::time::timeout(deadline, command.output())
        .await
        .map_err(|_| format!("kafka-console-consumer did not finish within {deadline:?}"))?
        .map_err(|e| format!("run kafka-console-consumer: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "kafka-console-consumer failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// One partition's row of `kafka-consumer-groups --describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    /// The group's committed offset (`CURRENT-OFFSET`), `None` for `-`.
    pub committed: Option<u64>,
    /// The partition's end (`LOG-END-OFFSET`).
    pub end: u64,
    /// `LAG`, `None` for `-`.
    pub lag: Option<u64>,
}

/// What `kafka-consumer-groups --describe --group <group>` says, per partition of `topic`.
/// Runs the Java tool (a JVM start, about two seconds).
pub fn describe_group(
    bootstrap: &str,
    group: &str,
    topic: &str,
) -> Result<BTreeMap<u32, GroupRow>, String> {
    let output = Command::new(tool("kafka-run-class"))
        .arg("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand")
        .args([
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--group",
            group,
        ])
        .env("KAFKA_HEAP_OPTS", "-Xmx256m")
        .env("KAFKA_TIERED_STOP", "1")
        .output()
        .map_err(|e| format!("run kafka-consumer-groups: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "kafka-consumer-groups failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    parse_describe(&stdout, topic)
}

fn parse_describe(text: &str, topic: &str) -> Result<BTreeMap<u32, GroupRow>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .find(|l| l.contains("LOG-END-OFFSET"))
        .ok_or_else(|| format!("no table in kafka-consumer-groups output: {text}"))?
        .split_whitespace()
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("no {name} column in {header:?}"))
    };
    let (topic_at, partition_at) = (column("TOPIC")?, column("PARTITION")?);
    let (current_at, end_at, lag_at) = (
        column("CURRENT-OFFSET")?,
        column("LOG-END-OFFSET")?,
        column("LAG")?,
    );
    let number = |s: &str| s.parse::<u64>().ok();
    let mut rows = BTreeMap::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() <= lag_at || fields[topic_at] != topic {
            continue;
        }
        let partition = number(fields[partition_at])
            .ok_or_else(|| format!("bad partition in {line:?}"))? as u32;
        rows.insert(
            partition,
            GroupRow {
                committed: number(fields[current_at]),
                end: number(fields[end_at]).ok_or_else(|| format!("bad end in {line:?}"))?,
                lag: number(fields[lag_at]),
            },
        );
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_describe_table() {
        let text = "\nGROUP           TOPIC           PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG             CONSUMER-ID     HOST            CLIENT-ID\n\
                    g               t               0          5               12              7               -               -               -\n\
                    g               t               1          -               3               -               m-1             /127.0.0.1      tributary\n\
                    g               other           0          1               1               0               -               -               -\n";
        let rows = parse_describe(text, "t").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[&0],
            GroupRow {
                committed: Some(5),
                end: 12,
                lag: Some(7)
            }
        );
        assert_eq!(rows[&1].committed, None);
        assert_eq!(rows[&1].lag, None);
    }
}
