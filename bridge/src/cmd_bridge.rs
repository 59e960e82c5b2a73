//! `tributary bridge`: the daemon (`--config FILE`, every route of the file), one route given
//! by flags, or `bridge validate FILE`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tributary::{Error, Result};
use tributary_bridge::config::Plan;
use tributary_bridge::route::{self, RouteSpec, RouteStats};

use crate::progress::Progress;
use crate::{ctrl_c, otlp};

/// Options of `tributary bridge`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BridgeArgs {
    #[command(subcommand)]
    pub(crate) action: Option<BridgeAction>,
    /// Configuration file (TOML, or YAML when named *.yaml or *.yml) with any number of
    /// routes; see `bridge/src/config.rs`.
    #[arg(long, conflicts_with_all = ["from", "from_stream", "to", "to_stream"])]
    pub(crate) config: Option<std::path::PathBuf>,
    /// Source backend URL.
    #[arg(long, required_unless_present = "config")]
    from: Option<String>,
    /// Source stream.
    #[arg(long, required_unless_present = "config")]
    from_stream: Option<String>,
    /// Sink backend URL.
    #[arg(long, required_unless_present = "config")]
    to: Option<String>,
    /// Sink stream (defaults to the source stream's name).
    #[arg(long)]
    to_stream: Option<String>,
    /// Source consumer group (progress is kept under it).
    #[arg(long, default_value = "tributary-bridge")]
    group: String,
    /// Where a new group starts.
    #[arg(long, default_value = "earliest")]
    start: String,
    /// Largest batch written to the sink.
    #[arg(long, default_value_t = 500)]
    max_batch: usize,
}

/// Runs `tributary bridge`; `daemon_plan` is the `--config` file when `main` loaded it already.
pub async fn run(args: BridgeArgs, daemon_plan: Option<Result<Plan>>) -> Result<()> {
    match args {
        BridgeArgs {
            action: Some(BridgeAction::Validate { file }),
            ..
        } => {
            let plan = tributary_bridge::config::load(&file)?;
            for route in &plan.routes {
                println!("{}", tributary_bridge::daemon::describe(route));
            }
            println!("{}: ok, {} route(s)", file.display(), plan.routes.len());
            Ok(())
        }
        BridgeArgs {
            config: Some(file), ..
        } => match daemon_plan {
            Some(plan) => run_daemon(plan?).await,
            None => run_daemon(tributary_bridge::config::load(&file)?).await,
        },
        BridgeArgs {
            from: Some(from),
            from_stream: Some(from_stream),
            to: Some(to),
            to_stream,
            group,
            start,
            max_batch,
            ..
        } => {
            one_route(
                &from,
                &from_stream,
                &to,
                to_stream.as_deref().unwrap_or(&from_stream),
                group,
                &start,
                max_batch,
            )
            .await
        }
        BridgeArgs { .. } => Err(Error::config(
            "bridge needs --config FILE, or --from, --from-stream and --to",
        )),
    }
}

/// `tributary bridge validate`.
#[derive(clap::Subcommand, Debug)]
pub enum BridgeAction {
    /// Check a configuration file without connecting to anything; names every wrong option.
    Validate {
        /// Configuration file.
        file: std::path::PathBuf,
    },
}

/// Runs every route of a configuration file until SIGTERM/SIGINT, then drains within the
/// configured deadline.
async fn run_daemon(plan: Plan) -> Result<()> {
    let deadline = plan.shutdown_timeout;
    // Spans are made only when `[daemon.tracing]` asks for them (then the routes use it).
    let exporter = match &plan.tracing {
        Some(tracing_plan) => Some(otlp::install(tracing_plan)?),
        None => None,
    };
    for route in &plan.routes {
        tracing::info!("{}", tributary_bridge::daemon::describe(route));
    }
    let stop = ctrl_c();
    let running = tributary_bridge::daemon::start(plan).await?;
    if let Some(addr) = running.listening {
        eprintln!("operations endpoint: http://{addr}/metrics /healthz /readyz");
    }
    let mut progress = Progress::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => progress.show(|p| {
                let total: u64 = running.stats.iter().map(|(_, s)| s.replicated.load(Ordering::Relaxed)).sum();
                let dead: u64 = running.stats.iter().map(|(_, s)| s.dead_lettered.load(Ordering::Relaxed)).sum();
                format!(
                    "{} route(s): replicated {}, {dead} dead-lettered",
                    running.stats.len(),
                    p.describe(total, None)
                )
            }),
        }
    }
    progress.clear();
    eprintln!("stopping: draining in-flight batches (deadline {deadline:?})");
    let stats = running.stats.clone();
    let drained = running.shutdown(deadline).await;
    if let Some(exporter) = exporter {
        exporter.shutdown().await;
    }
    drained?;
    // Read after the drain, so the batches finished during shutdown are counted.
    let summary: Vec<String> = stats
        .iter()
        .map(|(name, s)| {
            format!(
                "{name}: {} replicated, {} dead-lettered, {} filtered, {} loop copies dropped",
                s.replicated.load(Ordering::Relaxed),
                s.dead_lettered.load(Ordering::Relaxed),
                s.filtered.load(Ordering::Relaxed),
                s.looped.load(Ordering::Relaxed)
            )
        })
        .collect();
    eprintln!("stopped cleanly; {}", summary.join("; "));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn one_route(
    from: &str,
    from_stream: &str,
    to: &str,
    to_stream: &str,
    group: String,
    start: &str,
    max_batch: usize,
) -> Result<()> {
    let source = tributary::connect(from).await?;
    let sink = tributary::connect(to).await?;
    let stats = Arc::new(RouteStats::default());
    let cancel = ctrl_c();
    let mut spec = RouteSpec::new(
        format!("{from_stream}->{to_stream}"),
        source.clone(),
        from_stream,
        sink.clone(),
        to_stream,
    );
    spec.group = group;
    spec.start = start.parse()?;
    spec.max_batch = max_batch;
    spec.in_flight = spec.in_flight.max(max_batch * 2);
    let task = tokio::spawn(route::run_route(spec, stats.clone(), cancel.clone()));
    let mut progress = Progress::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while !task.is_finished() {
        tick.tick().await;
        progress.show(|p| {
            format!(
                "replicated {}, {} retries",
                p.describe(stats.replicated.load(Ordering::Relaxed), None),
                stats.retries.load(Ordering::Relaxed)
            )
        });
    }
    let result = task
        .await
        .map_err(|e| Error::other(format!("route task failed: {e}")))?;
    progress.clear();
    eprintln!(
        "replicated {} events from `{from_stream}` to `{to_stream}`",
        stats.replicated.load(Ordering::Relaxed)
    );
    source.close().await?;
    sink.close().await?;
    result
}
