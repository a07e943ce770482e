//! The node's [`Store`]: cgroup specs are resolved on the cgroup v2 mount and
//! checked against where a limit may land; limits go to the pinned datapath.

use std::sync::{RwLock, RwLockReadGuard};
use std::time::Duration;

use crate::cgroup::{Cgroup, CgroupFs};
use crate::datapath::{Datapath, DatapathError};
use crate::model::{Entry, Limit, Owner};
use crate::rate::Rate;
use crate::store::{Store, StoreError};

pub struct NodeStore {
    dp: RwLock<Datapath>,
    cgfs: CgroupFs,
}

impl NodeStore {
    pub fn new(dp: Datapath, cgfs: CgroupFs) -> Self {
        NodeStore {
            dp: RwLock::new(dp),
            cgfs,
        }
    }

    pub fn cgroup_fs(&self) -> &CgroupFs {
        &self.cgfs
    }

    /// The datapath, opened again when its pins were replaced under us (an
    /// operator's `unlimit --all --purge` while the daemon runs): writing to the
    /// maps held from before would change nothing the programs read.
    fn dp(&self) -> Result<RwLockReadGuard<'_, Datapath>, DatapathError> {
        {
            let dp = self.dp.read().unwrap_or_else(|e| e.into_inner());
            if dp.is_current() {
                return Ok(dp);
            }
        }
        let mut dp = self.dp.write().unwrap_or_else(|e| e.into_inner());
        if !dp.is_current() {
            let fresh = Datapath::open(dp.root())?.with_lock_wait_of(&dp);
            log::warn!(
                "the pinned datapath at {} was replaced; opened it again",
                fresh.pin_dir().display()
            );
            *dp = fresh;
        }
        drop(dp);
        Ok(self.dp.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Removes limits whose cgroup is gone and half-made ones.
    pub fn reconcile(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self.dp()?.reconcile()?)
    }
}

impl Store for NodeStore {
    fn resolve(&self, spec: &str) -> Result<Cgroup, StoreError> {
        Ok(self.cgfs.workload(spec)?)
    }

    fn apply(&self, cgroup: &Cgroup, limit: &Limit, owner: &Owner) -> Result<(), StoreError> {
        Ok(self.dp()?.limit(cgroup, limit, owner)?)
    }

    fn set_addresses(
        &self,
        cgroup: &Cgroup,
        addrs: &[std::net::IpAddr],
        ingress: Option<Rate>,
    ) -> Result<(), StoreError> {
        let rate = ingress.map(|r| r.bytes_per_sec());
        Ok(self.dp()?.set_destinations(cgroup.id, addrs, rate)?)
    }

    fn remove(&self, cgroup_id: u64) -> Result<bool, StoreError> {
        // Removal follows the workload's end: no open socket is left to release.
        Ok(self.dp()?.unlimit(cgroup_id, Duration::ZERO)?)
    }

    fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        Ok(self.dp()?.list()?)
    }

    fn owners(&self) -> Result<Vec<(u64, Owner)>, StoreError> {
        Ok(self.dp()?.owners()?)
    }
}
