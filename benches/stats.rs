//! The statistics a goal's verdict rests on, shared by the benchmarks (through `probe.rs`) and
//! the report tool, which tests them (`benches/report/src/stats_tests.rs`): the median of per-round ratios and how far it can be
//! trusted.
//!
//! On a shared 2-core machine one round's ratio moves by ±15% between rounds of the same build
//! (the other process's threads, the allocator's state, the emulator's speed), so a median of
//! four rounds can land on either side of a 0.95× goal by chance. Every ratio goal therefore
//! prints the interval that holds the true median with at least 95% confidence, from the
//! rounds themselves and without assuming how they are distributed (the order statistics of a
//! binomial sign test): a goal whose interval lies above its bar is met beyond the noise, one
//! whose interval straddles it is within the noise of this run.

// Each user takes what it needs.
#![allow(dead_code)]

/// Median of `values` (the mean of the two middle ones for an even count); `NaN` for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The smallest interval `[x(k), x(n+1-k)]` of the sorted `values` that holds their
/// population's median with probability ≥ 95%, whatever the distribution: the chance that
/// fewer than `k` of `n` independent values fall below the median is a binomial(n, ½) tail.
/// `None` below 6 values, where even the full range holds the median with less than 95%
/// (5 values: 93.75%).
pub fn median_interval(values: &[f64]) -> Option<(f64, f64)> {
    let n = values.len();
    if n < 6 {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    // tail(j) = P(Binomial(n, ½) ≤ j); the interval from the k-th value misses the median
    // with probability 2·tail(k−1).
    let total = 2f64.powi(n as i32);
    let mut choose = 1.0; // C(n, j)
    let mut tail = 0.0;
    let mut k = 0;
    for j in 0..n {
        tail += choose / total;
        if 2.0 * tail > 0.05 {
            break;
        }
        k = j + 1;
        choose = choose * (n - j) as f64 / (j + 1) as f64;
    }
    // k ≥ 1 for n ≥ 6 (2/2^6 ≤ 0.05).
    Some((sorted[k - 1], sorted[n - k]))
}

/// `0.98× (95% interval 0.93–1.03 over 12 rounds)`: a ratio goal's measured figure, as the
/// goal lines and the report print it.
pub fn ratio_with_interval(ratios: &[f64]) -> String {
    let m = median(ratios);
    match median_interval(ratios) {
        Some((lo, hi)) => format!(
            "{m:.2}× (95% interval {lo:.2}–{hi:.2} over {} rounds)",
            ratios.len()
        ),
        None => format!(
            "{m:.2}× ({} rounds: too few for a 95% interval)",
            ratios.len()
        ),
    }
}
