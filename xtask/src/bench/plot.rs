//! The soak's picture: podtrace's resident memory and CPU over the run, as a PNG (plotters,
//! bitmap backend). Text is drawn with DejaVu Sans, read at run time (Debian's
//! fonts-dejavu-core, installed by `cargo xtask setup --runtimes`).
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;

/// Where Debian's fonts-dejavu-core puts its sans-serif face.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 800;

/// One point of the plot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub elapsed_s: f64,
    pub rss_mib: f64,
    pub hwm_mib: f64,
    /// CPU % of one core over the interval that ends here (None for the first sample).
    pub cpu_pct: Option<f64>,
}

/// Registers the font once per process (plotters keeps it for the life of the process).
fn font() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = std::fs::read(FONT).map_err(|e| {
            format!(
                "reading {FONT} ({e}): install fonts-dejavu-core (cargo xtask setup --runtimes)"
            )
        })?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{FONT} is not a font plotters can read"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Writes the plot: VmRSS and VmHWM (MiB) above, CPU % of one core below, against elapsed
/// minutes; a vertical line where the second half (the part judged for flatness) starts.
pub fn soak_png(path: &Path, title: &str, points: &[Point], judged_from_s: f64) -> Result<()> {
    font()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    draw(path, title, points, judged_from_s).map_err(|e| anyhow!("drawing {}: {e}", path.display()))
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type Chart<'a> = ChartContext<'a, BitMapBackend<'a>, Cartesian2d<Coord, Coord>>;
type Coord = plotters::coord::types::RangedCoordf64;

/// One panel: elapsed minutes across, 0 to 15% above `y_max` up, with its grid drawn.
fn panel<'a>(
    area: &Area<'a>,
    x_max: f64,
    y_max: f64,
    y_desc: &str,
) -> std::result::Result<Chart<'a>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..(y_max * 1.15).max(1.0))?;
    chart
        .configure_mesh()
        .x_desc("elapsed (min)")
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .draw()?;
    Ok(chart)
}

fn draw(
    path: &Path,
    title: &str,
    points: &[Point],
    judged_from_s: f64,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (top, bottom) = root.split_vertically(HEIGHT * 55 / 100);
    let minutes = |s: f64| s / 60.0;
    let x_max = points
        .iter()
        .map(|p| minutes(p.elapsed_s))
        .fold(0.0, f64::max)
        .max(1.0 / 6.0);
    let mem_max = points
        .iter()
        .map(|p| p.hwm_mib.max(p.rss_mib))
        .fold(0.0, f64::max);
    let mut mem = panel(&top, x_max, mem_max, "MiB")?;
    mem.draw_series(LineSeries::new(
        points.iter().map(|p| (minutes(p.elapsed_s), p.rss_mib)),
        BLUE.stroke_width(2),
    ))?
    .label("VmRSS")
    .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    mem.draw_series(LineSeries::new(
        points.iter().map(|p| (minutes(p.elapsed_s), p.hwm_mib)),
        RED.mix(0.6),
    ))?
    .label("VmHWM (peak)")
    .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.mix(0.6)));
    let judged = minutes(judged_from_s);
    mem.draw_series(LineSeries::new(
        [(judged, 0.0), (judged, (mem_max * 1.15).max(1.0))],
        BLACK.mix(0.7).stroke_width(2),
    ))?
    .label("flatness judged from here on")
    .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.7).stroke_width(2)));
    mem.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 14))
        .draw()?;

    let cpu_max = points.iter().filter_map(|p| p.cpu_pct).fold(0.0, f64::max);
    let mut cpu = panel(&bottom, x_max, cpu_max, "CPU % of one core")?;
    cpu.draw_series(LineSeries::new(
        points
            .iter()
            .filter_map(|p| p.cpu_pct.map(|c| (minutes(p.elapsed_s), c))),
        GREEN.stroke_width(2),
    ))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_is_a_png_of_the_stated_size() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub/soak.png");
        let points: Vec<Point> = (0..30)
            .map(|i| Point {
                elapsed_s: i as f64 * 10.0,
                rss_mib: 30.0 + i as f64 * 0.1,
                hwm_mib: 33.0 + i as f64 * 0.1,
                cpu_pct: (i > 0).then_some(5.0 + (i % 3) as f64),
            })
            .collect();
        soak_png(&path, "soak test", &points, 150.0).expect("plot written");
        let bytes = std::fs::read(&path).expect("the PNG file exists");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        // IHDR: width and height, big-endian, at bytes 16..24.
        let w = u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes"));
        let h = u32::from_be_bytes(bytes[20..24].try_into().expect("4 bytes"));
        assert_eq!((w, h), (WIDTH, HEIGHT));
        assert!(
            bytes.len() > 10_000,
            "a drawn chart, not a blank image: {} bytes",
            bytes.len()
        );
    }

    #[test]
    fn a_plot_of_one_sample_still_draws() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("one.png");
        let p = Point {
            elapsed_s: 0.0,
            rss_mib: 30.0,
            hwm_mib: 31.0,
            cpu_pct: None,
        };
        soak_png(&path, "one", &[p], 0.0).expect("plot written");
        assert!(path.is_file());
    }
}
