//! The bandwidth plugin: what it does at each runtime event, one method per event,
//! independent of the transport. Pod limits go on the pod's cgroup at
//! RunPodSandbox; container limits once the container's cgroup exists
//! (PostCreateContainer, before its process runs); removal at RemovePodSandbox /
//! RemoveContainer; reconciliation against the full list the runtime sends at
//! Synchronize.
//!
//! With API access the daemon also hands it a running pod's changed annotations
//! ([`BandwidthPlugin::annotations_changed`]) and takes its [`Notice`]s for Events.
//!
//! The node sits behind the core's [`Store`], so this logic is tested with the
//! core's fake store, without root.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use nri_bandwidth_core::annotations::{self, BadAnnotation, Requested};
use nri_bandwidth_core::cgroup::{Cgroup, CgroupError};
use nri_bandwidth_core::model::{Limit, Owner, Source};
use nri_bandwidth_core::policy::{Policy, Verdict};
use nri_bandwidth_core::store::{Store, StoreError};

use crate::known::{Announce, Registry};
use crate::notices::{self, Notice, NoticeSink, Severity};
use crate::nri::proto::nri::{Container, ContainerState, PodSandbox};
use crate::nri::{Handler, Refusal};

pub struct BandwidthPlugin<S: Store> {
    store: S,
    policy: Mutex<Policy>,
    reg: Mutex<Registry>,
    /// One event at a time, runtime's or API's: a pod's limit is decided and set
    /// by one of them before the other looks.
    serial: Mutex<()>,
    notices: Mutex<Option<Arc<dyn NoticeSink>>>,
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
    owner(pod, container).describe()
}

/// Logs what the policy decided; a refusal goes back to the runtime.
fn enforce(v: Verdict) -> Result<(), Refusal> {
    match v {
        Verdict::Proceed => Ok(()),
        Verdict::RunUnlimited(msg) => {
            log::warn!("{msg}");
            Ok(())
        }
        Verdict::Refuse(msg) => {
            log::error!("refusing: {msg}");
            Err(Refusal(msg))
        }
    }
}

impl<S: Store> BandwidthPlugin<S> {
    pub fn new(store: S, policy: Policy) -> Self {
        BandwidthPlugin {
            store,
            policy: Mutex::new(policy),
            reg: Mutex::new(Registry::default()),
            serial: Mutex::new(()),
            notices: Mutex::new(None),
        }
    }

    /// Where notices for Events go from now on.
    pub fn set_notices(&self, sink: Arc<dyn NoticeSink>) {
        *self.notices.lock().unwrap() = Some(sink);
    }

    fn tell(&self, owner: &Owner, severity: Severity, reason: &'static str, message: String) {
        let sink = self.notices.lock().unwrap().clone();
        if let Some(sink) = sink {
            sink.notice(Notice::about(owner, severity, reason, message));
        }
    }

    /// Records what was set at `owner`'s level; a notice when it is new or changed.
    fn applied(&self, owner: &Owner, limit: &Limit) {
        let verb = match self.reg.lock().unwrap().applied(owner, limit) {
            Announce::Limited => (notices::LIMITED, "limited to"),
            Announce::Changed => (notices::CHANGED, "limit changed to"),
            Announce::Nothing => return,
        };
        self.tell(
            owner,
            Severity::Normal,
            verb.0,
            format!("{}: {} {}", owner.describe(), verb.1, limit.describe()),
        );
    }

    /// A Warning for malformed values, once per distinct set of them.
    fn warn_bad(&self, owner: &Owner, bad: &[BadAnnotation], consequence: &str) {
        if bad.is_empty() || !self.reg.lock().unwrap().warned(owner, bad) {
            return;
        }
        let list: Vec<String> = bad.iter().map(|b| b.to_string()).collect();
        self.tell(
            owner,
            Severity::Warning,
            notices::INVALID,
            format!("{}: {}; {consequence}", owner.describe(), list.join("; ")),
        );
    }

    /// The limits already pinned for pods, so that finding them again after a
    /// restart is not announced as new.
    pub fn seed_from_store(&self) {
        match self.store.entries() {
            Ok(e) => self.reg.lock().unwrap().seed_pinned(&e),
            Err(e) => log::warn!("reading the pinned limits: {e}"),
        }
    }

