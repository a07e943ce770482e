//! What the plugin remembers between events: the pods and containers the runtime
//! announced and has not removed, the bandwidth annotations the API last showed
//! for each pod (the pod watch), and what was set or reported per level, so that a
//! repeated event (Synchronize after a reconnect, a resync of the watch) announces
//! nothing new. Pure bookkeeping: the store is the plugin's business.

use std::collections::{HashMap, HashSet};

use nri_bandwidth_core::annotations::{self, BadAnnotation};
use nri_bandwidth_core::model::{Entry, Limit, Owner};

use crate::nri::proto::nri::{Container, PodSandbox};

/// The bandwidth keys of a pod, sorted (`annotations::bandwidth_keys`).
pub type Keys = Vec<(String, String)>;

/// A level within a pod: "" for the pod, else the container's name.
fn level(owner: &Owner) -> String {
    owner.container.clone()
}

#[derive(Default)]
struct Known {
    pod: PodSandbox,
    /// Live containers by id.
    containers: HashMap<String, Container>,
    applied: HashMap<String, Limit>,
    warned: HashMap<String, Vec<BadAnnotation>>,
    failed: HashMap<String, String>,
}

/// What a notice about a set limit should say, if anything.
pub enum Announce {
    Limited,
    Changed,
    Nothing,
}

#[derive(Default)]
pub struct Registry {
    pods: HashMap<String, Known>,
    /// The API's bandwidth keys by pod uid, whether or not the runtime announced
    /// the pod yet: whichever comes first, the limit follows the API's newer view.
    api_view: HashMap<String, Keys>,
    /// Limits found pinned when the daemon (re)started, by (pod uid, level), in
    /// bits/s per direction: the same limit again is not announced as new.
    pinned: HashMap<(String, String), (Option<u64>, Option<u64>)>,
}

fn bps(limit: &Limit) -> (Option<u64>, Option<u64>) {
    (
        limit.ingress.map(|r| r.bits_per_sec()),
        limit.egress.map(|r| r.bits_per_sec()),
    )
}

impl Registry {
    /// The runtime announced `pod` (RunPodSandbox, Synchronize): remember it and
    /// return it with the API's bandwidth keys when the watch has seen it.
    pub fn announce(&mut self, pod: &PodSandbox) -> PodSandbox {
        let mut pod = pod.clone();
        if let Some(keys) = self.api_view.get(&pod.uid) {
            pod.annotations
                .retain(|k, _| !annotations::is_bandwidth_key(k));
            pod.annotations.extend(keys.iter().cloned());
        }
        let k = self.pods.entry(pod.uid.clone()).or_default();
        if k.pod.id != pod.id {
            // A new sandbox for the pod: its old containers are gone.
            k.containers.clear();
        }
        k.pod = pod.clone();
        pod
    }

    /// The runtime's view of `pod` merged with the API's (for container events,
    /// which carry the pod as it was created).
    pub fn current(&self, pod: &PodSandbox) -> PodSandbox {
        match self.pods.get(&pod.uid) {
            Some(k) if k.pod.id == pod.id => k.pod.clone(),
            _ => pod.clone(),
        }
    }

    /// A container of a known pod exists; one of the same name it replaces is gone.
    pub fn container(&mut self, pod: &PodSandbox, c: &Container) {
        if let Some(k) = self.pods.get_mut(&pod.uid) {
            k.containers
                .retain(|id, old| id == &c.id || old.name != c.name);
            k.containers.insert(c.id.clone(), c.clone());
        }
    }

    pub fn remove_pod(&mut self, pod: &PodSandbox) {
        if self.pods.get(&pod.uid).is_some_and(|k| k.pod.id == pod.id) {
            self.pods.remove(&pod.uid);
            self.api_view.remove(&pod.uid);
        }
    }

    pub fn remove_container(&mut self, pod: &PodSandbox, c: &Container) {
        if let Some(k) = self.pods.get_mut(&pod.uid) {
            k.containers.remove(&c.id);
            if !k.containers.values().any(|o| o.name == c.name) {
                k.applied.remove(&c.name);
                k.warned.remove(&c.name);
                k.failed.remove(&c.name);
            }
        }
    }

    /// After Synchronize: only what the runtime still runs is remembered.
    pub fn retain_live(&mut self, uids: &HashSet<&str>, ids: &HashSet<&str>) {
        self.pods.retain(|uid, _| uids.contains(uid.as_str()));
        for k in self.pods.values_mut() {
            k.containers.retain(|id, _| ids.contains(id.as_str()));
            let names: HashSet<String> = k.containers.values().map(|c| c.name.clone()).collect();
            let live = |lvl: &String| lvl.is_empty() || names.contains(lvl);
            k.applied.retain(|l, _| live(l));
            k.warned.retain(|l, _| live(l));
            k.failed.retain(|l, _| live(l));
        }
    }

    /// The limits pinned on the node when the daemon starts.
    pub fn seed_pinned(&mut self, entries: &[Entry]) {
        for e in entries {
            self.pinned.insert(
                (e.owner.pod_uid.clone(), e.owner.container.clone()),
                (e.ingress_bps, e.egress_bps),
            );
        }
    }

