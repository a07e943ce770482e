//! The traffic matrix: per delay, the unlimited ceiling, then every cell
//! direction × rate × streams × congestion control with ours and tbf alternating.

use anyhow::{Context, Result};

use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_core::datapath::Datapath;
use nri_bandwidth_tests::{human_bps, tbf};

use crate::args::{Args, LimiterKind};
use crate::attach::attach_section;
use crate::bench::{Bench, PinRoot};
use crate::cpu::cpu_section;
use crate::report::{err_cell, matrix_row, progress, retr_cell, rtt_cell, summary};
use crate::results::{Baseline, Cell, Report, Results, Rtt, Run};
use crate::verdicts::verdict;
use nri_bandwidth_tests::interrupt::interrupted;

/// The repeats of one limiter in one cell as one run: mean goodput, summed
/// retransmissions over summed packets, mean RTT quantiles, the worst first-second
/// peak; counters and the time series of the first successful run.
pub fn merge(runs: &[Run]) -> Option<Run> {
    let ok: Vec<&Run> = runs.iter().filter(|r| r.error.is_none()).collect();
    let Some(first) = ok.first() else {
        return runs.first().cloned();
    };
    let n = ok.len() as f64;
    let mean = |f: &dyn Fn(&Run) -> f64| ok.iter().map(|r| f(r)).sum::<f64>() / n;
    let mut m = (*first).clone();
    m.received_bps = mean(&|r| r.received_bps);
    m.goodput_ratio = first
        .goodput_ratio
        .map(|_| mean(&|r| r.goodput_ratio.unwrap_or(f64::NAN)));
    m.retransmits = ok.iter().map(|r| r.retransmits).sum::<u64>() / ok.len() as u64;
    let packets: u64 = ok.iter().map(|r| r.packets_approx).sum();
    let retr: u64 = ok.iter().map(|r| r.retransmits).sum();
    m.packets_approx = packets / ok.len() as u64;
    m.retr_pct = if packets == 0 {
        0.0
    } else {
        retr as f64 * 100.0 / packets as f64
    };
    let rtts: Vec<&Rtt> = ok
        .iter()
        .filter_map(|r| r.rtt.as_ref())
        .filter(|x| x.samples > 0)
        .collect();
    if !rtts.is_empty() {
        let k = rtts.len() as f64;
        m.rtt = Some(Rtt {
            p50_ms: rtts.iter().map(|x| x.p50_ms).sum::<f64>() / k,
            p99_ms: rtts.iter().map(|x| x.p99_ms).sum::<f64>() / k,
            samples: rtts.iter().map(|x| x.samples).sum(),
            sent: rtts.iter().map(|x| x.sent).sum(),
        });
    }
    m.first_second_ratio = first
        .first_second_ratio
        .map(|_| mean(&|r| r.first_second_ratio.unwrap_or(f64::NAN)));
    m.first_peak_ratio = ok
        .iter()
        .filter_map(|r| r.first_peak_ratio)
        .reduce(f64::max);
    m.cpu_busy_s = mean(&|r| r.cpu_busy_s);
    Some(m)
}

/// (min, max) goodput ratio over the successful repeats.
pub fn spread(runs: &[Run]) -> Option<(f64, f64)> {
    let v: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.goodput_ratio)
        .filter(|x| x.is_finite())
        .collect();
    if v.is_empty() {
        return None;
    }
    Some((
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    ))
}

/// Which limiters the matrix compares, and the datapath ours needs.
struct Limiters<'d> {
    ours: Option<&'d Datapath>,
    want_ours: bool,
    want_tbf: bool,
}

pub fn matrix(a: &Args, results: &mut Results, report: &mut Report) -> Result<()> {
    let want_ours = a.limiters.contains(&LimiterKind::Ours);
    let want_tbf = a.limiters.contains(&LimiterKind::Tbf);
    if want_tbf {
        tbf::check_tools()?;
    }
    // Declared first so it is dropped last: after the testbed and the datapath.
    let pins = PinRoot(nri_bandwidth_tests::test_pin_root("bench"));
    let dp = if want_ours || a.attach_cgroups > 0 {
        Some(Datapath::open(&pins.0).context("loading the datapath")?)
    } else {
        None
    };
    let cgfs = CgroupFs::detect().context("finding the cgroup v2 mount")?;

    if let (Some(dp), n) = (&dp, a.attach_cgroups)
        && n > 0
    {
        attach_section(dp, &cgfs, n, results, report)?;
    }
    if a.cpu && !interrupted() {
        cpu_section(a, dp.as_ref().filter(|_| want_ours), &cgfs, results, report)?;
    }

    let lims = Limiters {
        ours: dp.as_ref().filter(|_| want_ours),
        want_ours,
        want_tbf,
    };
    let mut n = 0;
    for &delay in &a.delays {
        if interrupted() {
            break;
        }
        let mut b = Bench::new(a, &cgfs, delay)?;
        baselines(a, &mut b, delay, results, report)?;
        if !interrupted() {
            cells(a, &mut b, &lims, delay, &mut n, results, report);
        }
    }
    summary(results, a, report);
    Ok(())
}

