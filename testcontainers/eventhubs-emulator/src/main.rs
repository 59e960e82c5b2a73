//! `tributary-eventhubs-emulator`: the emulator as a process.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tributary_eventhubs_emulator::{Config, Emulator, HubConfig};

/// A Docker-free Azure Event Hubs emulator speaking AMQP 1.0 over plain TCP.
///
/// The first line on stdout is `listening on HOST:PORT` once it accepts connections.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", env = "EVENTHUBS_EMULATOR_HOST")]
    host: IpAddr,

    /// Port to listen on; 0 picks a free one (see the `listening on` line).
    #[arg(long, default_value_t = 5672, env = "EVENTHUBS_EMULATOR_PORT")]
    port: u16,

    /// JSON configuration in the shape of the official emulator's Config.json (namespace,
    /// event hubs with partition counts and consumer groups; optional SharedAccessKeys).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// An event hub to create at start, `NAME` or `NAME:PARTITIONS` (repeatable).
    #[arg(long = "hub", value_name = "NAME[:PARTITIONS]")]
    hubs: Vec<String>,

    /// Partition count of hubs created on first use and of `--hub NAME` without a count.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    partitions: u32,

    /// Create unknown event hubs and consumer groups on first use. Defaults to true without
    /// --config and to false with it (unknown entities are then amqp:not-found).
    #[arg(long, value_name = "BOOL")]
    auto_create: Option<bool>,

    /// Create unknown consumer groups on first use. Defaults to the value of --auto-create;
    /// on with hubs made through --admin lets tests name consumer groups on the fly.
    #[arg(long, value_name = "BOOL")]
    auto_create_consumer_groups: Option<bool>,

    /// Serve the HTTP admin API on the same port (PUT /hubs/NAME?partitions=N, DELETE
    /// /hubs/NAME, GET /hubs, PUT /hubs/NAME/consumergroups/GROUP), as Azure Resource Manager
    /// would: for test fixtures that make hubs on demand.
    #[arg(long)]
    admin: bool,

    /// Largest message or batch a producer may send, in bytes; advertised on attach.
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    max_message_size: u64,

    /// Events kept per partition; older ones are dropped.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    max_events_per_partition: usize,

    /// A shared access key `NAME=KEY` (repeatable). With at least one, SAS tokens must be
    /// signed with a configured key and JWTs are refused; without, every token is accepted.
    #[arg(long = "shared-access-key", value_name = "NAME=KEY")]
    shared_access_keys: Vec<String>,

    /// Persist events in append-only files under this directory and reload them at start.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Log filter (tracing `EnvFilter` syntax); RUST_LOG works too.
    #[arg(long, default_value = "info", env = "RUST_LOG")]
    log: String,
}

fn config(args: &Args) -> Result<Config, String> {
    let auto_create = args.auto_create.unwrap_or(args.config.is_none());
    let mut config = Config {
        bind: SocketAddr::new(args.host, args.port),
        default_partitions: args.partitions,
        auto_create,
        auto_create_consumer_groups: args.auto_create_consumer_groups,
        admin: args.admin,
        max_message_size: args.max_message_size,
        max_events_per_partition: args.max_events_per_partition,
        data_dir: args.data_dir.clone(),
        ..Config::default()
    };
    if let Some(path) = &args.config {
        config.load_file(path).map_err(|e| e.to_string())?;
    }
    for hub in &args.hubs {
        let (name, count) = match hub.split_once(':') {
            Some((name, count)) => (
                name,
                count
                    .parse()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or_else(|| format!("--hub {hub}: partition count must be 1..=1024"))?,
            ),
            None => (hub.as_str(), args.partitions),
        };
        config.hubs.push(HubConfig::new(name, count));
    }
    for pair in &args.shared_access_keys {
        let (name, key) = pair
            .split_once('=')
            .filter(|(n, k)| !n.is_empty() && !k.is_empty())
            .ok_or_else(|| format!("--shared-access-key {pair:?}: expected NAME=KEY"))?;
        config
            .shared_access_keys
            .insert(name.to_string(), key.to_string());
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match config(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tributary-eventhubs-emulator: {e}");
            return ExitCode::from(2);
        }
    };
    let emulator = match Emulator::start(config).await {
        Ok(emulator) => emulator,
        Err(e) => {
            eprintln!("tributary-eventhubs-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", emulator.local_addr());
        let _ = out.flush();
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    emulator.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
