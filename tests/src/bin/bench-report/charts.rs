//! The report's PNG charts (drawn by the library's report_charts) and the
//! paragraphs that link them.

use std::fmt::Write as _;
use std::path::Path;

use nri_bandwidth_tests::report_charts::{self as charts, Line, OURS, Panel, TBF};
use serde_json::Value;

use crate::values::{Out, f, find_cell, rate_name, series_of};

type Res = std::result::Result<(), String>;

pub fn draw_charts(
    dir: &Path,
    rel: &str,
    cells: &[Value],
    delays: &[f64],
    cni: &[Value],
    o: &mut Out,
) -> Res {
    o.l("");
    o.l("## Charts");
    flow_over_time(dir, rel, cells, delays, o)?;
    rtt_under_load(dir, rel, cells, delays, o)?;
    accuracy(dir, rel, cells, delays, o)?;
    cni_over_time(dir, rel, cni, o)
}

/// A panel of ours against another limiter (tbf's colour) under a 100 Mbit/s limit.
fn at_100m(title: String, ours: (&str, Vec<(f64, f64)>), other: (&str, Vec<(f64, f64)>)) -> Panel {
    let line = |(label, points): (&str, Vec<(f64, f64)>), color| Line {
        label: label.into(),
        points,
        color,
    };
    Panel {
        title,
        lines: vec![line(ours, OURS), line(other, TBF)],
        reference: Some((100.0, "limit".into())),
    }
}

fn flow_over_time(dir: &Path, rel: &str, cells: &[Value], delays: &[f64], o: &mut Out) -> Res {
    // 1. One limited flow over time, ours vs tbf: 100M, 1 cubic stream, at the
    //    middle delay, both directions.
    let d = delays.get(delays.len() / 2).copied().unwrap_or(0.0);
    let mut panels = Vec::new();
    for dirn in ["ingress", "egress"] {
        if let Some(c) = find_cell(cells, d, dirn, 100_000_000, 1, "cubic") {
            let first = |k: &str| {
                c[k].as_array()
                    .and_then(|a| a.first())
                    .map(series_of)
                    .unwrap_or_default()
            };
            panels.push(at_100m(
                format!("{dirn}, 100 Mbit/s, 1 cubic flow, {d} ms one way"),
                ("ours", first("ours_runs")),
                ("tbf (CNI-style)", first("tbf_runs")),
            ));
        }
    }
    if !panels.is_empty() {
        let p = dir.join("goodput-over-time.png");
        charts::line_panels(
            &p,
            "seconds since the flow started",
            "receiver goodput, Mbit/s",
            &panels,
        )?;
        let _ = writeln!(
            o.md,
            "\n**One limited flow over time** (receiver goodput per 100 ms, first repeat; the first second \
             is the overshoot column of the matrix):\n\n![goodput over time]({rel}/goodput-over-time.png)"
        );
    }
    Ok(())
}

fn rtt_under_load(dir: &Path, rel: &str, cells: &[Value], delays: &[f64], o: &mut Out) -> Res {
    // 2. RTT under load: ours vs tbf p99 for every cell, one colour per delay.
    let palette = [
        plotters::style::RGBColor(44, 160, 44),
        plotters::style::RGBColor(255, 127, 14),
        plotters::style::RGBColor(148, 103, 189),
        plotters::style::RGBColor(23, 190, 207),
    ];
    let groups: Vec<_> = delays
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            let pts = cells
                .iter()
                .filter(|c| f(&c["delay_ms"]) == d)
                .map(|c| {
                    (
                        f(&c["ours"]["rtt"]["p99_ms"]),
                        f(&c["tbf"]["rtt"]["p99_ms"]),
                    )
                })
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect::<Vec<_>>();
            (format!("{d} ms one way"), palette[i % palette.len()], pts)
        })
        .collect();
    let p = dir.join("rtt-under-load.png");
    charts::versus_loglog(
        &p,
        "p99 RTT under load, every cell",
        "ours, ms",
        "tbf (CNI-style), ms",
        &groups,
    )?;
    let _ = writeln!(
        o.md,
        "\n**RTT under load** (p99 of pings beside the bulk flow; a point above the diagonal is a cell where \
         ours adds less delay):\n\n![RTT under load]({rel}/rtt-under-load.png)"
    );
    Ok(())
}