    /// `limit` was set at `owner`'s level.
    pub fn applied(&mut self, owner: &Owner, limit: &Limit) -> Announce {
        let lvl = level(owner);
        let pinned = self.pinned.remove(&(owner.pod_uid.clone(), lvl.clone()));
        let Some(k) = self.pods.get_mut(&owner.pod_uid) else {
            return Announce::Limited;
        };
        k.warned.remove(&lvl);
        k.failed.remove(&lvl);
        match k.applied.insert(lvl, limit.clone()) {
            None if pinned == Some(bps(limit)) => Announce::Nothing,
            None => Announce::Limited,
            Some(b) if b != *limit => Announce::Changed,
            Some(_) => Announce::Nothing,
        }
    }

    /// The limit at `owner`'s level was lifted; true when one had been set.
    pub fn unapplied(&mut self, owner: &Owner) -> bool {
        let lvl = level(owner);
        self.pinned.remove(&(owner.pod_uid.clone(), lvl.clone()));
        let Some(k) = self.pods.get_mut(&owner.pod_uid) else {
            return false;
        };
        k.warned.remove(&lvl);
        k.failed.remove(&lvl);
        k.applied.remove(&lvl).is_some()
    }

    /// Malformed values at `owner`'s level; true when they were not reported yet.
    pub fn warned(&mut self, owner: &Owner, bad: &[BadAnnotation]) -> bool {
        match self.pods.get_mut(&owner.pod_uid) {
            Some(k) => k.warned.insert(level(owner), bad.to_vec()).as_deref() != Some(bad),
            None => true,
        }
    }

    /// Setting the limit failed; true when this failure was not reported yet.
    pub fn failed(&mut self, owner: &Owner, error: &str) -> bool {
        match self.pods.get_mut(&owner.pod_uid) {
            Some(k) => k.failed.insert(level(owner), error.to_string()).as_deref() != Some(error),
            None => true,
        }
    }

    /// The API shows `keys` for pod `uid`. When the runtime announced that pod and
    /// the keys differ from what it has, returns the pod with the new keys and its
    /// containers: their limits must follow.
    pub fn api_changed(&mut self, uid: &str, keys: Keys) -> Option<(PodSandbox, Vec<Container>)> {
        self.api_view.insert(uid.to_string(), keys.clone());
        let k = self.pods.get_mut(uid)?;
        if keys == annotations::bandwidth_keys(&k.pod.annotations) {
            return None;
        }
        k.pod
            .annotations
            .retain(|key, _| !annotations::is_bandwidth_key(key));
        k.pod.annotations.extend(keys);
        Some((k.pod.clone(), k.containers.values().cloned().collect()))
    }

    /// The API deleted pod `uid`.
    pub fn api_deleted(&mut self, uid: &str) {
        self.api_view.remove(uid);
    }

    /// A full list from the API named exactly `uids`: views of other pods are stale.
    pub fn api_relisted(&mut self, uids: &HashSet<String>) {
        self.api_view.retain(|uid, _| uids.contains(uid));
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty() && self.api_view.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nri::testing::{container, pod};
    use nri_bandwidth_core::rate::Rate;

    fn limit(bps: u64) -> Limit {
        Limit {
            ingress: Some(Rate::parse(&bps.to_string()).unwrap()),
            ..Limit::default()
        }
    }

    fn who(uid: &str, container: &str) -> Owner {
        Owner {
            pod_uid: uid.into(),
            container: container.into(),
            ..Owner::default()
        }
    }

    #[test]
    fn a_restarted_container_replaces_the_one_of_its_name() {
        let mut r = Registry::default();
        let p = pod("k1", "/kp/k1", &[]);
        r.announce(&p);
        let old = container(&p, "web");
        let mut new = old.clone();
        new.id = "k1-web-2".into();
        r.container(&p, &old);
        assert!(matches!(
            r.applied(&who("k1", "web"), &limit(1_000_000)),
            Announce::Limited
        ));
        r.container(&p, &new);
        // The old one is removed later; the level keeps its record.
        r.remove_container(&p, &old);
        assert!(matches!(
            r.applied(&who("k1", "web"), &limit(1_000_000)),
            Announce::Nothing
        ));
        let (_, cs) = r
            .api_changed("k1", vec![("x".into(), "y".into())])
            .unwrap_or_default();
        assert!(cs.iter().all(|c| c.id == "k1-web-2"), "{cs:?}");
    }

    #[test]
    fn a_removed_old_sandbox_does_not_forget_the_new_one() {
        let mut r = Registry::default();
        let old = pod("k2", "/kp/k2", &[]);
        let mut new = old.clone();
        new.id = "sb-k2-2".into();
        r.announce(&old);
        r.announce(&new);
        r.remove_pod(&old);
        assert!(!r.is_empty());
        r.remove_pod(&new);
        assert!(r.is_empty());
    }

    #[test]
    fn limits_found_pinned_are_not_announced_again_and_relists_prune_views() {
        let mut r = Registry::default();
        let e = Entry {
            owner: who("k3", ""),
            ingress_bps: Some(2_000_000),
            ..Entry::default()
        };
        r.seed_pinned(&[e]);
        r.announce(&pod("k3", "/kp/k3", &[]));
        assert!(matches!(
            r.applied(&who("k3", ""), &limit(2_000_000)),
            Announce::Nothing
        ));
        assert!(matches!(
            r.applied(&who("k3", ""), &limit(3_000_000)),
            Announce::Changed
        ));
        r.api_changed("gone", vec![]);
        r.api_changed("k3", vec![]);
        r.api_relisted(&["k3".to_string()].into_iter().collect());
        assert!(r.api_view.contains_key("k3") && !r.api_view.contains_key("gone"));
    }
}
