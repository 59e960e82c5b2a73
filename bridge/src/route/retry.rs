//! Retries of a failed sink write: exponential backoff with jitter.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tributary::{Error, Event};

use super::Running;

/// Retries of a failed sink write: exponential backoff with jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per write, the first included.
    pub attempts: u32,
    /// Backoff after the first failure; doubles each time.
    pub backoff: Duration,
    /// Backoff ceiling.
    pub max_backoff: Duration,
    /// Random spread of each backoff, 0 to 1 (0.2: ±20%).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponential = self
            .backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let base = exponential.min(self.max_backoff).as_secs_f64();
        // Spread retries of many routes so a recovering sink is not hit in lockstep.
        let spread = 1.0 + self.jitter * (2.0 * unit_random() - 1.0);
        Duration::from_secs_f64((base * spread).max(0.0))
    }
}

/// A number in [0, 1) that differs call to call; statistical quality is not needed for jitter.
fn unit_random() -> f64 {
    use std::sync::atomic::AtomicU64;
    static STATE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mut x = STATE.fetch_add(nanos | 1, Ordering::Relaxed) ^ nanos.rotate_left(29);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Sends with retries; `Err` carries the last error once attempts are used up, or at once for
/// a permanent error, or when cancelled between attempts.
pub(super) async fn send_with_retries(
    route: &Running<'_>,
    producer: &dyn tributary::Producer,
    events: &[Event],
) -> std::result::Result<(), (Error, u32)> {
    let Running {
        spec,
        stats,
        metrics,
        cancel,
    } = route;
    let mut attempt = 1;
    loop {
        match producer.send_batch(events.to_vec()).await {
            Ok(_) => return Ok(()),
            Err(e)
                if e.is_retryable() && attempt < spec.retry.attempts && !cancel.is_cancelled() =>
            {
                let delay = spec.retry.delay(attempt);
                stats.retries.fetch_add(1, Ordering::Relaxed);
                metrics.retries.increment(1);
                tracing::warn!(route = %spec.name, error = %e, attempt, ?delay, "sink write failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => return Err((e, attempt)),
                }
                attempt += 1;
            }
            Err(e) => return Err((e, attempt)),
        }
    }
}
