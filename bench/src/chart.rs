//! The SVG chart written next to the markdown report (`BENCHMARKS.svg` next
//! to `BENCHMARKS.md`): every allocator's time and peak RSS relative to the
//! baseline, per workload.
//!
//! ```text
//!  time vs mimalloc                     peak RSS vs mimalloc
//!              1/4  1/2   1    2    4               1/4  1/2   1    2    4
//!  larson-t1          ██████│                 larson-t1      ███│
//!                           │██                                 │████
//!  ...                      │                 ...               │
//!  geometric mean       ████│                 geometric mean  ██│
//! ```
//!
//! Two panels side by side, one row per case (the report's order) plus the
//! geometric mean, one horizontal bar per allocator, drawn from the
//! baseline's 1.0 line (a black vertical line) to the ratio on a log scale:
//! bars to the left are better than the baseline, to the right worse. The
//! baseline itself has no bar. Ratios beyond the axis are drawn to its end
//! and labelled with their value; a failed run has no bar.
//!
//! Drawn with `plotters`' SVG backend only; without a font crate plotters
//! estimates text widths, and the SVG viewer renders the text.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Report, Stats};

/// Width of the picture.
const WIDTH: u32 = 1400;
/// Height of the title band (title, subtitle, legend).
const HEADER: u32 = 84;
/// Height of one row (one case).
const ROW: u32 = 26;
/// Space under the last row for the ratio axis and its description.
const FOOTER: u32 = 56;
/// Width of the case names left of each panel.
const LABELS: u32 = 150;
/// The axis never extends closer to 1.0 than these.
const MIN_SPAN: (f64, f64) = (0.5, 2.0);
/// Nor further than these (bars beyond are clipped and labelled).
const MAX_SPAN: (f64, f64) = (1.0 / 16.0, 16.0);

/// One bar colour per allocator, in the driver's order.
fn color(allocator: &str) -> RGBColor {
    match allocator {
        "rulloc" => RGBColor(214, 39, 40),
        "system" => RGBColor(140, 140, 140),
        "jemalloc" => RGBColor(31, 119, 180),
        "snmalloc" => RGBColor(44, 160, 44),
        "mimalloc" => RGBColor(0, 0, 0),
        _ => RGBColor(255, 127, 14),
    }
}

/// One panel's data: a row per case plus the geometric mean, a ratio (or
/// nothing) per allocator.
struct Panel {
    title: String,
    rows: Vec<(String, Vec<Option<f64>>)>,
}

/// Ratios of `metric` to the baseline's, per case and allocator (the
/// allocators of the first case, baseline excluded), and their geometric
/// means over the cases where both succeeded, as the report's tables have it.
fn panel(report: &Report, allocs: &[String], title: String, metric: fn(&Stats) -> f64) -> Panel {
    let mut logs: Vec<Vec<f64>> = vec![Vec::new(); allocs.len()];
    let mut rows = Vec::new();
    for case in &report.cases {
        let stats = |name: &str| {
            case.rows
                .iter()
                .find(|r| r.allocator == name)
                .and_then(|r| r.result.as_ref().ok())
        };
        let base = stats(&report.baseline).map(metric).filter(|b| *b > 0.0);
        let ratios: Vec<Option<f64>> = allocs
            .iter()
            .map(|a| {
                let x = metric(stats(a)?) / base?;
                (x > 0.0 && x.is_finite()).then_some(x)
            })
            .collect();
        for (log, x) in logs.iter_mut().zip(&ratios) {
            if let Some(x) = x {
                log.push(x.ln());
            }
        }
        rows.push((case.id.clone(), ratios));
    }
    let means = logs
        .iter()
        .map(|l| (!l.is_empty()).then(|| (l.iter().sum::<f64>() / l.len() as f64).exp()))
        .collect();
    rows.push(("geometric mean".to_string(), means));
    Panel { title, rows }
}

/// The axis range: powers of two around every ratio, within [`MAX_SPAN`].
fn span(panels: &[Panel]) -> (f64, f64) {
    let (mut lo, mut hi) = MIN_SPAN;
    for x in panels
        .iter()
        .flat_map(|p| &p.rows)
        .flat_map(|(_, r)| r)
        .flatten()
    {
        lo = lo.min(*x);
        hi = hi.max(*x);
    }
    let lo = 2f64.powf(lo.log2().floor()).max(MAX_SPAN.0);
    let hi = 2f64.powf(hi.log2().ceil()).min(MAX_SPAN.1);
    (lo, hi)
}

