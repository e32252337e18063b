//! The report's plots, as SVG: latency percentiles against offered load, throughput against
//! offered load, and throughput against the shard count.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

const SIZE: (u32, u32) = (800, 500);

/// A distinct colour per series.
fn colour(index: usize) -> RGBColor {
    const PALETTE: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    PALETTE[index % PALETTE.len()]
}

fn failed(what: &str) -> impl Fn(DrawingAreaErrorKind<std::io::Error>) -> String + '_ {
    move |e| format!("drawing {what}: {e}")
}

/// Draws every plot the report's data allows into `out`; returns the file names.
pub fn draw(report: &Report, out: &Path) -> Result<Vec<String>, String> {
    let mut drawn = Vec::new();
    if report.http.iter().any(|r| !r.open_loop.is_empty()) {
        latency(report, &out.join("latency-vs-load.svg"))?;
        drawn.push("latency-vs-load.svg".to_owned());
        throughput(report, &out.join("throughput-vs-load.svg"))?;
        drawn.push("throughput-vs-load.svg".to_owned());
    }
    if !report.http.is_empty() || !report.engine.is_empty() {
        shards(report, &out.join("throughput-vs-shards.svg"))?;
        drawn.push("throughput-vs-shards.svg".to_owned());
    }
    Ok(drawn)
}

/// p50 and p99 acknowledgement latency (log scale) against the offered load in % of peak, one
/// colour per scenario, with the raw fdatasync p99 as a floor.
fn latency(report: &Report, path: &Path) -> Result<(), String> {
    let what = "latency-vs-load";
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(failed(what))?;
    let floor = report.limits.fdatasync_4k().latency.p99_us.max(1) as f64;
    let top = report
        .http
        .iter()
        .flat_map(|r| r.open_loop.iter().map(|p| p.latency.p99_us))
        .max()
        .unwrap_or(1)
        .max(floor as u64) as f64
        * 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Acknowledgement latency vs offered load (open loop, durable)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0_f64..100_f64, (floor / 4.0..top).log_scale())
        .map_err(failed(what))?;
    chart
        .configure_mesh()
        .x_desc("offered load, % of the measured peak")
        .y_desc("latency, µs")
        .draw()
        .map_err(failed(what))?;
    for (index, run) in report.http.iter().enumerate() {
        let c = colour(index);
        for (quantile, dashed) in [("p50", false), ("p99", true)] {
            let points: Vec<(f64, f64)> = run
                .open_loop
                .iter()
                .filter_map(|p| {
                    let us = if quantile == "p50" {
                        p.latency.p50_us
                    } else {
                        p.latency.p99_us
                    };
                    p.load.map(|load| (load * 100.0, us.max(1) as f64))
                })
                .collect();
            let style = if dashed { c.stroke_width(1) } else { c.stroke_width(3) };
            chart
                .draw_series(LineSeries::new(points.clone(), style))
                .map_err(failed(what))?
                .label(format!("{} {quantile}", run.scenario))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(failed(what))?;
        }
    }
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, floor), (100.0, floor)],
            BLACK.stroke_width(1),
        ))
        .map_err(failed(what))?
        .label("raw 4 KiB fdatasync p99")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(failed(what))?;
    root.present().map_err(failed(what))
}

/// Achieved against offered client messages/s, one colour per scenario, with the diagonal.
fn throughput(report: &Report, path: &Path) -> Result<(), String> {
    let what = "throughput-vs-load";
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(failed(what))?;
    let top = report
        .http
        .iter()
        .flat_map(|r| {
            r.open_loop
                .iter()
                .flat_map(|p| [p.offered_per_s.unwrap_or(0.0), p.achieved_per_s])
                .chain([r.peak.achieved_per_s])
        })
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption("Throughput vs offered load (durable, HTTP)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0_f64..top, 0_f64..top)
        .map_err(failed(what))?;
    chart
        .configure_mesh()
        .x_desc("offered client messages/s")
        .y_desc("acknowledged client messages/s")
        .draw()
        .map_err(failed(what))?;
    chart
        .draw_series(LineSeries::new(vec![(0.0, 0.0), (top, top)], BLACK.mix(0.3)))
        .map_err(failed(what))?
        .label("achieved = offered")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.3)));
    for (index, run) in report.http.iter().enumerate() {
        let c = colour(index);
        let points: Vec<(f64, f64)> = run
            .open_loop
            .iter()
            .filter_map(|p| p.offered_per_s.map(|o| (o, p.achieved_per_s)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
            .map_err(failed(what))?
            .label(format!("{} (peak {:.0}/s)", run.scenario, run.peak.achieved_per_s))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(failed(what))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(failed(what))?;
    root.present().map_err(failed(what))
}

/// Peak throughput (all messages/s) against the shard count, per scenario and driver.
fn shards(report: &Report, path: &Path) -> Result<(), String> {
    let what = "throughput-vs-shards";
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(failed(what))?;
    let mut series: Vec<(String, Vec<(i32, f64)>)> = Vec::new();
    let mut add = |label: String, shards: usize, per_s: f64| {
        let point = (i32::try_from(shards).unwrap_or(i32::MAX), per_s);
        match series.iter_mut().find(|(l, _)| *l == label) {
            Some((_, points)) => points.push(point),
            None => series.push((label, vec![point])),
        }
    };
    for e in &report.engine {
        add(
            format!("{} (engine API)", e.scenario),
            report.shards,
            e.all_messages_per_s,
        );
    }
    for r in &report.http {
        add(format!("{} (HTTP)", r.scenario), r.shards, r.peak.all_messages_per_s);
    }
    let top = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold(1.0, f64::max)
        * 1.2;
    let most = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(x, _)| x))
        .fold(2, i32::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Peak throughput vs shards ({} cores)", report.cores),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0..most + 1, 0_f64..top)
        .map_err(failed(what))?;
    chart
        .configure_mesh()
        .x_labels(usize::try_from(most).unwrap_or(2) + 2)
        .x_desc("shards")
        .y_desc("messages/s (all, durable)")
        .draw()
        .map_err(failed(what))?;
    for (index, (label, mut points)) in series.into_iter().enumerate() {
        let c = colour(index);
        points.sort_by_key(|point| point.0);
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
            .map_err(failed(what))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(failed(what))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(failed(what))?;
    root.present().map_err(failed(what))
}
