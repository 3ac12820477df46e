//! The peer matrix as a PNG (docs/benchmarks-dataplane.png): new connections/s
//! and p99 per peer, medians of the rounds. Text uses DejaVu Sans from
//! Debian's fonts-dejavu-core (installed by `cargo xtask deps`).
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;

use super::{Workload, traffic::Row};

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    names: &[&str],
    values: &[f64],
    color: RGBColor,
) -> Result<()> {
    let max = values.iter().copied().fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..names.len() as i32 - 1).into_segmented(), 0.0..max)
        .map_err(|e| anyhow!("{e}"))?;
    let labels: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(names.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                labels.get(*i as usize).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(values.iter().enumerate().map(|(i, v)| {
            let x = i as i32;
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(x), 0.0),
                    (SegmentValue::Exact(x + 1), *v),
                ],
                color.filled(),
            );
            bar.set_margin(0, 0, 12, 12);
            bar
        }))
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Draws the new-connection throughput and p99 of every peer.
pub fn peer_matrix(rows: &[Row], path: &Path) -> Result<()> {
    let font = std::fs::read(FONT)
        .with_context(|| format!("reading {FONT} (package fonts-dejavu-core)"))?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow!("{FONT} is not a usable font"))?;
    let new: Vec<&Row> = rows
        .iter()
        .filter(|r| r.workload == Workload::New)
        .collect();
    let names: Vec<&str> = new.iter().map(|r| r.peer.short()).collect();
    let ops: Vec<f64> = new.iter().map(|r| r.median_ops()).collect();
    let p99: Vec<f64> = new.iter().map(|r| r.median_p99()).collect();
    let root = BitMapBackend::new(path, (1300, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(650);
    panel(
        &left,
        "New TCP connections per second (higher is better)",
        &names,
        &ops,
        RGBColor(52, 101, 164),
    )?;
    panel(
        &right,
        "p99 connect+request latency, µs (lower is better)",
        &names,
        &p99,
        RGBColor(204, 0, 0),
    )?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
