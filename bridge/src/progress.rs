//! The live progress line of long commands: on stderr, rewritten in place a few times a
//! second, only when stderr is a terminal (piped or redirected output stays clean for the
//! program reading it).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often the line is rewritten at most.
const EVERY: Duration = Duration::from_millis(200);

/// A `\r` progress line on stderr.
pub struct Progress {
    enabled: bool,
    started: Instant,
    last: Instant,
}

impl Progress {
    /// Shown only when stderr is a terminal.
    pub fn new() -> Self {
        Self::enabled(std::io::stderr().is_terminal())
    }

    fn enabled(enabled: bool) -> Self {
        let now = Instant::now();
        Progress {
            enabled,
            started: now,
            last: now,
        }
    }

    /// Rewrites the line with `line(progress)`, unless it was rewritten less than 200 ms ago.
    pub fn show(&mut self, line: impl FnOnce(&Self) -> String) {
        if self.enabled && self.last.elapsed() >= EVERY {
            self.last = Instant::now();
            eprint!("\r\x1b[2K{}", line(self));
        }
    }

    /// `done` of `total` (when known) with the rate since the start and the time left:
    /// `produced 41,000/100,000 (41%) 20,500/s, ETA 3s`, or `consumed 41,000 20,500/s`.
    pub fn count(&mut self, verb: &str, done: u64, total: Option<u64>) {
        self.show(|p| format!("{verb} {}", p.describe(done, total)));
    }

    /// The figures of [`Progress::count`] without the verb.
    pub fn describe(&self, done: u64, total: Option<u64>) -> String {
        describe(done, total, self.started.elapsed())
    }

    /// Clears the line, before the command prints its summary.
    pub fn clear(&self) {
        if self.enabled {
            eprint!("\r\x1b[2K");
        }
    }
}

fn describe(done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    match total {
        Some(total) if total > 0 => {
            let percent = (done.min(total) * 100) / total;
            let eta = if rate > 0.0 && done < total {
                format!(", ETA {}", short_duration((total - done) as f64 / rate))
            } else {
                String::new()
            };
            format!(
                "{}/{} ({percent}%) {}/s{eta}",
                grouped(done),
                grouped(total),
                grouped(rate as u64)
            )
        }
        _ => format!("{} {}/s", grouped(done), grouped(rate as u64)),
    }
}

/// `1234567` → `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds as `45s`, `3m05s` or `2h04m`.
fn short_duration(seconds: f64) -> String {
    let s = seconds.ceil() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rates_and_time_left() {
        assert_eq!(
            describe(41_000, Some(100_000), Duration::from_secs(2)),
            "41,000/100,000 (41%) 20,500/s, ETA 3s"
        );
        assert_eq!(
            describe(1_000, Some(1_000), Duration::from_secs(1)),
            "1,000/1,000 (100%) 1,000/s"
        );
        assert_eq!(
            describe(10, Some(100_000), Duration::from_secs(1)),
            "10/100,000 (0%) 10/s, ETA 2h46m"
        );
        assert_eq!(
            describe(1_234_567, None, Duration::from_secs(1)),
            "1,234,567 1,234,567/s"
        );
        assert_eq!(describe(0, None, Duration::ZERO), "0 0/s");
        assert_eq!(short_duration(185.0), "3m05s");
    }

    #[test]
    fn silent_when_not_a_terminal() {
        let mut progress = Progress::enabled(false);
        progress.last -= EVERY;
        // Nothing to observe on stderr here; the pseudo-terminal test in tests/cli_progress.rs
        // checks what a terminal shows. This checks `show` does not even build the line.
        progress.show(|_| unreachable!("the line is built only for a terminal"));
    }
}
