//! Docker mode: the official images, driven through the `docker` command line (no daemon API
//! client to compile). Every container gets the same readiness probe as its native twin, its
//! log is followed into the usual log file, and a watchdog removes it if the test process dies.
//!
//! Not exercised on the project's CI machines, which have no Docker engine.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::process::{Process, free_ports_for, spawn_watchdog};
use crate::{Launcher, Mode, Peer, PeerError, Reason, Server, probe, wait_ready};

/// A running container; removed (with `docker rm -f`) on drop.
#[derive(Debug)]
pub(crate) struct Container {
    id: String,
    _watchdog: Option<(std::process::Child, std::process::ChildStdin)>,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The image for each peer; `TRIBUTARY_DOCKER_IMAGE_<PEER>` overrides it.
fn image(peer: Peer) -> String {
    let variable = format!("TRIBUTARY_DOCKER_IMAGE_{}", peer.name().to_uppercase());
    std::env::var(variable).unwrap_or_else(|_| {
        match peer {
            Peer::Kafka => "apache/kafka:4.1.1",
            Peer::Pulsar => "apachepulsar/pulsar:4.0.7",
            Peer::PubSub => "gcr.io/google.com/cloudsdktool/google-cloud-cli:emulators",
            Peer::Kinesis => "ghcr.io/etspaceman/kinesis-mock:0.5.2",
            Peer::EventHubs => "mcr.microsoft.com/azure-messaging/eventhubs-emulator:latest",
            Peer::Azurite => "mcr.microsoft.com/azure-storage/azurite:3.37.0",
            Peer::DynamoDb => "",
        }
        .to_string()
    })
}

pub(crate) fn start(launcher: &Launcher, peer: Peer) -> Result<Server, PeerError> {
    if !Command::new("docker")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Err(PeerError::new(peer, Reason::NotInstalled, "TRIBUTARY_PEERS_MODE=docker but `docker version` fails (no engine?)")
            .fix("start Docker, or unset TRIBUTARY_PEERS_MODE to use installed servers (scripts/peers/install-all.sh)"));
    }
    // Picked together (distinct): the second is Pulsar's HTTP port.
    let [main_port, second_port] =
        <[u16; 2]>::try_from(free_ports_for(peer, 2)?).expect("two ports picked");
    let address = format!("127.0.0.1:{main_port}");
    let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--rm".into()];
    let mut http_address = None;
    // Brokers that advertise their own address must see the port the host sees, so those map
    // the same number on both sides.
    let (url, command): (String, Vec<String>) = match peer {
        Peer::Kafka => {
            args.extend(publish(main_port, main_port));
            for (k, v) in [
                ("KAFKA_NODE_ID", "1".to_string()),
                ("KAFKA_PROCESS_ROLES", "broker,controller".into()),
                (
                    "KAFKA_LISTENERS",
                    format!("PLAINTEXT://0.0.0.0:{main_port},CONTROLLER://localhost:9093"),
                ),
                (
                    "KAFKA_ADVERTISED_LISTENERS",
                    format!("PLAINTEXT://{address}"),
                ),
                ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER".into()),
                (
                    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                    "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT".into(),
                ),
                ("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093".into()),
                ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1".into()),
                ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1".into()),
                ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1".into()),
                (
                    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
                    "1".into(),
                ),
                ("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR", "1".into()),
                ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0".into()),
            ] {
                args.extend(["-e".into(), format!("{k}={v}")]);
            }
            (format!("kafka://{address}"), vec![])
        }
        Peer::Pulsar => {
            let http = second_port;
            args.extend(publish(main_port, main_port));
            args.extend(publish(http, http));
            for (k, v) in [
                ("brokerServicePort", main_port.to_string()),
                ("webServicePort", http.to_string()),
                ("advertisedAddress", "127.0.0.1".into()),
                (
                    "PULSAR_MEM",
                    "-Xms256m -Xmx512m -XX:MaxDirectMemorySize=256m".into(),
                ),
            ] {
                args.extend(["-e".into(), format!("{k}={v}")]);
            }
            let http = format!("127.0.0.1:{http}");
            http_address = Some(http.clone());
            (
                format!("pulsar://{address}?admin=http://{http}"),
                vec![
                    "sh".into(),
                    "-c".into(),
                    "bin/apply-config-from-env.py conf/standalone.conf && exec bin/pulsar standalone -nfw -nss".into(),
                ],
            )
        }
        Peer::PubSub => {
            args.extend(publish(main_port, 8085));
            (
                format!("pubsub://tributary-test?endpoint=http://{address}"),
                [
                    "gcloud",
                    "beta",
                    "emulators",
                    "pubsub",
                    "start",
                    "--project=tributary-test",
                    "--host-port=0.0.0.0:8085",
                ]
                .map(String::from)
                .to_vec(),
            )
        }
        Peer::Kinesis => {
            args.extend(publish(main_port, 4568));
            for kv in [
                "KINESIS_MOCK_PLAIN_PORT=4568",
                "CREATE_STREAM_DURATION=0ms",
                "DELETE_STREAM_DURATION=0ms",
                "UPDATE_STREAM_DURATION=0ms",
            ] {
                args.extend(["-e".into(), kv.into()]);
            }
            (
                format!("kinesis://us-east-1?endpoint=http://{address}"),
                vec![],
            )
        }
        Peer::Azurite => {
            args.extend(publish(main_port, 10000));
            (
                format!("http://{address}/{}", crate::AZURITE_ACCOUNT),
                [
                    "azurite-blob",
                    "--blobHost",
                    "0.0.0.0",
                    "--blobPort",
                    "10000",
                    "--skipApiVersionCheck",
                ]
                .map(String::from)
                .to_vec(),
            )
        }
        Peer::DynamoDb => {
            return Err(PeerError::new(
                peer,
                Reason::Unsupported,
                "dynalite has no official image (and DynamoDB Local's licence is not open source); docker mode does not start it",
            )
            .fix("TRIBUTARY_PEERS_MODE=external TRIBUTARY_DYNAMODB_URL=http://HOST:PORT"));
        }
        Peer::EventHubs => {
            return Err(PeerError::new(
                peer,
                Reason::Unsupported,
                "the Event Hubs emulator image needs Azurite and an entity config; docker mode does not start it",
            )
            .fix("TRIBUTARY_PEERS_MODE=external TRIBUTARY_EVENTHUBS_URL=eventhubs://…"));
        }
    };
    args.push(image(peer));
    args.extend(command);

