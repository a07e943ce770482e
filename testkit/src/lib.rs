//! Test rigs of nri-bandwidth, kept out of the product's library: network
//! namespaces with a workload cgroup and iperf3 traffic ([`testbed`], also behind
//! `bwctl demo`), the datapath on synthetic packets through BPF_PROG_TEST_RUN
//! ([`testrun`]), the switch for privileged tests and small statistics.

pub mod testbed;
pub mod testrun;

pub use nri_bandwidth_core::stats::quantile;

/// The one switch for privileged tests (BPF, cgroups, network namespaces).
pub const PRIVILEGED_ENV: &str = "NRI_BANDWIDTH_PRIVILEGED";

/// True when privileged tests should run (`NRI_BANDWIDTH_PRIVILEGED=1`; `make test`
/// sets it and runs as root), so a plain `cargo test` runs every pure test. Panics
/// when the switch is on but the process is not root: a CI run that silently
/// skipped them would prove nothing.
pub fn privileged() -> bool {
    let on = std::env::var(PRIVILEGED_ENV).is_ok_and(|v| v == "1");
    if on {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "{PRIVILEGED_ENV}=1 needs root"
        );
    } else {
        eprintln!("skipped: set {PRIVILEGED_ENV}=1 and run as root to run privileged tests");
    }
    on
}

/// Whether this process is root: for tools (the benchmark, the demo) that need it
/// whatever the switch says.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
