//! SVG charts of the report, written next to `latest.json` (`bench/results/*.svg`) and shown in
//! the README: latency per tier, the Zipf hit ratio over the run, the Redis outage timeline,
//! req/s in the Lambda harness, and the cost per million reads. Each chart is drawn from the
//! figures and series the other groups measured; a chart whose data is missing fails the
//! group (the others are still drawn), never drawn empty.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentedCoord;
use plotters::coord::types::{RangedCoordf64, RangedCoordusize};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::cost::PARTS;
use crate::report::Report;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// A series with the label it is drawn under.
type Labelled<'a> = (&'a str, &'a [[f64; 2]]);
/// Draws one chart from the report into the file at the path.
type Chart = fn(&Report, &Path) -> anyhow::Result<()>;

const SIZE: (u32, u32) = (860, 460);
const FONT: &str = "sans-serif";
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

pub fn run(report: &Report) -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results");
    let charts: [(&str, Chart); 5] = [
        ("latency.svg", latency),
        ("zipf_hit_ratio.svg", zipf_hit_ratio),
        ("outage.svg", outage),
        ("harness_rps.svg", harness_rps),
        ("cost.svg", cost),
    ];
    let mut missing = Vec::new();
    for (file, draw) in charts {
        let path = dir.join(file);
        match draw(report, &path) {
            Ok(()) => eprintln!("  plot {}", path.display()),
            Err(e) => missing.push(format!("{file}: {e}")),
        }
    }
    // A chart left from an earlier run must not pass for this one's.
    anyhow::ensure!(
        missing.is_empty(),
        "charts not drawn (run the groups that measure their data):\n  {}",
        missing.join("\n  ")
    );
    Ok(())
}

fn series<'a>(report: &'a Report, name: &str) -> anyhow::Result<&'a [[f64; 2]]> {
    let points = report.series(name);
    anyhow::ensure!(!points.is_empty(), "series `{name}` was not measured");
    Ok(points)
}

fn max_of<'a>(points: impl IntoIterator<Item = &'a [f64; 2]>, axis: usize) -> f64 {
    points.into_iter().map(|p| p[axis]).fold(0.0, f64::max)
}

fn canvas(path: &Path, size: (u32, u32)) -> anyhow::Result<Area<'_>> {
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root)
}

fn legend_line(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
}

/// `(label, series name)` pairs read from the report, each required.
fn labelled_series<'a>(
    report: &'a Report,
    lines: &[(&'a str, &str)],
) -> anyhow::Result<Vec<Labelled<'a>>> {
    lines
        .iter()
        .map(|(label, name)| Ok((*label, series(report, name)?)))
        .collect()
}

/// Draws each series as a line in its colour, with a legend in the lower right.
fn draw_lines<'b, X>(
    chart: &mut ChartContext<'b, SVGBackend<'b>, Cartesian2d<X, RangedCoordf64>>,
    data: &[Labelled<'_>],
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64>,
{
    for (i, (label, points)) in data.iter().enumerate() {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p[0], p[1])),
                COLORS[i].stroke_width(2),
            ))?
            .label(*label)
            .legend(legend_line(COLORS[i]));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Latency per tier as distributions (x log scale), with the raw Redis GET of the same keys.