fn tick_label(x: f64) -> String {
    if x >= 1.0 {
        format!("{x}×")
    } else {
        format!("1/{}×", (1.0 / x).round())
    }
}

fn value_label(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0}×")
    } else if x >= 0.1 {
        format!("{x:.2}×")
    } else {
        format!("{x:.3}×")
    }
}

/// The chart of `report`'s cases as an SVG document. An empty report (no
/// cases) gives an error.
pub fn svg(report: &Report) -> Result<String, String> {
    let first = report.cases.first().ok_or("no workloads to chart")?;
    let allocs: Vec<String> = first
        .rows
        .iter()
        .map(|r| r.allocator.clone())
        .filter(|a| *a != report.baseline)
        .collect();
    let panels = [
        panel(
            report,
            &allocs,
            format!("time relative to {}", report.baseline),
            |s| s.secs,
        ),
        panel(
            report,
            &allocs,
            format!("peak RSS relative to {}", report.baseline),
            |s| s.maxrss_kib as f64,
        ),
    ];
    let rows = panels[0].rows.len() as u32;
    let height = HEADER + rows * ROW + FOOTER;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        draw(&root, report, &allocs, &panels).map_err(|e| format!("chart: {e}"))?;
        root.present().map_err(|e| format!("chart: {e}"))?;
    }
    Ok(out)
}

type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

