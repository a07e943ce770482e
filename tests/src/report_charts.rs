//! PNG charts for the benchmark report, drawn with plotters into bitmaps. Text
//! needs a TrueType font, read at run time from the Debian package
//! fonts-dejavu-core (plotters' ab_glyph backend has none built in).

use std::path::Path;
use std::sync::Once;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;
use plotters::style::FontStyle;

pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

type Res = Result<(), String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The grid and axis labels every chart has.
fn mesh<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    x_label: &str,
    y_label: &str,
) -> Res
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)
}

static FONT_ONCE: Once = Once::new();

/// Registers the font once per process; an error names the package to install.
pub fn init_font() -> Res {
    let bytes = std::fs::read(FONT)
        .map_err(|e| format!("{FONT}: {e}: install fonts-dejavu-core (make bench-report does)"))?;
    let mut r = Ok(());
    FONT_ONCE.call_once(|| {
        let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        if plotters::style::register_font("sans-serif", FontStyle::Normal, leaked).is_err() {
            r = Err(format!("{FONT} is not a usable TrueType font"));
        }
    });
    r
}

/// The legend box, the same on every chart but for where it sits.
fn legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> Res {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(position)
        .draw()
        .map_err(err)
}

/// One line of a line chart.
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
}

/// One panel: a title, its lines and an optional horizontal reference (the limit).
pub struct Panel {
    pub title: String,
    pub lines: Vec<Line>,
    pub reference: Option<(f64, String)>,
}

pub const OURS: RGBColor = RGBColor(31, 119, 180);
pub const TBF: RGBColor = RGBColor(214, 39, 40);
pub const GREY: RGBColor = RGBColor(90, 90, 90);

/// Panels side by side, each a line chart with a shared axis description.
pub fn line_panels(path: &Path, x_label: &str, y_label: &str, panels: &[Panel]) -> Res {
    init_font()?;
    let w = 560 * panels.len().max(1) as u32;
    let root = BitMapBackend::new(path, (w, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, p) in areas.iter().zip(panels) {
        let x_max = p
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|q| q.0))
            .fold(1.0, f64::max);
        let data_max = p
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|q| q.1))
            .chain(p.reference.iter().map(|r| r.0))
            .fold(1e-9, f64::max);
        // A line-rate burst would flatten everything else: clip at 3× the limit
        // and say so in the caption.
        let cap = p.reference.as_ref().map_or(f64::INFINITY, |r| r.0 * 3.0);
        let clipped = data_max > cap;
        let y_max = data_max.min(cap) * 1.15;
        let caption = if clipped {
            format!("{} (clipped at {:.0})", p.title, cap)
        } else {
            p.title.clone()
        };
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(err)?;
        mesh(&mut chart, x_label, y_label)?;
        if let Some((y, label)) = &p.reference {
            chart
                .draw_series(LineSeries::new(
                    vec![(0.0, *y), (x_max, *y)],
                    GREY.stroke_width(1),
                ))
                .map_err(err)?
                .label(label.as_str())
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], GREY));
        }
        for l in &p.lines {
            let c = l.color;
            chart
                .draw_series(LineSeries::new(
                    l.points.iter().map(|&(x, y)| (x, y.min(y_max))),
                    c.stroke_width(2),
                ))
                .map_err(err)?
                .label(l.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    }
    root.present().map_err(err)
}

/// A labelled, coloured set of (x, y) points.
pub type PointGroup = (String, RGBColor, Vec<(f64, f64)>);

