//! The tributary conformance suite: one set of cases, written once against the core traits,
//! that every backend runs against a real server. The cases and the contract each one checks
//! are listed in `docs/conformance.md`; the model they check is `docs/semantics.md` (both in
//! the repository).
//!
//! A backend's test runs the suite with a [`Harness`] and pins the outcome: no failures, and
//! exactly the cases it expects to be not applicable, so a case can never silently stop
//! running:
//!
//! ```no_run
//! # async fn demo() {
//! use tributary_conformance::{Harness, run};
//! let report = run(&Harness::new("memory", "memory://")).await;
//! report.assert_conforms(&["unreachable_server", "server_restart"]);
//! # }
//! ```
//!
//! A case whose capability the backend does not declare is reported "not applicable", never
//! "passed"; each backend also pins its declared capabilities with a snapshot test so gating
//! cannot fail open.
//!
//! The same run is available on the command line, against any URL:
//! `tributary conformance kafka://broker:9092`.
#![warn(missing_docs)]

mod cases;
mod report;
mod store;

pub use report::{CaseResult, Report, Verdict};
pub use store::checkpoint_store_contract;

use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tributary::{Backend, Result};

/// Connects to the backend under test.
pub type ConnectFn = Arc<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn Backend>>> + Send + Sync>;
/// Restarts the server (or reopens the storage) and returns the backend to use afterwards.
pub type RestartFn =
    Arc<dyn Fn(Arc<dyn Backend>) -> BoxFuture<'static, Result<Arc<dyn Backend>>> + Send + Sync>;
/// Provides a fresh, empty stream and returns its name (see [`Harness::with_provision`]).
pub type ProvisionFn =
    Arc<dyn Fn(StreamRequest) -> BoxFuture<'static, Result<String>> + Send + Sync>;

/// What a case asks the provisioning hook for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamRequest {
    /// A name unique to this run, case and use; the hook may use it or return another name.
    pub name: String,
    /// Partitions the case wants. Cases assume exactly this many where they depend on it
    /// (the ordering cases use one key, so any count serves them).
    pub partitions: u32,
}

/// How to reach the backend under test.
#[derive(Clone)]
pub struct Harness {
    /// Name shown in the report (`"memory"`, `"kafka"`).
    pub name: String,
    /// The URL the backend was configured with (used by the bad-configuration case).
    pub url: String,
    /// Connects to the backend.
    pub connect: ConnectFn,
    /// Restarts the server, where the harness can.
    pub restart: Option<RestartFn>,
    /// Makes fresh streams, where the backend's own connection cannot (or may not).
    pub provision: Option<ProvisionFn>,
    /// A URL of the same scheme where nothing listens, for the unreachable-server case.
    pub unreachable_url: Option<String>,
    /// Events in the throughput case (the suite's standard is 100,000).
    pub scale: usize,
    /// Upper bound for one case.
    pub case_timeout: Duration,
}

impl Harness {
    /// A harness that connects with [`tributary::connect`] to `url`.
    pub fn new(name: &str, url: &str) -> Self {
        let owned = url.to_owned();
        Harness {
            name: name.to_owned(),
            url: url.to_owned(),
            connect: Arc::new(move || {
                let url = owned.clone();
                Box::pin(async move { tributary::connect(&url).await })
            }),
            restart: None,
            provision: None,
            unreachable_url: None,
            scale: 100_000,
            case_timeout: Duration::from_secs(120),
        }
    }

    /// Uses a custom connect function (for backends outside the global registry).
    pub fn with_connect(mut self, connect: ConnectFn) -> Self {
        self.connect = connect;
        self
    }

    /// Enables the server-restart case.
    pub fn with_restart(mut self, restart: RestartFn) -> Self {
        self.restart = Some(restart);
        self
    }

    /// Enables the server-restart case for a server that `restart` restarts in place (a
    /// blocking call, run off the async threads): the old backend is closed first, and the
    /// new one connects to this harness's URL.
    pub fn with_blocking_restart<F, E>(self, restart: F) -> Self
    where
        F: Fn() -> std::result::Result<(), E> + Clone + Send + Sync + 'static,
        E: std::fmt::Display,
    {
        let url = self.url.clone();
        self.with_restart(Arc::new(move |old: Arc<dyn Backend>| {
            let restart = restart.clone();
            let url = url.clone();
            Box::pin(async move {
                old.close().await?;
                tokio::task::spawn_blocking(move || restart().map_err(|e| e.to_string()))
                    .await
                    .map_err(|e| tributary::Error::other(format!("restart panicked: {e}")))?
                    .map_err(tributary::Error::unavailable)?;
                tributary::connect(&url).await
            })
        }))
    }

