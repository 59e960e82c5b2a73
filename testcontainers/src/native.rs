//! Native mode: servers installed under the peers cache by `scripts/peers/install-*.sh`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::process::{Process, find_line, free_port_for as port, free_ports_for};
use crate::{Launcher, Mode, Peer, PeerError, Reason, Server, probe, wait_ready};

/// Ports picked with `free_port_for` can be taken by someone else before the server binds them;
/// a start that fails on a bind error is retried with fresh ports.
const ATTEMPTS: usize = 3;

pub(crate) fn start(launcher: &Launcher, peer: Peer) -> Result<Server, PeerError> {
    start_with(launcher, peer, &[])
}

/// Starts `peer` with `extra` command-line options after the fixture's own (Kinesis only).
pub(crate) fn start_with(
    launcher: &Launcher,
    peer: Peer,
    extra: &[String],
) -> Result<Server, PeerError> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match start_once(launcher, peer, extra) {
            Ok(server) => return Ok(server),
            Err(error) if error.reason == Reason::StartFailed && lost_port_race(&error) => {
                last = Some(error)
            }
            Err(error) => return Err(error),
        }
    }
    Err(last.expect("at least one attempt"))
}

fn lost_port_race(error: &PeerError) -> bool {
    error.log_tail.iter().any(|l| {
        l.contains("Address already in use")
            || l.contains("address already in use")
            || l.contains("BindException")
    })
}

fn installed(launcher: &Launcher, peer: Peer, relative: &str) -> Result<PathBuf, PeerError> {
    let path = launcher.peers_dir.join(relative);
    if path.is_file() {
        return Ok(path);
    }
    Err(PeerError::new(
        peer,
        Reason::NotInstalled,
        format!("{} is not installed ({} is missing)", peer, path.display()),
    )
    .fix(format!("scripts/peers/install-all.sh {}", installer(peer)))
    .fix("or run scripts/test, which installs every server and runs the whole suite")
    .fix("or TRIBUTARY_PEERS_MODE=docker / external (see testcontainers/src/lib.rs)"))
}

fn installer(peer: Peer) -> &'static str {
    match peer {
        Peer::Kafka => "kafka",
        Peer::Pulsar => "pulsar",
        Peer::PubSub => "pstest",
        Peer::Kinesis => "ferrokinesis",
        Peer::EventHubs => "eventhubs",
        Peer::Azurite => "azurite",
        Peer::DynamoDb => "dynalite",
    }
}