    let output = Command::new("docker")
        .args(&args)
        .output()
        .map_err(|e| PeerError::new(peer, Reason::StartFailed, format!("docker run: {e}")))?;
    if !output.status.success() {
        return Err(PeerError::new(
            peer,
            Reason::StartFailed,
            format!(
                "docker run {} failed: {}",
                image(peer),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let container = Container {
        _watchdog: spawn_watchdog(&format!("docker rm -f {id}"), "true"),
        id: id.clone(),
    };
    let log = launcher.log_path(peer);
    let mut follower = logs(&id, &log)
        .map_err(|e| PeerError::new(peer, Reason::StartFailed, format!("docker logs: {e}")))?;
    let ready = match peer {
        Peer::Kafka => wait_ready(launcher, peer, &mut follower, || probe::kafka(&address)),
        Peer::Pulsar => {
            let http = http_address.clone().expect("set above");
            wait_ready(launcher, peer, &mut follower, || probe::pulsar(&http))
        }
        Peer::PubSub => wait_ready(launcher, peer, &mut follower, || probe::grpc(&address)),
        Peer::Kinesis => wait_ready(launcher, peer, &mut follower, || probe::kinesis(&address)),
        Peer::Azurite => wait_ready(launcher, peer, &mut follower, || probe::blob(&address)),
        Peer::EventHubs | Peer::DynamoDb => unreachable!("rejected above"),
    };
    ready?;
    Ok(Server {
        peer,
        mode: Mode::Docker,
        url,
        address,
        http_address,
        log: Some(log),
        startup: Duration::ZERO,
        // The log follower, not the server: the container itself goes with `container`.
        process: Mutex::new(Some(follower)),
        _container: Some(container),
        data_dir: None,
        recipe: None,
        shared_by_run: false,
    })
}

fn publish(host: u16, container: u16) -> [String; 2] {
    ["-p".into(), format!("127.0.0.1:{host}:{container}")]
}

fn logs(id: &str, log: &Path) -> std::io::Result<Process> {
    let mut command = Command::new("docker");
    command.args(["logs", "-f", id]);
    Process::spawn(command, log, None)
}
