//! What the hook does at each stage, decided from the OCI state alone and then
//! carried out on a [`Backend`] (the pinned limiter in the binary, a fake in tests).
//!
//! * create stages (`createRuntime`, `createContainer`, `prestart`): the limit the
//!   container's annotations ask for goes on the container's own cgroup v2
//!   directory, recorded as set by the hook with the container id as owner;
//! * `poststop`: every hook limit owned by that container id is removed. The
//!   runtime has usually removed the cgroup by then, so the limit is found by
//!   owner, not by path.
//!
//! The keys and their precedence are the daemon's ([`nri_bandwidth::annotations`]).
//! A hook sees one container, so pod-level keys limit that container's cgroup; when
//! the runtime names the container (CRI-O's `io.kubernetes.container.name`,
//! containerd's `io.kubernetes.cri.container-name`) its container-scoped keys
//! apply too and the tighter rate of the two wins per direction.

use std::collections::HashMap;
use std::path::Path;

use nri_bandwidth::annotations::{self, BadAnnotation, Requested};
use nri_bandwidth::cgroup::CgroupFs;
use nri_bandwidth::limiter::{Limit, Owner, Source};
use nri_bandwidth::nri::handler::Backend;

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
    #[error("{}", join(.0))]
    BadAnnotations(Vec<BadAnnotation>),
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

fn join(bad: &[BadAnnotation]) -> String {
    bad.iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a create stage should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Limit {
        limit: Limit,
        owner: Owner,
    },
    /// Nothing asked (or asked badly and failing open): the reasons, if any.
    Nothing {
        bad: Vec<BadAnnotation>,
    },
}

fn first<'a>(ann: &'a HashMap<String, String>, keys: &[&str]) -> &'a str {
    keys.iter()
        .find_map(|k| ann.get(*k))
        .map(String::as_str)
        .unwrap_or("")
}

/// The limit the container's annotations ask for, pod-level and container-scoped
/// keys combined (tighter rate per direction; the container's burst wins).
pub fn requested(ann: &HashMap<String, String>) -> Requested {
    let pod = annotations::pod(ann);
    let name = first(ann, &CONTAINER_NAME_KEYS);
    let own = annotations::container(ann, name);
    let mut bad = pod.bad;
    bad.extend(own.bad);
    if !bad.is_empty() {
        return Requested { limit: None, bad };
    }
    let limit = match (pod.limit, own.limit) {
        (None, None) => None,
        (Some(l), None) | (None, Some(l)) => Some(l),
        (Some(p), Some(c)) => {
            let tighter = |a: Option<_>, b: Option<_>| match (a, b) {
                (Some(a), Some(b)) => Some(std::cmp::min_by_key(
                    a,
                    b,
                    |r: &nri_bandwidth::rate::Rate| r.bits_per_sec(),
                )),
                (a, b) => a.or(b),
            };
            Some(Limit {
                ingress: tighter(p.ingress, c.ingress),
                egress: tighter(p.egress, c.egress),
                burst: c.burst.or(p.burst),
                flags: 0,
            })
        }
    };
    Requested { limit, bad }
}

/// Decides a create stage. Malformed values fail the container only when `strict`.
pub fn plan_create(state: &State, strict: bool) -> Result<Plan, HookError> {
    let req = requested(&state.annotations);
    if !req.bad.is_empty() {
        if strict {
            return Err(HookError::BadAnnotations(req.bad));
        }
        return Ok(Plan::Nothing { bad: req.bad });
    }
    let Some(limit) = req.limit else {
        return Ok(Plan::Nothing { bad: Vec::new() });
    };
    let ann = &state.annotations;
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

/// The container's cgroup v2 directory: from its init process while it runs
/// (what the runtime actually created), else from the bundle's `cgroupsPath`.
pub fn container_cgroup(cgfs: &CgroupFs, state: &State) -> Result<String, HookError> {
    let err = |detail: String| HookError::Cgroup {
        id: state.id.clone(),
        detail,
    };
    let dir = match state.live_pid() {
        Some(pid) => cgfs.of_pid(pid).map_err(|e| err(e.to_string()))?,
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
            cgfs.resolve(&spec).map_err(|e| err(e.to_string()))?
        }
    };
    Ok(dir_string(&dir))
}