/// The Event Hubs emulator is this workspace's own binary, not an installed server:
/// `TRIBUTARY_EVENTHUBS_EMULATOR_BIN`, else the one cargo built next to the running test binary
/// (`cargo test --workspace` builds the bin targets of workspace packages).
fn eventhubs_emulator(peer: Peer) -> Result<PathBuf, PeerError> {
    const NAME: &str = "tributary-eventhubs-emulator";
    if let Some(path) =
        std::env::var_os("TRIBUTARY_EVENTHUBS_EMULATOR_BIN").filter(|p| !p.is_empty())
    {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        return Err(PeerError::new(
            peer,
            Reason::NotInstalled,
            format!(
                "TRIBUTARY_EVENTHUBS_EMULATOR_BIN={} is not a file",
                path.display()
            ),
        )
        .fix(format!(
            "cargo build -p {NAME}, then point the variable at target/<profile>/{NAME}"
        )));
    }
    // Test binaries run from <target>/<profile>/deps/; the emulator is in <target>/<profile>/.
    let candidates: Vec<PathBuf> = std::env::current_exe()
        .ok()
        .into_iter()
        .flat_map(|exe| {
            exe.ancestors()
                .skip(1)
                .take(2)
                .map(|dir| dir.join(NAME))
                .collect::<Vec<_>>()
        })
        .collect();
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    Err(PeerError::new(
        peer,
        Reason::NotInstalled,
        format!(
            "the {NAME} binary was not found (looked at {})",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .fix(format!(
        "cargo build -p {NAME} (with the same profile and target directory as the tests)"
    ))
    .fix("or set TRIBUTARY_EVENTHUBS_EMULATOR_BIN to the emulator binary"))
}

/// How to launch a server again on the same ports and data (for [`Server::restart`]).
#[derive(Debug, Clone)]
pub(crate) struct Recipe {
    pub(crate) launcher: Launcher,
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<std::ffi::OsString>,
    pub(crate) probe: Probe,
    /// The server's data, removed by the watchdog if the test process dies.
    pub(crate) scratch: Option<PathBuf>,
}

/// The readiness probe of a server, with the addresses it needs.
#[derive(Debug, Clone)]
pub(crate) enum Probe {
    Kafka(String),
    Pulsar(String),
    Grpc(String),
    Kinesis(String),
    Amqp(String),
    Blob(String),
    DynamoDb(String),
}

impl Probe {
    pub(crate) fn check(&self) -> Result<(), String> {
        match self {
            Probe::Kafka(addr) => probe::kafka(addr),
            Probe::Pulsar(http) => probe::pulsar(http),
            Probe::Grpc(addr) => probe::grpc(addr),
            Probe::Kinesis(addr) => probe::kinesis(addr),
            Probe::Amqp(addr) => probe::amqp(addr),
            Probe::Blob(addr) => probe::blob(addr),
            Probe::DynamoDb(addr) => probe::dynamodb(addr),
        }
    }
}

impl Recipe {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command
    }

    /// Launches the server again (same ports, same data) and waits until it serves.
    pub(crate) fn relaunch(&self, peer: Peer, log: &std::path::Path) -> Result<Process, PeerError> {
        let mut process = spawn(peer, self.command(), log, self.scratch.as_deref())?;
        wait_ready(&self.launcher, peer, &mut process, || self.probe.check())?;
        Ok(process)
    }
}

fn spawn(
    peer: Peer,
    command: Command,
    log: &std::path::Path,
    scratch: Option<&std::path::Path>,
) -> Result<Process, PeerError> {
    Process::spawn(command, log, scratch).map_err(|e| {
        PeerError::new(peer, Reason::StartFailed, format!("cannot launch: {e}")).with_log(log)
    })
}

fn server(
    peer: Peer,
    url: String,
    address: String,
    http: Option<String>,
    process: Process,
    data: Option<PathBuf>,
    recipe: Recipe,
) -> Server {
    Server {
        recipe: Some(recipe),
        peer,
        mode: Mode::Native,
        url,
        address,
        http_address: http,
        log: Some(process.log().to_path_buf()),
        startup: Duration::ZERO,
        process: Mutex::new(Some(process)),
        _container: None,
        data_dir: data,
        shared_by_run: false,
    }
}

fn recipe(
    launcher: &Launcher,
    command: &Command,
    probe: Probe,
    scratch: Option<&PathBuf>,
) -> Recipe {
    Recipe {
        launcher: launcher.clone(),
        program: command.get_program().into(),
        args: command.get_args().map(|a| a.to_owned()).collect(),
        probe,
        scratch: scratch.cloned(),
    }
}

/// Broker settings from the extra listeners' ports and the data directory.
pub(crate) type Settings = dyn Fn(&[u16], &std::path::Path) -> Vec<String>;
/// Writes files the broker needs into its data directory before it starts.
pub(crate) type Prepare = dyn Fn(&std::path::Path) -> Result<(), String>;

/// More for a Kafka broker than the fixture's plain one: listeners of other security
/// protocols, and broker settings (see `crate::kafka` for the TLS/SASL broker).
#[derive(Default)]
pub(crate) struct KafkaExtras {
    /// Extra listeners by name and security protocol (`("SSL", "SSL")`), each on a free port.
    pub(crate) listeners: Vec<(&'static str, &'static str)>,
    /// `key=value` broker settings, given the extra listeners' ports in order and the data
    /// directory.
    pub(crate) settings: Option<Box<Settings>>,
    /// Prepares the data directory (certificates) before the broker starts.
    pub(crate) prepare: Option<Box<Prepare>>,
}

/// Starts a Kafka broker (a single KRaft node) with `extras`; returns the server and the
/// extra listeners' ports. Retries with fresh ports when one was taken meanwhile.
pub(crate) fn kafka(
    launcher: &Launcher,
    extras: &KafkaExtras,
) -> Result<(Server, Vec<u16>), PeerError> {
    let peer = Peer::Kafka;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match kafka_once(launcher, extras) {
            Ok(started) => return Ok(started),
            Err(error) if error.reason == Reason::StartFailed && lost_port_race(&error) => {
                last = Some(error)
            }
            Err(error) => return Err(error),
        }
    }
    Err(last.unwrap_or_else(|| PeerError::new(peer, Reason::StartFailed, "no attempt made")))
}