fn accuracy(dir: &Path, rel: &str, cells: &[Value], delays: &[f64], o: &mut Out) -> Res {
    // 3. Accuracy heat maps: rows = delay × direction, columns = rate × streams × cc.
    let mut cols: Vec<(u64, u64, String)> = cells
        .iter()
        .map(|c| {
            (
                c["rate_bps"].as_u64().unwrap_or(0),
                c["streams"].as_u64().unwrap_or(0),
                c["cc"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    cols.sort();
    cols.dedup();
    let mut rows = Vec::new();
    for &d in delays {
        for dirn in ["ingress", "egress"] {
            rows.push((d, dirn));
        }
    }
    let col_names: Vec<String> = cols
        .iter()
        .map(|(r, s, cc)| format!("{}×{s} {}", rate_name(*r), &cc[..cc.len().min(1)]))
        .collect();
    let row_names: Vec<String> = rows
        .iter()
        .map(|(d, dirn)| format!("{d} ms {dirn}"))
        .collect();
    let grid = |k: &str| -> Vec<Vec<Option<f64>>> {
        rows.iter()
            .map(|(d, dirn)| {
                cols.iter()
                    .map(|(r, s, cc)| {
                        find_cell(cells, *d, dirn, *r, *s, cc)
                            .map(|c| f(&c[k]["goodput_ratio"]))
                            .filter(|v| v.is_finite())
                    })
                    .collect()
            })
            .collect()
    };
    let p = dir.join("accuracy-heatmap.png");
    charts::ratio_heatmaps(
        &p,
        &row_names,
        &col_names,
        &[
            ("ours: goodput / limit".to_string(), grid("ours")),
            ("tbf (CNI-style): goodput / limit".to_string(), grid("tbf")),
        ],
    )?;
    let _ = writeln!(
        o.md,
        "\n**Accuracy matrix** (mean goodput / limit per cell; columns are rate × streams and c = cubic, \
         b = bbr; green is the 0.94–1.0 target):\n\n\
         ![accuracy heat map]({rel}/accuracy-heatmap.png)"
    );
    Ok(())
}

fn cni_over_time(dir: &Path, rel: &str, cni: &[Value], o: &mut Out) -> Res {
    // 4. The real CNI plugin vs ours over time, egress 100M, first repeat.
    let pick = |lim: &str, dirn: &str| {
        cni.iter()
            .find(|r| {
                r["limiter"] == lim
                    && r["direction"] == dirn
                    && r["rate_bps"].as_u64() == Some(100_000_000)
            })
            .map(series_of)
            .unwrap_or_default()
    };
    let panels: Vec<Panel> = ["ingress", "egress"]
        .iter()
        .map(|dirn| {
            at_100m(
                format!("pod {dirn}, 100 Mbit/s, via containerd"),
                ("ours (NRI plugin)", pick("ours", dirn)),
                ("CNI bandwidth plugin", pick("cni", dirn)),
            )
        })
        .filter(|p| p.lines.iter().any(|l| !l.points.is_empty()))
        .collect();
    if !panels.is_empty() {
        let p = dir.join("cni-over-time.png");
        charts::line_panels(
            &p,
            "seconds since the transfer started",
            "wire rate, Mbit/s",
            &panels,
        )?;
        let _ = writeln!(
            o.md,
            "\n**Against the real CNI plugin** (the pod's wire rate every 100 ms, headers included):\n\n\
             ![CNI vs ours]({rel}/cni-over-time.png)"
        );
    }
    Ok(())
}
