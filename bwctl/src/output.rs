//! Human-readable tables and rate computation for `list` and `stats`.

use std::time::Duration;

use nri_bandwidth_core::model::Entry;
use nri_bandwidth_core::rate::human_bps;
use serde::Serialize;

fn bps(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| human_bps(v as f64))
}

fn who(e: &Entry) -> String {
    let o = &e.owner;
    match (o.pod_name.is_empty(), o.container.is_empty()) {
        // A hook limit on a plain (podman) container: its short id is the name
        // `podman ps` shows.
        (true, _) if !o.container_id.is_empty() => {
            format!("id {}", o.container_id.chars().take(12).collect::<String>())
        }
        (true, _) => "-".into(),
        (false, true) => format!("{}/{}", o.pod_namespace, o.pod_name),
        (false, false) => format!("{}/{}/{}", o.pod_namespace, o.pod_name, o.container),
    }
}

pub fn list_table(entries: &[Entry]) -> String {
    if entries.is_empty() {
        return "nothing is limited on this host\n".into();
    }
    let mut s = format!(
        "{:<44} {:<24} {:<10} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9} {:>9}\n",
        "CGROUP",
        "POD/CONTAINER",
        "SOURCE",
        "INGRESS",
        "EGRESS",
        "IN BYTES",
        "OUT BYTES",
        "DROPPED",
        "MARKED",
        "ACKS HELD"
    );
    for e in entries {
        let path = if e.attached {
            e.path.clone()
        } else {
            format!("{} (gone)", e.path)
        };
        s += &format!(
            "{:<44} {:<24} {:<10} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9} {:>9}\n",
            path,
            who(e),
            e.owner.source.to_string(),
            bps(e.ingress_bps),
            bps(e.egress_bps),
            e.ingress.bytes,
            e.egress.bytes,
            e.ingress.dropped_packets + e.egress.dropped_packets,
            e.ingress.marked_packets + e.egress.marked_packets,
            e.acks_gated,
        );
    }
    s
}

#[derive(Serialize)]
pub struct RateRow {
    pub cgroup_id: u64,
    pub path: String,
    pub ingress_limit_bps: Option<u64>,
    pub egress_limit_bps: Option<u64>,
    pub ingress_bps: f64,
    pub egress_bps: f64,
    pub ingress_drops_per_sec: f64,
    pub egress_drops_per_sec: f64,
    pub marks_per_sec: f64,
    pub acks_gated_per_sec: f64,
}

/// Rates between two `list` snapshots, counting every byte as the limit does.
pub fn rates(before: &[Entry], after: &[Entry], dt: Duration) -> Vec<RateRow> {
    let secs = dt.as_secs_f64();
    after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.cgroup_id == a.cgroup_id);
            let d = |f: &dyn Fn(&Entry) -> u64| {
                b.map_or(0, |b| f(a).saturating_sub(f(b))) as f64 / secs
            };
            RateRow {
                cgroup_id: a.cgroup_id,
                path: a.path.clone(),
                ingress_limit_bps: a.ingress_bps,
                egress_limit_bps: a.egress_bps,
                ingress_bps: d(&|e| e.ingress.bytes) * 8.0,
                egress_bps: d(&|e| e.egress.bytes) * 8.0,
                ingress_drops_per_sec: d(&|e| e.ingress.dropped_packets),
                egress_drops_per_sec: d(&|e| e.egress.dropped_packets),
                marks_per_sec: d(&|e| e.ingress.marked_packets + e.egress.marked_packets),
                acks_gated_per_sec: d(&|e| e.acks_gated),
            }
        })
        .collect()
}

pub fn stats_table(rows: &[RateRow]) -> String {
    if rows.is_empty() {
        return "nothing is limited on this host\n".into();
    }
    let mut s = format!(
        "{:<44} {:>19} {:>19} {:>9} {:>9} {:>10}\n",
        "CGROUP", "INGRESS (LIMIT)", "EGRESS (LIMIT)", "DROPS/S", "MARKS/S", "ACKS HELD/S"
    );
    for r in rows {
        s += &format!(
            "{:<44} {:>19} {:>19} {:>9.0} {:>9.0} {:>10.0}\n",
            r.path,
            format!(
                "{} ({})",
                human_bps(r.ingress_bps),
                bps(r.ingress_limit_bps)
            ),
            format!("{} ({})", human_bps(r.egress_bps), bps(r.egress_limit_bps)),
            r.ingress_drops_per_sec + r.egress_drops_per_sec,
            r.marks_per_sec,
            r.acks_gated_per_sec,
        );
    }
    s
}
