//! The `--plot` SVG: latency by percentile per operation (log latency axis)
//! above throughput per second over the run.

use std::path::Path;

use plotters::prelude::*;

use super::mix::Op;
use super::report::LoadReport;

type DrawResult = Result<(), Box<dyn std::error::Error>>;

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 900;

fn op_color(op: Op) -> RGBColor {
    match op {
        Op::Append => RGBColor(31, 119, 180),
        Op::Read => RGBColor(44, 160, 44),
        Op::Erase => RGBColor(255, 127, 14),
    }
}

/// `nines` (0 = min, 1 = p90, 2 = p99...) as a percentile label.
fn percentile_label(nines: f64) -> String {
    let pct = 100.0 * (1.0 - 10f64.powf(-nines));
    if nines <= 0.0 {
        "min".to_owned()
    } else if (nines - nines.round()).abs() < 1e-6 {
        let decimals = (nines.round() as usize).saturating_sub(2);
        format!("p{pct:.decimals$}")
    } else {
        format!("p{pct:.3}")
    }
}

/// Renders the plot of `report` as an SVG document.
///
/// # Errors
/// A drawing failure (plotters' message).
pub fn render_svg(report: &LoadReport) -> Result<String, String> {
    let mut svg = String::new();
    draw(report, &mut svg).map_err(|e| format!("plot: {e}"))?;
    Ok(svg)
}

/// Writes the plot of `report` to `path`.
///
/// # Errors
/// A drawing failure or an unwritable file.
pub fn write_svg(report: &LoadReport, path: &Path) -> Result<(), String> {
    let svg = render_svg(report)?;
    std::fs::write(path, svg).map_err(|e| format!("plot {}: {e}", path.display()))
}

fn draw(report: &LoadReport, svg: &mut String) -> DrawResult {
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(HEIGHT / 2);
    draw_latency(report, &top)?;
    draw_throughput(report, &bottom)?;
    root.present()?;
    Ok(())
}

fn draw_latency(
    report: &LoadReport,
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
) -> DrawResult {
    let curves: Vec<_> = report
        .ops
        .iter()
        .filter(|r| !r.latency_curve.is_empty())
        .collect();
    let max_nines = curves
        .iter()
        .filter_map(|r| r.latency_curve.last().map(|p| p.nines))
        .fold(1.0f64, f64::max)
        .ceil();
    let to_ms = |us: u64| us.max(1) as f64 / 1000.0;
    let lo = curves
        .iter()
        .flat_map(|r| r.latency_curve.iter().map(|p| to_ms(p.latency_us)))
        .fold(f64::INFINITY, f64::min);
    let hi = curves
        .iter()
        .flat_map(|r| r.latency_curve.iter().map(|p| to_ms(p.latency_us)))
        .fold(0.0f64, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        // Headroom above the curves for the legend.
        (lo * 0.8, (hi * 5.0).max(lo * 10.0))
    } else {
        (0.01, 100.0)
    };
    let caption = format!(
        "Latency by percentile ({}{})",
        report.mode,
        match report.rate {
            Some(r) => format!(", open loop at {r} req/s"),
            None => ", closed loop".to_owned(),
        }
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .margin_right(45)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_nines, (lo..hi).log_scale())?;
    let label_count = usize::try_from(max_nines as u64).unwrap_or(6) + 1;
    chart
        .configure_mesh()
        .x_labels(label_count)
        .x_label_formatter(&|v| percentile_label(*v))
        .y_label_formatter(&|v| format!("{v}"))
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()?;
    for r in curves {
        let color = op_color(r.op);
        let points: Vec<(f64, f64)> = r
            .latency_curve
            .iter()
            .map(|p| (p.nines, to_ms(p.latency_us)))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(format!(
                "{} (n={}, p99 {:.3} ms)",
                r.op.name(),
                r.latency_us.count,
                r.latency_us.p99_us as f64 / 1000.0
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn draw_throughput(
    report: &LoadReport,
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
) -> DrawResult {
    // A last bucket of a few milliseconds would show a meaningless spike.
    let buckets: Vec<_> = report
        .timeline
        .iter()
        .filter(|b| b.width_secs >= 0.2 || report.timeline.len() == 1)
        .collect();
    let mid = |b: &super::report::TimelineBucket| b.second as f64 + b.width_secs / 2.0;
    let rate = |b: &super::report::TimelineBucket, n: u64| {
        if b.width_secs > 0.0 {
            n as f64 / b.width_secs
        } else {
            0.0
        }
    };
    let max_x = report.elapsed_secs.max(1.0);
    let max_y = buckets
        .iter()
        .map(|b| b.ops_per_sec())
        .fold(1.0f64, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "Throughput per second ({} workers, mean {:.0} req/s)",
                report.concurrency, report.throughput
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .margin_right(45)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_x, 0f64..max_y)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("requests/s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    let total: Vec<(f64, f64)> = buckets.iter().map(|b| (mid(b), b.ops_per_sec())).collect();
    chart
        .draw_series(LineSeries::new(total, BLACK.stroke_width(2)))?
        .label("all")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    for op in Op::ALL {
        if report.op(op).is_none_or(|r| r.count == 0) {
            continue;
        }
        let color = op_color(op);
        let points: Vec<(f64, f64)> = buckets
            .iter()
            .map(|b| {
                let n = match op {
                    Op::Append => b.append,
                    Op::Read => b.read,
                    Op::Erase => b.erase,
                };
                (mid(b), rate(b, n))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(1)))?
            .label(op.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    if report.errors > 0 {
        let points: Vec<(f64, f64)> = buckets
            .iter()
            .map(|b| (mid(b), rate(b, b.errors)))
            .collect();
        chart
            .draw_series(LineSeries::new(points, RED.stroke_width(1)))?
            .label("errors")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::report::{Live, Recorder};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(0.0), "min");
        assert_eq!(percentile_label(1.0), "p90");
        assert_eq!(percentile_label(2.0), "p99");
        assert_eq!(percentile_label(3.0), "p99.9");
        assert_eq!(percentile_label(5.0), "p99.999");
    }

    #[test]
    fn renders_an_svg_with_both_charts() {
        let start = Instant::now().checked_sub(Duration::from_secs(3)).unwrap();
        let mut rec = Recorder::new(start, Arc::new(Live::default())).unwrap();
        for i in 0..500u64 {
            rec.ok(
                Op::Append,
                Instant::now()
                    .checked_sub(Duration::from_micros(100 + i))
                    .unwrap(),
            );
        }
        rec.ok(Op::Read, start);
        rec.error(Op::Erase, "UNAVAILABLE");
        let mut report = crate::load::report::tests::empty_report();
        rec.finish(Duration::from_secs(4), &mut report);
        let svg = render_svg(&report).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        assert!(svg.contains("Latency by percentile"));
        assert!(svg.contains("Throughput per second"));
        assert!(svg.contains("append"));

        // Nothing measured still gives a valid (empty) plot.
        let empty = crate::load::report::tests::empty_report();
        assert!(render_svg(&empty).unwrap().starts_with("<svg"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        write_svg(&report, &path).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("<svg"));
    }
}
