//! The ingress issue's goals checked cell by cell: goodput, retransmissions,
//! RTT under load against the path's own and the first second, for every cell
//! the testbed can carry.

use nri_bandwidth_tests::human_bps;
use serde_json::Value;

use crate::bounds::{
    slow_start_first_second, unpaced_allowance_s, unpaced_start_s, window_floor_bps,
};
use crate::values::{Out, delay_name, f, fmt2, fmt3};

/// Goodput/limit a full pipe must reach, and may not pass.
const GOODPUT: (f64, f64) = (0.94, 1.0);
/// First-second goodput/limit bounds.
const FIRST_SECOND: (f64, f64) = (0.9, 1.1);
/// Retransmitted share of packets allowed for one flow (%), and above tbf's for many.
const RETR_ONE_FLOW: f64 = 0.1;
const RETR_ABOVE_TBF: f64 = 0.5;
/// p99 RTT under load may exceed the unlimited path's p50 by this much (ms).
const RTT_SLACK_MS: f64 = 1.0;
/// A cell is valid when its limit is at most this share of the unlimited goodput.
const VALID_SHARE: f64 = 0.8;

/// The unlimited run of the same delay, direction and stream count.
fn baseline<'a>(m: &'a Value, c: &Value) -> Option<&'a Value> {
    m["baseline"].as_array()?.iter().find(|b| {
        f(&b["delay_ms"]) == f(&c["delay_ms"])
            && b["direction"] == c["direction"]
            && b["streams"] == c["streams"]
    })
}

/// Why a cell misses the goals (empty: it meets them all); None for a cell
/// beyond the testbed's ceiling.
pub fn misses(m: &Value, c: &Value) -> Option<Vec<String>> {
    let base = baseline(m, c);
    let ceiling = base
        .map(|b| f(&b["run"]["received_bps"]))
        .unwrap_or(f64::NAN);
    let limit = c["rate_bps"].as_f64().unwrap_or(f64::NAN);
    if ceiling.is_finite() && limit > VALID_SHARE * ceiling {
        return None;
    }
    let (ours, tbf) = (&c["ours"], &c["tbf"]);
    let mut why = Vec::new();
    if let Some(e) = ours["error"].as_str() {
        why.push(format!("error: {}", e.chars().take(60).collect::<String>()));
        return Some(why);
    }
    let g = f(&ours["goodput_ratio"]);
    if !(GOODPUT.0..=GOODPUT.1).contains(&g) {
        why.push(format!("goodput {}", fmt3(g)));
    }
    let r = f(&ours["retr_pct"]);
    let allowed = if c["streams"].as_u64() == Some(1) {
        RETR_ONE_FLOW
    } else {
        f(&tbf["retr_pct"]).max(0.0) + RETR_ABOVE_TBF
    };
    // A missing figure (NaN) misses the goal too.
    if r.is_nan() || r > allowed {
        why.push(format!("retr {r:.2}% > {allowed:.2}%"));
    }
    let path = base
        .map(|b| f(&b["run"]["rtt"]["p50_ms"]))
        .unwrap_or(f64::NAN);
    let p99 = f(&ours["rtt"]["p99_ms"]);
    if path.is_finite() && p99 > path + RTT_SLACK_MS {
        why.push(format!("p99 RTT {} ms (path {})", fmt2(p99), fmt2(path)));
    }
    let first = f(&ours["first_second_ratio"]);
    if first.is_finite() && !(FIRST_SECOND.0..=FIRST_SECOND.1).contains(&first) {
        why.push(format!("first second {}", fmt2(first)));
    }
    Some(why)
}

