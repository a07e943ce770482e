//! What the plugin does with runtime events, independent of the transport: pod
//! limits on the pod's cgroup at RunPodSandbox, container limits once the
//! container's cgroup exists (PostCreateContainer, before its process runs),
//! removal at RemovePodSandbox / RemoveContainer, and reconciliation against the
//! full list the runtime sends at Synchronize.
//!
//! The kernel side sits behind [`Backend`] so this logic is tested without root.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::annotations::{self, BadAnnotation, Requested};
use crate::limiter::{Entry, Limit, Owner, Source};
use crate::nri::proto::nri::{Container, ContainerState, PodSandbox};

/// Applies and removes limits. Implemented by the real limiter and by test fakes.
pub trait Backend: Send + Sync + 'static {
    /// Limits the cgroup named by `cgroup` (a runtime cgroup path or spec);
    /// returns its cgroup id. Updating an existing limit in place is fine.
    fn apply(&self, cgroup: &str, limit: &Limit, owner: &Owner) -> Result<u64, String>;
    /// Removes one limit by cgroup id.
    fn remove(&self, cgroup_id: u64) -> Result<(), String>;
    /// Every limit currently set on the node, with counters.
    fn entries(&self) -> Result<Vec<Entry>, String>;
    /// Who owns each limit, by cgroup id (cheaper than `entries`).
    fn owners(&self) -> Result<Vec<(u64, Owner)>, String> {
        Ok(self
            .entries()?
            .into_iter()
            .map(|e| (e.cgroup_id, e.owner))
            .collect())
    }
    /// Whether the cgroup exists yet.
    fn exists(&self, cgroup: &str) -> bool;
}

/// Policy settings (from the config file and the NRI Configure payload).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Fail pod / container creation on a malformed annotation instead of running
    /// the workload unlimited.
    pub strict: bool,
}

/// A refusal to be returned to the runtime (strict mode only).
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

pub struct Handler<B: Backend> {
    backend: B,
    policy: Mutex<Policy>,
    /// Synchronize chunks collected until the last one (`more == false`).
    pending_sync: Mutex<(Vec<PodSandbox>, Vec<Container>)>,
}

fn owner(pod: &PodSandbox, container: Option<&Container>) -> Owner {
    Owner {
        source: Source::Annotation,
        pod_namespace: pod.namespace.clone(),
        pod_name: pod.name.clone(),
        pod_uid: pod.uid.clone(),
        container: container.map(|c| c.name.clone()).unwrap_or_default(),
        container_id: container.map(|c| c.id.clone()).unwrap_or_default(),
    }
}

/// The pod's own cgroup: the parent kubelet (or crictl) named, else the parent of
/// the sandbox container's cgroups path.
pub fn pod_cgroup(pod: &PodSandbox) -> Option<String> {
    let linux = pod.linux.as_ref()?;
    if !linux.cgroup_parent.is_empty() {
        return Some(linux.cgroup_parent.clone());
    }
    let path = &linux.cgroups_path;
    if let Some((slice, _)) = path.split_once(':') {
        return (!slice.is_empty()).then(|| slice.to_string());
    }
    let parent = path.rsplit_once('/')?.0;
    (!parent.is_empty()).then(|| parent.to_string())
}

fn container_cgroup(c: &Container) -> Option<String> {
    c.linux
        .as_ref()
        .map(|l| l.cgroups_path.clone())
        .filter(|p| !p.is_empty())
}

fn describe(pod: &PodSandbox, container: Option<&Container>) -> String {
    match container {
        Some(c) => format!("container {}/{}/{}", pod.namespace, pod.name, c.name),
        None => format!("pod {}/{}", pod.namespace, pod.name),
    }
}

impl<B: Backend> Handler<B> {
    pub fn new(backend: B, policy: Policy) -> Self {
        Handler {
            backend,
            policy: Mutex::new(policy),
            pending_sync: Mutex::new((Vec::new(), Vec::new())),
        }
    }

    pub fn set_policy(&self, p: Policy) {
        *self.policy.lock().unwrap() = p;
    }

