//! The sections on bw-bench's traffic matrix: headline, method, the delay line's
//! ceiling, the matrix at each delay and where ours loses to tbf.

use nri_bandwidth_tests::human_bps;
use serde_json::Value;

use crate::values::{Out, delay_name, f, fmt2, fmt3, retr, rtt, run_ratio, spread};

pub fn headline(o: &mut Out, cells: &[Value], delays: &[f64]) {
    o.l("");
    o.l("## Headline");
    o.l("");
    o.l("Targets from the datapath issue, restated at realistic round trips: goodput ≥ 0.94 of the \
         limit in every cell, RTT under load below tbf's, retransmissions at most tbf's + 1 % of packets.");
    o.l("");
    o.table("| one-way delay | direction | cells passing | ours goodput/limit min / mean | tbf min / mean | cells with ours p99 RTT < tbf's | ours retr ≤ tbf + 1 % |");
    for &d in delays {
        for dir in ["ingress", "egress"] {
            let cs: Vec<&Value> = cells
                .iter()
                .filter(|c| f(&c["delay_ms"]) == d && c["direction"] == dir)
                .collect();
            if cs.is_empty() {
                continue;
            }
            let pass = cs
                .iter()
                .filter(|c| c["pass"].as_bool() == Some(true))
                .count();
            let ratios = |k: &str| -> Vec<f64> {
                cs.iter()
                    .map(|c| f(&c[k]["goodput_ratio"]))
                    .filter(|v| v.is_finite())
                    .collect()
            };
            let (ro, rt) = (ratios("ours"), ratios("tbf"));
            let mm = |v: &[f64]| {
                if v.is_empty() {
                    "—".to_string()
                } else {
                    format!(
                        "{} / {}",
                        fmt3(v.iter().copied().fold(f64::INFINITY, f64::min)),
                        fmt3(v.iter().sum::<f64>() / v.len() as f64)
                    )
                }
            };
            let rtt_wins = cs
                .iter()
                .filter(|c| f(&c["ours"]["rtt"]["p99_ms"]) < f(&c["tbf"]["rtt"]["p99_ms"]))
                .count();
            let retr_ok = cs
                .iter()
                .filter(|c| f(&c["ours"]["retr_pct"]) <= f(&c["tbf"]["retr_pct"]) + 1.0)
                .count();
            o.l(format!(
                "| {} | {dir} | {pass} / {} | {} | {} | {rtt_wins} / {} | {retr_ok} / {} |",
                delay_name(d),
                cs.len(),
                mm(&ro),
                mm(&rt),
                cs.len(),
                cs.len()
            ));
        }
    }
}

pub fn method(o: &mut Out, meta: &Value) {
    o.l("");
    o.l("## Method");
    o.l("");
    o.l("- **Testbed**: the workload is a network namespace plus a cgroup v2 directory; its veth to the host \
         namespace is cut by a middle namespace where the **delay line** (`tests/src/delay_line.rs`) bridges \
         the two halves: an AF_PACKET socket on each side (with virtio-net headers, so GSO frames cross whole), \
         every frame held for the one-way delay and sent on in arrival order by a SCHED_FIFO thread. \
         The kernel has no netem and no fq; this is how the round trips below are built. \
         The table \"Validity\" gives its ceiling.");
    o.l(format!(
        "- **tbf** is set up as the CNI bandwidth plugin does it: tbf on the host-side veth for ingress; an ingress \
         qdisc + mirred redirect to an ifb with tbf for egress; `latency {}ms`; the same bucket as ours \
         ({}). Ours is the cgroup eBPF datapath with default settings. Only the tested direction is limited.",
        meta["tbf_latency_ms"],
        meta["burst"].as_str().unwrap_or("?")
    ));
    o.l("- **Goodput/limit**: iperf3 receiver goodput (TCP payload) / configured rate; limits count IP bytes, so \
         ~0.96 is a full pipe. Mean over the repeats, (min–max) when they differ.");
    o.l("- **Retransmissions**: the sender's, as a share of packets (bytes / MSS).");
    o.l("- **RTT under load**: ping every 10 ms from the host to the workload beside the bulk flow (p50/p99 ms); \
         it includes twice the one-way delay.");
    o.l("- **First-second overshoot**: receiver goodput over the first second (from 100 ms iperf3 intervals) / limit; \
         above 1 means the limiter let a burst through before holding.");
}