/// The arithmetic beside a cell's missed goals (bounds.rs), and whether it puts
/// every missed goal out of reach for a limiter at the receiver's cgroup.
fn notes(m: &Value, c: &Value, why: &[String]) -> (Vec<String>, bool) {
    let rtt_s = baseline(m, c)
        .map(|b| f(&b["run"]["rtt"]["p50_ms"]) / 1e3)
        .unwrap_or(f64::NAN);
    let limit = f(&c["rate_bps"]);
    let streams = c["streams"].as_u64().unwrap_or(1) as u32;
    let one_way_s = f(&c["delay_ms"]) / 1e3;
    let ingress = c["direction"] == "ingress";
    let first = f(&c["ours"]["first_second_ratio"]);
    let has = |p: &str| why.iter().any(|w| w.starts_with(p));
    let mut out = Vec::new();
    let (mut slow_start, mut floor) = (false, false);
    if !rtt_s.is_finite() || !limit.is_finite() {
        return (out, false);
    }
    let ceiling = slow_start_first_second(limit, streams, rtt_s, one_way_s);
    if has("first") && first < FIRST_SECOND.0 && ceiling < FIRST_SECOND.0 {
        slow_start = true;
        out.push(format!(
            "slow start from 10 segments reaches at most {} of the limit in the first second \
             at a {} ms RTT (tbf {})",
            fmt2(ceiling),
            fmt2(rtt_s * 1e3),
            fmt2(f(&c["tbf"]["first_second_ratio"]))
        ));
    }
    if !ingress && has("first") && first > FIRST_SECOND.1 {
        let (burst, debt) = unpaced_allowance_s(limit);
        out.push(format!(
            "{streams} × 10 first segments leave unpaced ({} s at the limit); the egress hook \
             drops them past {} s of debt, after the bucket's {} s burst",
            fmt2(unpaced_start_s(limit, streams)),
            fmt2(debt),
            fmt2(burst)
        ));
    }
    let w = window_floor_bps(streams, rtt_s);
    if ingress && (has("goodput") || has("retr")) && w > limit {
        floor = true;
        out.push(format!(
            "{streams} × 2 segments per {} ms RTT clock {}: the window cannot hold the rate, \
             a receiver alone withholds ACKs until the sender's loss probe",
            fmt2(rtt_s * 1e3),
            human_bps(w)
        ));
    }
    let covered = |p: &str| {
        !has(p)
            || match p {
                "first" => slow_start,
                "goodput" | "retr" => floor,
                _ => false,
            }
    };
    let out_of_reach = !why.is_empty()
        && ["goodput", "retr", "p99", "first", "error"]
            .iter()
            .all(|p| covered(p));
    (out, out_of_reach)
}

pub fn goals(o: &mut Out, m: &Value, cells: &[Value], delays: &[f64]) {
    o.l("");
    o.l("## Goals of the ingress issue, cell by cell");
    o.l("");
    o.l(format!(
        "Per cell, ours only: goodput/limit in [{}, {}]; retransmissions ≤ {} % of packets for one flow and \
         ≤ tbf's + {} % for eight; p99 RTT under load within {} ms of the unlimited run's p50 at the same \
         delay; first-second goodput/limit in [{}, {}]. Cells whose limit exceeds {} of the unlimited goodput \
         at that delay are beyond the testbed and not counted.",
        GOODPUT.0,
        GOODPUT.1,
        RETR_ONE_FLOW,
        RETR_ABOVE_TBF,
        RTT_SLACK_MS,
        FIRST_SECOND.0,
        FIRST_SECOND.1,
        VALID_SHARE
    ));
    o.l("");
    o.table("| one-way delay | direction | valid cells | all goals | goodput | retransmissions | RTT | first second |");
    let mut failing = Vec::new();
    let mut beyond_receiver = 0;
    for &d in delays {
        for dir in ["ingress", "egress"] {
            let mut n = 0;
            let mut counts = [0usize; 5];
            for c in cells
                .iter()
                .filter(|c| f(&c["delay_ms"]) == d && c["direction"] == dir)
            {
                let Some(why) = misses(m, c) else { continue };
                n += 1;
                let has = |p: &str| why.iter().any(|w| w.starts_with(p));
                for (i, ok) in [
                    why.is_empty(),
                    !has("goodput") && !has("error"),
                    !has("retr") && !has("error"),
                    !has("p99") && !has("error"),
                    !has("first") && !has("error"),
                ]
                .into_iter()
                .enumerate()
                {
                    counts[i] += ok as usize;
                }
                if !why.is_empty() {
                    let (arith, out_of_reach) = notes(m, c, &why);
                    beyond_receiver += out_of_reach as usize;
                    let arith = if arith.is_empty() {
                        String::new()
                    } else {
                        format!(" — {}", arith.join("; "))
                    };
                    failing.push(format!(
                        "- {} {dir} {} ×{} {}: {}{arith}",
                        delay_name(d),
                        c["rate"].as_str().unwrap_or("?"),
                        c["streams"],
                        c["cc"].as_str().unwrap_or("?"),
                        why.join("; ")
                    ));
                }
            }
            if n == 0 {
                continue;
            }
            o.l(format!(
                "| {} | {dir} | {n} | {} | {} | {} | {} | {} |",
                delay_name(d),
                counts[0],
                counts[1],
                counts[2],
                counts[3],
                counts[4]
            ));
        }
    }
    if !failing.is_empty() {
        o.l("");
        o.l(format!(
            "Cells missing a goal ({}). After a dash, the arithmetic of what TCP allows on that path \
             (tests/src/bin/bench-report/bounds.rs: 1,448 B segments, an initial window of ten, two \
             segments as the smallest window a bulk receiver can offer; RTT is the unlimited run's p50). \
             In {beyond_receiver} of them it puts every missed goal out of reach for a limiter at the \
             receiver: slow start caps the first second for any limiter, and where two segments per round \
             trip already exceed the limit only the sender can hold the rate (same-node senders and two \
             nodes below).",
            failing.len()
        ));
        o.l("");
        for l in failing {
            o.l(l);
        }
    }
}
