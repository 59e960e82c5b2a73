//! A route's counters, and the task that keeps its source lag current.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters a route updates as it runs.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Events taken from the source (replicated or still in hand).
    pub received: AtomicU64,
    /// Events written to the sink and acked at the source (not counting dead-lettered ones).
    pub replicated: AtomicU64,
    /// Payload bytes replicated.
    pub bytes: AtomicU64,
    /// Sink sends that failed and were retried.
    pub retries: AtomicU64,
    /// Events sent to the dead-letter sink.
    pub dead_lettered: AtomicU64,
    /// Events the filter dropped (acked at the source, not replicated).
    pub filtered: AtomicU64,
    /// Events not copied because they had already been in the sink stream (loop prevention).
    pub looped: AtomicU64,
    /// The source's lag as last reported, plus one; 0 while unknown. Read it with
    /// [`RouteStats::lag`].
    pub(super) lag_plus_one: AtomicU64,
    /// Where the route's time goes, in nanoseconds (see [`RouteTimes`]).
    pub times: RouteTimes,
}

/// Where a route's time goes, in nanoseconds summed over its batches: what bounds its
/// throughput. A batch is written while the next is collected, so `source_stall` counts only
/// the time the route had written a batch and still waited for the next one.
#[derive(Debug, Default)]
pub struct RouteTimes {
    /// Waiting for the source once the batch before was written.
    pub source_stall: AtomicU64,
    /// Waiting for room in the in-flight window (for a commit to be confirmed).
    pub window_wait: AtomicU64,
    /// Writing to the sink, until it confirmed.
    pub sink: AtomicU64,
}

impl RouteTimes {
    pub(super) fn add(counter: &AtomicU64, took: std::time::Duration) {
        counter.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

impl RouteStats {
    /// Events at the source the route's group has not acked yet, where the source can tell
    /// (see [`tributary::Consumer::lag`]); refreshed every second, even while the sink stalls.
    pub fn lag(&self) -> Option<u64> {
        self.lag_plus_one.load(Ordering::Relaxed).checked_sub(1)
    }
}

/// The counters on one line, for logs and diagnostics:
/// `received 10 replicated 8 retries 0 dead-lettered 0 filtered 2 looped 0 lag 0`.
impl std::fmt::Display for RouteStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "received {} replicated {} retries {} dead-lettered {} filtered {} looped {} lag ",
            load(&self.received),
            load(&self.replicated),
            load(&self.retries),
            load(&self.dead_lettered),
            load(&self.filtered),
            load(&self.looped),
        )?;
        match self.lag() {
            Some(lag) => write!(f, "{lag}"),
            None => f.write_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_print_on_one_line() {
        let stats = RouteStats::default();
        stats.received.store(10, Ordering::Relaxed);
        stats.replicated.store(8, Ordering::Relaxed);
        stats.filtered.store(2, Ordering::Relaxed);
        assert_eq!(
            stats.to_string(),
            "received 10 replicated 8 retries 0 dead-lettered 0 filtered 2 looped 0 lag unknown"
        );
        stats.lag_plus_one.store(5, Ordering::Relaxed);
        assert!(stats.to_string().ends_with("lag 4"), "{stats}");
    }
}
