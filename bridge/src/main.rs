//! `tributary`: produce, consume, administer streams, and run the bridge, on any backend URL.
//! One module per command (`cmd_*.rs`); this file holds the command line and what they share.

use clap::{Parser, Subcommand, ValueEnum};
use std::time::Duration;
use tributary::{ErrorKind, Result};
use tributary_bridge::config::Plan;
use tributary_bridge::route::CancellationToken;

mod cmd_bridge;
mod cmd_completions;
mod cmd_conformance;
mod cmd_consume;
mod cmd_demo;
mod cmd_produce;
mod cmd_streams;
mod otlp;
mod progress;

#[derive(Parser)]
#[command(
    name = "tributary",
    version,
    about = "Produce, consume and replicate event streams on Kafka, Pulsar, Kinesis, Pub/Sub, Event Hubs and local storage",
    after_help = "URLs: memory://  file:///path  (more schemes as their backends are compiled in)\nExample: tributary demo"
)]
pub(crate) struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info` or `tributary=debug`.
    #[arg(long, global = true, default_value = "warn", env = "TRIBUTARY_LOG")]
    log: String,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Format {
    /// One event per line: the line is the payload.
    Raw,
    /// One JSON object per line: key, payload, headers, timestamp (base64 for binary).
    Json,
    /// One CloudEvent per line in the CloudEvents JSON format, mapped onto the backend's
    /// protocol binding (Kafka `ce_` headers, Event Hubs `cloudEvents:` properties, Pub/Sub
    /// `ce-` attributes, structured JSON elsewhere).
    Cloudevents,
}

#[derive(Subcommand)]
enum Command {
    /// Send events read from stdin, one per line.
    Produce(cmd_produce::ProduceArgs),
    /// Print events of a stream and ack them.
    Consume(cmd_consume::ConsumeArgs),
    /// Administer streams.
    Streams(cmd_streams::StreamsArgs),
    /// Replicate streams until SIGTERM/Ctrl-C (at-least-once, per-key order kept): every route
    /// of a configuration file (`--config FILE`), or one route given by flags.
    Bridge(cmd_bridge::BridgeArgs),
    /// Run the bridge on the embedded local backend: generate sample orders, replicate them,
    /// and verify every event arrived in per-key order.
    Demo(cmd_demo::DemoArgs),
    /// Run the conformance suite against a backend URL (your own cluster or account) and
    /// print its table; exit status 0 only when no case failed.
    Conformance(cmd_conformance::ConformanceArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd_completions::CompletionsArgs),
}

fn main() {
    let cli = Cli::parse();
    tributary_bridge::backends::register();
    // The daemon's file is read before logging starts, because it may ask for JSON logs;
    // its errors are reported once the command runs.
    let daemon_plan = match &cli.command {
        Command::Bridge(cmd_bridge::BridgeArgs {
            action: None,
            config: Some(file),
            ..
        }) => Some(tributary_bridge::config::load(file)),
        _ => None,
    };
    let json_logs = matches!(&daemon_plan, Some(Ok(plan)) if plan.log_json);
    let secrets = match &daemon_plan {
        Some(Ok(plan)) => plan.secrets.clone(),
        _ => Default::default(),
    };
    init_logging(&cli.log, cli.log_json || json_logs, secrets);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(run(cli.command, daemon_plan)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            match e.kind() {
                ErrorKind::Config => 2,
                _ => 1,
            }
        }
    };
    // Every command has closed what it opened by now; what is left running is abandoned
    // work (a route that could not drain, a client's drop waiting for a broker that is gone),
    // which must not hold the exit past `daemon.shutdown_timeout`: the process exits anyway.
    runtime.shutdown_timeout(Duration::from_millis(100));
    std::process::exit(code);
}

/// Logs go to stderr with every value the daemon's file took from `${VAR}` replaced by the
/// reference.
fn init_logging(filter: &str, json: bool, secrets: tributary_bridge::config::Secrets) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_owned());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(secrets.stderr_writer());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `daemon_plan` is the loaded `bridge --config` file, when that is the command.
async fn run(command: Command, daemon_plan: Option<Result<Plan>>) -> Result<()> {
    match command {
        Command::Produce(args) => cmd_produce::run(args).await,
        Command::Consume(args) => cmd_consume::run(args).await,
        Command::Streams(args) => cmd_streams::run(args).await,
        Command::Bridge(args) => cmd_bridge::run(args, daemon_plan).await,
        Command::Demo(args) => cmd_demo::run(args).await,
        Command::Conformance(args) => cmd_conformance::run(args).await,
        Command::Completions(args) => cmd_completions::run(args),
    }
}

/// Cancelled on Ctrl-C or SIGTERM.
pub(crate) fn ctrl_c() -> CancellationToken {
    let token = CancellationToken::default();
    let t = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            t.cancel();
        }
    });
    #[cfg(unix)]
    {
        let t = token.clone();
        tokio::spawn(async move {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
                t.cancel();
            }
        });
    }
    token
}

/// A duration flag, in the grammar of URLs and configuration files
/// ([`tributary::parse_duration`]).
pub(crate) fn duration_arg(raw: &str) -> std::result::Result<Duration, String> {
    tributary::parse_duration(raw)
        .ok_or_else(|| format!("`{raw}` is not a duration (e.g. 250ms, 10s, 5m, 2h, 7d)"))
}
