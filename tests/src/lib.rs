//! The tributary conformance suite: every case of `shared/design/conformance.md`, written once
//! against the core traits and run against every backend on a real server.
//!
//! A backend's test calls [`run`] with a [`Harness`] and asserts on the [`Report`]:
//!
//! ```no_run
//! # async fn demo() {
//! use tributary_conformance::{Harness, run};
//! let harness = Harness::new("memory", "memory://");
//! let report = run(&harness).await;
//! report.print();
//! assert_eq!(report.failed(), 0);
//! # }
//! ```
//!
//! A case whose capability the backend does not declare is reported "not applicable", never
//! "passed"; each backend also pins its declared capabilities with a snapshot test so gating
//! cannot fail open.
#![warn(missing_docs)]

mod cases;
mod store;

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
    /// A URL of the same scheme where nothing listens, for the unreachable-server case.
    pub unreachable_url: Option<String>,
    /// Events in the throughput case (the spec asks for 100k).
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

    /// Sets the number of events in the throughput case (for test servers too slow for the
    /// spec's 100k; say why where you call it).
    pub fn with_scale(mut self, events: usize) -> Self {
        self.scale = events.max(1);
        self
    }

    /// Enables the unreachable-server case.
    pub fn with_unreachable_url(mut self, url: &str) -> Self {
        self.unreachable_url = Some(url.to_owned());
        self
    }
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The case passed; optional figures or remarks.
    Passed(Option<String>),
    /// The case failed, with what went wrong.
    Failed(String),
    /// The backend does not declare the capability the case needs.
    NotApplicable(String),
}

/// One row of the report.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Case number in the spec.
    pub number: u32,
    /// Case name.
    pub name: &'static str,
    /// What happened.
    pub verdict: Verdict,
    /// How long it took.
    pub elapsed: Duration,
}

/// Per-case results for one backend.
#[derive(Debug, Clone)]
pub struct Report {
    /// Backend name.
    pub backend: String,
    /// One row per case, in spec order.
    pub cases: Vec<CaseResult>,
}

impl Report {
    /// Cases passed.
    pub fn passed(&self) -> usize {
        self.count(|v| matches!(v, Verdict::Passed(_)))
    }
    /// Cases failed.
    pub fn failed(&self) -> usize {
        self.count(|v| matches!(v, Verdict::Failed(_)))
    }
    /// Cases not applicable.
    pub fn not_applicable(&self) -> usize {
        self.count(|v| matches!(v, Verdict::NotApplicable(_)))
    }
    fn count(&self, f: impl Fn(&Verdict) -> bool) -> usize {
        self.cases.iter().filter(|c| f(&c.verdict)).count()
    }

    /// The table, as printed by [`Report::print`].
    pub fn table(&self) -> String {
        let mut out = format!("\nconformance: {}\n", self.backend);
        out.push_str(&format!(
            "{:>3}  {:<28} {:<15} {:>9}  {}\n",
            "#", "case", "result", "time", "notes"
        ));
        for c in &self.cases {
            let (result, note) = match &c.verdict {
                Verdict::Passed(n) => ("passed", n.clone().unwrap_or_default()),
                Verdict::Failed(why) => ("FAILED", why.clone()),
                Verdict::NotApplicable(why) => ("not applicable", why.clone()),
            };
            out.push_str(&format!(
                "{:>3}  {:<28} {:<15} {:>8.2}s  {}\n",
                c.number,
                c.name,
                result,
                c.elapsed.as_secs_f64(),
                note
            ));
        }
        out.push_str(&format!(
            "{}: {} passed, {} failed, {} not applicable\n",
            self.backend,
            self.passed(),
            self.failed(),
            self.not_applicable()
        ));
        out
    }

    /// Prints the table to stderr (visible in `cargo test` output with `--nocapture` or on failure).
    pub fn print(&self) {
        eprintln!("{}", self.table());
    }
}

/// Runs every case against the harness's backend, in spec order.
pub async fn run(harness: &Harness) -> Report {
    run_filtered(harness, |_| true).await
}

/// Runs the cases whose name `filter` accepts (for debugging one case).
pub async fn run_filtered(harness: &Harness, filter: impl Fn(&str) -> bool) -> Report {
    let mut report = Report {
        backend: harness.name.clone(),
        cases: Vec::new(),
    };
    let backend = match (harness.connect)().await {
        Ok(b) => b,
        Err(e) => {
            report.cases.push(CaseResult {
                number: 0,
                name: "connect",
                verdict: Verdict::Failed(e.to_string()),
                elapsed: Duration::ZERO,
            });
            return report;
        }
    };
    let mut ctx = cases::Ctx::new(harness.clone(), backend);
    for case in cases::ALL {
        if !filter(case.name) {
            continue;
        }
        let started = Instant::now();
        let verdict = match (case.applies)(&ctx) {
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
        report.cases.push(CaseResult {
            number: case.number,
            name: case.name,
            verdict,
            elapsed: started.elapsed(),
        });
    }
    report
}
