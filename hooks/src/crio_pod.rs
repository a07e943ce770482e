//! Pod-level keys under CRI-O. CRI-O copies every annotation of the pod into
//! each container's OCI annotations (so that hooks can match on them) and keeps
//! the container's own CRI annotations, as JSON, under
//! `io.kubernetes.cri-o.Annotations`. A pod-level key the container did not
//! carry itself is therefore the pod's: its limit belongs on the pod's cgroup,
//! once for all the pod's containers. Set on each container it would give every
//! container the whole budget. Container-scoped keys still limit the container.
//!
//! CRI-O runs no hooks for the pod sandbox itself, so the pod limit is set by
//! each container's create stage (the same limit, owned by the sandbox id) and
//! removed at the `poststop` of the last of its containers.

use std::collections::HashMap;
use std::path::Path;

use nri_bandwidth_core::annotations::{self, ALL_POD_KEYS};
use nri_bandwidth_core::model::{Owner, Source};
use nri_bandwidth_core::policy::{Policy, Verdict};

use crate::hook_action::{HookError, Plan, first_of};

pub const OWN_ANNOTATIONS: &str = "io.kubernetes.cri-o.Annotations";
pub const SANDBOX_ID: &str = "io.kubernetes.cri-o.SandboxID";
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";

/// A CRI-O container's annotations, split by where the bandwidth keys came from.
#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    /// What limits the container: everything but the pod's own pod-level keys.
    pub container: HashMap<String, String>,
    /// The pod-level keys the container inherited from its pod.
    pub pod: HashMap<String, String>,
    pub sandbox_id: String,
}

/// `None` when the annotations are not those of a CRI-O container (another
/// runtime, or nothing to tell the pod's keys from the container's).
pub fn split(ann: &HashMap<String, String>) -> Result<Option<Split>, HookError> {
    if ann.get(CONTAINER_TYPE).map(String::as_str) != Some("container") {
        return Ok(None);
    }
    let (Some(own), Some(sandbox_id)) = (ann.get(OWN_ANNOTATIONS), ann.get(SANDBOX_ID)) else {
        return Ok(None);
    };
    if !valid_id(sandbox_id) {
        return Err(HookError::Usage(format!(
            "annotation {SANDBOX_ID}={sandbox_id:?}: expected a CRI-O sandbox id (64 hex digits)"
        )));
    }
    let own: HashMap<String, String> = serde_json::from_str::<Option<_>>(own)
        .map_err(|e| {
            HookError::Usage(format!(
                "annotation {OWN_ANNOTATIONS}: {e}: expected the container's own annotations as a JSON object of strings"
            ))
        })?
        .unwrap_or_default();
    let mut container = ann.clone();
    let mut pod = HashMap::new();
    for k in ALL_POD_KEYS {
        if !own.contains_key(k)
            && let Some(v) = container.remove(k)
        {
            pod.insert(k.to_string(), v);
        }
    }
    Ok(Some(Split {
        container,
        pod,
        sandbox_id: sandbox_id.clone(),
    }))
}

fn valid_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The pod's limit from the keys it passed down, owned by the sandbox.
pub fn plan_pod(
    ann: &HashMap<String, String>,
    split: &Split,
    id: &str,
    policy: Policy,
) -> Result<Plan, HookError> {
    let req = annotations::pod(&split.pod);
    let what = format!("pod sandbox {} (container {id})", split.sandbox_id);
    match policy.on_bad_values(&what, &req.bad) {
        Verdict::Proceed => {}
        Verdict::RunUnlimited(w) => return Ok(Plan::Nothing { warning: Some(w) }),
        Verdict::Refuse(msg) => return Err(HookError::Refused(msg)),
    }
    let Some(limit) = req.limit else {
        return Ok(Plan::Nothing { warning: None });
    };
    let names = first_of(ann);
    let owner = Owner {
        source: Source::Hook,
        pod_namespace: names.namespace.into(),
        pod_name: names.pod.into(),
        pod_uid: names.uid.into(),
        container: String::new(),
        container_id: split.sandbox_id.clone(),
    };
    Ok(Plan::Limit { limit, owner })
}

