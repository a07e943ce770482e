//! Where a limit may land. A limit throttles every socket of a cgroup and of all
//! cgroups below it, so a limit on the wrong directory throttles the node: these
//! rules are checked by every front end before anything is attached.
//!
//! - never the cgroup v2 root;
//! - never `system.slice`, `init.scope` or an ancestor of them (the node's own
//!   services), nor an ancestor of (or the very) cgroup of the process asking (the
//!   daemon, or the runtime that runs the hook);
//! - a spec that comes from a runtime (NRI, OCI state) must be a plain path: no
//!   `.` or `..` components and no empty ones (`//x`), since a runtime has no
//!   reason to send them and they are how one pod names another pod's cgroup;
//! - a container's cgroup must lie strictly below its pod's.

use std::path::{Component, Path};

use super::{Cgroup, CgroupError, CgroupFs, unified_path_from_proc_cgroup};

/// Cgroups of the node's own services, relative to the mount.
const NODE_SERVICES: [&str; 2] = ["system.slice", "init.scope"];

fn refused(cg: &Cgroup, reason: impl Into<String>) -> CgroupError {
    CgroupError::Refused {
        spec: cg.rel.clone(),
        reason: reason.into(),
    }
}

/// Rejects `.`, `..` and empty components in a runtime's cgroup spec. A systemd
/// `slice:prefix:name` spec is checked part by part.
pub fn check_runtime_spec(spec: &str) -> Result<(), CgroupError> {
    let bad = |why: &str| CgroupError::InvalidSpec {
        spec: spec.to_owned(),
        reason: format!("{why}: a runtime's cgroup path is a plain path below the mount"),
    };
    if spec.is_empty() {
        return Err(bad("empty"));
    }
    if spec.contains('\0') || spec.chars().any(char::is_control) {
        return Err(bad("control characters"));
    }
    let body = spec.strip_prefix('/').unwrap_or(spec);
    for part in body.split([':', '/']) {
        match part {
            "" if spec.contains(':') => {} // `:prefix:name` with the default slice
            "" => return Err(bad("empty path component")),
            "." | ".." => return Err(bad("`.` or `..` component")),
            _ => {}
        }
    }
    if Path::new(spec)
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(bad("`.` or `..` component"));
    }
    Ok(())
}

impl CgroupFs {
    /// Whether a limit may land on `cg` (see the module header).
    pub fn check_landing(&self, cg: &Cgroup) -> Result<(), CgroupError> {
        let root = self.root();
        if cg.dir == root || cg.rel == "/" {
            return Err(refused(
                cg,
                "it is the cgroup v2 root: a limit there would throttle the whole node",
            ));
        }
        for svc in NODE_SERVICES {
            let p = root.join(svc);
            if p.starts_with(&cg.dir) {
                return Err(refused(
                    cg,
                    format!("it holds the node's own services (/{svc})"),
                ));
            }
        }
        if let Some(own) = self.own_cgroup()
            && own.starts_with(&cg.dir)
        {
            return Err(refused(
                cg,
                format!(
                    "it holds the process setting the limit ({}): the runtime or the daemon itself",
                    own.display()
                ),
            ));
        }
        Ok(())
    }

    /// A cgroup a runtime names for a workload: a plain spec, resolved once, where a
    /// limit may land.
    pub fn workload(&self, spec: &str) -> Result<Cgroup, CgroupError> {
        check_runtime_spec(spec)?;
        let cg = self.lookup(spec)?;
        self.check_landing(&cg)?;
        Ok(cg)
    }

    /// Whether `pid` is a member of `cg` itself (listed in its `cgroup.procs`).
    pub fn holds_pid(&self, cg: &Cgroup, pid: u32) -> bool {
        let want = pid.to_string();
        std::fs::read_to_string(cg.dir.join("cgroup.procs"))
            .is_ok_and(|t| t.lines().any(|l| l.trim() == want))
    }

    /// The directory of this process's own cgroup, when it is on this mount.
    fn own_cgroup(&self) -> Option<std::path::PathBuf> {
        let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let rel = unified_path_from_proc_cgroup(&text).ok()?;
        let rel = rel.trim_start_matches('/');
        let dir = self.root().join(rel);
        std::fs::canonicalize(&dir).ok()
    }
}

impl Cgroup {
    /// True when this cgroup lies strictly below `other`.
    pub fn is_below(&self, other: &Cgroup) -> bool {
        self.dir != other.dir && self.dir.starts_with(&other.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_specs_are_plain_paths() {
        for ok in [
            "/kubepods/burstable/podu1",
            "kubepods/podu1/ctr",
            "kubepods-burstable-podu1.slice",
            "kubepods-burstable-podu1.slice:cri-containerd:abc",
            ":cri-containerd:abc",
        ] {
            check_runtime_spec(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            ".",
            "/kubepods/..",
            "kubepods/..",
            "/kubepods/podu1/../podS",
            "/kubepods/podw/ctr1/../../podS",
            "//sandbox",
            "/kubepods//x",
            "-.slice:..:abc",
            "/kubepods/x\n/y",
        ] {
            let e = check_runtime_spec(bad).unwrap_err().to_string();
            assert!(e.contains("plain path"), "{bad:?}: {e}");
        }
    }
}