    pub fn set_policy(&self, p: Policy) {
        *self.policy.lock().unwrap() = p;
    }

    pub fn policy(&self) -> Policy {
        *self.policy.lock().unwrap()
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    fn judge(&self, owner: &Owner, bad: &[BadAnnotation]) -> Result<(), Refusal> {
        let policy = self.policy();
        let consequence = if policy.strict {
            "refused (strict)"
        } else {
            "it runs without this limit"
        };
        self.warn_bad(owner, bad, consequence);
        enforce(policy.on_bad_values(&owner.describe(), bad))
    }

    /// Resolves `spec` and, for a container (`pod` given), checks that it lies
    /// strictly below its pod's cgroup.
    fn target(&self, spec: &str, pod: Option<&PodSandbox>) -> Result<Cgroup, StoreError> {
        let cg = self.store.resolve(spec)?;
        let Some(pod) = pod else {
            return Ok(cg);
        };
        let refuse = |reason: String| {
            StoreError::Cgroup(CgroupError::Refused {
                spec: spec.into(),
                reason,
            })
        };
        let pod_spec = pod_cgroup(pod)
            .ok_or_else(|| refuse("the runtime gave no cgroup for its pod".into()))?;
        let pod_cg = self.store.resolve(&pod_spec)?;
        if !cg.is_below(&pod_cg) {
            return Err(refuse(format!(
                "it is not below its pod's cgroup {}",
                pod_cg.rel
            )));
        }
        Ok(cg)
    }

    /// Applies what `req` asks on the cgroup `cgroup` names; returns the cgroup and
    /// limit when one was set.
    fn apply(
        &self,
        what: &str,
        cgroup: Option<String>,
        pod: Option<&PodSandbox>,
        req: Requested,
        owner: Owner,
    ) -> Result<Option<(Cgroup, Limit)>, Refusal> {
        self.judge(&owner, &req.bad)?;
        let Some(limit) = req.limit else {
            return Ok(None);
        };
        let Some(spec) = cgroup else {
            log::warn!("{what} asks for a bandwidth limit but the runtime gave no cgroup path");
            return Ok(None);
        };
        let applied = self
            .target(&spec, pod)
            .and_then(|cg| self.store.apply(&cg, &limit, &owner).map(|()| cg));
        match applied {
            Ok(cg) => {
                log::info!(
                    "{what}: limited cgroup {} (id {}) to {}",
                    cg.rel,
                    cg.id,
                    limit.describe()
                );
                self.applied(&owner, &limit);
                Ok(Some((cg, limit)))
            }
            Err(e) => {
                let msg = e.to_string();
                if self.reg.lock().unwrap().failed(&owner, &msg) {
                    self.tell(
                        &owner,
                        Severity::Warning,
                        notices::FAILED,
                        format!("{what}: the limit could not be set: {msg}"),
                    );
                }
                enforce(self.policy().on_failure(what, &e)).map(|()| None)
            }
        }
    }

    fn remove_where(&self, what: &str, pred: impl Fn(&Owner) -> bool) {
        let mine = |o: &Owner| o.source == Source::Annotation && pred(o);
        match self.store.remove_where(&mine) {
            Ok(removed) => {
                for r in removed {
                    let who = r.owner.describe();
                    match r.result {
                        Ok(()) => log::info!("{what}: removed the limit of {who}"),
                        Err(err) => log::error!("{what}: removing the limit of {who}: {err}"),
                    }
                }
            }
            Err(err) => log::error!("{what}: listing limits: {err}"),
        }
    }

    /// Container limit, once its cgroup exists and before its process runs.
    fn limit_container(&self, pod: &PodSandbox, c: &Container) -> Result<(), Refusal> {
        let pod = &{
            let mut reg = self.reg.lock().unwrap();
            reg.container(pod, c);
            reg.current(pod)
        };
        let req = annotations::container(&pod.annotations, &c.name);
        // Bad values were reported at CreateContainer already.
        let req = Requested {
            bad: Vec::new(),
            ..req
        };
        self.apply(
            &describe(pod, Some(c)),
            container_cgroup(c),
            Some(pod),
            req,
            owner(pod, Some(c)),
        )
        .map(|_| ())
    }

    /// The pod-level limit its annotations ask for, on its cgroup.
    fn limit_pod(&self, pod: &PodSandbox) -> Result<(), Refusal> {
        let what = describe(pod, None);
        let applied = self.apply(
            &what,
            pod_cgroup(pod),
            None,
            annotations::pod(&pod.annotations),
            owner(pod, None),
        )?;
        // Senders on this node toward the pod's addresses are paced at its ingress
        // limit where the senders' program reaches them; the gate stays for the rest.
        if let Some((cg, limit)) = applied {
            let ips: Vec<std::net::IpAddr> =
                pod.ips.iter().filter_map(|a| a.parse().ok()).collect();
            if let Err(e) = self.store.set_addresses(&cg, &ips, limit.ingress) {
                log::warn!("{what}: senders on this node are not paced toward it: {e}");
            }
        }
        Ok(())
    }

    /// Lifts the limit the annotations set at `owner`'s level, if any.
    fn unlimit_level(&self, owner: &Owner) {
        let had = self.reg.lock().unwrap().unapplied(owner);
        let (uid, lvl) = (owner.pod_uid.clone(), owner.container.clone());
        self.remove_where(&owner.describe(), |e| {
            e.pod_uid == uid && e.container == lvl
        });
        if had {
            self.tell(
                owner,
                Severity::Normal,
                notices::UNLIMITED,
                format!("{}: limit removed", owner.describe()),
            );
        }
    }

    /// A running pod's annotations as the API now has them (the pod watch): its
    /// limits follow them in place. A limit whose annotation was removed is
    /// lifted; a malformed new value keeps the current limit and is reported. NRI
    /// stays the authority for which pods and containers exist: a pod the runtime
    /// has not announced is left alone (its RunPodSandbox reads the API's view).
    pub fn annotations_changed(&self, uid: &str, api: &HashMap<String, String>) {
        let _one = self.serial.lock().unwrap();
        let changed = self
            .reg
            .lock()
            .unwrap()
            .api_changed(uid, annotations::bandwidth_keys(api));
        let Some((pod, containers)) = changed else {
            return;
        };
        log::info!(
            "{}: bandwidth annotations changed in the API",
            describe(&pod, None)
        );
        self.follow(
            &owner(&pod, None),
            annotations::pod(&pod.annotations),
            || self.limit_pod(&pod),
        );
        for c in &containers {
            self.follow(
                &owner(&pod, Some(c)),
                annotations::container(&pod.annotations, &c.name),
                || self.limit_container(&pod, c),
            );
        }
    }

    /// One level of a running pod follows what its annotations now ask: a
    /// malformed value keeps the current limit (reported), a limit is set in place
    /// by `set`, no limit lifts the one there was.
    fn follow(&self, owner: &Owner, req: Requested, set: impl FnOnce() -> Result<(), Refusal>) {
        if !req.bad.is_empty() {
            self.warn_bad(
                owner,
                &req.bad,
                "the current limit stays until the value is fixed",
            );
        } else if req.limit.is_some() {
            let _ = set();
        } else {
            self.unlimit_level(owner);
        }
    }

    /// The API deleted the pod (the runtime's RemovePodSandbox removes its limits).
    pub fn pod_deleted(&self, uid: &str) {
        self.reg.lock().unwrap().api_deleted(uid);
    }

    /// The watch listed every pod of the node again: exactly `uids`.
    pub fn pods_relisted(&self, uids: &HashSet<String>) {
        self.reg.lock().unwrap().api_relisted(uids);
    }

    fn pod_sandbox(&self, pod: &PodSandbox) -> Result<(), Refusal> {
        let pod = &self.reg.lock().unwrap().announce(pod);
        self.limit_pod(pod)
    }
}

impl<S: Store> Handler for BandwidthPlugin<S> {
    fn configure(&self, policy: Policy) {
        self.set_policy(policy);
    }