    pub fn policy(&self) -> Policy {
        self.policy.lock().unwrap().clone()
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// One log line per malformed value; in strict mode the refusal to return.
    fn judge(&self, what: &str, bad: &[BadAnnotation]) -> Result<(), Refusal> {
        if bad.is_empty() {
            return Ok(());
        }
        let reasons: Vec<String> = bad.iter().map(|b| b.to_string()).collect();
        let msg = format!("{what}: {}", reasons.join("; "));
        if self.policy().strict {
            log::error!("refusing {msg}");
            Err(Refusal(format!("nri-bandwidth: {msg}")))
        } else {
            log::warn!(
                "{what} runs without a bandwidth limit: {}",
                reasons.join("; ")
            );
            Ok(())
        }
    }

    fn apply(
        &self,
        what: &str,
        cgroup: Option<String>,
        req: Requested,
        owner: Owner,
    ) -> Result<(), Refusal> {
        self.judge(what, &req.bad)?;
        let Some(limit) = req.limit else {
            return Ok(());
        };
        let Some(cgroup) = cgroup else {
            log::warn!("{what} asks for a bandwidth limit but the runtime gave no cgroup path");
            return Ok(());
        };
        match self.backend.apply(&cgroup, &limit, &owner) {
            Ok(id) => {
                log::info!(
                    "{what}: limited cgroup {cgroup} (id {id}) to ingress {}, egress {}",
                    limit.ingress.map_or("-".into(), |r| r.to_string()),
                    limit.egress.map_or("-".into(), |r| r.to_string())
                );
                Ok(())
            }
            // The limit cannot be set (cgroup gone, kernel refused): never block a
            // healthy workload for it, but strict mode promised enforcement.
            Err(e) if self.policy().strict => Err(Refusal(format!("nri-bandwidth: {what}: {e}"))),
            Err(e) => {
                log::error!("{what} runs without a bandwidth limit: {e}");
                Ok(())
            }
        }
    }

    /// Pod limit, on the pod's cgroup (shared by all its containers).
    pub fn run_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), Refusal> {
        let what = describe(pod, None);
        self.apply(
            &what,
            pod_cgroup(pod),
            annotations::pod(&pod.annotations),
            owner(pod, None),
        )
    }

    /// Validation only: the container's cgroup does not exist yet, but in strict
    /// mode this is the last event whose error fails container creation.
    pub fn create_container(&self, pod: &PodSandbox, c: &Container) -> Result<(), Refusal> {
        self.judge(
            &describe(pod, Some(c)),
            &annotations::container(&pod.annotations, &c.name).bad,
        )
    }

    /// Container limit, if its cgroup exists already. CRI-O creates it with the
    /// container; containerd only when the container is started (its task), so
    /// there this waits for [`Self::start_container`].
    pub fn post_create_container(&self, pod: &PodSandbox, c: &Container) -> Result<(), Refusal> {
        match container_cgroup(c) {
            Some(cg) if self.backend.exists(&cg) => self.start_container(pod, c),
            _ => {
                log::debug!(
                    "{}: cgroup not created yet; limiting at start",
                    describe(pod, Some(c))
                );
                Ok(())
            }
        }
    }

    /// Container limit, once its cgroup exists and before its process runs.
    pub fn start_container(&self, pod: &PodSandbox, c: &Container) -> Result<(), Refusal> {
        let req = annotations::container(&pod.annotations, &c.name);
        // Bad values were reported at CreateContainer already.
        let req = Requested {
            bad: Vec::new(),
            ..req
        };
        self.apply(
            &describe(pod, Some(c)),
            container_cgroup(c),
            req,
            owner(pod, Some(c)),
        )
    }

    fn remove_where(&self, what: &str, pred: impl Fn(&Owner) -> bool) {
        match self.backend.owners() {
            Ok(owners) => {
                for (id, o) in owners
                    .iter()
                    .filter(|(_, o)| o.source == Source::Annotation && pred(o))
                {
                    let who = if o.container.is_empty() {
                        format!("pod {}/{}", o.pod_namespace, o.pod_name)
                    } else {
                        format!(
                            "container {}/{}/{}",
                            o.pod_namespace, o.pod_name, o.container
                        )
                    };
                    match self.backend.remove(*id) {
                        Ok(()) => log::info!("{what}: removed the limit of {who}"),
                        Err(err) => log::error!("{what}: removing the limit of {who}: {err}"),
                    }
                }
            }
            Err(err) => log::error!("{what}: listing limits: {err}"),
        }
    }