/// Ours (x) against tbf (y) on log–log axes with the diagonal: a point above the
/// diagonal is a cell where ours is lower. Points are grouped (one colour each).
pub fn versus_loglog(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    groups: &[PointGroup],
) -> Res {
    init_font()?;
    let all: Vec<f64> = groups
        .iter()
        .flat_map(|g| g.2.iter().flat_map(|p| [p.0, p.1]))
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).max(1e-3) / 1.5;
    let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 10.0) * 1.5;
    let root = BitMapBackend::new(path, (720, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(14)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d((lo..hi).log_scale(), (lo..hi).log_scale())
        .map_err(err)?;
    mesh(&mut chart, x_label, y_label)?;
    chart
        .draw_series(LineSeries::new(
            vec![(lo, lo), (hi, hi)],
            GREY.stroke_width(1),
        ))
        .map_err(err)?
        .label("equal")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], GREY));
    for (label, color, pts) in groups {
        let c = *color;
        chart
            .draw_series(
                pts.iter()
                    .filter(|p| p.0 > 0.0 && p.1 > 0.0)
                    .map(|p| Circle::new(*p, 4, c.filled())),
            )
            .map_err(err)?
            .label(label.as_str())
            .legend(move |(x, y)| Circle::new((x + 9, y), 4, c.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(err)
}

/// Colour for goodput/limit: green in [0.94, 1.0], shading to yellow and red
/// below, purple above the limit; grey for a missing value.
fn ratio_color(v: Option<f64>) -> RGBColor {
    match v {
        None => RGBColor(200, 200, 200),
        Some(v) if !v.is_finite() => RGBColor(200, 200, 200),
        Some(v) if v > 1.0 => RGBColor(150, 90, 200),
        Some(v) if v >= 0.94 => RGBColor(80, 180, 90),
        Some(v) if v >= 0.85 => RGBColor(240, 200, 60),
        Some(_) => RGBColor(220, 70, 60),
    }
}

/// Heat maps of goodput/limit, one panel per limiter, rows × columns labelled,
/// every cell printed with its value.
pub fn ratio_heatmaps(
    path: &Path,
    rows: &[String],
    cols: &[String],
    panels: &[(String, Vec<Vec<Option<f64>>>)],
) -> Res {
    init_font()?;
    let cell_w = 64u32;
    let cell_h = 26u32;
    let left = 150u32;
    let top = 70u32;
    let panel_w = (left + cell_w * cols.len() as u32 + 20).max(left + 4 * 100 + 20);
    let h = top + cell_h * rows.len() as u32 + 60;
    let root = BitMapBackend::new(path, (panel_w * panels.len() as u32, h)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let font = ("sans-serif", 12).into_font();
    let small = ("sans-serif", 11).into_font();
    for (pi, (title, values)) in panels.iter().enumerate() {
        let x0 = pi as i32 * panel_w as i32;
        root.draw(&Text::new(
            title.clone(),
            (x0 + left as i32, 12),
            ("sans-serif", 17).into_font(),
        ))
        .map_err(err)?;
        for (ci, c) in cols.iter().enumerate() {
            let x = x0 + (left + cell_w * ci as u32) as i32 + 4;
            root.draw(&Text::new(c.clone(), (x, top as i32 - 18), small.clone()))
                .map_err(err)?;
        }
        for (ri, r) in rows.iter().enumerate() {
            let y = (top + cell_h * ri as u32) as i32;
            root.draw(&Text::new(r.clone(), (x0 + 8, y + 7), font.clone()))
                .map_err(err)?;
            for ci in 0..cols.len() {
                let v = values
                    .get(ri)
                    .and_then(|row| row.get(ci))
                    .copied()
                    .flatten();
                let x = x0 + (left + cell_w * ci as u32) as i32;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell_w as i32 - 2, y + cell_h as i32 - 2)],
                    ratio_color(v).filled(),
                ))
                .map_err(err)?;
                let text = v.map_or("—".to_string(), |v| format!("{v:.2}"));
                root.draw(&Text::new(text, (x + 12, y + 6), font.clone()))
                    .map_err(err)?;
            }
        }
        let ly = (top + cell_h * rows.len() as u32 + 18) as i32;
        let legend = [
            (Some(0.97), "0.94–1.0"),
            (Some(0.9), "0.85–0.94"),
            (Some(0.5), "< 0.85"),
            (Some(1.1), "> 1.0"),
        ];
        for (i, (v, label)) in legend.iter().enumerate() {
            let x = x0 + left as i32 + i as i32 * 100;
            root.draw(&Rectangle::new(
                [(x, ly), (x + 14, ly + 14)],
                ratio_color(*v).filled(),
            ))
            .map_err(err)?;
            root.draw(&Text::new(
                label.to_string(),
                (x + 20, ly + 1),
                small.clone(),
            ))
            .map_err(err)?;
        }
    }
    root.present().map_err(err)
}
