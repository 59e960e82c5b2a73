//! `tributary demo`: the bridge on the embedded local backend, end to end, in one command.

use std::sync::Arc;
use tributary::{Backend, Result};
use tributary_bridge::demo;

use crate::progress::Progress;

/// Options of `tributary demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Number of sample events.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Keep the demo's streams in this directory (file backend) instead of memory.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// Runs `tributary demo`.
pub async fn run(args: DemoArgs) -> Result<()> {
    let DemoArgs { events, dir } = args;
    let (source, sink): (Arc<dyn Backend>, Arc<dyn Backend>) = match &dir {
        Some(dir) => {
            let src = format!("file://{}", dir.join("source").display());
            let dst = format!("file://{}", dir.join("sink").display());
            (
                tributary::connect(&src).await?,
                tributary::connect(&dst).await?,
            )
        }
        None => (
            tributary::connect("memory://").await?,
            tributary::connect("memory://").await?,
        ),
    };
    let where_ = match &dir {
        Some(d) => format!("file://{}/{{source,sink}}", d.display()),
        None => "memory://".to_owned(),
    };
    eprintln!(
        "demo: generating {events} orders into `orders` on {where_}, bridging them to `orders-replica`, verifying per-key order"
    );
    let mut progress = Progress::new();
    let report = demo::run(
        source.clone(),
        sink.clone(),
        events,
        |generated, replicated, verified| {
            progress.show(|p| {
                format!(
                    "generated {generated}  replicated {replicated}  verified {}",
                    p.describe(verified, Some(events))
                )
            });
        },
    )
    .await?;
    progress.clear();
    source.close().await?;
    sink.close().await?;
    println!(
        "bridged {} of {} events in {:.2}s ({:.0} events/s); per-key order and lineage verified; {} duplicates",
        report.verified,
        report.generated,
        report.elapsed.as_secs_f64(),
        report.verified as f64 / report.elapsed.as_secs_f64().max(1e-9),
        report.duplicates
    );
    Ok(())
}
