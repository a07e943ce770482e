//! Churn through real containerd (privileged, `NRI_BANDWIDTH_E2E=1`): limited pods
//! created and removed one after another (1,000 by default, `NRI_BANDWIDTH_CHURN=N`
//! for another count). Afterwards nothing of them is left in the kernel or the
//! pins, and the daemon's memory did not grow with the count.

use std::time::Instant;

use nri_bandwidth_core::datapath::Datapath;
use nri_bandwidth_tests::PinRoot;
use nri_bandwidth_tests::e2e::{Containerd, Cri, PluginProc, enabled};
use nri_bandwidth_tests::fixture::our_kernel_objects;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_thousand_limited_pods_created_and_removed_leave_nothing_and_memory_stays_flat() {
    if !enabled() {
        return;
    }
    let n: usize = std::env::var("NRI_BANDWIDTH_CHURN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let ctd = Containerd::start("churn", 60);
    let pins = PinRoot::new("churn");
    let plugin = PluginProc::start(
        &ctd.nri_socket(),
        &pins.0,
        &ctd.dir.join("plugin.log"),
        &["--metrics-address", "127.0.0.1:19181"],
    );
    let pid = plugin.pid();
    let ann = [
        ("kubernetes.io/ingress-bandwidth", "20M"),
        ("kubernetes.io/egress-bandwidth", "10M"),
    ];
    let start = Instant::now();
    let mut rss = Vec::new();
    let mut before = None;
    for i in 0..n {
        let id = ctd.run_pod(&format!("churn{i}"), &format!("churn-uid-{i}"), &ann);
        let dp = Datapath::open_existing(&pins.0).unwrap().expect("loaded");
        assert_eq!(dp.list().unwrap().len(), 1, "cycle {i}: the pod is limited");
        ctd.remove_pod(&id);
        if i == 0 {
            before = Some(our_kernel_objects());
        }
        if (i + 1) % 100 == 0 || i + 1 == n {
            rss.push((i + 1, rss_kib(pid)));
        }
    }
    let took = start.elapsed();
    let dp = Datapath::open_existing(&pins.0).unwrap().unwrap();
    assert!(
        dp.list().unwrap().is_empty(),
        "limits left: {:?}",
        dp.list()
    );
    let links = std::fs::read_dir(dp.pin_dir().join("links"))
        .unwrap()
        .count();
    assert_eq!(links, 0, "link pins left");
    let after = our_kernel_objects();
    let (progs, maps, _) = before.unwrap();
    assert_eq!(
        after,
        (progs, maps, 0),
        "kernel objects: first cycle {before:?}, end {after:?}"
    );
    eprintln!(
        "churn: {n} pods in {:.0} s ({:.0} ms per create+remove); daemon RSS KiB by cycle: {rss:?}",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e3 / n as f64
    );
    let first = rss.first().unwrap().1;
    let last = rss.last().unwrap().1;
    assert!(
        last <= first + 2048,
        "daemon RSS grew from {first} to {last} KiB over {n} pods"
    );
    drop(plugin);
}
