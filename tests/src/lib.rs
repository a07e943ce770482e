//! Shared pieces of the integration suites and the benchmark.
//!
//! Privileged tests (BPF, cgroups, network namespaces) run only when
//! `NRI_BANDWIDTH_PRIVILEGED=1` is set (`make test` sets it and runs as root), so a
//! plain `cargo test` on a laptop still runs every pure test.

pub mod cluster;
pub mod crio;
pub mod delay_line;
pub mod e2e;
pub mod fake_runtime;
pub mod fixture;
pub mod interrupt;
pub mod podman;
pub mod report_charts;
pub mod sender_node;
pub mod tbf;
pub mod two_nodes;

use std::path::PathBuf;

pub use nri_bandwidth_core::rate::human_bps;
pub use nri_bandwidth_testkit::{PRIVILEGED_ENV, privileged};

/// A transfer size for tables: `10 KB`, `1 MB` (the benchmark's and its report's).
pub fn human_size(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{} MB", bytes / 1_000_000)
    } else {
        format!("{} KB", bytes / 1000)
    }
}

/// A pin root private to one test, so tests never touch the host's real limits
/// and can assert that they leave nothing behind.
pub fn test_pin_root(tag: &str) -> PathBuf {
    PathBuf::from(format!(
        "/sys/fs/bpf/nri-bandwidth-test-{tag}-{}",
        std::process::id()
    ))
}

/// The share-exchange key the tests' nodes share (they all run on this machine).
pub fn share_key() -> nri_bandwidth_core::shares::seal::Key {
    nri_bandwidth_core::shares::seal::Key::new("of the tests", b"nri-bandwidth tests' shared key")
        .expect("long enough")
}

/// A binary of the workspace (e.g. `bwctl`): next to the running executable (a
/// tool in target/<profile>) or one level up (a test in target/<profile>/deps).
/// `make test` builds them first.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let here = exe.parent().expect("executable dir");
    let candidates = [
        here.join(name),
        here.parent().map(|d| d.join(name)).unwrap_or_default(),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} not built next to {}: run `cargo build --workspace` first",
                exe.display()
            )
        })
}

/// Removes a test's pin root when dropped, so a failing test leaves no pins.
pub struct PinRoot(pub PathBuf);

impl PinRoot {
    pub fn new(tag: &str) -> Self {
        PinRoot(test_pin_root(tag))
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        let _ = nri_bandwidth_core::datapath::remove_tree(&self.0);
    }
}
