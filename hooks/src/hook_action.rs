//! What the hook does at each stage, decided from the OCI state alone and then
//! carried out on the core's [`Store`] (the pinned limiter in the binary, the fake
//! store in tests).
//!
//! * create stages (`createRuntime`, `createContainer`, `prestart`): the limit the
//!   container's annotations ask for goes on the container's own cgroup v2
//!   directory, recorded as set by the hook with the container id as owner;
//! * `poststop`: every hook limit owned by that container id is removed. The
//!   runtime has usually removed the cgroup by then, so the limit is found by
//!   owner, not by path.
//!
//! The keys, their precedence and the strict / fail-open policy are the core's
//! ([`annotations::merged`], [`Policy`]): a hook sees one container, so pod-level
//! keys limit that container's cgroup, and when the runtime names the container
//! (CRI-O's `io.kubernetes.container.name`, containerd's
//! `io.kubernetes.cri.container-name`) its container-scoped keys apply too.

use std::collections::HashMap;

use nri_bandwidth_core::annotations;
use nri_bandwidth_core::cgroup::{Cgroup, CgroupFs};
use nri_bandwidth_core::model::{Limit, Owner, Source};
use nri_bandwidth_core::policy::{Policy, Verdict};
use nri_bandwidth_core::store::Store;

use crate::crio_pod;
use crate::oci_state::State;

/// Annotations runtimes use to name the container and its pod.
const CONTAINER_NAME_KEYS: [&str; 2] = [
    "io.kubernetes.container.name",
    "io.kubernetes.cri.container-name",
];
const POD_NAME_KEYS: [&str; 2] = ["io.kubernetes.pod.name", "io.kubernetes.cri.sandbox-name"];
const POD_NAMESPACE_KEYS: [&str; 2] = [
    "io.kubernetes.pod.namespace",
    "io.kubernetes.cri.sandbox-namespace",
];
const POD_UID_KEYS: [&str; 2] = ["io.kubernetes.pod.uid", "io.kubernetes.cri.sandbox-uid"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Create,
    Stop,
}

impl Stage {
    /// A hooks.d stage name.
    pub fn from_name(name: &str) -> Result<Stage, HookError> {
        match name {
            "createRuntime" | "createContainer" | "prestart" | "startContainer" => {
                Ok(Stage::Create)
            }
            "poststop" => Ok(Stage::Stop),
            _ => Err(HookError::Usage(format!(
                "unknown stage {name:?}: expected createRuntime, createContainer, prestart, startContainer or poststop"
            ))),
        }
    }

    /// The stage implied by the state's `status` (one hooks.d file serves several
    /// stages with the same arguments, so the hook tells them apart this way).
    pub fn from_status(status: &str) -> Result<Stage, HookError> {
        match status {
            "creating" | "created" | "running" => Ok(Stage::Create),
            "stopped" => Ok(Stage::Stop),
            _ => Err(HookError::Usage(format!(
                "unknown container status {status:?} in the OCI state: expected creating, created, running or stopped"
            ))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{0}")]
    Usage(String),
    /// Strict mode refused the container; the message names key, value and expectation.
    #[error("{0}")]
    Refused(String),
    #[error("container {id}: {detail}")]
    Cgroup { id: String, detail: String },
    #[error("container {id}: {detail}")]
    Limiter { id: String, detail: String },
}

impl HookError {
    /// The limiter failed for container `id`.
    pub fn limiter(id: &str, detail: impl std::fmt::Display) -> Self {
        HookError::Limiter {
            id: id.into(),
            detail: detail.to_string(),
        }
    }
}

/// What a create stage should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Limit {
        limit: Limit,
        owner: Owner,
    },
    /// Nothing asked, or asked badly and failing open (`warning` says why).
    Nothing {
        warning: Option<String>,
    },
}

fn first<'a>(ann: &'a HashMap<String, String>, keys: &[&str]) -> &'a str {
    keys.iter()
        .find_map(|k| ann.get(*k))
        .map(String::as_str)
        .unwrap_or("")
}

/// The pod a container belongs to, as the runtime's annotations name it.
pub struct PodNames<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub uid: &'a str,
}