fn latency(report: &Report, path: &Path) -> anyhow::Result<()> {
    let lines = [
        ("L1 hit", "latency_cdf_l1_hit"),
        ("L2 hit (ours)", "latency_cdf_l2_hit"),
        ("raw Redis GET, same keys", "latency_cdf_redis_raw_get"),
        ("miss: DynamoDB shim + store", "latency_cdf_miss_loaded"),
    ];
    let data = labelled_series(report, &lines)?;
    let low = data
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p[0]))
        .fold(f64::MAX, f64::min)
        .max(0.01);
    let high = data
        .iter()
        .map(|(_, p)| max_of(p.iter(), 0))
        .fold(0.0, f64::max);
    let root = canvas(path, SIZE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Read latency per tier (2 KiB product, loopback Redis)",
            (FONT, 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((low * 0.8..high * 1.25).log_scale(), 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (µs, log scale)")
        .y_desc("percentile")
        .draw()?;
    draw_lines(&mut chart, &data)?;
    root.present()?;
    Ok(())
}

/// The hit ratio of each half second of the Zipf run, plain cache-aside against ours.
fn zipf_hit_ratio(report: &Report, path: &Path) -> anyhow::Result<()> {
    let lines = [
        (
            "plain cache-aside, Redis holds 10%",
            "zipf_hit_pct_over_time_plain",
        ),
        (
            "ours (8 environments, L1 + L2), Redis holds 10%",
            "zipf_hit_pct_over_time",
        ),
        (
            "plain cache-aside, serverless-sized Redis",
            "zipf_hit_pct_over_time_plain_serverless",
        ),
        (
            "ours, serverless-sized Redis",
            "zipf_hit_pct_over_time_serverless",
        ),
    ];
    let data = labelled_series(report, &lines)?;
    let end = data
        .iter()
        .map(|(_, p)| max_of(p.iter(), 0))
        .fold(0.0, f64::max);
    let root = canvas(path, SIZE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Zipf workload: hit ratio over the run (1M reads over 100k keys, fresh 5 s)",
            (FONT, 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..end, 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the run")
        .y_desc("hit ratio over the last 0.5 s (%)")
        .draw()?;
    draw_lines(&mut chart, &data)?;
    root.present()?;
    Ok(())
}

/// The outage run: read latency (p99 per 100 ms), failed reads, and the breaker's state, with
/// the outage shaded.
fn outage(report: &Report, path: &Path) -> anyhow::Result<()> {
    let p99 = series(report, "outage_p99_ms_over_time")?;
    let errors = series(report, "outage_errors_over_time")?;
    let breaker = series(report, "outage_breaker_state_over_time")?;
    let window = series(report, "outage_window_s")?[0];
    let end = max_of(p99.iter(), 0).max(max_of(breaker.iter(), 0));
    let root = canvas(path, (SIZE.0, 620))?;
    let root = root.titled(
        "Redis outage (stopped for 3 s, then restarted): 16 readers, L1 off",
        (FONT, 18),
    )?;
    let panels = root.split_evenly((3, 1));
    let rows: [(&str, &[[f64; 2]], f64); 3] = [
        ("read p99 (ms)", p99, (max_of(p99.iter(), 1) * 1.1).max(1.0)),
        (
            "failed reads",
            errors,
            (max_of(errors.iter(), 1) * 1.1).max(1.0),
        ),
        ("breaker (0 closed, 1 half-open, 2 open)", breaker, 2.2),
    ];
    for (i, (label, points, top)) in rows.into_iter().enumerate() {
        let mut chart = ChartBuilder::on(&panels[i])
            .margin(8)
            .x_label_area_size(if i == 2 { 36 } else { 18 })
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..end, 0.0..top)?;
        chart
            .configure_mesh()
            .y_desc(label)
            .x_desc(if i == 2 { "seconds into the run" } else { "" })
            .y_labels(4)
            .draw()?;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(window[0], 0.0), (window[1], top)],
            COLORS[3].mix(0.12).filled(),
        )))?;
        chart.draw_series(LineSeries::new(
            points.iter().map(|p| (p[0], p[1])),
            COLORS[i].stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// `n` categories on an x axis (a segmented range holds one more slot than its end).
fn categories(n: usize) -> SegmentedCoord<RangedCoordusize> {
    (0..n.saturating_sub(1)).into_segmented()
}

/// A value printed centred over its bar.
fn label_style() -> TextStyle<'static> {
    (FONT, 13)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Bottom))
}

