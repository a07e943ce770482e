//! The datapath's per-packet cost, measured in the kernel with BPF_PROG_TEST_RUN
//! (testkit's testrun) on synthetic packets: no traffic, no testbed.

use anyhow::Result;

use nri_bandwidth_core::datapath::abi::{self as abi, BwState};
use nri_bandwidth_core::datapath::bucket;
use nri_bandwidth_testkit::testrun::{self, L4, Prog, SkbCtx, TestDatapath};

use crate::results::{CostRow, Report};

pub const COST_REPEAT: u32 = 1_000_000;
pub const COST_RUNS: usize = 3;
pub const NS_PER_SEC: u64 = 1_000_000_000;

pub fn mono_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * NS_PER_SEC + ts.tv_nsec as u64
}

/// Both directions limited at 1 Gbit/s as the limiter would configure them, except
/// that the bucket holds 30 s of credit: a million back-to-back 1500-byte packets are
/// 12 s of a 1 Gbit/s bucket, and the pass path must stay the one measured. The
/// per-packet work (parse, GCRA charge, counters) does not depend on these values.
pub fn cost_state() -> BwState {
    let rate = 125_000_000; // 1 Gbit/s in bytes per second
    let mut d = bucket::dir_config(rate, None, bucket::Direction::Egress);
    d.burst_ns = 30 * NS_PER_SEC;
    BwState {
        cgid: 1,
        abi: abi::ABI_VERSION,
        dir: [d, d],
        clamp_budget: bucket::clamp_budget(rate),
        ..BwState::default()
    }
}

pub type StateFn = fn(&mut BwState, u64);

pub struct CostCase {
    name: &'static str,
    prog: Prog,
    packet: Vec<u8>,
    /// Puts the bucket where the case needs it, given CLOCK_MONOTONIC now.
    state: StateFn,
}

pub fn under_limit(_: &mut BwState, _: u64) {}

/// Egress debt past the mark threshold but far from the drop threshold for the
/// whole run: the congestion-notification + CE-mark path.
pub fn egress_marking(st: &mut BwState, now: u64) {
    let d = &mut st.dir[abi::DIR_EGRESS];
    d.burst_ns = bucket::DEFAULT_BURST_NS;
    d.drop_ns = 3600 * NS_PER_SEC;
    d.tat = now + 2 * d.mark_ns;
}

/// Egress debt far past the drop threshold: the drop path.
pub fn egress_dropping(st: &mut BwState, now: u64) {
    let d = &mut st.dir[abi::DIR_EGRESS];
    d.burst_ns = bucket::DEFAULT_BURST_NS;
    d.tat = now + 3600 * NS_PER_SEC;
}

/// Ingress bucket in debt: the workload's own ACKs are withheld (the ACK gate).
pub fn ingress_in_debt(st: &mut BwState, now: u64) {
    st.dir[abi::DIR_INGRESS].tat = now + 3600 * NS_PER_SEC;
}