pub fn first_of(ann: &HashMap<String, String>) -> PodNames<'_> {
    PodNames {
        namespace: first(ann, &POD_NAMESPACE_KEYS),
        pod: first(ann, &POD_NAME_KEYS),
        uid: first(ann, &POD_UID_KEYS),
    }
}

/// How the hook names the container in messages.
pub fn describe(state: &State) -> String {
    format!("container {}", state.id)
}

/// Decides a create stage under `policy`.
/// Under CRI-O the pod's own keys are left out: they go on the pod's cgroup
/// ([`plan_crio_pod`]).
pub fn plan_create(state: &State, policy: Policy) -> Result<Plan, HookError> {
    let split = crio_pod::split(&state.annotations)?;
    let ann = split.as_ref().map_or(&state.annotations, |s| &s.container);
    let req = annotations::merged(ann, first(ann, &CONTAINER_NAME_KEYS));
    match policy.on_bad_values(&describe(state), &req.bad) {
        Verdict::Proceed => {}
        Verdict::RunUnlimited(w) => return Ok(Plan::Nothing { warning: Some(w) }),
        Verdict::Refuse(msg) => return Err(HookError::Refused(msg)),
    }
    let Some(limit) = req.limit else {
        return Ok(Plan::Nothing { warning: None });
    };
    let owner = Owner {
        source: Source::Hook,
        pod_namespace: first(ann, &POD_NAMESPACE_KEYS).into(),
        pod_name: first(ann, &POD_NAME_KEYS).into(),
        pod_uid: first(ann, &POD_UID_KEYS).into(),
        container: first(ann, &CONTAINER_NAME_KEYS).into(),
        container_id: state.id.clone(),
    };
    Ok(Plan::Limit { limit, owner })
}

/// The pod's limit under CRI-O, from the pod-level keys the container inherited
/// ([`crio_pod`]); nothing under other runtimes.
pub fn plan_crio_pod(state: &State, policy: Policy) -> Result<Plan, HookError> {
    match crio_pod::split(&state.annotations)? {
        Some(split) => crio_pod::plan_pod(&state.annotations, &split, &state.id, policy),
        None => Ok(Plan::Nothing { warning: None }),
    }
}

/// The pod's cgroup: the parent of the container's (CRI-O's `crio-<id>` or
/// `crio-<id>.scope` sits directly in its pod's), held to the same landing
/// rules as any limit.
pub fn pod_cgroup(cgfs: &CgroupFs, container: &Cgroup, id: &str) -> Result<Cgroup, HookError> {
    let err = |detail: String| HookError::Cgroup {
        id: id.into(),
        detail,
    };
    let parent = container
        .dir
        .parent()
        .ok_or_else(|| err(format!("{} has no parent cgroup", container.rel)))?;
    let cg = cgfs
        .cgroup(parent.to_path_buf())
        .map_err(|e| err(e.to_string()))?;
    cgfs.check_landing(&cg)
        .map_err(|e| err(format!("its pod's cgroup: {e}")))?;
    Ok(cg)
}

/// The container's cgroup v2 directory: from its init process while it runs
/// (what the runtime actually created), else from the bundle's `cgroupsPath`.
/// Resolved once; the result goes to the store as it is.
pub fn container_cgroup(cgfs: &CgroupFs, state: &State) -> Result<Cgroup, HookError> {
    let err = |detail: String| HookError::Cgroup {
        id: state.id.clone(),
        detail,
    };
    let cg = match state.live_pid() {
        Some(pid) => {
            let dir = cgfs.of_pid(pid).map_err(|e| err(e.to_string()))?;
            let cg = cgfs.cgroup(dir).map_err(|e| err(e.to_string()))?;
            // /proc/<pid>/cgroup is relative to the reader's cgroup namespace; only
            // a cgroup that lists the pid itself is really the container's.
            if !cgfs.holds_pid(&cg, pid) {
                return Err(err(format!(
                    "pid {pid} is not in {} (is the hook running in a cgroup namespace?); refusing to guess its cgroup",
                    cg.rel
                )));
            }
            cgfs.check_landing(&cg).map_err(|e| err(e.to_string()))?;
            cg
        }
        None => {
            let spec = state
                .cgroups_path()
                .map_err(|e| err(e.to_string()))?
                .ok_or_else(|| {
                    err(format!(
                        "the state has no pid and {} has no linux.cgroupsPath: expected one of them to find the cgroup",
                        state.bundle.join("config.json").display()
                    ))
                })?;
            cgfs.workload(&spec).map_err(|e| err(e.to_string()))?
        }
    };
    Ok(cg)
}

