//! What users feel: the completion time of a short transfer into the workload (a
//! request/response: the client connects, sends SIZE bytes, the workload's
//! `rr-server` answers one byte), on a new connection each time, so slow start and
//! the first round trips count. Per delay, rate and size: p50/p99 in milliseconds
//! with no limit, with ours (ingress limit on the workload) and with tbf, next to
//! the ideal time at the rate.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_core::datapath::Datapath;
use nri_bandwidth_testkit::quantile;
use nri_bandwidth_tests::human_size;
use nri_bandwidth_tests::tbf::{Direction, Tbf};
use serde::Serialize;

use crate::args::Args;
use crate::bench::Bench;
use crate::results::Report;
use nri_bandwidth_tests::interrupt::interrupted;

const PORT: u16 = 5400;

#[derive(Clone, Debug, Serialize)]
pub struct TransferRow {
    pub delay_ms: f64,
    pub limit_bps: u64,
    pub size_bytes: u64,
    /// (limiter, p50 ms, p99 ms, transfers)
    pub times: Vec<(String, f64, f64, usize)>,
}

/// One transfer of `size` bytes; its completion time.
fn transfer(to: SocketAddr, size: u64, buf: &[u8]) -> Result<Duration> {
    let t = Instant::now();
    let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    c.set_read_timeout(Some(Duration::from_secs(120)))?;
    c.write_all(&size.to_be_bytes())?;
    let mut left = size;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        c.write_all(&buf[..n])?;
        left -= n as u64;
    }
    let mut ok = [0u8; 1];
    c.read_exact(&mut ok)?;
    Ok(t.elapsed())
}

/// p50/p99 of `n` transfers of `size`.
fn times(to: SocketAddr, size: u64, n: usize, buf: &[u8]) -> Result<(f64, f64, usize)> {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        if interrupted() {
            break;
        }
        ms.push(transfer(to, size, buf)?.as_secs_f64() * 1e3);
        // Let the bucket refill between transfers, as between requests.
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((quantile(&ms, 0.5), quantile(&ms, 0.99), ms.len()))
}

pub fn transfers_section(
    a: &Args,
    dp: Option<&Datapath>,
    cgfs: &CgroupFs,
    rows: &mut Vec<TransferRow>,
    report: &mut Report,
) -> Result<()> {
    report.line("\n## Transfer completion times (the workload receives SIZE bytes)\n");
    report.line(
        "| one-way delay | limit | size | ideal ms | none p50/p99 ms | ours p50/p99 ms | tbf p50/p99 ms |",
    );
    report.line("|---|---|---|---|---|---|---|");
    let buf = vec![0x5au8; 256 << 10];
    let largest = a.transfer_sizes.iter().copied().max().unwrap_or(0);
    for &delay in &a.delays {
        let mut b = Bench::new(a, cgfs, delay)?;
        let (cg, ip, tb) = b.workload();
        let server = nri_bandwidth_tests::workspace_bin("rr-server");
        tb.spawn_in_workload(server.to_str().unwrap(), &[&PORT.to_string()])
            .context("starting rr-server in the workload")?;
        std::thread::sleep(Duration::from_millis(300));
        let to = SocketAddr::new(ip, PORT);
        let reps = |size: u64| {
            let n = a.transfer_repeats as usize;
            if size == largest { (n / 4).max(3) } else { n }
        };
        // No limit: once per delay, shared by every rate's rows.
        let mut free = Vec::new();
        for &size in &a.transfer_sizes {
            free.push(times(to, size, reps(size), &buf)?);
        }
        for &rate in &a.rates {
            let mut ours = Vec::new();
            if let Some(dp) = dp {
                dp.limit(
                    &cg,
                    &crate::bench::ingress_limit(rate),
                    &crate::bench::bench_owner(),
                )
                .context("setting our limit")?;
                for &size in &a.transfer_sizes {
                    ours.push(times(to, size, reps(size), &buf));
                }
                dp.unlimit(cg.id, Duration::ZERO)?;
            }
            let mut tbf = Vec::new();
            {
                let (_, _, tb) = b.workload();
                let t = Tbf::for_testbed(tb, Direction::Ingress, rate)?;
                for &size in &a.transfer_sizes {
                    tbf.push(times(to, size, reps(size), &buf));
                }
                drop(t);
            }
            for (i, &size) in a.transfer_sizes.iter().enumerate() {
                let show = |r: Option<&Result<(f64, f64, usize)>>| match r {
                    Some(Ok((p50, p99, _))) => format!("{p50:.1} / {p99:.1}"),
                    Some(Err(e)) => format!("error: {e}"),
                    None => "—".into(),
                };
                let ideal = size as f64 * 8.0 / rate.bits_per_sec() as f64 * 1e3;
                report.line(format!(
                    "| {delay} ms | {rate} | {} | {ideal:.1} | {} | {} | {} |",
                    human_size(size),
                    show(free.get(i).map(|r| Ok(*r)).as_ref()),
                    show(ours.get(i)),
                    show(tbf.get(i)),
                ));
                let mut row = TransferRow {
                    delay_ms: delay,
                    limit_bps: rate.bits_per_sec(),
                    size_bytes: size,
                    times: Vec::new(),
                };
                let (p50, p99, n) = free[i];
                row.times.push(("none".into(), p50, p99, n));
                for (name, r) in [("ours", ours.get(i)), ("tbf", tbf.get(i))] {
                    if let Some(Ok((p50, p99, n))) = r {
                        row.times.push((name.into(), *p50, *p99, *n));
                    }
                }
                rows.push(row);
            }
        }
    }
    Ok(())
}
