//! The tests of `benches/stats.rs`, which the benchmarks include by path and cannot run.

use crate::stats::*;

#[test]
fn the_median_is_the_middle_value_or_the_mean_of_the_two_middle_ones() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    assert!(median(&[]).is_nan());
}

#[test]
fn the_interval_drops_as_many_extreme_rounds_as_95_percent_allows() {
    let rounds = |n: usize| (1..=n).map(|i| i as f64).collect::<Vec<_>>();
    // Below 6 rounds even the full range holds the median with less than 95%.
    assert_eq!(median_interval(&rounds(5)), None);
    // 6 to 8 rounds: only the full range (6: 96.9%; 8: 99.2%, one further in is 93.0%).
    assert_eq!(median_interval(&rounds(6)), Some((1.0, 6.0)));
    assert_eq!(median_interval(&rounds(8)), Some((1.0, 8.0)));
    // 9 rounds: the 2nd to the 8th (96.1%).
    assert_eq!(median_interval(&rounds(9)), Some((2.0, 8.0)));
    // 12 rounds: the 3rd to the 10th (96.1%; the 4th to the 9th would be 85.4%).
    assert_eq!(median_interval(&rounds(12)), Some((3.0, 10.0)));
    // 20 rounds: the 6th to the 15th (95.9%), whatever order the rounds came in.
    let mut twenty = rounds(20);
    twenty.reverse();
    assert_eq!(median_interval(&twenty), Some((6.0, 15.0)));
}

#[test]
fn a_ratio_is_printed_with_its_interval_or_why_there_is_none() {
    let twelve = [
        0.86, 0.9, 0.93, 0.95, 0.97, 0.98, 0.98, 0.99, 1.0, 1.02, 1.1, 1.13,
    ];
    assert_eq!(
        ratio_with_interval(&twelve),
        "0.98× (95% interval 0.93–1.02 over 12 rounds)"
    );
    assert_eq!(
        ratio_with_interval(&[0.9, 1.0, 1.1]),
        "1.00× (3 rounds: too few for a 95% interval)"
    );
}