    /// Cases that need fresh streams get them from `provision` instead of
    /// [`Backend::create_stream`]. For platforms whose data plane cannot create streams (Event
    /// Hubs: hubs are made in Azure Resource Manager, so the backend declares no
    /// [`admin`](tributary::Capabilities::admin)), and for accounts allowed to read and write
    /// but not to administer. The hook may create the stream through a management API, or hand
    /// out one of a pool made beforehand; either way it must be empty and unused by any group.
    /// Without the hook or `admin`, those cases are not applicable.
    pub fn with_provision(mut self, provision: ProvisionFn) -> Self {
        self.provision = Some(provision);
        self
    }

    /// Sets the number of events in the throughput case (for test servers too slow for the
    /// standard 100,000; say why where you call it).
    pub fn with_scale(mut self, events: usize) -> Self {
        self.scale = events.max(1);
        self
    }

    /// Sets the upper bound for one case (default 120 s).
    pub fn with_case_timeout(mut self, timeout: Duration) -> Self {
        self.case_timeout = timeout;
        self
    }

    /// Enables the unreachable-server case.
    pub fn with_unreachable_url(mut self, url: &str) -> Self {
        self.unreachable_url = Some(url.to_owned());
        self
    }
}

/// One case of the suite, as the catalogue lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaseInfo {
    /// Stable number (new cases take the next one).
    pub number: u32,
    /// Stable name, used to pin not-applicable cases.
    pub name: &'static str,
    /// Theme: `fidelity`, `delivery`, `groups`, `position`, `failure` or `scale`.
    pub theme: &'static str,
    /// What the case proves, in one sentence.
    pub contract: &'static str,
}

/// Every case of the suite, in number order.
pub fn catalogue() -> Vec<CaseInfo> {
    cases::ALL
        .iter()
        .map(|c| CaseInfo {
            number: c.number,
            name: c.name,
            theme: c.theme,
            contract: c.contract,
        })
        .collect()
}

/// Runs every case against the harness's backend, in number order.
pub async fn run(harness: &Harness) -> Report {
    run_with_progress(harness, |_| true, |_| {}).await
}

/// Runs the cases whose name `filter` accepts (for debugging one case).
pub async fn run_filtered(harness: &Harness, filter: impl Fn(&str) -> bool) -> Report {
    run_with_progress(harness, filter, |_| {}).await
}

/// Runs the cases whose name `filter` accepts and hands each result to `progress` as soon as
/// the case ends (the command line prints rows as they come).
pub async fn run_with_progress(
    harness: &Harness,
    filter: impl Fn(&str) -> bool,
    mut progress: impl FnMut(&CaseResult),
) -> Report {
    let mut report = Report {
        backend: harness.name.clone(),
        cases: Vec::new(),
    };
    let started = Instant::now();
    let backend = match tokio::time::timeout(harness.case_timeout, (harness.connect)()).await {
        Ok(Ok(b)) => b,
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!("did not connect within {:?}", harness.case_timeout),
            };
            let result = CaseResult {
                number: 0,
                name: "connect",
                verdict: Verdict::Failed(why),
                elapsed: started.elapsed(),
            };
            progress(&result);
            report.cases.push(result);
            return report;
        }
    };
    let mut ctx = cases::Ctx::new(harness.clone(), backend);
    for case in cases::ALL {
        if !filter(case.name) {
            continue;
        }
        let started = Instant::now();
        let verdict = match cases::gate(case, &ctx) {
            Err(reason) => Verdict::NotApplicable(reason),
            Ok(()) => {
                match tokio::time::timeout(harness.case_timeout, (case.run)(&mut ctx)).await {
                    Ok(Ok(note)) => Verdict::Passed(note),
                    Ok(Err(why)) => Verdict::Failed(why),
                    Err(_) => {
                        Verdict::Failed(format!("did not finish within {:?}", harness.case_timeout))
                    }
                }
            }
        };
        let result = CaseResult {
            number: case.number,
            name: case.name,
            verdict,
            elapsed: started.elapsed(),
        };
        progress(&result);
        report.cases.push(result);
    }
    report
}