/// Whether a container of the pod other than `stopping` (and the sandbox's own
/// infra container) still has processes in the pod cgroup `pod_dir`: the pod
/// limit stays while one does. Children are CRI-O's `crio-<id>` (cgroupfs) or
/// `crio-<id>.scope` (systemd); conmon's `crio-conmon-<id>` are not containers.
pub fn others_running(pod_dir: &Path, stopping: &str, sandbox_id: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(pod_dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_prefix("crio-")
            .map(|s| s.trim_end_matches(".scope"))
        else {
            return false;
        };
        if !valid_id(id) || id == stopping || id == sandbox_id {
            return false;
        }
        std::fs::read_to_string(e.path().join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SB: &str = "b2c3e2f521b2bfbd7151444f4dab7990c73af06bba30541f3a70887373524b9e";
    const C2: &str = "4e2a80c015c17393e449bcd6a3aaf3da47b220e49ef10cae995194407c39db1e";

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pod_keys_the_container_did_not_carry_are_the_pods() {
        // As CRI-O 1.34 wrote them (e2e_crio): the pod's key copied in, the
        // container's own CRI annotations "null".
        let a = ann(&[
            (CONTAINER_TYPE, "container"),
            (SANDBOX_ID, SB),
            (OWN_ANNOTATIONS, "null"),
            ("kubernetes.io/egress-bandwidth", "10M"),
            ("egress-bandwidth.nri-bandwidth.io/app", "4M"),
            ("io.kubernetes.container.name", "app"),
        ]);
        let s = split(&a).unwrap().unwrap();
        assert_eq!(s.pod, ann(&[("kubernetes.io/egress-bandwidth", "10M")]));
        assert!(!s.container.contains_key("kubernetes.io/egress-bandwidth"));
        assert!(
            s.container
                .contains_key("egress-bandwidth.nri-bandwidth.io/app")
        );
        assert_eq!(s.sandbox_id, SB);
        match plan_pod(&a, &s, "c1", Policy::default()).unwrap() {
            Plan::Limit { limit, owner } => {
                assert_eq!(limit.egress.unwrap().bits_per_sec(), 10_000_000);
                assert_eq!(owner.container_id, SB);
                assert_eq!(owner.source, Source::Hook);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_key_on_the_container_itself_stays_the_containers() {
        let a = ann(&[
            (CONTAINER_TYPE, "container"),
            (SANDBOX_ID, SB),
            (
                OWN_ANNOTATIONS,
                r#"{"kubernetes.io/egress-bandwidth":"6M"}"#,
            ),
            ("kubernetes.io/egress-bandwidth", "6M"),
        ]);
        let s = split(&a).unwrap().unwrap();
        assert!(s.pod.is_empty());
        assert_eq!(s.container["kubernetes.io/egress-bandwidth"], "6M");
        assert_eq!(
            plan_pod(&a, &s, "c1", Policy::default()).unwrap(),
            Plan::Nothing { warning: None }
        );
    }

    #[test]
    fn other_runtimes_and_the_sandbox_are_not_split() {
        assert_eq!(
            split(&ann(&[("kubernetes.io/egress-bandwidth", "1M")])).unwrap(),
            None
        );
        let sandbox = ann(&[
            (CONTAINER_TYPE, "sandbox"),
            (SANDBOX_ID, SB),
            (OWN_ANNOTATIONS, "{}"),
        ]);
        assert_eq!(split(&sandbox).unwrap(), None);
    }

    #[test]
    fn hostile_values_are_refused_with_what_was_expected() {
        for (k, v, want) in [
            (SANDBOX_ID, "../../etc", "64 hex digits"),
            (OWN_ANNOTATIONS, "{\"a\":1}", "JSON object of strings"),
            (OWN_ANNOTATIONS, "{", "JSON object"),
        ] {
            let mut a = ann(&[
                (CONTAINER_TYPE, "container"),
                (SANDBOX_ID, SB),
                (OWN_ANNOTATIONS, "null"),
            ]);
            a.insert(k.to_string(), v.to_string());
            let msg = split(&a).unwrap_err().to_string();
            assert!(msg.contains(k) && msg.contains(want), "{msg}");
        }
    }

    #[test]
    fn a_malformed_pod_value_fails_open_unless_strict() {
        let a = ann(&[
            (CONTAINER_TYPE, "container"),
            (SANDBOX_ID, SB),
            (OWN_ANNOTATIONS, "null"),
            ("kubernetes.io/ingress-bandwidth", "fast"),
        ]);
        let s = split(&a).unwrap().unwrap();
        match plan_pod(&a, &s, "c1", Policy::default()).unwrap() {
            Plan::Nothing { warning: Some(w) } => {
                assert!(w.contains("fast") && w.contains(SB), "{w}")
            }
            other => panic!("{other:?}"),
        }
        assert!(plan_pod(&a, &s, "c1", Policy { strict: true }).is_err());
    }

    #[test]
    fn the_pod_limit_stays_while_another_container_runs() {
        let d = std::env::temp_dir().join(format!("nbw-crio-pod-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let mk = |name: &str, procs: &str| {
            std::fs::create_dir_all(d.join(name)).unwrap();
            std::fs::write(d.join(name).join("cgroup.procs"), procs).unwrap();
        };
        mk(&format!("crio-{C2}"), "");
        mk(&format!("crio-conmon-{C2}"), "77\n");
        mk(&format!("crio-{SB}"), "12\n");
        let stopping = "a".repeat(64);
        mk(&format!("crio-{stopping}"), "99\n");
        // Only conmon, the infra container and the stopping one have processes.
        assert!(!others_running(&d, &stopping, SB));
        mk(&format!("crio-{C2}.scope"), "5\n");
        assert!(others_running(&d, &stopping, SB));
        std::fs::remove_dir_all(&d).unwrap();
        assert!(!others_running(&d, &stopping, SB));
    }
}
