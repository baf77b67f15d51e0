//! The report's plots: attacker recall against the share of benign keys flagged, for Siphon
//! (over score thresholds) and the two rate baselines (over rate thresholds); and the score
//! of one instance per kind over the simulated day.

use std::path::Path;

use plotters::prelude::*;

use super::curves::Curves;

/// Debian's fonts-dejavu-core (installed by `cargo xtask setup`): plotters draws text with it.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub fn register_font() -> anyhow::Result<()> {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if DONE.get().is_some() {
        return Ok(());
    }
    let font = std::fs::read(FONT)
        .map_err(|e| anyhow::anyhow!("{FONT}: {e} (run `cargo xtask setup`)"))?;
    // plotters keeps the font for the process; leaking one copy is what it asks for.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("{FONT}: not a font plotters can read"))?;
    let _ = DONE.set(());
    Ok(())
}

/// Score over time, one line per instance (one instance per kind).
pub fn timeline(path: &Path, series: &[(String, Vec<(f64, f64)>)]) -> anyhow::Result<()> {
    register_font()?;
    let hours = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.0))
        .fold(1.0f64, f64::max);
    let root = BitMapBackend::new(path, (1000, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Highest score over time, one instance per kind",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0f64..hours, 0.0f64..1.02f64)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("hours since the start")
        .y_desc("score (harvest or relay, the higher)")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (n, (name, pts)) in series.iter().enumerate() {
        chart
            .draw_series(LineSeries::new(
                pts.clone(),
                Palette99::pick(n).stroke_width(2),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 20, y)],
                    Palette99::pick(n).stroke_width(2),
                )
            });
    }
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 0.7), (hours, 0.7)],
            BLACK.stroke_width(1),
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .label("raise level 0.7")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

pub fn roc(path: &Path, c: &Curves) -> anyhow::Result<()> {
    register_font()?;
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Attackers flagged vs benign keys flagged",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((0.0001f64..1.0f64).log_scale(), 0.0f64..1.02f64)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("share of benign keys flagged (log)")
        .y_desc("share of attackers flagged")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let clamp = |v: &[(f64, f64)]| -> Vec<(f64, f64)> {
        let mut p: Vec<(f64, f64)> = v.iter().map(|&(x, y)| (x.max(0.0001), y)).collect();
        p.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        p
    };
    for (name, pts, color) in [
        ("Siphon (score threshold)", &c.siphon, RED),
        ("per-key request rate", &c.key_rate, BLUE),
        ("per-address request rate", &c.ip_rate, GREEN),
    ] {
        let pts = clamp(pts);
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
