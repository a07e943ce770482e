//! An in-memory [`Store`] for tests of every front end (feature `fake`): records
//! what would be limited, keyed by cgroup path, with stable synthetic ids.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::cgroup::{Cgroup, CgroupError, check_runtime_spec};
use crate::datapath::DatapathError;
use crate::model::{Entry, Limit, Owner};
use crate::store::{Store, StoreError};

#[derive(Default)]
pub struct FakeStore {
    /// cgroup path → (id, limit, owner)
    set: Mutex<BTreeMap<String, (u64, Limit, Owner)>>,
    /// Paths ever resolved, in order: a path's id is its position + 1.
    ids: Mutex<Vec<String>>,
    /// When set, `apply` fails with this message.
    fail: Mutex<Option<String>>,
    /// Paths containing any of these do not exist (yet).
    missing: Mutex<Vec<String>>,
    /// cgroup path → the addresses given for it.
    addresses: Mutex<BTreeMap<String, Vec<std::net::IpAddr>>>,
}

impl FakeStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later `apply` fail with `msg` (None: succeed again).
    pub fn fail_with(&self, msg: Option<&str>) {
        *self.fail.lock().unwrap() = msg.map(str::to_string);
    }

    /// Cgroup paths containing `part` do not exist.
    pub fn missing(&self, part: &str) {
        self.missing.lock().unwrap().push(part.into());
    }

    /// (path, ingress bit/s, egress bit/s) of every limit, sorted by path.
    pub fn limits(&self) -> Vec<(String, Option<u64>, Option<u64>)> {
        self.set
            .lock()
            .unwrap()
            .iter()
            .map(|(k, (_, l, _))| {
                (
                    k.clone(),
                    l.ingress.map(|r| r.bits_per_sec()),
                    l.egress.map(|r| r.bits_per_sec()),
                )
            })
            .collect()
    }

    /// The addresses recorded for `path` (empty when none).
    pub fn addresses(&self, path: &str) -> Vec<std::net::IpAddr> {
        self.addresses
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// The limit and owner recorded for `path`.
    pub fn get(&self, path: &str) -> Option<(Limit, Owner)> {
        let set = self.set.lock().unwrap();
        set.get(path).map(|(_, l, o)| (l.clone(), o.clone()))
    }

    /// Records a limit directly (as another front end would have set it).
    pub fn insert(&self, path: &str, limit: Limit, owner: Owner) {
        let id = self.id(path);
        self.set
            .lock()
            .unwrap()
            .insert(path.into(), (id, limit, owner));
    }

    fn id(&self, path: &str) -> u64 {
        let mut ids = self.ids.lock().unwrap();
        let i = ids.iter().position(|p| p == path).unwrap_or_else(|| {
            ids.push(path.into());
            ids.len() - 1
        });
        i as u64 + 1
    }
}

impl Store for FakeStore {
    fn resolve(&self, spec: &str) -> Result<Cgroup, StoreError> {
        // The node store's rules for runtime specs, so front-end tests see them.
        check_runtime_spec(spec)?;
        if spec.trim_matches('/').is_empty() {
            return Err(CgroupError::Refused {
                spec: spec.into(),
                reason: "it is the cgroup v2 root".into(),
            }
            .into());
        }
        let gone = self
            .missing
            .lock()
            .unwrap()
            .iter()
            .any(|m| spec.contains(m));
        if spec.is_empty() || gone {
            return Err(CgroupError::NotFound {
                spec: spec.into(),
                root: PathBuf::from("/fake"),
            }
            .into());
        }
        Ok(Cgroup {
            dir: PathBuf::from("/fake").join(spec.trim_start_matches('/')),
            rel: spec.into(),
            id: self.id(spec),
        })
    }

    fn apply(&self, cgroup: &Cgroup, limit: &Limit, owner: &Owner) -> Result<(), StoreError> {
        if let Some(msg) = self.fail.lock().unwrap().clone() {
            return Err(DatapathError::Io {
                what: "attaching to".into(),
                path: cgroup.dir.clone(),
                err: io::Error::other(msg),
            }
            .into());
        }
        self.set.lock().unwrap().insert(
            cgroup.rel.clone(),
            (cgroup.id, limit.clone(), owner.clone()),
        );
        Ok(())
    }

    fn set_addresses(
        &self,
        cgroup: &Cgroup,
        addrs: &[std::net::IpAddr],
        ingress: Option<crate::rate::Rate>,
    ) -> Result<(), StoreError> {
        let addrs = if ingress.is_some() {
            addrs.to_vec()
        } else {
            Vec::new()
        };
        self.addresses
            .lock()
            .unwrap()
            .insert(cgroup.rel.clone(), addrs);
        Ok(())
    }

    fn remove(&self, cgroup_id: u64) -> Result<bool, StoreError> {
        let mut set = self.set.lock().unwrap();
        let before = set.len();
        set.retain(|_, (id, _, _)| *id != cgroup_id);
        Ok(set.len() != before)
    }

    fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        let set = self.set.lock().unwrap();
        Ok(set
            .iter()
            .map(|(k, (id, l, o))| Entry {
                cgroup_id: *id,
                path: k.clone(),
                owner: o.clone(),
                ingress_bps: l.ingress.map(|r| r.bits_per_sec()),
                egress_bps: l.egress.map(|r| r.bits_per_sec()),
                attached: true,
                ..Entry::default()
            })
            .collect())
    }

    fn owners(&self) -> Result<Vec<(u64, Owner)>, StoreError> {
        let set = self.set.lock().unwrap();
        Ok(set.values().map(|(id, _, o)| (*id, o.clone())).collect())
    }
}