pub fn ceiling(o: &mut Out, m: &Value) {
    o.l("");
    o.l("## Validity: the delay line's ceiling");
    o.l("");
    o.l("Unlimited runs (no limiter, cubic) through each testbed, and the line's own timing over those runs: \
         frames written late by more than the p99 below add that much jitter to every figure at that delay. \
         A limited figure is valid only well below the ceiling.");
    o.l("");
    o.table("| one-way delay | direction | streams | goodput | RTT p50/p99 ms | line frames | line drops | late p50 / p99 / max µs | SCHED_FIFO |");
    for b in m["baseline"].as_array().into_iter().flatten() {
        let line = &b["line"];
        let line_cells = if line.is_null() {
            "plain veth | — | — | —".to_string()
        } else {
            format!(
                "{} | {} | {:.0} / {:.0} / {:.0} | {}",
                line["frames"],
                line["kernel_drops"].as_u64().unwrap_or(0)
                    + line["send_errors"].as_u64().unwrap_or(0),
                f(&line["late_p50_us"]),
                f(&line["late_p99_us"]),
                f(&line["late_max_us"]),
                if line["realtime"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                }
            )
        };
        o.l(format!(
            "| {} | {} | {} | {} | {} | {} |",
            delay_name(f(&b["delay_ms"])),
            b["direction"].as_str().unwrap_or("?"),
            b["streams"],
            human_bps(f(&b["run"]["received_bps"])),
            rtt(&b["run"]),
            line_cells
        ));
    }
}

pub fn matrices(o: &mut Out, cells: &[Value], delays: &[f64]) {
    for &d in delays {
        o.l("");
        o.l(format!("## Matrix at {} one way", delay_name(d)));
        o.l("");
        o.table("| direction | rate | streams | cc | ours goodput/limit | tbf goodput/limit | ours retr | tbf retr | ours RTT p50/p99 ms | tbf RTT p50/p99 ms | ours first s | tbf first s | verdict |");
        for c in cells.iter().filter(|c| f(&c["delay_ms"]) == d) {
            o.l(format!(
                "| {} | {} | {} | {} | {}{} | {}{} | {} | {} | {} | {} | {} | {} | {} |",
                c["direction"].as_str().unwrap_or("?"),
                c["rate"].as_str().unwrap_or("?"),
                c["streams"],
                c["cc"].as_str().unwrap_or("?"),
                run_ratio(&c["ours"]),
                spread(c, "ours_spread"),
                run_ratio(&c["tbf"]),
                spread(c, "tbf_spread"),
                retr(&c["ours"]),
                retr(&c["tbf"]),
                rtt(&c["ours"]),
                rtt(&c["tbf"]),
                fmt2(f(&c["ours"]["first_second_ratio"])),
                fmt2(f(&c["tbf"]["first_second_ratio"])),
                c["verdict"].as_str().unwrap_or("").replace('|', "/")
            ));
        }
    }
}

pub fn losses(o: &mut Out, cells: &[Value]) {
    o.l("");
    o.l("## Where ours loses to tbf");
    o.l("");
    let mut n = 0;
    for c in cells {
        let mut why = Vec::new();
        let (ours, tbf) = (&c["ours"], &c["tbf"]);
        let (ro, rt) = (f(&ours["goodput_ratio"]), f(&tbf["goodput_ratio"]));
        if ro.is_finite() && rt.is_finite() && ro < rt - 0.005 {
            why.push(format!("goodput {} vs tbf {}", fmt3(ro), fmt3(rt)));
        }
        if f(&ours["retr_pct"]) > f(&tbf["retr_pct"]) + 1.0 {
            why.push(format!(
                "retransmissions {:.2}% vs tbf {:.2}%",
                f(&ours["retr_pct"]),
                f(&tbf["retr_pct"])
            ));
        }
        if f(&ours["rtt"]["p99_ms"]) >= f(&tbf["rtt"]["p99_ms"]) {
            why.push(format!(
                "p99 RTT {} vs tbf {} ms",
                fmt2(f(&ours["rtt"]["p99_ms"])),
                fmt2(f(&tbf["rtt"]["p99_ms"]))
            ));
        }
        if ours["error"].is_string() {
            why.push(format!(
                "ours failed: {}",
                ours["error"].as_str().unwrap_or("")
            ));
        }
        if !why.is_empty() {
            n += 1;
            o.l(format!(
                "- {} ms {} {} ×{} {}: {}",
                f(&c["delay_ms"]),
                c["direction"].as_str().unwrap_or("?"),
                c["rate"].as_str().unwrap_or("?"),
                c["streams"],
                c["cc"].as_str().unwrap_or("?"),
                why.join("; ")
            ));
        }
    }
    if n == 0 {
        o.l("No cell: ours matches or beats tbf on goodput, retransmissions and RTT everywhere.");
    } else {
        o.l("");
        o.l(format!(
            "{n} cell(s). Ingress retransmissions come from the ACK gate: when the window cannot hold the \
             rate, the sender is stalled by withheld ACKs and restarted by its tail-loss probe, which TCP \
             counts as a retransmission (docs/design.md, \"Remote senders at data-center round trips\", \
             has the arithmetic)."
        ));
    }
}