fn dir_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Sets the planned limit on `cgroup`; returns the cgroup id.
pub fn apply<B: Backend + ?Sized>(
    backend: &B,
    id: &str,
    cgroup: &str,
    limit: &Limit,
    owner: &Owner,
) -> Result<u64, HookError> {
    backend
        .apply(cgroup, limit, owner)
        .map_err(|detail| HookError::limiter(id, detail))
}

/// Removes every limit the hook set for container `id`; returns how many.
/// Limits set by the daemon or by hand on the same cgroup are not the hook's to
/// remove.
pub fn remove<B: Backend + ?Sized>(backend: &B, id: &str) -> Result<usize, HookError> {
    let err = |detail: String| HookError::limiter(id, detail);
    let mine: Vec<u64> = backend
        .owners()
        .map_err(err)?
        .into_iter()
        .filter(|(_, o)| o.source == Source::Hook && o.container_id == id)
        .map(|(cgid, _)| cgid)
        .collect();
    for cgid in &mine {
        backend.remove(*cgid).map_err(err)?;
    }
    Ok(mine.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use nri_bandwidth::limiter::Entry;

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
            match plan_create(&state("creating", ann), false).unwrap() {
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
            true,
        );
        assert_eq!(p.unwrap(), Plan::Nothing { bad: vec![] });
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
        match plan_create(&s, false).unwrap() {
            Plan::Nothing { bad } => {
                assert_eq!(bad.len(), 1);
                assert_eq!(bad[0].key, "kubernetes.io/ingress-bandwidth");
            }
            other => panic!("{other:?}"),
        }
        let msg = plan_create(&s, true).unwrap_err().to_string();
        assert!(
            msg.contains("kubernetes.io/ingress-bandwidth") && msg.contains("10 furlongs"),
            "{msg}"
        );
    }

    /// Records what the hook asked of the limiter.
    #[derive(Default)]
    struct Fake {
        owners: Mutex<Vec<(u64, Owner)>>,
        removed: Mutex<Vec<u64>>,
    }

    impl Backend for Fake {
        fn apply(&self, cgroup: &str, _: &Limit, owner: &Owner) -> Result<u64, String> {
            if cgroup == "/missing" {
                return Err("cgroup /missing does not exist".into());
            }
            let mut o = self.owners.lock().unwrap();
            let id = o.len() as u64 + 100;
            o.push((id, owner.clone()));
            Ok(id)
        }
        fn remove(&self, cgid: u64) -> Result<(), String> {
            self.removed.lock().unwrap().push(cgid);
            Ok(())
        }
        fn entries(&self) -> Result<Vec<Entry>, String> {
            unreachable!("the hook reads owners only")
        }
        fn owners(&self) -> Result<Vec<(u64, Owner)>, String> {
            Ok(self.owners.lock().unwrap().clone())
        }
        fn exists(&self, _: &str) -> bool {
            true
        }
    }

    #[test]
    fn poststop_removes_only_this_containers_hook_limits() {
        let f = Fake::default();
        let hook = |id: &str| Owner {
            source: Source::Hook,
            container_id: id.into(),
            ..Owner::default()
        };
        f.owners.lock().unwrap().extend([
            (1, hook("c1")),
            (2, hook("c2")),
            (
                3,
                Owner {
                    source: Source::Annotation,
                    container_id: "c1".into(),
                    ..Owner::default()
                },
            ),
            (4, Owner::default()),
        ]);
        assert_eq!(remove(&f, "c1").unwrap(), 1);
        assert_eq!(*f.removed.lock().unwrap(), vec![1]);
        assert_eq!(remove(&f, "gone").unwrap(), 0);
    }

    #[test]
    fn apply_errors_name_the_container() {
        let f = Fake::default();
        let l = Limit::default();
        let msg = apply(&f, "c9", "/missing", &l, &Owner::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("c9") && msg.contains("/missing"), "{msg}");
        assert_eq!(apply(&f, "c9", "/ok", &l, &Owner::default()).unwrap(), 100);
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
