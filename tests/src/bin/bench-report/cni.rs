//! The section on cni-compare's runs: the real CNI bandwidth plugin against ours,
//! both through containerd.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::values::{Out, f, fmt2, fmt3, rate_name};

pub fn cni_section(o: &mut Out, cni: &[Value]) {
    o.l("");
    o.l("## Against the real CNI bandwidth plugin, through containerd");
    o.l("");
    o.l("A private containerd 2.4.2 whose CNI chain (bridge, portmap, bandwidth v1.9.1, all built from their Go \
         modules) ends with the bandwidth plugin; one pod limited by it (`kubernetes.io/*-bandwidth`), one by \
         our plugin (the same values as `nri-bandwidth.io/*-bandwidth`, which the CNI plugin ignores), the same \
         bwload workload, alternating. Goodput from bwload after one second of warm-up; RTT from pings to the pod \
         beside the flow; first second from the pod's host-side wire counters (containerd gives the CNI plugin a \
         burst of its own choosing, not ours).");
    o.l("");
    o.table("| direction | rate | CNI goodput/limit | ours goodput/limit | CNI RTT p50/p99 ms | ours RTT p50/p99 ms | CNI first s | ours first s |");
    // (direction, rate) → (CNI runs, our runs)
    type Runs<'a> = (Vec<&'a Value>, Vec<&'a Value>);
    let mut groups: BTreeMap<(String, u64), Runs> = BTreeMap::new();
    for r in cni {
        let key = (
            r["direction"].as_str().unwrap_or("?").to_string(),
            r["rate_bps"].as_u64().unwrap_or(0),
        );
        let e = groups.entry(key).or_default();
        if r["limiter"] == "cni" {
            e.0.push(r);
        } else {
            e.1.push(r);
        }
    }
    let mean = |v: &[&Value], k: &str| {
        let xs: Vec<f64> = v
            .iter()
            .map(|r| f(&r[k]))
            .filter(|x| x.is_finite())
            .collect();
        if xs.is_empty() {
            f64::NAN
        } else {
            xs.iter().sum::<f64>() / xs.len() as f64
        }
    };
    for ((dir, bps), (c, ours)) in groups.iter().rev() {
        o.l(format!(
            "| {dir} | {} | {} | {} | {}/{} | {}/{} | {} | {} |",
            rate_name(*bps),
            fmt3(mean(c, "ratio")),
            fmt3(mean(ours, "ratio")),
            fmt2(mean(c, "rtt_p50_ms")),
            fmt2(mean(c, "rtt_p99_ms")),
            fmt2(mean(ours, "rtt_p50_ms")),
            fmt2(mean(ours, "rtt_p99_ms")),
            fmt2(mean(c, "first_second_ratio")),
            fmt2(mean(ours, "first_second_ratio")),
        ));
    }
}