fn draw(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    report: &Report,
    allocs: &[String],
    panels: &[Panel],
) -> DrawResult {
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER);
    let title = format!(
        "Rulloc and its peers relative to {} (log scale; left of the line is better)",
        report.baseline
    );
    header.draw(&Text::new(
        title,
        (16, 10),
        ("sans-serif", 20).into_font().style(FontStyle::Bold),
    ))?;
    let commit = report.commit.split(" (").next().unwrap_or(&report.commit);
    header.draw(&Text::new(
        format!("{} · commit {commit} · {}", report.date, report.mode),
        (16, 36),
        ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
    ))?;
    // Legend: a swatch per allocator, then the baseline's line.
    let mut x = 16;
    for a in allocs {
        header.draw(&Rectangle::new([(x, 62), (x + 14, 74)], color(a).filled()))?;
        header.draw(&Text::new(
            a.clone(),
            (x + 19, 61),
            ("sans-serif", 13).into_font(),
        ))?;
        x += 26 + 8 * a.len() as i32 + 14;
    }
    header.draw(&PathElement::new(
        vec![(x + 6, 60), (x + 6, 76)],
        BLACK.stroke_width(2),
    ))?;
    header.draw(&Text::new(
        format!("{} = 1", report.baseline),
        (x + 13, 61),
        ("sans-serif", 13).into_font(),
    ))?;

    let (lo, hi) = span(panels);
    let areas = body.split_evenly((1, panels.len()));
    for (area, panel) in areas.iter().zip(panels) {
        draw_panel(area, panel, allocs, (lo, hi))?;
    }
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &Panel,
    allocs: &[String],
    (lo, hi): (f64, f64),
) -> DrawResult {
    let n = panel.rows.len() as i32;
    let names: Vec<&str> = panel.rows.iter().map(|(name, _)| name.as_str()).collect();
    // Row i (from the top) spans y = (n-1-i)·UNIT .. (n-i)·UNIT (integers:
    // plotters formats labels of integer axes with key points, not of
    // floating-point ones); its label sits in the middle.
    const UNIT: i32 = 1000;
    let label_points: Vec<i32> = (0..n).map(|i| (n - 1 - i) * UNIT + UNIT / 2).collect();
    let mut ticks = Vec::new();
    let mut t = lo;
    while t <= hi * 1.0001 {
        ticks.push(t);
        t *= 2.0;
    }
    let mut chart = ChartBuilder::on(area)
        .margin_top(4)
        .margin_right(24)
        .x_label_area_size(FOOTER - 10)
        .y_label_area_size(LABELS)
        .build_cartesian_2d(
            (lo..hi).log_scale().with_key_points(ticks),
            (0..n * UNIT).with_key_points(label_points),
        )?;
    let label_of = |y: &i32| {
        let i = (n - 1 - y.div_euclid(UNIT)) as usize;
        names.get(i).map_or(String::new(), |s| s.to_string())
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_label_formatter(&|x| tick_label(*x))
        .y_label_formatter(&label_of)
        .x_desc(panel.title.clone())
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()?;

    // A faint band behind the geometric mean, which is not a workload.
    chart.draw_series(std::iter::once(Rectangle::new(
        [(lo, 0), (hi, UNIT)],
        RGBColor(245, 245, 245).filled(),
    )))?;

    let pad = UNIT / 8;
    let h = (UNIT - 2 * pad) / allocs.len().max(1) as i32;
    for (i, (_, ratios)) in (0..).zip(&panel.rows) {
        let top = (n - i) * UNIT - pad;
        for (k, (a, ratio)) in (0..).zip(allocs.iter().zip(ratios)) {
            let Some(x) = *ratio else { continue };
            let clipped = x.clamp(lo, hi);
            let (y0, y1) = (top - (k + 1) * h, top - k * h);
            chart.draw_series(std::iter::once(Rectangle::new(
                [(1.0, y0), (clipped, y1)],
                color(a).filled(),
            )))?;
            if clipped != x {
                let (anchor, dx) = if x > hi {
                    (Pos::new(HPos::Right, VPos::Center), -3)
                } else {
                    (Pos::new(HPos::Left, VPos::Center), 3)
                };
                let (px, py) = chart.backend_coord(&(clipped, (y0 + y1) / 2));
                area.draw(&Text::new(
                    value_label(x),
                    (
                        px + dx - area.get_base_pixel().0,
                        py - area.get_base_pixel().1,
                    ),
                    ("sans-serif", 10).into_font().color(&WHITE).pos(anchor),
                ))?;
            }
        }
    }
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(1.0, 0), (1.0, n * UNIT)],
        BLACK.stroke_width(2),
    )))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{CaseReport, Row};
    use std::collections::BTreeMap;

    fn stats(secs: f64, maxrss_kib: u64) -> Result<Stats, String> {
        Ok(Stats {
            secs,
            secs_min: secs,
            secs_max: secs,
            ops: 1,
            maxrss_kib,
            extra: BTreeMap::new(),
        })
    }

    fn report() -> Report {
        let case = |id: &str, rulloc: Result<Stats, String>| CaseReport {
            id: id.to_string(),
            about: String::new(),
            unit: "op".into(),
            threads: 1,
            rows: vec![
                Row {
                    allocator: "rulloc".into(),
                    result: rulloc,
                },
                Row {
                    allocator: "mimalloc".into(),
                    result: stats(1.0, 1000),
                },
                Row {
                    allocator: "system".into(),
                    result: stats(40.0, 500),
                },
            ],
            checksum_warning: None,
        };
        Report {
            date: "today".into(),
            machine: Vec::new(),
            commit: "abc (subject)".into(),
            command: String::new(),
            mode: "quick".into(),
            allocators: Vec::new(),
            baseline: "mimalloc".into(),
            note: None,
            total_secs: 0.0,
            callgrind: None,
            chart: None,
            cases: vec![
                case("fast-case", stats(0.5, 2000)),
                case("broken-case", Err("crashed".into())),
            ],
        }
    }

    #[test]
    fn ratios_and_geomeans() {
        let r = report();
        let allocs = vec!["rulloc".to_string(), "system".to_string()];
        let p = panel(&r, &allocs, "t".into(), |s| s.secs);
        assert_eq!(p.rows.len(), 3);
        assert_eq!(p.rows[0].1, vec![Some(0.5), Some(40.0)]);
        assert_eq!(p.rows[1].1, vec![None, Some(40.0)]);
        // The mean covers the cases each allocator succeeded in.
        assert_eq!(p.rows[2].0, "geometric mean");
        let means = &p.rows[2].1;
        assert!((means[0].expect("rulloc mean") - 0.5).abs() < 1e-12);
        assert!((means[1].expect("system mean") - 40.0).abs() < 1e-9);
        // 40× is beyond the widest axis: clipped at 16×.
        assert_eq!(span(&[p]), (0.5, 16.0));
    }

    #[test]
    fn svg_has_every_case_and_allocator() {
        let text = svg(&report()).expect("draws");
        assert!(text.starts_with("<svg"), "{}", &text[..40.min(text.len())]);
        for needle in [
            "fast-case",
            "broken-case",
            "geometric mean",
            "rulloc",
            "system",
            "mimalloc = 1",
            "40×",
        ] {
            assert!(text.contains(needle), "no {needle:?} in the chart");
        }
        let empty = Report {
            cases: Vec::new(),
            ..report()
        };
        assert!(svg(&empty).is_err());
    }

    #[test]
    fn labels() {
        assert_eq!(tick_label(0.25), "1/4×");
        assert_eq!(tick_label(2.0), "2×");
        assert_eq!(value_label(40.0), "40×");
        assert_eq!(value_label(1.234), "1.23×");
    }
}
