//! Short transfers as users feel them: completion time of a request of SIZE
//! bytes into the workload on a new connection (`bw-bench --transfers`), with no
//! limit, ours and tbf, against the ideal time at the rate.

use std::fmt::Write as _;
use std::path::Path;

use nri_bandwidth_tests::human_size;
use nri_bandwidth_tests::report_charts::{self as charts, OURS, TBF};
use serde_json::Value;

use crate::values::{Out, delay_name, f, rate_name};

type Res = std::result::Result<(), String>;

/// (p50, p99) of one limiter in a row.
fn times(row: &Value, who: &str) -> Option<(f64, f64)> {
    row["times"]
        .as_array()?
        .iter()
        .find(|t| t[0] == who)
        .map(|t| (f(&t[1]), f(&t[2])))
}

fn ideal_ms(row: &Value) -> f64 {
    f(&row["size_bytes"]) * 8.0 / f(&row["limit_bps"]) * 1e3
}

pub fn transfers(dir: &Path, rel: &str, t: &Value, o: &mut Out) -> Res {
    let rows = t["transfers"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return Ok(());
    }
    o.l("");
    o.l("## Short transfers");
    o.l("");
    o.l("The workload receives SIZE bytes on a new connection and answers one byte; completion time at the \
         client, p50 / p99 in ms over 20 transfers (5 for the largest size), 50 ms apart. Ideal = SIZE at the \
         limit, without handshake or round trips. Ours is an ingress limit on the workload, tbf the CNI-style \
         qdisc with the same bucket.");
    o.l("");
    o.table("| one-way delay | limit | size | ideal ms | none p50 / p99 | ours p50 / p99 | tbf p50 / p99 | ours p50 / tbf p50 |");
    let show = |v: Option<(f64, f64)>| match v {
        Some((a, b)) => format!("{a:.1} / {b:.1}"),
        None => "—".into(),
    };
    for r in &rows {
        let (ours, tbf) = (times(r, "ours"), times(r, "tbf"));
        let ratio = match (ours, tbf) {
            (Some(a), Some(b)) if b.0 > 0.0 => format!("{:.2}", a.0 / b.0),
            _ => "—".into(),
        };
        o.l(format!(
            "| {} | {} | {} | {:.1} | {} | {} | {} | {ratio} |",
            delay_name(f(&r["delay_ms"])),
            rate_name(r["limit_bps"].as_u64().unwrap_or(0)),
            human_size(r["size_bytes"].as_u64().unwrap_or(0)),
            ideal_ms(r),
            show(times(r, "none")),
            show(ours),
            show(tbf),
        ));
    }
    let group = |who: &str, color| {
        let pts = rows
            .iter()
            .filter_map(|r| times(r, who).map(|(p50, _)| (ideal_ms(r), p50)))
            .collect::<Vec<_>>();
        (format!("{who}, p50"), color, pts)
    };
    let p = dir.join("transfer-times.png");
    charts::versus_loglog(
        &p,
        "short transfers: completion time against the ideal",
        "ideal at the limit, ms",
        "measured p50, ms",
        &[group("ours", OURS), group("tbf", TBF)],
    )?;
    let _ = writeln!(
        o.md,
        "\n**Completion time against the ideal** (every row above; on the diagonal a transfer takes exactly \
         SIZE at the limit, above it round trips and slow start add time):\n\n![transfer times]({rel}/transfer-times.png)"
    );
    Ok(())
}
