//! A sending node stood in for on this kernel, for the cross-node tests and the
//! benchmark: its own pin root (so its own senders' map and program) and a
//! cgroup holding its senders, with the senders' program attached. Each node's
//! share-exchange agent is started on top by the user. Removed on drop.

use std::path::PathBuf;

use anyhow::{Context, Result};
use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_core::datapath::{self as limiter, Datapath};

pub struct SenderNode {
    pub root: PathBuf,
    /// The cgroup its senders run in.
    pub scope: PathBuf,
    pub dp: Datapath,
}

impl SenderNode {
    pub fn new(tag: &str) -> Result<Self> {
        let cgfs = CgroupFs::detect().context("finding the cgroup v2 mount")?;
        let rel = format!("/nri-bandwidth-test/{tag}-{}", std::process::id());
        let scope = cgfs
            .create(&rel)
            .context("creating a sender node's cgroup")?;
        let root = crate::test_pin_root(tag);
        let node = |dp| SenderNode {
            root: root.clone(),
            scope: scope.clone(),
            dp,
        };
        // From here on drop cleans up, also when attaching fails.
        let n = node(Datapath::open(&root).context("loading a sender node's datapath")?);
        n.dp.attach_senders(&cgfs.cgroup(scope.clone())?)
            .context("attaching a sender node's program")?;
        Ok(n)
    }

    /// Another handle on its datapath (for its agent).
    pub fn datapath(&self) -> Result<Datapath> {
        Datapath::open(&self.root).context("opening a sender node's datapath")
    }
}

impl Drop for SenderNode {
    fn drop(&mut self) {
        for id in self.dp.senders_scopes() {
            let _ = self.dp.detach_senders(id);
        }
        let _ = limiter::remove_tree(&self.root);
        nri_bandwidth_testkit::testbed::remove_test_cgroup(&self.scope);
    }
}
