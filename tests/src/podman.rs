//! Harness for the podman end-to-end suite: Debian's podman with a private storage
//! root, run root and hooks directory, containers from a locally built root
//! filesystem (`--rootfs`, no registry), and the repository's own hooks.d JSON with
//! only the hook's path (and test-private settings) changed.
//!
//! The hook is reached through a two-line wrapper that records each invocation
//! before handing stdin to the real binary, so a test can tell whether the
//! `when` clause ran the hook at all. Drop removes every container, the storage,
//! the hook's journal socket and the pin root, also when a test fails.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::PinRoot;
use crate::e2e::{self, ok, peers, run, workspace};

/// Flags this machine needs (see the README): crun refuses the hybrid cgroup
/// layout, and the default rlimits fail without CAP_SYS_RESOURCE.
const RUN_FLAGS: [&str; 4] = [
    "--ulimit",
    "nofile=4096:4096",
    "--ulimit",
    "nproc=4096:4096",
];

pub struct Podman {
    pub dir: PathBuf,
    pub pins: PinRoot,
    pub journal: UnixDatagram,
    rootfs: PathBuf,
}

impl Podman {
    /// A private podman whose hooks directory holds the repository's hooks.d JSON,
    /// pointing at the built hook with `extra_args` appended.
    pub fn new(tag: &str, extra_args: &[&str]) -> Podman {
        let dir = std::env::temp_dir().join(format!("nri-bw-podman-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let hooks = dir.join("hooks.d");
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&hooks).unwrap();
        std::fs::create_dir_all(&rootfs).unwrap();
        let pins = PinRoot::new(&format!("podman-{tag}"));

        // The workload: the static bwload binary as the whole root filesystem.
        let (_, bwload) = e2e::images(&peers().join("images"));
        std::fs::copy(&bwload, rootfs.join("bwload")).unwrap();

        let journal_path = dir.join("journal.sock");
        let journal = UnixDatagram::bind(&journal_path).unwrap();
        journal
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        install_repo_hook(&dir, &hooks, &pins.0, extra_args, &journal_path);
        Podman {
            dir,
            pins,
            journal,
            rootfs,
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--hooks-dir")
            .arg(self.dir.join("hooks.d"))
            .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
        c
    }

    /// Starts a detached bwload server with these annotations.
    pub fn try_serve(&self, name: &str, annotations: &[(&str, &str)]) -> Output {
        let mut c = self.cmd();
        c.args(["run", "-d", "--name", name]).args(RUN_FLAGS);
        for (k, v) in annotations {
            c.arg("--annotation").arg(format!("{k}={v}"));
        }
        // `--rootfs DIR` takes the directory as the image argument: options first.
        c.arg("--rootfs")
            .arg(&self.rootfs)
            .args(["/bwload", "serve", "0.0.0.0:5201"]);
        run(&mut c)
    }

    /// Starts one and returns its full id.
    pub fn serve(&self, name: &str, annotations: &[(&str, &str)]) -> String {
        let out = self.try_serve(name, annotations);
        assert!(
            out.status.success(),
            "podman run {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn inspect(&self, name: &str, format: &str) -> String {
        ok(self.cmd().args(["inspect", "-f", format, name]))
    }

    pub fn ip(&self, name: &str) -> String {
        self.inspect(name, "{{.NetworkSettings.IPAddress}}")
    }

    pub fn remove(&self, name: &str) {
        ok(self.cmd().args(["rm", "-f", name]));
    }

    /// Argument lines of every hook invocation so far.
    pub fn hook_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("hook-calls"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    pub fn hook_stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("hook-stderr")).unwrap_or_default()
    }

    /// Journal messages the hook sent so far.
    pub fn journal_messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = self.journal.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    /// `bwctl` on this test's pin root.
    pub fn bwctl(&self, args: &[&str]) -> String {
        ok(Command::new(crate::workspace_bin("bwctl"))
            .arg("--pin-root")
            .arg(&self.pins.0)
            .args(args))
    }

    /// Every pinned link below the pin root (empty once all limits are gone).
    pub fn pinned_links(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        walk(&self.pins.0, &mut found);
        found
            .into_iter()
            .filter(|p| p.components().any(|c| c.as_os_str() == "links") && p.is_file())
            .collect()
    }
}

/// Writes the repository's hooks.d JSON into `hooks_dir` with only the hook's
/// path and test-private settings changed: the hook is reached through a wrapper
/// that records each call's arguments in `dir/hook-calls` and its stderr in
/// `dir/hook-stderr`, with `--pin-root pins`, `extra_args`, and its journal
/// socket at `journal`.
pub fn install_repo_hook(
    dir: &Path,
    hooks_dir: &Path,
    pins: &Path,
    extra_args: &[&str],
    journal: &Path,
) {
    let wrapper = dir.join("hook-wrapper.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> {calls}\nexec {hook} \"$@\" 2>> {stderr}\n",
            calls = dir.join("hook-calls").display(),
            hook = crate::workspace_bin("nri-bandwidth-hook").display(),
            stderr = dir.join("hook-stderr").display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("hooks/nri-bandwidth-hook.json")).unwrap(),
    )
    .unwrap();
    let hook = &mut spec["hook"];
    hook["path"] = wrapper.to_string_lossy().into();
    let args = hook["args"].as_array_mut().unwrap();
    args.push("--pin-root".into());
    args.push(pins.to_string_lossy().into());
    for a in extra_args {
        args.push((*a).into());
    }
    hook["env"] = serde_json::json!([format!(
        "NRI_BANDWIDTH_JOURNAL_SOCKET={}",
        journal.display()
    )]);
    std::fs::write(
        hooks_dir.join("nri-bandwidth-hook.json"),
        serde_json::to_string_pretty(&spec).unwrap(),
    )
    .unwrap();
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        }
        out.push(p);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = run(self.cmd().args(["rm", "-fa"]));
        // The storage holds overlay mounts only while containers exist.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
