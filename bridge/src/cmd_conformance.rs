//! `tributary conformance URL`: the conformance suite against any backend URL (a user's own
//! cluster or cloud account), printing the table as cases finish. Exit status 0 only when no
//! case failed.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tributary::backend::{parse_url, redact};
use tributary::{Backend, Error, Result};
use tributary_conformance::{CaseResult, Harness, Report, catalogue, run_with_progress};

/// Options of `tributary conformance`.
#[derive(clap::Args, Debug)]
pub struct ConformanceArgs {
    /// Backend URL to test, e.g. kafka://broker:9092 or file:///tmp/conformance. The suite
    /// creates streams named conf-… and consumer groups there and leaves them.
    #[arg(required_unless_present = "list")]
    url: Option<String>,
    /// Events in the throughput case.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    scale: u64,
    /// Upper bound for one case (e.g. 120s, 5m).
    #[arg(long, default_value = "120s", value_parser = crate::duration_arg)]
    case_timeout: Duration,
    /// Run only these cases (comma-separated names; see --list).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// A URL of the same scheme where nothing listens; enables the unreachable-server case.
    #[arg(long)]
    unreachable_url: Option<String>,
    /// Print every case with its contract, and exit.
    #[arg(long)]
    list: bool,
}

/// Runs the command.
pub async fn run(args: ConformanceArgs) -> Result<()> {
    if args.list {
        for case in catalogue() {
            println!(
                "{:>3}  {:<34} {:<9} {}",
                case.number, case.name, case.theme, case.contract
            );
        }
        return Ok(());
    }
    let url = args
        .url
        .ok_or_else(|| Error::config("conformance needs a backend URL"))?;
    let known: Vec<&str> = catalogue().iter().map(|c| c.name).collect();
    if let Some(unknown) = args.only.iter().find(|n| !known.contains(&n.as_str())) {
        return Err(Error::config(format!(
            "--only: `{unknown}` is not a case; cases: {}",
            known.join(", ")
        )));
    }
    // Connecting first turns a URL or option the backend refuses into the command's error
    // (exit status 2) instead of one failed row.
    let backend = tributary::connect(&url).await?;
    let shown = redact(&parse_url(&url)?);
    let mut harness = Harness::new(&shown, &url)
        .with_connect(hand_over_once(backend, url.clone()))
        .with_scale(args.scale as usize)
        .with_case_timeout(args.case_timeout);
    if url.trim_start().starts_with("file:") {
        harness = harness.with_restart(reopen(url.clone()));
    }
    if let Some(unreachable) = &args.unreachable_url {
        harness = harness.with_unreachable_url(unreachable);
    }

    let header = Report {
        backend: shown.clone(),
        cases: Vec::new(),
    }
    .table_header();
    println!("{header}");
    let only = args.only;
    let report = run_with_progress(
        &harness,
        |name| only.is_empty() || only.iter().any(|o| o == name),
        |result: &CaseResult| {
            println!("{}", result.table_row());
            let _ = std::io::stdout().flush();
        },
    )
    .await;
    println!("{}", report.summary());
    if report.failed() > 0 {
        let failed: Vec<&str> = report
            .cases
            .iter()
            .filter(|c| matches!(c.verdict, tributary_conformance::Verdict::Failed(_)))
            .map(|c| c.name)
            .collect();
        return Err(Error::other(format!(
            "{shown}: {} of {} cases failed: {}",
            failed.len(),
            report.cases.len(),
            failed.join(", ")
        )));
    }
    Ok(())
}

/// The suite's connect hook: the backend already connected, then fresh connections.
fn hand_over_once(backend: Arc<dyn Backend>, url: String) -> tributary_conformance::ConnectFn {
    let first = Arc::new(parking_lot::Mutex::new(Some(backend)));
    Arc::new(move || {
        let first = first.lock().take();
        let url = url.clone();
        Box::pin(async move {
            match first {
                Some(backend) => Ok(backend),
                None => tributary::connect(&url).await,
            }
        })
    })
}

/// A `file://` directory's "server restart": close it (releasing its lock) and open it again,
/// recovering segments and group commits from disk.
fn reopen(url: String) -> tributary_conformance::RestartFn {
    Arc::new(move |old: Arc<dyn Backend>| {
        let url = url.clone();
        Box::pin(async move {
            old.close().await?;
            drop(old);
            tributary::connect(&url).await
        })
    })
}