/// Sets the planned limit on `cgroup`.
pub fn apply<S: Store + ?Sized>(
    store: &S,
    id: &str,
    cgroup: &Cgroup,
    limit: &Limit,
    owner: &Owner,
) -> Result<(), HookError> {
    store
        .apply(cgroup, limit, owner)
        .map_err(|e| HookError::limiter(id, e))
}

/// Removes every limit the hook set for container `id`; returns how many.
/// Limits set by the daemon or by hand on the same cgroup are not the hook's to
/// remove.
pub fn remove<S: Store + ?Sized>(store: &S, id: &str) -> Result<usize, HookError> {
    let mine = |o: &Owner| o.source == Source::Hook && o.container_id == id;
    let removed = store
        .remove_where(&mine)
        .map_err(|e| HookError::limiter(id, e))?;
    let n = removed.len();
    for r in removed {
        r.result.map_err(|e| HookError::limiter(id, e))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    use nri_bandwidth_core::store::fake::FakeStore;

    fn state(status: &str, ann: &[(&str, &str)]) -> State {
        State {
            oci_version: "1.0.2".into(),
            id: "c1".into(),
            status: status.into(),
            pid: Some(42),
            bundle: "/nonexistent".into(),
            annotations: ann
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// (ingress bit/s, egress bit/s, burst bytes)
    type Want = (Option<u64>, Option<u64>, Option<u64>);
    type Case<'a> = (&'a [(&'a str, &'a str)], Want);

    fn bps(l: &Limit) -> Want {
        (
            l.ingress.map(|r| r.bits_per_sec()),
            l.egress.map(|r| r.bits_per_sec()),
            l.burst.map(|b| b.bytes()),
        )
    }

    #[test]
    fn stages_and_statuses() {
        for s in [
            "createRuntime",
            "createContainer",
            "prestart",
            "startContainer",
        ] {
            assert_eq!(Stage::from_name(s).unwrap(), Stage::Create);
        }
        assert_eq!(Stage::from_name("poststop").unwrap(), Stage::Stop);
        assert!(
            Stage::from_name("poststart")
                .unwrap_err()
                .to_string()
                .contains("expected")
        );
        assert_eq!(Stage::from_status("creating").unwrap(), Stage::Create);
        assert_eq!(Stage::from_status("created").unwrap(), Stage::Create);
        assert_eq!(Stage::from_status("stopped").unwrap(), Stage::Stop);
        assert!(
            Stage::from_status("paused")
                .unwrap_err()
                .to_string()
                .contains("paused")
        );
    }

    #[test]
    fn daemon_keys_and_precedence() {
        let cases: &[Case] = &[
            (
                &[("kubernetes.io/ingress-bandwidth", "10M")],
                (Some(10_000_000), None, None),
            ),
            (
                &[
                    ("kubernetes.io/egress-bandwidth", "10M"),
                    ("nri-bandwidth.io/egress-bandwidth", "3M"),
                    ("nri-bandwidth.io/burst", "1Mi"),
                ],
                (None, Some(3_000_000), Some(1 << 20)),
            ),
            // A named container: its own key is tighter on ingress, the pod's
            // egress still applies, its burst wins.
            (
                &[
                    ("io.kubernetes.container.name", "web"),
                    ("kubernetes.io/ingress-bandwidth", "20M"),
                    ("kubernetes.io/egress-bandwidth", "8M"),
                    ("ingress-bandwidth.nri-bandwidth.io/web", "5M"),
                    ("burst.nri-bandwidth.io/web", "256Ki"),
                    ("nri-bandwidth.io/burst", "1Mi"),
                ],
                (Some(5_000_000), Some(8_000_000), Some(256 << 10)),
            ),
            // The pod's rate is tighter than the container's.
            (
                &[
                    ("io.kubernetes.cri.container-name", "web"),
                    ("kubernetes.io/ingress-bandwidth", "2M"),
                    ("ingress-bandwidth.nri-bandwidth.io/web", "5M"),
                ],
                (Some(2_000_000), None, None),
            ),
            // Keys of another container do not apply.
            (
                &[
                    ("io.kubernetes.container.name", "web"),
                    ("ingress-bandwidth.nri-bandwidth.io/db", "5M"),
                    ("kubernetes.io/egress-bandwidth", "1M"),
                ],
                (None, Some(1_000_000), None),
            ),
        ];
        for (ann, want) in cases {
            match plan_create(&state("creating", ann), Policy::default()).unwrap() {
                Plan::Limit { limit, owner } => {
                    assert_eq!(bps(&limit), *want, "{ann:?}");
                    assert_eq!(owner.source, Source::Hook);
                    assert_eq!(owner.container_id, "c1");
                }
                other => panic!("{ann:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn nothing_asked_is_nothing_done() {
        let p = plan_create(
            &state("creating", &[("nri-bandwidth.io/burst", "1Mi")]),
            Policy { strict: true },
        );
        assert_eq!(p.unwrap(), Plan::Nothing { warning: None });
    }

    #[test]
    fn malformed_fails_open_unless_strict() {
        let s = state(
            "creating",
            &[
                ("kubernetes.io/ingress-bandwidth", "10 furlongs"),
                ("kubernetes.io/egress-bandwidth", "10M"),
            ],
        );
        match plan_create(&s, Policy::default()).unwrap() {
            Plan::Nothing { warning: Some(w) } => {
                assert!(
                    w.contains("container c1 runs without a bandwidth limit")
                        && w.contains("kubernetes.io/ingress-bandwidth")
                        && !w.contains("egress"),
                    "{w}"
                );
            }
            other => panic!("{other:?}"),
        }
        let msg = plan_create(&s, Policy { strict: true })
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("kubernetes.io/ingress-bandwidth") && msg.contains("10 furlongs"),
            "{msg}"
        );
    }

    #[test]
    fn poststop_removes_only_this_containers_hook_limits() {
        let f = FakeStore::new();
        let hook = |id: &str| Owner {
            source: Source::Hook,
            container_id: id.into(),
            ..Owner::default()
        };
        f.insert("/a", Limit::default(), hook("c1"));
        f.insert("/b", Limit::default(), hook("c2"));
        let daemons = Owner {
            source: Source::Annotation,
            container_id: "c1".into(),
            ..Owner::default()
        };
        f.insert("/c", Limit::default(), daemons);
        f.insert("/d", Limit::default(), Owner::default());
        assert_eq!(remove(&f, "c1").unwrap(), 1);
        let left: Vec<String> = f.limits().into_iter().map(|l| l.0).collect();
        assert_eq!(left, ["/b", "/c", "/d"]);
        assert_eq!(remove(&f, "gone").unwrap(), 0);
    }

    #[test]
    fn apply_errors_name_the_container() {
        let f = FakeStore::new();
        let l = Limit::default();
        let cg = f.resolve("/ok").unwrap();
        f.fail_with(Some("kernel said no"));
        let msg = apply(&f, "c9", &cg, &l, &Owner::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("c9") && msg.contains("kernel said no"),
            "{msg}"
        );
        f.fail_with(None);
        apply(&f, "c9", &cg, &l, &Owner::default()).unwrap();
        assert_eq!(f.limits().len(), 1);
    }

    #[test]
    fn cgroup_from_bundle_when_no_pid() {
        let cgfs = CgroupFs::new_unchecked("/nonexistent-cgroup-root");
        let mut s = state("creating", &[]);
        s.pid = None;
        let msg = container_cgroup(&cgfs, &s).unwrap_err().to_string();
        assert!(msg.contains("c1") && msg.contains("config.json"), "{msg}");
    }
}
