//! Reading the raw results (JSON and JSON lines) and formatting their values for
//! the report's tables; the Markdown being written.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

pub fn read_json(p: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()))
}

pub fn read_lines(p: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("{}: {l}", p.display())))
        .collect()
}

pub fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

pub fn fmt3(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "—".into()
    }
}

pub fn fmt2(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "—".into()
    }
}

pub fn rate_name(bps: u64) -> String {
    match bps {
        b if b >= 1_000_000_000 && b % 1_000_000_000 == 0 => format!("{}G", b / 1_000_000_000),
        b if b >= 1_000_000 && b % 1_000_000 == 0 => format!("{}M", b / 1_000_000),
        b => format!("{b}"),
    }
}

pub fn delay_name(d: f64) -> String {
    format!("{d} ms")
}

/// A run's ratio or its error.
pub fn run_ratio(run: &Value) -> String {
    if let Some(e) = run["error"].as_str() {
        return format!("error: {}", e.chars().take(40).collect::<String>());
    }
    fmt3(f(&run["goodput_ratio"]))
}

pub fn spread(cell: &Value, key: &str) -> String {
    match cell[key].as_array() {
        Some(a) if a.len() == 2 && f(&a[1]) > f(&a[0]) => {
            format!(" ({}–{})", fmt3(f(&a[0])), fmt3(f(&a[1])))
        }
        _ => String::new(),
    }
}

pub fn rtt(run: &Value) -> String {
    let r = &run["rtt"];
    if r.is_null() {
        return "—".into();
    }
    format!("{}/{}", fmt2(f(&r["p50_ms"])), fmt2(f(&r["p99_ms"])))
}

pub fn retr(run: &Value) -> String {
    if run["error"].is_string() {
        return "—".into();
    }
    format!("{:.2}%", f(&run["retr_pct"]))
}

pub struct Out {
    pub md: String,
}

impl Out {
    pub fn l(&mut self, s: impl AsRef<str>) {
        self.md.push_str(s.as_ref());
        self.md.push('\n');
    }

    /// A table's header row and the `|---|` row under it, one cell per column.
    pub fn table(&mut self, header: &str) {
        self.l(header);
        self.l(format!(
            "|{}",
            "---|".repeat(header.matches('|').count() - 1)
        ));
    }
}

pub fn find_cell<'a>(
    cells: &'a [Value],
    d: f64,
    dir: &str,
    rate_bps: u64,
    streams: u64,
    cc: &str,
) -> Option<&'a Value> {
    cells.iter().find(|c| {
        f(&c["delay_ms"]) == d
            && c["direction"] == dir
            && c["rate_bps"].as_u64() == Some(rate_bps)
            && c["streams"].as_u64() == Some(streams)
            && c["cc"] == cc
    })
}

pub fn series_of(run: &Value) -> Vec<(f64, f64)> {
    run["series"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()? / 1e6)))
                .collect()
        })
        .unwrap_or_default()
}
