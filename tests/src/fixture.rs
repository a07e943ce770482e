//! A pin root and a parent cgroup private to one test, removed on drop, also
//! when the test fails: what every privileged limiter test starts from.

use std::path::PathBuf;

use nri_bandwidth_core::cgroup::{Cgroup, CgroupFs};

use crate::test_pin_root;

/// A pin root and a parent cgroup private to one test, removed on drop.
pub struct Fixture {
    pub root: PathBuf,
    pub cgfs: CgroupFs,
    pub parent: PathBuf,
}

impl Fixture {
    pub fn new(tag: &str) -> Self {
        let cgfs = CgroupFs::detect().expect("cgroup v2 mount");
        let parent = cgfs
            .create(&format!(
                "/nri-bandwidth-test/life-{tag}-{}",
                std::process::id()
            ))
            .unwrap();
        Fixture {
            root: test_pin_root(tag),
            cgfs,
            parent,
        }
    }
    /// Creates cgroup `name` below the private parent.
    pub fn cgroup(&self, name: &str) -> Cgroup {
        let dir = self
            .cgfs
            .create(&format!(
                "{}/{name}",
                self.cgfs.relative(&self.parent).unwrap()
            ))
            .unwrap();
        self.cgfs.cgroup(dir).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = nri_bandwidth_core::datapath::remove_tree(&self.root);
        if let Ok(rd) = std::fs::read_dir(&self.parent) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.parent);
        let _ = std::fs::remove_dir(self.parent.parent().unwrap());
    }
}

/// Programs attached directly to the cgroup at `dir`, per hook (ingress, egress,
/// sock_ops): what the kernel enforces, whatever the pins say.
pub fn attached(dir: &std::path::Path) -> [usize; 3] {
    use nri_bandwidth_core::datapath::sys::{AttachType, open_dir, prog_query};
    use std::os::fd::AsFd;
    let fd = open_dir(dir).unwrap();
    [
        AttachType::CgroupInetIngress,
        AttachType::CgroupInetEgress,
        AttachType::CgroupSockOps,
    ]
    .map(|at| prog_query(fd.as_fd(), at).unwrap().len())
}

/// Programs and maps named like ours, and links to programs named like ours.
pub fn our_kernel_objects() -> (usize, usize, usize) {
    let progs: Vec<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("bw_")))
        .map(|p| p.id())
        .collect();
    let maps = aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .filter(|m| m.name_as_str().is_some_and(|n| n.starts_with("bw_")))
        .count();
    let links = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter(|l| progs.contains(&l.program_id()))
        .count();
    (progs.len(), maps, links)
}
