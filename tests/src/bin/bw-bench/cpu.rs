//! CPU per gigabit: the whole machine's busy time during a run with no limiter,
//! ours and tbf+ifb, on the plain veth.

use anyhow::Result;

use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_core::datapath::Datapath;
use nri_bandwidth_tests::human_bps;

use crate::args::Args;
use crate::bench::Bench;
use crate::report::progress;
use crate::results::{CpuRow, Report, Results};
use nri_bandwidth_tests::interrupt::interrupted;

/// CPU per gigabit on the plain veth: no limiter, ours, tbf+ifb; one cubic stream.
pub fn cpu_section(
    a: &Args,
    dp: Option<&Datapath>,
    cgfs: &CgroupFs,
    results: &mut Results,
    report: &mut Report,
) -> Result<()> {
    let mut b = Bench::new(a, cgfs, 0.0)?;
    report.line("");
    report.line(format!(
        "## CPU per gigabit (plain veth, 1 cubic stream, limit {})",
        a.cpu_rate
    ));
    report.line("");
    report.line("| direction | limiter | goodput | busy CPU s (all cores) | CPU s per Gbit |");
    report.line("|---|---|---|---|---|");
    for &dir in &a.dirs {
        for lim in ["none", "ours", "tbf"] {
            if interrupted() {
                return Ok(());
            }
            eprintln!("cpu {} {lim}", dir.name());
            let run = match (lim, dp) {
                ("none", _) => b.measure("none", dir, 1, "cubic", None),
                ("ours", Some(dp)) => b.run_ours(dp, dir, a.cpu_rate, 1, "cubic"),
                ("ours", None) => continue,
                _ => b.run_tbf(dir, a.cpu_rate, 1, "cubic"),
            };
            eprintln!("    {}", progress(&run));
            if run.error.is_none() {
                let gbit = run.received_bps * f64::from(a.seconds + a.omit) / 1e9;
                let row = CpuRow {
                    direction: dir,
                    limiter: lim.into(),
                    received_bps: run.received_bps,
                    cpu_busy_s: run.cpu_busy_s,
                    cpu_s_per_gbit: run.cpu_busy_s / gbit,
                };
                report.line(format!(
                    "| {} | {lim} | {} | {:.2} | {:.3} |",
                    dir.name(),
                    human_bps(row.received_bps),
                    row.cpu_busy_s,
                    row.cpu_s_per_gbit
                ));
                results.cpu.push(row);
            }
            b.recover();
            b.pause();
        }
    }
    Ok(())
}
