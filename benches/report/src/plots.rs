//! The SVG plots of BENCHMARKS.md. A backend and its baseline share a colour; the baseline is
//! the thin line with hollow markers.

use crate::{Latency, PERCENTILES, Scaling, Throughput, cases};
use plotters::coord::Shift;
use plotters::coord::ranged1d::Ranged;
use plotters::prelude::*;
use std::path::Path;

const SIZE: (u32, u32) = (900, 520);

fn err(e: impl std::fmt::Debug) -> String {
    format!("drawing a plot: {e:?}")
}

/// The colour of a case: the pair it belongs to (backend and baseline alike).
fn colour(case: &str) -> RGBColor {
    let pair = if case.contains("memory") || case.contains("mpsc") {
        0
    } else if case.contains("always") || case.contains("fdatasync") {
        2
    } else {
        1
    };
    [
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
    ][pair]
}

/// Powers of ten spanning `values` (log axes).
fn decades(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 1.0..10.0;
    }
    10f64.powf(lo.log10().floor())..10f64.powf(hi.log10().ceil())
}

fn si(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{}M", v / 1e6),
        v if v >= 1e3 => format!("{}k", v / 1e3),
        v => format!("{v}"),
    }
}

fn series<'a, X: Ranged<ValueType = f64>, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    name: &str,
    baseline: bool,
    points: Vec<(f64, f64)>,
) -> Result<(), String> {
    let label = if baseline {
        format!("{name} (baseline)")
    } else {
        name.to_owned()
    };
    drawn(chart, name, label, baseline, points)
}

/// A line with markers; `thin`: the baseline's style.
fn drawn<'a, X: Ranged<ValueType = f64>, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    name: &str,
    label: String,
    baseline: bool,
    points: Vec<(f64, f64)>,
) -> Result<(), String> {
    let c = colour(name);
    let line = if baseline {
        c.stroke_width(1)
    } else {
        c.stroke_width(3)
    };
    chart
        .draw_series(LineSeries::new(points.clone(), line))
        .map_err(err)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], line));
    chart
        .draw_series(points.into_iter().map(|p| {
            let style = if baseline {
                c.stroke_width(1)
            } else {
                c.filled()
            };
            Circle::new(p, 4, style)
        }))
        .map_err(err)?;
    Ok(())
}

fn legend<'a, C: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, C>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(err)
}

fn canvas(path: &Path) -> Result<DrawingArea<SVGBackend<'_>, Shift>, String> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    Ok(root)
}

/// Events/s against batch size, both log scales.
pub(crate) fn throughput_by_batch(path: &Path, rows: &[Throughput]) -> Result<(), String> {
    let root = canvas(path)?;
    let x = decades(rows.iter().map(|t| t.batch as f64));
    let y = decades(rows.iter().map(|t| t.per_sec));
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Local backend: throughput against batch size (produce + consume)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(x.log_scale(), y.log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("events per send_batch / receive_batch")
        .y_desc("events/s")
        .x_label_formatter(&|v| si(*v))
        .y_label_formatter(&|v| si(*v))
        .draw()
        .map_err(err)?;
    for case in cases(rows.iter().map(|t| t.case.as_str())) {
        let mut points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|t| t.case == case)
            .map(|t| (t.batch as f64, t.per_sec))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let baseline = rows.iter().any(|t| t.case == case && t.baseline);
        series(&mut chart, case, baseline, points)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(err)
}

/// Latency percentiles per case, log scale.
pub(crate) fn latency(path: &Path, rows: &[Latency]) -> Result<(), String> {
    let root = canvas(path)?;
    let y = decades(rows.iter().flat_map(|l| l.values));
    let last = (PERCENTILES.len() - 1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Local backend: send one, receive it (µs, percentiles)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.2..last + 0.2, y.log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(PERCENTILES.len())
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 0.01 && i >= 0.0 && (i as usize) < PERCENTILES.len() {
                PERCENTILES[i as usize].to_owned()
            } else {
                String::new()
            }
        })
        .y_desc("µs")
        .y_label_formatter(&|v| si(*v))
        .draw()
        .map_err(err)?;
    for l in rows {
        let points = l
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64, *v))
            .collect();
        series(&mut chart, &l.case, l.baseline, points)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(err)
}

/// Consume throughput and resident memory against the partition count.
pub(crate) fn partitions(path: &Path, rows: &[Scaling]) -> Result<(), String> {
    let root = canvas(path)?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    let mut counts: Vec<f64> = rows.iter().map(|s| s.partitions as f64).collect();
    counts.sort_by(f64::total_cmp);
    counts.dedup();
    let x = 0.8..(counts.last().copied().unwrap_or(1.0) * 1.25);
    let y = decades(rows.iter().map(|s| s.per_sec));
    let mut chart = ChartBuilder::on(&left)
        .caption("Consume a backlog: events/s", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(
            x.clone().log_scale().with_key_points(counts.clone()),
            y.log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("partitions")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| si(*v))
        .draw()
        .map_err(err)?;
    let names = cases(rows.iter().map(|s| s.case.as_str()));
    let points = |case: &str, f: &dyn Fn(&Scaling) -> f64| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|s| s.case == case)
            .map(|s| (s.partitions as f64, f(s)))
            .collect()
    };
    for case in &names {
        series(&mut chart, case, false, points(case, &|s| s.per_sec))?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
    let top = rows.iter().map(|s| s.rss_peak).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&right)
        .caption("Resident memory while draining (MiB)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(x.log_scale().with_key_points(counts), 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("partitions")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    for case in &names {
        let peak = format!("{case}, peak");
        drawn(&mut chart, case, peak, false, points(case, &|s| s.rss_peak))?;
        let before = format!("{case}, before the consumer");
        drawn(
            &mut chart,
            case,
            before,
            true,
            points(case, &|s| s.rss_before),
        )?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(err)
}