pub fn cost_cases(v6: bool) -> Vec<CostCase> {
    let ip = if v6 { 40 } else { 20 };
    let tcp_payload = 1500 - ip - 32; // 20-byte TCP header + 12 bytes of timestamps
    let udp_payload = 1500 - ip - 8;
    let data = |ecn| {
        testrun::packet(
            v6,
            L4::Tcp {
                flags: testrun::TCP_ACK | testrun::TCP_PSH,
                payload: tcp_payload,
            },
            ecn,
        )
    };
    let ack = testrun::packet(
        v6,
        L4::Tcp {
            flags: testrun::TCP_ACK,
            payload: 0,
        },
        testrun::NOT_ECT,
    );
    let udp = testrun::packet(
        v6,
        L4::Udp {
            payload: udp_payload,
        },
        testrun::NOT_ECT,
    );
    vec![
        CostCase {
            name: "empty program (baseline)",
            prog: Prog::Empty,
            packet: data(testrun::NOT_ECT),
            state: under_limit,
        },
        CostCase {
            name: "egress TCP data, 1500 B, under limit",
            prog: Prog::Egress,
            packet: data(testrun::NOT_ECT),
            state: under_limit,
        },
        CostCase {
            name: "egress pure ACK",
            prog: Prog::Egress,
            packet: ack.clone(),
            state: under_limit,
        },
        CostCase {
            name: "ingress TCP data, 1500 B, under limit",
            prog: Prog::Ingress,
            packet: data(testrun::NOT_ECT),
            state: under_limit,
        },
        CostCase {
            name: "egress UDP, 1500 B, under limit",
            prog: Prog::Egress,
            packet: udp.clone(),
            state: under_limit,
        },
        CostCase {
            name: "ingress UDP, 1500 B, under limit",
            prog: Prog::Ingress,
            packet: udp,
            state: under_limit,
        },
        CostCase {
            name: "(over limit) egress TCP data, ECT(0): CE mark + CN",
            prog: Prog::Egress,
            packet: data(testrun::ECT0),
            state: egress_marking,
        },
        CostCase {
            name: "(over limit) egress TCP data past drop threshold",
            prog: Prog::Egress,
            packet: data(testrun::NOT_ECT),
            state: egress_dropping,
        },
        CostCase {
            name: "(over limit) egress pure ACK, ingress in debt: ACK gated",
            prog: Prog::Egress,
            packet: ack,
            state: ingress_in_debt,
        },
    ]
}

pub fn verdict_name(v: u32) -> String {
    match v {
        testrun::DROP => "DROP".into(),
        testrun::PASS => "PASS".into(),
        testrun::DROP_CN => "DROP_CN".into(),
        testrun::PASS_CN => "PASS_CN".into(),
        other => other.to_string(),
    }
}

pub fn measure_cost(v6: bool) -> Result<Vec<CostRow>> {
    let mut td = TestDatapath::load()
        .map_err(|e| anyhow::anyhow!("loading the datapath for test runs: {e}"))?;
    let mut rows: Vec<CostRow> = Vec::new();
    for case in cost_cases(v6) {
        let mut runs = Vec::new();
        let mut verdict = 0;
        for _ in 0..COST_RUNS {
            // A fresh bucket per run: each run spends 1.5 GB of credit.
            let mut st = cost_state();
            (case.state)(&mut st, mono_now_ns());
            td.set_state(&st);
            let r = td
                .run(case.prog, &case.packet, SkbCtx::default(), COST_REPEAT)
                .map_err(|e| anyhow::anyhow!("{}: {e}", case.name))?;
            verdict = r.verdict;
            runs.push(r.duration.as_nanos() as f64);
        }
        let ns = runs.iter().copied().fold(f64::INFINITY, f64::min);
        let empty = rows.first().map_or(ns, |r| r.ns_per_packet);
        eprintln!(
            "  {:<58} {ns:>5.0} ns  {}",
            case.name,
            verdict_name(verdict)
        );
        rows.push(CostRow {
            case: case.name.into(),
            ns_per_packet: ns,
            ratio_to_empty: ns / empty,
            verdict: verdict_name(verdict),
            runs_ns: runs,
        });
    }
    Ok(rows)
}

pub fn cost_table(rows: &[CostRow], r: &mut Report) {
    r.line("");
    r.line("## Per-packet cost (in-kernel BPF_PROG_TEST_RUN)");
    r.line("");
    r.line(format!(
        "Both directions limited at 1 Gbit/s; {COST_REPEAT} repeats per run, min of {COST_RUNS} runs; \
         the kernel's average time per packet (1 ns resolution)."
    ));
    r.line("");
    r.line("| case | ns/packet | × empty | verdict |");
    r.line("|---|---|---|---|");
    for c in rows {
        r.line(format!(
            "| {} | {:.0} | {:.2} | {} |",
            c.case, c.ns_per_packet, c.ratio_to_empty, c.verdict
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_state_stays_under_limit_for_a_whole_run() {
        let st = cost_state();
        let d = st.dir[abi::DIR_EGRESS];
        // A million 1500-byte packets at 1 Gbit/s is 12 s of credit.
        assert!(d.burst_ns > 12 * NS_PER_SEC);
        assert_eq!(d.rate, 125_000_000);
    }
}
