//! The report's plot: attacker recall against the share of benign keys flagged, for Siphon
//! (over score thresholds) and the two rate baselines (over rate thresholds).

use std::path::Path;

use plotters::prelude::*;

use super::metrics::Curves;

/// Debian's fonts-dejavu-core (installed by `cargo xtask setup`): plotters draws text with it.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub fn roc(path: &Path, c: &Curves) -> anyhow::Result<()> {
    let font = std::fs::read(FONT)
        .map_err(|e| anyhow::anyhow!("{FONT}: {e} (run `cargo xtask setup`)"))?;
    // plotters keeps the font for the process; leaking one copy is what it asks for.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("{FONT}: not a font plotters can read"))?;
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
