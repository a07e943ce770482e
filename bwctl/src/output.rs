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

/// One destination of the node's senders, as `bwctl senders list` shows it.
#[derive(Debug, Serialize, PartialEq)]
pub struct DestinationRow {
    pub address: std::net::IpAddr,
    /// "local" (a limited cgroup on this node) or "remote" (a pod elsewhere).
    pub place: &'static str,
    /// The local limit's cgroup id; 0 for a remote pod.
    pub cgroup_id: u64,
    /// The rate this node's senders share toward it, bits/s.
    pub rate_bps: u64,
    /// This node's sockets sending there now.
    pub active_sockets: u32,
}

pub fn destinations(
    dp: &nri_bandwidth_core::datapath::Datapath,
) -> Result<Vec<DestinationRow>, nri_bandwidth_core::datapath::DatapathError> {
    use nri_bandwidth_core::datapath::senders::REMOTE;
    let mut rows: Vec<DestinationRow> = dp
        .destinations()?
        .into_iter()
        .map(|(ip, d)| DestinationRow {
            address: ip,
            place: if d.cgid == REMOTE { "remote" } else { "local" },
            cgroup_id: d.cgid,
            rate_bps: d.rate.saturating_mul(8),
            active_sockets: d.active,
        })
        .collect();
    rows.sort_by_key(|r| r.address);
    Ok(rows)
}

pub fn destinations_table(rows: &[DestinationRow]) -> String {
    if rows.is_empty() {
        return "no destinations: no limited workload is known to this node's senders\n".into();
    }
    let mut out = format!(
        "{:<40} {:<7} {:>10} {:>12} {:>7}\n",
        "ADDRESS", "WHERE", "CGROUP", "RATE", "SOCKETS"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<40} {:<7} {:>10} {:>12} {:>7}\n",
            r.address.to_string(),
            r.place,
            if r.cgroup_id == 0 {
                "-".to_string()
            } else {
                r.cgroup_id.to_string()
            },
            human_bps(r.rate_bps as f64),
            r.active_sockets
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_table_names_place_rate_and_sockets() {
        assert!(destinations_table(&[]).starts_with("no destinations"));
        let rows = [
            DestinationRow {
                address: "10.0.0.7".parse().unwrap(),
                place: "remote",
                cgroup_id: 0,
                rate_bps: 10_000_000,
                active_sockets: 2,
            },
            DestinationRow {
                address: "10.0.0.9".parse().unwrap(),
                place: "local",
                cgroup_id: 4242,
                rate_bps: 5_000_000,
                active_sockets: 0,
            },
        ];
        let t = destinations_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        let remote: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(remote[0], "10.0.0.7");
        assert_eq!(remote[1], "remote");
        assert_eq!(remote[2], "-");
        assert_eq!(*remote.last().unwrap(), "2");
        assert!(lines[1].contains(&human_bps(10e6)), "{t}");
        assert!(
            lines[2].contains("4242") && lines[2].contains("local"),
            "{t}"
        );
    }
}