    pub fn remove_pod_sandbox(&self, pod: &PodSandbox) {
        let uid = pod.uid.clone();
        self.remove_where(&describe(pod, None), |e| {
            !uid.is_empty() && e.pod_uid == uid
        });
    }

    pub fn remove_container(&self, pod: &PodSandbox, c: &Container) {
        let id = c.id.clone();
        self.remove_where(&describe(pod, Some(c)), |e| {
            !id.is_empty() && e.container_id == id
        });
    }

    /// Collects a Synchronize chunk; on the last one reconciles. Returns whether
    /// the runtime should send more (`more` echoed as the protocol requires).
    pub fn synchronize(
        &self,
        pods: Vec<PodSandbox>,
        containers: Vec<Container>,
        more: bool,
    ) -> bool {
        let (all_pods, all_containers) = {
            let mut p = self.pending_sync.lock().unwrap();
            p.0.extend(pods);
            p.1.extend(containers);
            if more {
                return true;
            }
            std::mem::take(&mut *p)
        };
        self.reconcile(&all_pods, &all_containers);
        false
    }

    /// Makes the pinned limits match what the runtime runs: attaches what is missing
    /// (pods created while we were away), removes what belongs to pods and
    /// containers that are gone. Limits set by hand or by the hook are left alone.
    pub fn reconcile(&self, pods: &[PodSandbox], containers: &[Container]) {
        let by_id: HashMap<&str, &PodSandbox> = pods.iter().map(|p| (p.id.as_str(), p)).collect();
        for pod in pods {
            let _ = self.run_pod_sandbox(pod);
        }
        let live = |c: &&Container| {
            matches!(
                c.state.enum_value(),
                Ok(ContainerState::CONTAINER_CREATED) | Ok(ContainerState::CONTAINER_RUNNING)
            )
        };
        for c in containers.iter().filter(live) {
            if let Some(pod) = by_id.get(c.pod_sandbox_id.as_str()) {
                let _ = self.start_container(pod, c);
            }
        }
        let uids: HashSet<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
        let ids: HashSet<&str> = containers
            .iter()
            .filter(live)
            .map(|c| c.id.as_str())
            .collect();
        self.remove_where("synchronize", |e| {
            !uids.contains(e.pod_uid.as_str())
                || (!e.container_id.is_empty() && !ids.contains(e.container_id.as_str()))
        });
        // Limits whose cgroup vanished meanwhile are removed by the limiter's own
        // reconcile, which the connection loop runs alongside.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::DirCounters;
    use crate::nri::proto::nri::{LinuxContainer, LinuxPodSandbox};

    /// Records what would be limited, keyed by cgroup path; a path's id is its
    /// position in `ids` (stable, unique).
    #[derive(Default)]
    struct Fake {
        set: Mutex<HashMap<String, (Limit, Owner)>>,
        ids: Mutex<Vec<String>>,
        fail: Mutex<Option<String>>,
    }

    impl Fake {
        fn id(&self, path: &str) -> u64 {
            let mut ids = self.ids.lock().unwrap();
            let i = ids.iter().position(|p| p == path).unwrap_or_else(|| {
                ids.push(path.into());
                ids.len() - 1
            });
            i as u64 + 1
        }
    }

    impl Backend for Fake {
        fn apply(&self, cgroup: &str, limit: &Limit, owner: &Owner) -> Result<u64, String> {
            if let Some(e) = self.fail.lock().unwrap().clone() {
                return Err(e);
            }
            self.set
                .lock()
                .unwrap()
                .insert(cgroup.into(), (limit.clone(), owner.clone()));
            Ok(self.id(cgroup))
        }
        fn exists(&self, cgroup: &str) -> bool {
            !cgroup.contains("not-yet")
        }
        fn remove(&self, cgroup_id: u64) -> Result<(), String> {
            let ids = self.ids.lock().unwrap().clone();
            self.set
                .lock()
                .unwrap()
                .retain(|k, _| ids.iter().position(|p| p == k) != Some(cgroup_id as usize - 1));
            Ok(())
        }
        fn entries(&self) -> Result<Vec<Entry>, String> {
            let set = self.set.lock().unwrap().clone();
            Ok(set
                .iter()
                .map(|(k, (l, o))| Entry {
                    cgroup_id: self.id(k),
                    path: k.clone(),
                    owner: o.clone(),
                    ingress_bps: l.ingress.map(|r| r.bits_per_sec()),
                    egress_bps: l.egress.map(|r| r.bits_per_sec()),
                    burst_bytes: None,
                    created_unix: 0,
                    ingress: DirCounters::default(),
                    egress: DirCounters::default(),
                    acks_gated: 0,
                    pacing_sets: 0,
                    clamp_sets: 0,
                    attached: true,
                })
                .collect())
        }
    }

    fn pod(uid: &str, parent: &str, ann: &[(&str, &str)]) -> PodSandbox {
        let mut p = PodSandbox::new();
        p.id = format!("sb-{uid}");
        p.uid = uid.into();
        p.name = format!("name-{uid}");
        p.namespace = "default".into();
        p.annotations = ann
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut l = LinuxPodSandbox::new();
        l.cgroup_parent = parent.into();
        l.cgroups_path = format!("{parent}/sb-{uid}");
        p.linux = Some(l).into();
        p
    }

    fn container(pod: &PodSandbox, name: &str) -> Container {
        let mut c = Container::new();
        c.id = format!("{}-{name}", pod.uid);
        c.name = name.into();
        c.pod_sandbox_id = pod.id.clone();
        c.state = ContainerState::CONTAINER_RUNNING.into();
        let mut l = LinuxContainer::new();
        l.cgroups_path = format!("{}/{}", pod.linux.cgroup_parent, c.id);
        c.linux = Some(l).into();
        c
    }

    fn handler() -> Handler<Fake> {
        Handler::new(Fake::default(), Policy::default())
    }

    fn limits(h: &Handler<Fake>) -> Vec<(String, Option<u64>, Option<u64>)> {
        let mut v: Vec<_> = h
            .backend
            .set
            .lock()
            .unwrap()
            .iter()
            .map(|(k, (l, _))| {
                (
                    k.clone(),
                    l.ingress.map(|r| r.bits_per_sec()),
                    l.egress.map(|r| r.bits_per_sec()),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn pod_annotations_limit_the_pod_cgroup() {
        let h = handler();
        let p = pod(
            "u1",
            "/kubepods/burstable/podu1",
            &[
                (annotations::K8S_INGRESS, "50M"),
                (annotations::K8S_EGRESS, "20M"),
            ],
        );
        h.run_pod_sandbox(&p).unwrap();
        assert_eq!(
            limits(&h),
            vec![(
                "/kubepods/burstable/podu1".into(),
                Some(50_000_000),
                Some(20_000_000)
            )]
        );
        let (_, o) = h
            .backend
            .set
            .lock()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .clone();
        assert_eq!(
            (o.pod_uid.as_str(), o.pod_name.as_str(), o.source),
            ("u1", "name-u1", Source::Annotation)
        );
    }

    #[test]
    fn systemd_pods_use_the_slice() {
        let mut p = pod("u2", "", &[(annotations::K8S_EGRESS, "1M")]);
        p.linux.as_mut().unwrap().cgroups_path =
            "kubepods-besteffort-podu2.slice:cri-containerd:sb".into();
        assert_eq!(
            pod_cgroup(&p).as_deref(),
            Some("kubepods-besteffort-podu2.slice")
        );
        let h = handler();
        h.run_pod_sandbox(&p).unwrap();
        assert_eq!(limits(&h)[0].0, "kubepods-besteffort-podu2.slice");
    }

    #[test]
    fn container_keys_limit_only_that_container() {
        let h = handler();
        let p = pod(
            "u3",
            "/kp/u3",
            &[("egress-bandwidth.nri-bandwidth.io/web", "5M")],
        );
        h.run_pod_sandbox(&p).unwrap();
        assert!(limits(&h).is_empty(), "no pod-level key");
        for name in ["web", "sidecar"] {
            let c = container(&p, name);
            h.create_container(&p, &c).unwrap();
            h.post_create_container(&p, &c).unwrap();
        }
        assert_eq!(
            limits(&h),
            vec![("/kp/u3/u3-web".into(), None, Some(5_000_000))]
        );
    }

    #[test]
    fn malformed_values_fail_open_by_default_and_fail_the_workload_when_strict() {
        let h = handler();
        let p = pod("u4", "/kp/u4", &[(annotations::K8S_INGRESS, "10Mbps")]);
        assert_eq!(h.run_pod_sandbox(&p), Ok(()));
        assert!(limits(&h).is_empty(), "fail open: unlimited");
        h.set_policy(Policy { strict: true });
        let err = h.run_pod_sandbox(&p).unwrap_err().0;
        assert!(
            err.contains("default/name-u4")
                && err.contains(annotations::K8S_INGRESS)
                && err.contains("10Mbps"),
            "{err}"
        );
        let p = pod(
            "u5",
            "/kp/u5",
            &[("ingress-bandwidth.nri-bandwidth.io/web", "lots")],
        );
        let c = container(&p, "web");
        assert!(h.create_container(&p, &c).unwrap_err().0.contains("lots"));
    }

    #[test]
    fn a_limit_that_cannot_be_set_never_blocks_the_pod_unless_strict() {
        let h = handler();
        *h.backend.fail.lock().unwrap() = Some("cgroup \"/kp/u6\" does not exist".into());
        let p = pod("u6", "/kp/u6", &[(annotations::K8S_INGRESS, "10M")]);
        assert_eq!(h.run_pod_sandbox(&p), Ok(()));
        h.set_policy(Policy { strict: true });
        assert!(
            h.run_pod_sandbox(&p)
                .unwrap_err()
                .0
                .contains("does not exist")
        );
    }

    #[test]
    fn removal_takes_only_what_belongs_to_the_pod_or_container() {
        let h = handler();
        let a = pod(
            "ua",
            "/kp/ua",
            &[
                (annotations::K8S_INGRESS, "10M"),
                ("ingress-bandwidth.nri-bandwidth.io/web", "1M"),
            ],
        );
        let b = pod("ub", "/kp/ub", &[(annotations::K8S_INGRESS, "10M")]);
        let web = container(&a, "web");
        h.run_pod_sandbox(&a).unwrap();
        h.run_pod_sandbox(&b).unwrap();
        h.post_create_container(&a, &web).unwrap();
        assert_eq!(limits(&h).len(), 3);
        h.remove_container(&a, &web);
        assert_eq!(limits(&h).len(), 2);
        h.remove_pod_sandbox(&a);
        assert_eq!(limits(&h), vec![("/kp/ub".into(), Some(10_000_000), None)]);
    }

    #[test]
    fn synchronize_collects_chunks_then_attaches_missing_and_removes_stale() {
        let h = handler();
        let gone = pod("gone", "/kp/gone", &[(annotations::K8S_INGRESS, "10M")]);
        h.run_pod_sandbox(&gone).unwrap();
        // A manual limit is never touched by reconciliation.
        h.backend
            .set
            .lock()
            .unwrap()
            .insert("/manual".into(), (Limit::default(), Owner::default()));
        let p1 = pod("p1", "/kp/p1", &[(annotations::K8S_EGRESS, "3M")]);
        let p2 = pod(
            "p2",
            "/kp/p2",
            &[("egress-bandwidth.nri-bandwidth.io/app", "2M")],
        );
        let app = container(&p2, "app");
        assert!(
            h.synchronize(vec![p1.clone()], vec![], true),
            "more=true must be echoed"
        );
        assert_eq!(limits(&h).len(), 2, "nothing happens before the last chunk");
        assert!(!h.synchronize(vec![p2.clone()], vec![app], false));
        let got: Vec<String> = limits(&h).into_iter().map(|l| l.0).collect();
        assert_eq!(got, vec!["/kp/p1", "/kp/p2/p2-app", "/manual"]);
    }
}
