//! The one interface every front end uses to set, change, remove and read limits:
//! [`Store`]. The node's implementation is [`NodeStore`] (cgroup v2 mount + pinned
//! datapath); tests use [`fake::FakeStore`] (feature `fake`).

#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod node;

pub use node::NodeStore;

use crate::cgroup::{Cgroup, CgroupError};
use crate::datapath::DatapathError;
use crate::model::{Entry, Limit, Owner};
use crate::rate::Rate;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The cgroup named cannot be used (missing, outside the mount, malformed).
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The kernel side failed (load, attach, map access, pins).
    #[error(transparent)]
    Datapath(#[from] DatapathError),
}

impl StoreError {
    /// True when the cgroup does not exist (yet, or any more).
    pub fn is_missing_cgroup(&self) -> bool {
        matches!(self, StoreError::Cgroup(CgroupError::NotFound { .. }))
    }
}

/// One limit a removal took away (or failed to).
pub struct Removed {
    pub cgroup_id: u64,
    pub owner: Owner,
    pub result: Result<(), StoreError>,
}

/// Limits on the node, whoever sets them.
pub trait Store: Send + Sync + 'static {
    /// Finds the cgroup a runtime names for a workload (a cgroupfs path, a systemd
    /// `slice:prefix:name`, a slice), once; the result is what `apply` takes.
    /// Refuses what a limit must never land on (see `cgroup::landing`).
    fn resolve(&self, spec: &str) -> Result<Cgroup, StoreError>;
    /// Limits `cgroup`, or changes its limit in place.
    fn apply(&self, cgroup: &Cgroup, limit: &Limit, owner: &Owner) -> Result<(), StoreError>;
    /// Removes the limit of one cgroup id; false when there was none.
    fn remove(&self, cgroup_id: u64) -> Result<bool, StoreError>;
    /// Every limit with its counters.
    fn entries(&self) -> Result<Vec<Entry>, StoreError>;
    /// Who owns each limit, by cgroup id (cheaper than `entries`).
    fn owners(&self) -> Result<Vec<(u64, Owner)>, StoreError>;

    /// The workload's addresses, so that senders on this node toward them are paced
    /// at its ingress limit (`datapath::senders`); `None` ingress: no pacing.
    fn set_addresses(
        &self,
        _cgroup: &Cgroup,
        _addrs: &[std::net::IpAddr],
        _ingress: Option<Rate>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Removes every limit whose owner matches; each front end removes only what
    /// its own source set.
    fn remove_where(&self, pred: &dyn Fn(&Owner) -> bool) -> Result<Vec<Removed>, StoreError> {
        let mut out = Vec::new();
        for (cgroup_id, owner) in self.owners()? {
            if pred(&owner) {
                let result = self.remove(cgroup_id).map(|_| ());
                out.push(Removed {
                    cgroup_id,
                    owner,
                    result,
                });
            }
        }
        Ok(out)
    }
}