/// The unlimited runs through one testbed: the ceiling of every figure at its delay.
fn baselines(
    a: &Args,
    b: &mut Bench,
    delay: f64,
    results: &mut Results,
    report: &mut Report,
) -> Result<()> {
    report.line("");
    report.line(format!("## One-way delay {delay} ms"));
    report.line("");
    report.line("Unlimited (no limiter), cubic: the ceiling of this testbed.");
    report.line("");
    report.line("| direction | streams | goodput | retr (%pkts) | RTT p50/p99 ms | line frames | line drops | line late p50/p99/max µs |");
    report.line("|---|---|---|---|---|---|---|---|");
    let most = a.streams.iter().copied().max().unwrap_or(1);
    let mut counts = vec![1];
    if most > 1 {
        counts.push(most);
    }
    for &dir in &a.dirs {
        for &streams in &counts {
            if interrupted() {
                return Ok(());
            }
            eprintln!(
                "baseline {} ms {}: unlimited, {streams} stream(s), cubic",
                delay,
                dir.name()
            );
            let run = b.measure("none", dir, streams, "cubic", None);
            let line = b.line_stats()?;
            eprintln!("    {}", progress(&run));
            report.line(format!(
                "| {} | {streams} | {} | {} | {} | {} |",
                dir.name(),
                if run.error.is_some() {
                    err_cell(&run)
                } else {
                    human_bps(run.received_bps)
                },
                retr_cell(&run),
                rtt_cell(&run),
                line.as_ref().map_or("— | — | —".into(), |l| format!(
                    "{} | {} | {:.0}/{:.0}/{:.0}",
                    l.frames,
                    l.kernel_drops + l.send_errors,
                    l.late_p50_us,
                    l.late_p99_us,
                    l.late_max_us
                ))
            ));
            results.baseline.push(Baseline {
                delay_ms: delay,
                direction: dir,
                streams,
                run,
                line,
            });
            b.recover();
            b.pause();
        }
    }
    Ok(())
}

/// Ours against tbf in every cell at one delay; `n` counts cells across delays.
fn cells(
    a: &Args,
    b: &mut Bench,
    lims: &Limiters,
    delay: f64,
    n: &mut usize,
    results: &mut Results,
    report: &mut Report,
) {
    let total = a.delays.len() * a.dirs.len() * a.rates.len() * a.streams.len() * a.cc.len();
    report.line("");
    report.line(format!("### Ours vs tbf at {delay} ms one way"));
    report.line("");
    report.line(
        "| direction | rate | streams | cc | ours goodput/limit | tbf goodput/limit | ours retr (%pkts) | tbf retr (%pkts) | ours RTT p50/p99 ms | tbf RTT p50/p99 ms | verdict |",
    );
    report.line("|---|---|---|---|---|---|---|---|---|---|---|");
    for &dir in &a.dirs {
        for &rate in &a.rates {
            for &streams in &a.streams {
                for cc in &a.cc {
                    if interrupted() {
                        return;
                    }
                    *n += 1;
                    eprintln!(
                        "[{n}/{total}] {delay} ms {} {rate} ×{streams} {cc}",
                        dir.name()
                    );
                    let mut cell = Cell {
                        delay_ms: delay,
                        direction: dir,
                        rate: rate.to_string(),
                        rate_bps: rate.bits_per_sec(),
                        streams,
                        cc: cc.clone(),
                        ours: None,
                        tbf: None,
                        ours_runs: Vec::new(),
                        tbf_runs: Vec::new(),
                        ours_spread: None,
                        tbf_spread: None,
                        pass: false,
                        verdict: String::new(),
                        failed: Vec::new(),
                    };
                    // Alternate the limiters within each repeat, so both see the
                    // same conditions.
                    for _ in 0..a.repeats {
                        for &lim in &a.limiters {
                            if interrupted() {
                                break;
                            }
                            let run = match (lim, lims.ours) {
                                (LimiterKind::Ours, Some(dp)) => {
                                    b.run_ours(dp, dir, rate, streams, cc)
                                }
                                (LimiterKind::Ours, None) => continue,
                                (LimiterKind::Tbf, _) => b.run_tbf(dir, rate, streams, cc),
                            };
                            eprintln!("    {:<4} {}", run.limiter, progress(&run));
                            match lim {
                                LimiterKind::Ours => cell.ours_runs.push(run),
                                LimiterKind::Tbf => cell.tbf_runs.push(run),
                            }
                            b.recover();
                            b.pause();
                        }
                    }
                    if interrupted() {
                        return;
                    }
                    cell.ours = merge(&cell.ours_runs);
                    cell.tbf = merge(&cell.tbf_runs);
                    cell.ours_spread = spread(&cell.ours_runs);
                    cell.tbf_spread = spread(&cell.tbf_runs);
                    let v = verdict(
                        cell.ours.as_ref(),
                        cell.tbf.as_ref(),
                        a.ping_on() && lims.want_ours && lims.want_tbf,
                    );
                    cell.pass = v.pass;
                    cell.verdict = v.text;
                    cell.failed = v.failed;
                    eprintln!("    verdict: {}", cell.verdict);
                    report.line(matrix_row(&cell));
                    results.cells.push(cell);
                }
            }
        }
    }
}