    /// Pod limit, on the pod's cgroup (shared by all its containers).
    fn run_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), Refusal> {
        let _one = self.serial.lock().unwrap();
        self.pod_sandbox(pod)
    }

    /// Validation only: the container's cgroup does not exist yet, but in strict
    /// mode this is the last event whose error fails container creation.
    fn create_container(&self, pod: &PodSandbox, c: &Container) -> Result<(), Refusal> {
        let _one = self.serial.lock().unwrap();
        let pod = &self.reg.lock().unwrap().current(pod);
        self.judge(
            &owner(pod, Some(c)),
            &annotations::container(&pod.annotations, &c.name).bad,
        )
    }

    /// Container limit, if its cgroup exists already. CRI-O creates it with the
    /// container; containerd only when the container is started (its task), so
    /// there this waits for StartContainer.
    fn post_create_container(&self, pod: &PodSandbox, c: &Container) -> Result<(), Refusal> {
        let _one = self.serial.lock().unwrap();
        match container_cgroup(c) {
            Some(cg) if self.store.resolve(&cg).is_ok() => self.limit_container(pod, c),
            _ => {
                log::debug!(
                    "{}: cgroup not created yet; limiting at start",
                    describe(pod, Some(c))
                );
                Ok(())
            }
        }
    }

    fn start_container(&self, pod: &PodSandbox, c: &Container) -> Result<(), Refusal> {
        let _one = self.serial.lock().unwrap();
        self.limit_container(pod, c)
    }

