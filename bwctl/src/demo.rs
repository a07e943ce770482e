//! `bwctl demo`: the same TCP flow unlimited and then limited, in both directions, in
//! a network namespace and cgroup made for the occasion and removed afterwards.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_core::datapath::{Datapath, abi_dir};
use nri_bandwidth_core::model::{Limit, Owner, Source};
use nri_bandwidth_core::rate::{Rate, human_bps};
use nri_bandwidth_testkit::testbed::{Iperf3, Testbed};

const PORT: u16 = 5301;

pub fn run(pin_root: &Path, cgfs: &CgroupFs, rate: Rate, seconds: u32) -> Result<()> {
    println!(
        "nri-bandwidth demo: cgroup v2 at {}, pins at {}",
        cgfs.root().display(),
        pin_root.display()
    );
    // A demo on a node that had no datapath leaves none behind.
    let preexisting = abi_dir(pin_root).exists();
    let dp = Datapath::open(pin_root).context("loading the datapath")?;
    let mut tb = Testbed::create(cgfs, "demo").context("creating the demo namespace and cgroup")?;
    println!(
        "workload: netns {} ({}), cgroup {}; client in the root namespace ({})",
        tb.ns, tb.peer_v4, tb.cgroup_rel, tb.host_v4
    );
    tb.start_iperf3_server(PORT)?;
    let measure = |target: IpAddr, reverse: bool| -> Result<f64> {
        let mut c = Iperf3::new(target, PORT);
        c.seconds = seconds;
        c.reverse = reverse;
        Ok(c.run()?.received_bps)
    };
    let target = tb.peer_v4;
    println!(
        "\nmeasuring {seconds} s per run with iperf3 (1 TCP stream, default congestion control)..."
    );
    let free_in = measure(target, false)?;
    let free_out = measure(target, true)?;

    let limit = Limit {
        ingress: Some(rate),
        egress: Some(rate),
        ..Limit::default()
    };
    let owner = Owner {
        source: Source::Manual,
        pod_name: "demo".into(),
        ..Owner::default()
    };
    let cg = cgfs.lookup(&tb.cgroup_rel)?;
    let id = cg.id;
    dp.limit(&cg, &limit, &owner)?;
    println!(
        "limited {} to {rate} bit/s each way (cgroup id {id})",
        tb.cgroup_rel
    );
    let result =
        (|| -> Result<(f64, f64)> { Ok((measure(target, false)?, measure(target, true)?)) })();
    // Remove the limit before reporting so a failed run leaves nothing pinned.
    dp.unlimit(id, Duration::ZERO)?;
    let (lim_in, lim_out) = result?;

    let limit_bps = rate.bits_per_sec() as f64;
    println!("\n| direction | unlimited | limited to {rate} | goodput / limit |");
    println!("|---|---|---|---|");
    println!(
        "| ingress (workload receives) | {} | {} | {:.3} |",
        human_bps(free_in),
        human_bps(lim_in),
        lim_in / limit_bps
    );
    println!(
        "| egress (workload sends) | {} | {} | {:.3} |",
        human_bps(free_out),
        human_bps(lim_out),
        lim_out / limit_bps
    );
    println!("\n(goodput counts TCP payload; the limit counts IP bytes, so ~0.96 is a full pipe)");
    drop(tb);
    if !preexisting {
        dp.purge()?;
    }
    println!("cleaned up: namespace, veth, cgroup and limit removed");
    Ok(())
}
