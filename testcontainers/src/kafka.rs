//! Kafka's own tools, run against a fixture's broker, for tests that check tributary against
//! what Kafka itself reports.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use crate::peers_dir;

/// A program from the installed Kafka's `bin/` (`kafka-console-producer`, `kafka-run-class`…).
pub fn tool(name: &str) -> PathBuf {
    peers_dir().join("kafka/current/bin").join(name)
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