    fn remove_pod_sandbox(&self, pod: &PodSandbox) {
        let _one = self.serial.lock().unwrap();
        self.reg.lock().unwrap().remove_pod(pod);
        let uid = pod.uid.clone();
        self.remove_where(&describe(pod, None), |e| {
            !uid.is_empty() && e.pod_uid == uid
        });
    }

    fn remove_container(&self, pod: &PodSandbox, c: &Container) {
        let _one = self.serial.lock().unwrap();
        self.reg.lock().unwrap().remove_container(pod, c);
        let id = c.id.clone();
        self.remove_where(&describe(pod, Some(c)), |e| {
            !id.is_empty() && e.container_id == id
        });
    }

    /// Makes the pinned limits match what the runtime runs: attaches what is missing
    /// (pods created while we were away), removes what belongs to pods and
    /// containers that are gone. Limits set by hand or by the hook are left alone.
    fn synchronize(&self, pods: &[PodSandbox], containers: &[Container]) {
        let _one = self.serial.lock().unwrap();
        let by_id: HashMap<&str, &PodSandbox> = pods.iter().map(|p| (p.id.as_str(), p)).collect();
        for pod in pods {
            let _ = self.pod_sandbox(pod);
        }
        let live = |c: &&Container| {
            matches!(
                c.state.enum_value(),
                Ok(ContainerState::CONTAINER_CREATED) | Ok(ContainerState::CONTAINER_RUNNING)
            )
        };
        for c in containers.iter().filter(live) {
            if let Some(pod) = by_id.get(c.pod_sandbox_id.as_str()) {
                let _ = self.limit_container(pod, c);
            }
        }
        let uids: HashSet<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
        let ids: HashSet<&str> = containers
            .iter()
            .filter(live)
            .map(|c| c.id.as_str())
            .collect();
        self.reg.lock().unwrap().retain_live(&uids, &ids);
        self.remove_where("synchronize", |e| {
            !uids.contains(e.pod_uid.as_str())
                || (!e.container_id.is_empty() && !ids.contains(e.container_id.as_str()))
        });
        // Limits whose cgroup vanished meanwhile are removed by the datapath's own
        // reconcile, which the daemon runs at every connection.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nri::sync::SyncCollector;
    use crate::nri::testing::{container, pod};
    use nri_bandwidth_core::store::fake::FakeStore;

    fn handler() -> BandwidthPlugin<FakeStore> {
        BandwidthPlugin::new(FakeStore::new(), Policy::default())
    }

    fn limits(h: &BandwidthPlugin<FakeStore>) -> Vec<(String, Option<u64>, Option<u64>)> {
        h.store.limits()
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
        let (_, o) = h.store.get("/kubepods/burstable/podu1").unwrap();
        assert_eq!(
            (o.pod_uid.as_str(), o.pod_name.as_str(), o.source),
            ("u1", "u1", Source::Annotation)
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
            err.contains("default/u4")
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
        h.store.fail_with(Some("cgroup \"/kp/u6\" does not exist"));
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
        h.store
            .insert("/manual", Limit::default(), Owner::default());
        let p1 = pod("p1", "/kp/p1", &[(annotations::K8S_EGRESS, "3M")]);
        let p2 = pod(
            "p2",
            "/kp/p2",
            &[("egress-bandwidth.nri-bandwidth.io/app", "2M")],
        );
        let app = container(&p2, "app");
        let sync = SyncCollector::default();
        assert!(
            sync.add(vec![p1.clone()], vec![], true).unwrap().is_none(),
            "nothing happens before the last chunk"
        );
        let (pods, containers) = sync
            .add(vec![p2.clone()], vec![app], false)
            .unwrap()
            .unwrap();
        h.synchronize(&pods, &containers);
        let got: Vec<String> = limits(&h).into_iter().map(|l| l.0).collect();
        assert_eq!(got, vec!["/kp/p1", "/kp/p2/p2-app", "/manual"]);
    }

    #[test]
    fn hostile_cgroup_paths_are_refused_and_the_pod_runs_unlimited() {
        let h = handler();
        for parent in ["/", ".", "kubepods/..", "/kp/u1/../uS", "//x"] {
            let p = pod("u1", parent, &[(annotations::K8S_INGRESS, "10M")]);
            assert_eq!(h.run_pod_sandbox(&p), Ok(()), "{parent}: fail open");
        }
        assert!(limits(&h).is_empty(), "{:?}", limits(&h));
        // A container limit must land below its own pod's cgroup.
        let p = pod(
            "u2",
            "/kp/u2",
            &[("ingress-bandwidth.nri-bandwidth.io/web", "5M")],
        );
        let mut c = container(&p, "web");
        for path in ["/kp/u2", "/kp/other/web", "/kp/u2/web/../../../x"] {
            c.linux.as_mut().unwrap().cgroups_path = path.into();
            h.start_container(&p, &c).unwrap();
        }
        assert!(limits(&h).is_empty(), "{:?}", limits(&h));
        h.set_policy(Policy { strict: true });
        c.linux.as_mut().unwrap().cgroups_path = "/kp/other/web".into();
        let e = h.start_container(&p, &c).unwrap_err().0;
        assert!(e.contains("not below its pod's cgroup"), "{e}");
    }

    #[test]
    fn a_pods_addresses_go_with_its_ingress_limit() {
        let h = handler();
        let mut p = pod("u7", "/kp/u7", &[(annotations::K8S_INGRESS, "10M")]);
        p.ips = vec![
            "10.88.0.7".into(),
            "fd00::7".into(),
            "not an address".into(),
        ];
        h.run_pod_sandbox(&p).unwrap();
        let got: Vec<String> = h
            .store
            .addresses("/kp/u7")
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["10.88.0.7", "fd00::7"]);
        let mut q = pod("u8", "/kp/u8", &[(annotations::K8S_EGRESS, "10M")]);
        q.ips = vec!["10.88.0.8".into()];
        h.run_pod_sandbox(&q).unwrap();
        assert!(
            h.store.addresses("/kp/u8").is_empty(),
            "no ingress limit, no pacing"
        );
    }

    /// Collects notices for the Events tests.
    #[derive(Default)]
    struct Notices(Mutex<Vec<Notice>>);

    impl NoticeSink for Notices {
        fn notice(&self, n: Notice) {
            self.0.lock().unwrap().push(n);
        }
    }

    fn watched() -> (BandwidthPlugin<FakeStore>, Arc<Notices>) {
        let h = handler();
        let n = Arc::new(Notices::default());
        h.set_notices(n.clone());
        (h, n)
    }

    fn reasons(n: &Notices) -> Vec<&'static str> {
        n.0.lock().unwrap().drain(..).map(|n| n.reason).collect()
    }

