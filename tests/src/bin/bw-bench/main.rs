//! `bw-bench`: our limiter side by side with tc tbf set up the way the CNI
//! `bandwidth` plugin does it, on real TCP traffic, plus the datapath's per-packet
//! cost measured in the kernel.
//!
//! For every cell direction × rate × streams × congestion control, each limiter runs
//! once in the same testbed, one right after the other (ours, then tbf, then the next
//! cell), so both see the same machine conditions. Per run: iperf3 goodput against
//! the configured limit, sender retransmissions, and the RTT of pings sent to the
//! workload during the run (the queueing delay the limiter adds to the path).
//! Markdown goes to stdout (and `--out`), raw results to `--json`, progress to stderr.
//!
//! Needs root (`make bench` runs it with sudo). Everything it makes — namespace,
//! veth, cgroup, ifb, qdiscs, pinned programs and links under its private pin root —
//! is removed on exit, also after an error, a panic or Ctrl-C (SIGINT/SIGTERM stop
//! the bench after the current run; children in the terminal's process group die
//! with Ctrl-C, which ends that run early).
//!
//! This file only wires the jobs together; each lives in its own module.

mod args;
mod attach;
mod bench;
mod cost;
mod cpu;
mod cross_node;
mod matrix;
mod meta;
mod report;
mod results;
mod transfers;
mod verdicts;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};

use args::Args;
use cost::{cost_table, measure_cost};
use matrix::matrix;
use meta::{header, meta};
use nri_bandwidth_tests::interrupt::{install_signal_handlers, interrupted};
use results::{Report, Results};

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(msg) = validate(&args) {
        Args::command()
            .error(clap::error::ErrorKind::ValueValidation, msg)
            .exit();
    }
    install_signal_handlers();
    if !nri_bandwidth_testkit::is_root() {
        eprintln!(
            "bw-bench: needs root (network namespaces, cgroups, eBPF, tc): run it with sudo or `make bench`"
        );
        return ExitCode::from(1);
    }
    let mut results = Results::default();
    let mut report = Report::default();
    let outcome = run(&args, &mut results, &mut report);
    results.interrupted = interrupted();
    if results.interrupted {
        report.line("\n_Interrupted: the results above are partial._");
    }
    let mut code = match &outcome {
        Ok(()) if results.interrupted => ExitCode::from(130),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bw-bench: {e:#}");
            ExitCode::from(1)
        }
    };
    if let Some(p) = &args.out
        && let Err(e) = std::fs::write(p, &report.md)
    {
        eprintln!("bw-bench: writing {}: {e}", p.display());
        code = ExitCode::from(1);
    }
    if let Some(p) = &args.json {
        let written = serde_json::to_string_pretty(&results)
            .map_err(std::io::Error::other)
            .and_then(|j| std::fs::write(p, j + "\n"));
        if let Err(e) = written {
            eprintln!("bw-bench: writing {}: {e}", p.display());
            code = ExitCode::from(1);
        }
    }
    code
}

fn validate(a: &Args) -> std::result::Result<(), String> {
    if a.streams.iter().any(|&s| s == 0 || s > 128) {
        return Err("--streams: each value must be 1..=128".into());
    }
    if a.cc
        .iter()
        .any(|c| c.is_empty() || !c.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err("--cc: names like cubic, bbr, reno".into());
    }
    if a.seconds < 2 {
        return Err("--seconds must be at least 2".into());
    }
    if !(0.0..=60.0).contains(&a.pause) {
        return Err("--pause must be between 0 and 60 seconds".into());
    }
    if a.rates.is_empty() || a.dirs.is_empty() || a.limiters.is_empty() {
        return Err("--rates, --dirs and --limiters need at least one value".into());
    }
    Ok(())
}

fn run(a: &Args, results: &mut Results, report: &mut Report) -> Result<()> {
    results.meta = meta(a);
    header(&results.meta, report);

    if !a.no_cost {
        eprintln!("measuring per-packet cost (BPF_PROG_TEST_RUN, 1,000,000 repeats × 3)...");
        let rows = measure_cost(a.ipv6).context("measuring per-packet cost")?;
        cost_table(&rows, report);
        results.cost = rows;
    }
    if a.cost_only || interrupted() {
        return Ok(());
    }
    if a.cross_node {
        let cgfs = nri_bandwidth_core::cgroup::CgroupFs::detect()
            .context("finding the cgroup v2 mount")?;
        return cross_node::cross_node_section(
            a,
            &cgfs,
            &mut results.cross_node,
            &mut results.cross_node_follow,
            report,
        );
    }
    if a.transfers {
        let pins = bench::PinRoot(nri_bandwidth_tests::test_pin_root("bench-rr"));
        let dp = nri_bandwidth_core::datapath::Datapath::open(&pins.0)
            .context("loading the datapath")?;
        let cgfs = nri_bandwidth_core::cgroup::CgroupFs::detect()
            .context("finding the cgroup v2 mount")?;
        let r = transfers::transfers_section(a, Some(&dp), &cgfs, &mut results.transfers, report);
        drop(dp);
        return r;
    }
    matrix(a, results, report)
}