fn kafka_once(launcher: &Launcher, extras: &KafkaExtras) -> Result<(Server, Vec<u16>), PeerError> {
    let peer = Peer::Kafka;
    let log = launcher.log_path(peer);
    let bin = installed(launcher, peer, "kafka/current/bin/kafka-server")?;
    // Picked together, so that no two listeners get the same port.
    let mut extra_ports = free_ports_for(peer, extras.listeners.len() + 2)?;
    let (port, controller) = (
        extra_ports.pop().expect("picked above"),
        extra_ports.pop().expect("picked above"),
    );
    let data = launcher.data_dir(peer);
    if let Some(prepare) = &extras.prepare {
        std::fs::create_dir_all(&data).map_err(|e| {
            PeerError::new(
                peer,
                Reason::StartFailed,
                format!("create {}: {e}", data.display()),
            )
        })?;
        prepare(&data).map_err(|e| PeerError::new(peer, Reason::StartFailed, e))?;
    }
    let mut command = Command::new(bin);
    command
        .arg("--port")
        .arg(port.to_string())
        .arg("--controller-port")
        .arg(controller.to_string())
        .arg("--data")
        .arg(&data)
        // Tests create many small topics; keep the broker's footprint small.
        .args(["--override", "log.segment.bytes=16777216"])
        .args(["--override", "message.max.bytes=1048588"]);
    if !extras.listeners.is_empty() {
        // Later lines of the properties file win over the launcher's own.
        let extra = |f: &dyn Fn(&str, &str, u16) -> String| -> String {
            extras
                .listeners
                .iter()
                .zip(&extra_ports)
                .map(|((name, protocol), port)| f(name, protocol, *port))
                .collect::<Vec<_>>()
                .join(",")
        };
        let listeners = extra(&|name, _, port| format!("{name}://127.0.0.1:{port}"));
        let map = extra(&|name, protocol, _| format!("{name}:{protocol}"));
        command
            .arg("--override")
            .arg(format!(
                "listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller},{listeners}"
            ))
            .arg("--override")
            .arg(format!(
                "advertised.listeners=PLAINTEXT://127.0.0.1:{port},{listeners}"
            ))
            .arg("--override")
            .arg(format!(
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,{map}"
            ));
    }
    if let Some(settings) = &extras.settings {
        for setting in settings(&extra_ports, &data) {
            command.arg("--override").arg(setting);
        }
    }
    let address = format!("127.0.0.1:{port}");
    let recipe = recipe(
        launcher,
        &command,
        Probe::Kafka(address.clone()),
        Some(&data),
    );
    let mut process = spawn(peer, command, &log, Some(&data))?;
    wait_ready(launcher, peer, &mut process, || recipe.probe.check())?;
    let server = server(
        peer,
        format!("kafka://{address}"),
        address,
        None,
        process,
        Some(data),
        recipe,
    );
    Ok((server, extra_ports))
}

fn start_once(launcher: &Launcher, peer: Peer, extra: &[String]) -> Result<Server, PeerError> {
    let log = launcher.log_path(peer);
    match peer {
        Peer::Kafka => kafka_once(launcher, &KafkaExtras::default()).map(|(server, _)| server),
        Peer::Pulsar => {
            let bin = installed(launcher, peer, "pulsar/current/bin/pulsar-standalone")?;
            let [port, http, bookie] =
                <[u16; 3]>::try_from(free_ports_for(peer, 3)?).expect("three ports picked");
            let data = launcher.data_dir(peer);
            let mut command = Command::new(bin);
            command
                .arg("--port")
                .arg(port.to_string())
                .arg("--http-port")
                .arg(http.to_string())
                .arg("--bookie-port")
                .arg(bookie.to_string())
                .arg("--data")
                .arg(&data)
                .arg("--wipe");
            let http_address = format!("127.0.0.1:{http}");
            // A restart keeps the data: only the first launch wipes it.
            let mut again = recipe(
                launcher,
                &command,
                Probe::Pulsar(http_address.clone()),
                Some(&data),
            );
            again.args.retain(|a| a != "--wipe");
            let mut process = spawn(peer, command, &log, Some(&data))?;
            wait_ready(launcher, peer, &mut process, || again.probe.check())?;
            let address = format!("127.0.0.1:{port}");
            let url = format!("pulsar://{address}?admin=http://{http_address}");
            Ok(server(
                peer,
                url,
                address,
                Some(http_address),
                process,
                Some(data),
                again,
            ))
        }
        Peer::Kinesis => {
            let bin = installed(launcher, peer, "ferrokinesis/current/bin/ferrokinesis")?;
            let port = port(peer)?;
            let mut command = Command::new(bin);
            command
                .arg("--port")
                .arg(port.to_string())
                .args([
                    "--create-stream-ms",
                    "0",
                    "--delete-stream-ms",
                    "0",
                    "--update-stream-ms",
                    "0",
                ])
                .args(["--region", "us-east-1", "--log-level", "warn"])
                // A test binary creates a stream per case on one server; the default of 10
                // shards per account is far below what AWS allows.
                .args(["--shard-limit", "100000"])
                .args(extra);
            let address = format!("127.0.0.1:{port}");
            let recipe = recipe(launcher, &command, Probe::Kinesis(address.clone()), None);
            let mut process = spawn(peer, command, &log, None)?;
            wait_ready(launcher, peer, &mut process, || recipe.probe.check())?;
            let url = format!("kinesis://us-east-1?endpoint=http://{address}");
            Ok(server(peer, url, address, None, process, None, recipe))
        }
        Peer::PubSub | Peer::Azurite | Peer::DynamoDb | Peer::EventHubs => {
            start_self_binding(launcher, peer, &log)
        }
    }
}