    fn api(ann: &[(&str, &str)]) -> HashMap<String, String> {
        ann.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_annotation_changed_in_the_api_changes_the_running_pods_limit() {
        let (h, n) = watched();
        let p = pod("w1", "/kp/w1", &[(annotations::K8S_INGRESS, "10M")]);
        h.run_pod_sandbox(&p).unwrap();
        assert_eq!(reasons(&n), [notices::LIMITED]);
        // The API view carries other annotations too; only ours count.
        let mut now = api(&[(annotations::K8S_INGRESS, "20M"), ("other", "x")]);
        h.annotations_changed("w1", &now);
        assert_eq!(limits(&h), vec![("/kp/w1".into(), Some(20_000_000), None)]);
        assert_eq!(reasons(&n), [notices::CHANGED]);
        // The same view again (a resync) changes and announces nothing.
        h.annotations_changed("w1", &now);
        assert!(reasons(&n).is_empty());
        // A malformed value keeps the current limit, with one Warning per value.
        now.insert(annotations::K8S_INGRESS.into(), "20 Mbps".into());
        h.annotations_changed("w1", &now);
        h.annotations_changed("w1", &now);
        assert_eq!(limits(&h), vec![("/kp/w1".into(), Some(20_000_000), None)]);
        let warned = n.0.lock().unwrap().clone();
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert_eq!(warned[0].severity, Severity::Warning);
        assert!(
            warned[0]
                .message
                .contains("kubernetes.io/ingress-bandwidth")
                && warned[0].message.contains("20 Mbps"),
            "{}",
            warned[0].message
        );
        reasons(&n);
        // Removed: unlimited.
        h.annotations_changed("w1", &api(&[("other", "x")]));
        assert!(limits(&h).is_empty());
        assert_eq!(reasons(&n), [notices::UNLIMITED]);
        // Added again on the running pod.
        h.annotations_changed("w1", &api(&[(annotations::K8S_EGRESS, "5M")]));
        assert_eq!(limits(&h), vec![("/kp/w1".into(), None, Some(5_000_000))]);
        assert_eq!(reasons(&n), [notices::LIMITED]);
    }

    #[test]
    fn container_keys_follow_the_api_and_other_pods_are_left_alone() {
        let (h, n) = watched();
        let p = pod("w2", "/kp/w2", &[]);
        h.run_pod_sandbox(&p).unwrap();
        let c = container(&p, "web");
        h.start_container(&p, &c).unwrap();
        assert!(limits(&h).is_empty());
        h.annotations_changed(
            "w2",
            &api(&[("egress-bandwidth.nri-bandwidth.io/web", "3M")]),
        );
        assert_eq!(
            limits(&h),
            vec![("/kp/w2/w2-web".into(), None, Some(3_000_000))]
        );
        assert_eq!(reasons(&n), [notices::LIMITED]);
        // A pod the runtime never announced: nothing to limit yet.
        h.annotations_changed("stranger", &api(&[(annotations::K8S_INGRESS, "1M")]));
        assert_eq!(limits(&h).len(), 1);
        // Removed containers are forgotten: a later change does not touch them.
        h.remove_container(&p, &c);
        h.annotations_changed(
            "w2",
            &api(&[("egress-bandwidth.nri-bandwidth.io/web", "4M")]),
        );
        assert!(limits(&h).is_empty(), "{:?}", limits(&h));
    }

    #[test]
    fn the_apis_newer_view_wins_over_the_runtimes_copy_whichever_comes_first() {
        let (h, n) = watched();
        // The watch saw the change before the runtime (re)announced the pod, as
        // after a daemon restart: Synchronize carries the creation-time value.
        h.annotations_changed("w3", &api(&[(annotations::K8S_INGRESS, "30M")]));
        let p = pod("w3", "/kp/w3", &[(annotations::K8S_INGRESS, "10M")]);
        h.synchronize(std::slice::from_ref(&p), &[]);
        assert_eq!(limits(&h), vec![("/kp/w3".into(), Some(30_000_000), None)]);
        // A second Synchronize (reconnect) announces nothing new.
        reasons(&n);
        h.synchronize(std::slice::from_ref(&p), &[]);
        assert!(reasons(&n).is_empty());
        // Deleted in the API and removed by the runtime: nothing remembered.
        h.pod_deleted("w3");
        h.remove_pod_sandbox(&p);
        assert!(h.reg.lock().unwrap().is_empty());
    }

    #[test]
    fn bad_values_at_creation_are_a_warning_once() {
        let (h, n) = watched();
        let p = pod("w4", "/kp/w4", &[(annotations::K8S_EGRESS, "fast")]);
        h.run_pod_sandbox(&p).unwrap();
        h.synchronize(std::slice::from_ref(&p), &[]);
        let got = n.0.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (
                got[0].reason,
                got[0].namespace.as_str(),
                got[0].pod.as_str()
            ),
            (notices::INVALID, "default", "w4")
        );
        assert!(
            got[0].message.contains("runs without this limit"),
            "{}",
            got[0].message
        );
    }
}
