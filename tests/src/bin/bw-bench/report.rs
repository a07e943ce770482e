//! The Markdown tables' cells, progress lines and the closing summary.

use nri_bandwidth_tests::human_bps;

use crate::args::Args;
use crate::results::{Cell, Report, Results, Run};
use crate::verdicts::{MAX_RATIO, MIN_RATIO, RETR_SLACK_PCT};

/// An error message fit for a table cell.
pub fn err_cell(r: &Run) -> String {
    let e = r.error.as_deref().unwrap_or("");
    let mut s: String = e.replace('|', "/").replace('\n', " ");
    if s.chars().count() > 70 {
        s = s.chars().take(70).collect::<String>() + "…";
    }
    format!("error: {s}")
}

pub fn ratio_cell(r: Option<&Run>) -> String {
    match r {
        None => "—".into(),
        Some(r) if r.error.is_some() => err_cell(r),
        Some(r) => r.goodput_ratio.map_or("—".into(), |x| format!("{x:.3}")),
    }
}

pub fn retr_cell(r: &Run) -> String {
    if r.error.is_some() {
        "—".into()
    } else {
        format!("{} ({:.2}%)", r.retransmits, r.retr_pct)
    }
}

pub fn rtt_cell(r: &Run) -> String {
    match &r.rtt {
        _ if r.error.is_some() => "—".into(),
        None => "—".into(),
        Some(x) if x.samples == 0 => "no replies".into(),
        Some(x) => {
            let lost = x.sent as usize - x.samples.min(x.sent as usize);
            let mut s = format!("{:.3}/{:.3}", x.p50_ms, x.p99_ms);
            if lost > 0 {
                s += &format!(" ({:.0}% lost)", lost as f64 * 100.0 / f64::from(x.sent));
            }
            s
        }
    }
}

pub fn opt_cell(r: Option<&Run>, f: fn(&Run) -> String) -> String {
    r.map_or("—".into(), f)
}

pub fn with_spread(cell: String, spread: Option<(f64, f64)>) -> String {
    match spread {
        Some((lo, hi)) if hi > lo => format!("{cell} ({lo:.3}–{hi:.3})"),
        _ => cell,
    }
}

pub fn matrix_row(c: &Cell) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        c.direction.name(),
        c.rate,
        c.streams,
        c.cc,
        with_spread(ratio_cell(c.ours.as_ref()), c.ours_spread),
        with_spread(ratio_cell(c.tbf.as_ref()), c.tbf_spread),
        opt_cell(c.ours.as_ref(), retr_cell),
        opt_cell(c.tbf.as_ref(), retr_cell),
        opt_cell(c.ours.as_ref(), rtt_cell),
        opt_cell(c.tbf.as_ref(), rtt_cell),
        c.verdict
    )
}

pub fn progress(r: &Run) -> String {
    if r.error.is_some() {
        return err_cell(r);
    }
    let mut s = human_bps(r.received_bps);
    if let Some(x) = r.goodput_ratio {
        s += &format!(" = {x:.3} of limit");
    }
    s += &format!(", retr {} ({:.2}%)", r.retransmits, r.retr_pct);
    if r.rtt.is_some() {
        s += &format!(", RTT {} ms", rtt_cell(r));
    }
    if let Some(o) = &r.ours {
        s += &format!(
            ", dropped {} marked {} acks gated {}",
            o.dropped_packets, o.marked_packets, o.acks_gated
        );
    }
    s
}

pub fn summary(results: &mut Results, a: &Args, r: &mut Report) {
    let cells = &results.cells;
    let passed = cells.iter().filter(|c| c.pass).count();
    results.passed = passed;
    let count = |what: &str| cells.iter().filter(|c| c.failed.contains(&what)).count();
    r.line("");
    r.line(format!(
        "**Summary: {passed} of {} cells passed** (failed on goodput: {}, retransmits: {}, RTT: {}; error cells: {}).",
        cells.len(),
        count("goodput"),
        count("retransmits"),
        count("rtt"),
        count("error"),
    ));
    r.line("");
    r.line("Notes:");
    r.line(format!(
        "- ✓ needs all of: ours goodput/limit in [{MIN_RATIO}, {MAX_RATIO:.1}]; ours retransmits ≤ tbf's + {RETR_SLACK_PCT}% of packets; {}.",
        if a.ping_on() {
            "ours p99 RTT < tbf's"
        } else {
            "(RTT not measured: --no-ping)"
        }
    ));
    r.line("- goodput = receiver's TCP payload bits/s; limit = configured bits/s. Limits count IP bytes, headers included, so ~0.96 is a full pipe.");
    r.line("- retransmits are the sender's (the workload's for egress). Packets are approximate: bytes received / MSS (1448 B IPv4, 1428 B IPv6).");
    r.line("- RTT: ping from the root namespace to the workload every 10 ms during the measured part of the run. Echo requests and replies share the veth (and tbf's queue) with the flow; our cgroup programs never see them, so this measures the queueing delay a limiter adds for everything else on the path.");
    r.line("- Only the tested direction is limited, for both limiters. Both get the same bucket (our default burst); containerd would give the CNI plugin 512 MiB, which lets tbf pass seconds at line rate.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_cells_do_not_break_tables() {
        let r = Run::failed("ours", "a | b\nc".into());
        assert!(!err_cell(&r).contains('|') && !err_cell(&r).contains('\n'));
    }
}