/// A server that binds a port of its own choosing (`0`) and prints it, so there is no race
/// between picking a port and binding it; a restart listens on the port the first launch got
/// and, where the server has a data directory, keeps it.
struct SelfBinding {
    program: PathBuf,
    /// Whether the server keeps what a restart must find again in its data directory.
    keeps_data: bool,
    /// The command line, given the port (`"0"` on the first launch) and the data directory.
    args: fn(&str, &Path) -> Vec<OsString>,
    /// What the server prints just before its `host:port`.
    listening: &'static str,
    probe: fn(String) -> Probe,
    /// The fixture's URL, given the address.
    url: fn(&str) -> String,
}

fn self_binding(launcher: &Launcher, peer: Peer) -> Result<SelfBinding, PeerError> {
    fn args(words: &[&str], data: Option<&Path>) -> Vec<OsString> {
        let mut args: Vec<OsString> = words.iter().map(Into::into).collect();
        args.extend(data.map(|d| d.as_os_str().to_owned()));
        args
    }
    Ok(match peer {
        Peer::PubSub => SelfBinding {
            program: installed(launcher, peer, "pstest/current/pstest")?,
            keeps_data: false,
            args: |port, _| args(&["--addr", &format!("127.0.0.1:{port}")], None),
            listening: "listening ",
            probe: Probe::Grpc,
            url: |address| format!("pubsub://tributary-test?endpoint=http://{address}"),
        },
        // dynalite through the installer's launcher; tables live in LevelDB.
        Peer::DynamoDb => SelfBinding {
            program: installed(launcher, peer, "dynalite/current/bin/dynalite")?,
            keeps_data: true,
            args: |port, data| {
                args(
                    &["--host", "127.0.0.1", "--port", port, "--path"],
                    Some(data),
                )
            },
            listening: "Dynalite listening at: http://",
            probe: Probe::DynamoDb,
            url: |address| format!("http://{address}"),
        },
        // Azurite's blob service. `--skipApiVersionCheck`: an SDK newer than this Azurite
        // release would otherwise be refused.
        Peer::Azurite => SelfBinding {
            program: installed(launcher, peer, "azurite/current/bin/azurite-blob")?,
            keeps_data: true,
            args: |port, data| {
                let mut all = args(
                    &["--blobHost", "127.0.0.1", "--blobPort", port, "--location"],
                    Some(data),
                );
                all.extend(["--silent", "--skipApiVersionCheck"].map(Into::into));
                all
            },
            listening: "Azurite Blob service successfully listens on http://",
            probe: Probe::Blob,
            url: |address| format!("http://{address}/{}", crate::AZURITE_ACCOUNT),
        },
        Peer::EventHubs => SelfBinding {
            program: eventhubs_emulator(peer)?,
            keeps_data: true,
            args: |port, data| {
                let words = ["--host", "127.0.0.1", "--port", port, "--log", "warn"];
                args(&[&words[..], &["--data-dir"]].concat(), Some(data))
            },
            listening: "listening on ",
            probe: Probe::Amqp,
            url: |address| format!("eventhubs://emulator.localhost?endpoint=amqp://{address}"),
        },
        Peer::Kafka | Peer::Pulsar | Peer::Kinesis => {
            unreachable!("{peer} is started on a port the fixture picks")
        }
    })
}

fn start_self_binding(launcher: &Launcher, peer: Peer, log: &Path) -> Result<Server, PeerError> {
    let SelfBinding {
        program,
        keeps_data,
        args,
        listening,
        probe,
        url,
    } = self_binding(launcher, peer)?;
    let data = keeps_data.then(|| launcher.data_dir(peer));
    let scratch = data.clone().unwrap_or_default();
    let mut command = Command::new(&program);
    command.args(args("0", &scratch));
    let mut process = spawn(peer, command, log, data.as_deref())?;
    let mut address = None;
    wait_ready(launcher, peer, &mut process, || {
        if address.is_none() {
            address = find_line(log, listening);
        }
        match &address {
            Some(addr) => probe(addr.clone()).check(),
            None => Err(format!("no \"{}\" line yet", listening.trim_end())),
        }
    })?;
    let address = address.expect("probe succeeded");
    let recipe = Recipe {
        launcher: launcher.clone(),
        program,
        args: args(address.rsplit(':').next().unwrap_or("0"), &scratch),
        probe: probe(address.clone()),
        scratch: data.clone(),
    };
    Ok(server(
        peer,
        url(&address),
        address,
        None,
        process,
        data,
        recipe,
    ))
}