/// Bars with their values over them, on one panel.
fn bars(area: &Area<'_>, title: &str, unit: &str, bars: &[(&str, f64)]) -> anyhow::Result<()> {
    let top = bars.iter().map(|b| b.1).fold(0.0, f64::max) * 1.18;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(categories(bars.len()), 0.0..top.max(1.0))?;
    let names: Vec<&str> = bars.iter().map(|b| b.0).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .y_desc(unit)
        .x_labels(bars.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).copied().unwrap_or("").to_owned(),
            _ => String::new(),
        })
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, value))| {
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), *value),
            ],
            COLORS[i % COLORS.len()].filled(),
        );
        bar.set_margin(0, 0, 14, 14);
        bar
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, value))| {
        Text::new(
            format!("{value:.0}"),
            (SegmentValue::CenterOf(i), value * 1.02),
            label_style(),
        )
    }))?;
    Ok(())
}

/// Requests per second under `cargo lambda watch`: ours against the empty handler, same run.
fn harness_rps(report: &Report, path: &Path) -> anyhow::Result<()> {
    let variants = [
        ("empty", "empty"),
        ("empty, 2 KiB", "empty_2k"),
        ("ours, L1 on", "l1_on"),
        ("ours, L1 off", "l1_off"),
    ];
    let root = canvas(path, SIZE)?;
    let root = root.titled(
        "cargo lambda watch, one environment, 1,000 rotating ids (same run)",
        (FONT, 18),
    )?;
    let halves = root.split_evenly((1, 2));
    for (half, connections) in halves.iter().zip(["c16", "c1"]) {
        let values: Vec<(&str, f64)> = variants
            .iter()
            .map(|(label, v)| {
                Ok((
                    *label,
                    report.get(&format!("lambda_watch_{v}_rps_{connections}"))?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        let title = if connections == "c16" {
            "16 connections"
        } else {
            "1 connection"
        };
        bars(half, title, "req/s", &values)?;
    }
    root.present()?;
    Ok(())
}

/// Cost per million Zipf reads, stacked by part.
fn cost(report: &Report, path: &Path) -> anyhow::Result<()> {
    let variants = [
        ("no cache", "nocache"),
        ("plain, serverless", "plain"),
        ("ours, serverless", "ours"),
        ("plain, 10% Redis", "plain_redis_10pct"),
        ("ours, 10% Redis", "ours_redis_10pct"),
        ("DAX (modelled)", "dax"),
    ];
    let data: Vec<(&str, &[[f64; 2]])> = variants
        .iter()
        .map(|(label, v)| Ok((*label, series(report, &format!("cost_parts_{v}"))?)))
        .collect::<anyhow::Result<_>>()?;
    let top = data
        .iter()
        .map(|(_, parts)| parts.iter().map(|p| p[1]).sum::<f64>())
        .fold(0.0, f64::max)
        * 1.5; // room for the legend above the bars
    let root = canvas(path, (1040, 480))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Cost of 1 million product reads (us-east-1, bench/prices.json)",
            (FONT, 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(categories(data.len()), 0.0..top)?;
    let names: Vec<&str> = data.iter().map(|d| d.0).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .y_label_formatter(&|v| format!("{v:.2}"))
        .y_desc("USD per million reads")
        .x_labels(data.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).copied().unwrap_or("").to_owned(),
            _ => String::new(),
        })
        .draw()?;
    for (part, name) in PARTS.iter().enumerate() {
        let color = COLORS[part % COLORS.len()];
        chart
            .draw_series(data.iter().enumerate().map(|(i, (_, parts))| {
                let below: f64 = parts.iter().take(part).map(|p| p[1]).sum();
                let value = parts.get(part).map_or(0.0, |p| p[1]);
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), below),
                        (SegmentValue::Exact(i + 1), below + value),
                    ],
                    color.filled(),
                );
                bar.set_margin(0, 0, 16, 16);
                bar
            }))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart.draw_series(data.iter().enumerate().map(|(i, (_, parts))| {
        let total: f64 = parts.iter().map(|p| p[1]).sum();
        Text::new(
            format!("${total:.3}"),
            (SegmentValue::CenterOf(i), total * 1.01 + top * 0.01),
            label_style(),
        )
    }))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
