//! Test helper: sets a limit through the library, says so, and then waits to be
//! killed — so a test can `kill -9` the process that set a limit and check that the
//! limit outlives it.
//!
//! usage: limit-and-hang PIN_ROOT CGROUP_DIR INGRESS EGRESS

use std::path::Path;

use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_core::datapath::Datapath;
use nri_bandwidth_core::model::{Limit, Owner};
use nri_bandwidth_core::rate::Rate;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        a.len() == 5,
        "usage: limit-and-hang PIN_ROOT CGROUP_DIR INGRESS EGRESS"
    );
    let cgfs = CgroupFs::detect()?;
    let cg = cgfs.lookup(&a[2])?;
    let dp = Datapath::open(Path::new(&a[1]))?;
    let limit = Limit {
        ingress: Some(Rate::parse(&a[3])?),
        egress: Some(Rate::parse(&a[4])?),
        ..Limit::default()
    };
    dp.limit(&cg, &limit, &Owner::default())?;
    println!("limited {}", cg.id);
    // Hold every fd the datapath opened, as a daemon would, until killed.
    loop {
        std::thread::park();
    }
}
