//! The report of one run: a verdict per case, the printed table, and the assertions a
//! backend's test makes on it.

use crate::cases;
use std::collections::BTreeSet;
use std::time::Duration;

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
    /// Case number (0 for the connection, when it failed).
    pub number: u32,
    /// Case name.
    pub name: &'static str,
    /// What happened.
    pub verdict: Verdict,
    /// How long it took.
    pub elapsed: Duration,
}

impl CaseResult {
    /// The case's line in the table (without a newline).
    pub fn table_row(&self) -> String {
        let (result, note) = match &self.verdict {
            Verdict::Passed(n) => ("passed", n.clone().unwrap_or_default()),
            Verdict::Failed(why) => ("FAILED", why.clone()),
            Verdict::NotApplicable(why) => ("not applicable", why.clone()),
        };
        format!(
            "{:>3}  {:<34} {:<15} {:>8.2}s  {}",
            self.number,
            self.name,
            result,
            self.elapsed.as_secs_f64(),
            note
        )
        .trim_end()
        .to_owned()
    }
}

/// Per-case results for one backend.
#[derive(Debug, Clone)]
pub struct Report {
    /// Backend name.
    pub backend: String,
    /// One row per case, in number order.
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

    /// Names of the cases that were not applicable, in number order.
    pub fn not_applicable_names(&self) -> Vec<&'static str> {
        self.cases
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::NotApplicable(_)))
            .map(|c| c.name)
            .collect()
    }

    /// Checks that exactly the cases named in `expected` were not applicable; otherwise says
    /// which ran although expected not to, which did not run although expected to, and which
    /// names are not cases at all.
    pub fn check_not_applicable(&self, expected: &[&str]) -> std::result::Result<(), String> {
        let known: BTreeSet<&str> = cases::ALL.iter().map(|c| c.name).collect();
        let unknown: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|n| !known.contains(n))
            .collect();
        let expected: BTreeSet<&str> = expected.iter().copied().collect();
        let actual: BTreeSet<&str> = self.not_applicable_names().into_iter().collect();
        let in_report: BTreeSet<&str> = self.cases.iter().map(|c| c.name).collect();
        let ran: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|n| known.contains(n) && in_report.contains(n) && !actual.contains(n))
            .collect();
        let skipped: Vec<String> = self
            .cases
            .iter()
            .filter(|c| !expected.contains(c.name))
            .filter_map(|c| match &c.verdict {
                Verdict::NotApplicable(why) => Some(format!("{} ({why})", c.name)),
                _ => None,
            })
            .collect();
        if unknown.is_empty() && ran.is_empty() && skipped.is_empty() {
            return Ok(());
        }
        let mut problems = Vec::new();
        if !skipped.is_empty() {
            problems.push(format!(
                "not applicable but not expected to be: {}",
                skipped.join(", ")
            ));
        }
        if !ran.is_empty() {
            problems.push(format!(
                "expected not applicable but ran: {} (remove from the list if the backend \
                 now supports them)",
                ran.join(", ")
            ));
        }
        if !unknown.is_empty() {
            problems.push(format!("not case names: {}", unknown.join(", ")));
        }
        Err(format!(
            "{}: the not-applicable cases differ from the expected ones: {}",
            self.backend,
            problems.join("; ")
        ))
    }

    /// Panics, with the table, unless exactly the cases named in `expected` were not
    /// applicable (see [`Report::check_not_applicable`]).
    #[track_caller]
    pub fn assert_not_applicable(&self, expected: &[&str]) {
        if let Err(why) = self.check_not_applicable(expected) {
            panic!("{why}\n{}", self.table());
        }
    }

    /// Panics, with the table, if any case failed.
    #[track_caller]
    pub fn assert_no_failures(&self) {
        if self.failed() > 0 {
            let failed: Vec<&str> = self
                .cases
                .iter()
                .filter(|c| matches!(c.verdict, Verdict::Failed(_)))
                .map(|c| c.name)
                .collect();
            panic!(
                "{}: {} case(s) failed: {}\n{}",
                self.backend,
                failed.len(),
                failed.join(", "),
                self.table()
            );
        }
    }

    /// What a backend's conformance test asserts: prints the table, then panics if any case
    /// failed or if the not-applicable cases are not exactly `not_applicable`.
    #[track_caller]
    pub fn assert_conforms(&self, not_applicable: &[&str]) {
        self.print();
        self.assert_no_failures();
        self.assert_not_applicable(not_applicable);
    }

    /// The table's heading: the backend, then the column names.
    pub fn table_header(&self) -> String {
        format!(
            "conformance: {}\n{:>3}  {:<34} {:<15} {:>9}  notes",
            self.backend, "#", "case", "result", "time"
        )
    }

    /// The table's last line: counts of passed, failed and not applicable cases.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} passed, {} failed, {} not applicable",
            self.backend,
            self.passed(),
            self.failed(),
            self.not_applicable()
        )
    }

    /// The table, as printed by [`Report::print`].
    pub fn table(&self) -> String {
        let mut out = format!("\n{}\n", self.table_header());
        for c in &self.cases {
            out.push_str(&c.table_row());
            out.push('\n');
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// Prints the table to stderr (visible in `cargo test` output with `--nocapture` or on failure).
    pub fn print(&self) {
        eprintln!("{}", self.table());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rows: &[(&'static str, Verdict)]) -> Report {
        Report {
            backend: "test".into(),
            cases: rows
                .iter()
                .enumerate()
                .map(|(i, (name, verdict))| CaseResult {
                    number: i as u32 + 1,
                    name,
                    verdict: verdict.clone(),
                    elapsed: Duration::ZERO,
                })
                .collect(),
        }
    }

    fn na() -> Verdict {
        Verdict::NotApplicable("backend does not declare lag".into())
    }

    #[test]
    fn the_exact_not_applicable_set_passes() {
        let r = report(&[("round_trip", Verdict::Passed(None)), ("lag", na())]);
        assert_eq!(r.check_not_applicable(&["lag"]), Ok(()));
        assert_eq!(r.not_applicable_names(), ["lag"]);
    }

    #[test]
    fn a_case_turned_not_applicable_is_named_with_its_reason() {
        let r = report(&[("receipts", na()), ("lag", na())]);
        let why = r.check_not_applicable(&["lag"]).unwrap_err();
        assert!(
            why.contains(
                "not applicable but not expected to be: receipts (backend does not declare lag)"
            ),
            "{why}"
        );
    }

    #[test]
    fn a_case_that_ran_although_pinned_is_named() {
        let r = report(&[("lag", Verdict::Passed(None))]);
        let why = r.check_not_applicable(&["lag"]).unwrap_err();
        assert!(
            why.contains("expected not applicable but ran: lag"),
            "{why}"
        );
    }

    #[test]
    fn a_misspelt_name_is_refused() {
        let r = report(&[("lag", na())]);
        let why = r.check_not_applicable(&["lag", "recipts"]).unwrap_err();
        assert!(why.contains("not case names: recipts"), "{why}");
    }

    #[test]
    #[should_panic(expected = "1 case(s) failed: lag")]
    fn failures_panic_with_their_names() {
        report(&[("lag", Verdict::Failed("lag is None".into()))]).assert_no_failures();
    }

    #[test]
    fn the_table_has_a_row_per_case_and_a_summary() {
        let r = report(&[
            ("round_trip", Verdict::Passed(Some("fine".into()))),
            ("lag", na()),
        ]);
        let table = r.table();
        assert!(table.contains("conformance: test"), "{table}");
        assert!(table.contains("round_trip"), "{table}");
        assert!(table.contains("not applicable"), "{table}");
        assert!(
            table.contains("test: 1 passed, 0 failed, 1 not applicable"),
            "{table}"
        );
    }
}
