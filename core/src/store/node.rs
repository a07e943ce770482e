//! The node's [`Store`]: cgroup specs are resolved on the cgroup v2 mount, limits go
//! to the pinned datapath.

use std::time::Duration;

use crate::cgroup::{Cgroup, CgroupFs};
use crate::datapath::Datapath;
use crate::model::{Entry, Limit, Owner};
use crate::store::{Store, StoreError};

pub struct NodeStore {
    pub dp: Datapath,
    pub cgfs: CgroupFs,
}

impl Store for NodeStore {
    fn resolve(&self, spec: &str) -> Result<Cgroup, StoreError> {
        Ok(self.cgfs.lookup(spec)?)
    }

    fn apply(&self, cgroup: &Cgroup, limit: &Limit, owner: &Owner) -> Result<(), StoreError> {
        Ok(self.dp.limit(cgroup, limit, owner)?)
    }

    fn remove(&self, cgroup_id: u64) -> Result<bool, StoreError> {
        // Removal follows the workload's end: no open socket is left to release.
        Ok(self.dp.unlimit(cgroup_id, Duration::ZERO)?)
    }

    fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        Ok(self.dp.list()?)
    }

    fn owners(&self) -> Result<Vec<(u64, Owner)>, StoreError> {
        Ok(self.dp.owners()?)
    }
}
