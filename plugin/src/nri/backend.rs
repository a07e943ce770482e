//! The handler's [`Backend`] on the real limiter: runtime cgroup paths are resolved
//! on the cgroup v2 mount, limits go to the pinned datapath.

use std::time::Duration;

use crate::cgroup::CgroupFs;
use crate::limiter::{Datapath, Entry, Limit, Owner};
use crate::nri::handler::Backend;

pub struct LimiterBackend {
    pub dp: Datapath,
    pub cgfs: CgroupFs,
}

impl Backend for LimiterBackend {
    fn apply(&self, cgroup: &str, limit: &Limit, owner: &Owner) -> Result<u64, String> {
        let dir = self.cgfs.resolve(cgroup).map_err(|e| e.to_string())?;
        let rel = self.cgfs.relative(&dir).map_err(|e| e.to_string())?;
        self.dp
            .limit(&dir, &rel, limit, owner)
            .map_err(|e| e.to_string())
    }

    fn remove(&self, cgroup_id: u64) -> Result<(), String> {
        // Removal follows the workload's end: no open socket is left to release.
        self.dp
            .unlimit(cgroup_id, Duration::ZERO)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn exists(&self, cgroup: &str) -> bool {
        self.cgfs.resolve(cgroup).is_ok()
    }

    fn owners(&self) -> Result<Vec<(u64, Owner)>, String> {
        self.dp.owners().map_err(|e| e.to_string())
    }

    fn entries(&self) -> Result<Vec<Entry>, String> {
        self.dp.list().map_err(|e| e.to_string())
    }
}
