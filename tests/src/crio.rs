//! Harness for the CRI-O end-to-end suite: a private CRI-O (built from its Go
//! module by tests/e2e/build-crio-peers.sh) with conmon and runc from the
//! distribution, the same CNI bridge and local images as the containerd suite,
//! driven through crictl.
//!
//! CRI-O runs in a private mount namespace with its own `/run` and `/opt`, so
//! the drop-in the test uses is `examples/crio-nri.conf` itself: its NRI socket
//! (`/var/run/nri/nri.sock`) and plugin directory (`/opt/nri/plugins`) are the
//! namespace's, never the host's. Everything else CRI-O keeps (storage, run
//! root, logs, version files) is under the test's directory, and Drop removes
//! all of it, also when a test fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::e2e::{Cri, bridge_conflist, crictl_at, images, ok, peers, run, workspace};

/// The CRI-O the build script makes (tests/e2e/build-crio-peers.sh).
pub const CRIO_VERSION: &str = "v1.34.0";
/// Debian's conmon; CRI-O supervises every container with it.
pub const CONMON: &str = "/usr/bin/conmon";
pub const RUNC: &str = "/usr/sbin/runc";

pub fn bin_dir() -> PathBuf {
    peers().join(format!("crio-{CRIO_VERSION}"))
}

/// True when crio, pinns and conmon are there (else the suite says what to run).
pub fn available() -> bool {
    let ok = bin_dir().join("crio").is_file()
        && bin_dir().join("pinns").is_file()
        && Path::new(CONMON).is_file();
    if !ok {
        eprintln!(
            "skipped: CRI-O not built or conmon missing (tests/e2e/build-crio-peers.sh; make deps installs conmon)"
        );
    }
    ok
}

pub struct Crio {
    pub dir: PathBuf,
    pub bridge: String,
    pub subnet: String,
    pub cgroup_root: String,
    /// Holds the private mount namespace CRI-O and everything it starts run in.
    holder: Option<Child>,
    child: Option<Child>,
}

impl Crio {
    /// Starts a private CRI-O with NRI on through `examples/crio-nri.conf`, and
    /// with `hooks_dir` holding whatever the test writes to [`Crio::hooks_dir`].
    /// `tag` keeps suites apart (bridge, subnet `10.252.<octet>`, cgroup parent).
    pub fn start(tag: &str, octet: u8) -> Crio {
        let dir = std::env::temp_dir().join(format!("nbw-crio-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in [
            "storage", "run", "runc", "logs", "cni-conf", "conf.d", "hooks.d",
        ] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let mut c = Crio {
            bridge: format!("nbwc{tag}"),
            subnet: format!("10.252.{octet}"),
            cgroup_root: format!("/nbw-crio-{tag}-{}", std::process::id()),
            dir,
            holder: None,
            child: None,
        };
        c.hold_namespace();
        c.write_config();
        c.load_images();
        c.launch();
        c
    }

    /// A mount namespace with an empty `/run` (so `/var/run`) and `/opt`.
    fn hold_namespace(&mut self) {
        let ready = self.dir.join("namespace-ready");
        let script = format!(
            "set -e\n\
             mount -t tmpfs -o mode=755 tmpfs /run\n\
             mkdir -p /run/nri\n\
             mount -t tmpfs -o mode=755 tmpfs /opt\n\
             mkdir -p /opt/nri/plugins\n\
             touch {}\n\
             exec sleep infinity\n",
            ready.display()
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(script)
            .stdin(Stdio::null())
            .stderr(self.log("namespace"))
            .spawn()
            .expect("unshare (util-linux)");
        self.holder = Some(child);
        let t = Instant::now();
        while !ready.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the private mount namespace did not come up; see {}",
                self.dir.join("logs/namespace.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn holder_pid(&self) -> u32 {
        self.holder.as_ref().map_or(0, |h| h.id())
    }

    /// A path inside CRI-O's mount namespace, as this process reaches it.
    pub fn ns_path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{p}", self.holder_pid()))
    }

    /// The NRI socket the drop-in names, as this process reaches it.
    pub fn nri_socket(&self) -> PathBuf {
        self.ns_path("/run/nri/nri.sock")
    }

    /// Where CRI-O looks for plugins to launch (the drop-in's nri_plugin_dir).
    pub fn plugin_dir(&self) -> PathBuf {
        self.ns_path("/opt/nri/plugins")
    }

    pub fn hooks_dir(&self) -> PathBuf {
        self.dir.join("hooks.d")
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("logs").join(format!("{name}.log")))
            .unwrap()
    }

    fn write_config(&self) {
        let d = self.dir.display();
        // Everything CRI-O would keep under /var/lib, /var/log or /etc goes to the
        // test's directory; vfs storage needs no mounts; cgroupfs, as the
        // containerd suite; no AppArmor or seccomp profile is loaded.
        let config = format!(
            r#"[crio]
root = "{d}/storage"
runroot = "{d}/run"
storage_driver = "vfs"
log_dir = "{d}/logs/pods"
version_file = "{d}/run/version"
version_file_persist = "{d}/version"
clean_shutdown_file = "{d}/clean.shutdown"

[crio.api]
listen = "{d}/crio.sock"
stream_address = "127.0.0.1"
stream_port = "0"

[crio.runtime]
default_runtime = "runc"
cgroup_manager = "cgroupfs"
conmon_cgroup = "pod"
pinns_path = "{pinns}"
hooks_dir = ["{d}/hooks.d"]
seccomp_profile = ""
apparmor_profile = "unconfined"
selinux = false
log_to_journald = false

[crio.runtime.runtimes.runc]
runtime_path = "{runc}"
runtime_type = "oci"
runtime_root = "{d}/runc"
monitor_path = "{conmon}"
monitor_cgroup = "pod"

[crio.image]
pause_image = "localhost/pause:e2e"
pause_command = "/pause"
signature_policy = "{d}/policy.json"

[crio.network]
network_dir = "{d}/cni-conf"
plugin_dirs = ["{cni}"]

[crio.metrics]
enable_metrics = false
"#,
            pinns = bin_dir().join("pinns").display(),
            runc = RUNC,
            conmon = CONMON,
            cni = peers().join("cni").display(),
        );
        std::fs::write(self.dir.join("crio.conf"), config).unwrap();
        // The repository's drop-in, not a copy.
        std::os::unix::fs::symlink(
            workspace().join("examples/crio-nri.conf"),
            self.dir.join("conf.d/10-nri.conf"),
        )
        .unwrap();
        std::fs::write(
            self.dir.join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        std::fs::write(
            self.dir.join("cni-conf/10-crio.conflist"),
            bridge_conflist(
                &format!("nbw-crio-{}", self.bridge),
                &self.bridge,
                &self.subnet,
                &self.dir.join("ipam"),
                false,
                false,
            ),
        )
        .unwrap();
    }

    /// podman writes the local images into the storage CRI-O will use (both are
    /// containers/storage; nothing is pulled).
    fn load_images(&self) {
        let (pause, _) = images(&peers().join("images"));
        for tar in [pause, peers().join("images/bwload.tar")] {
            ok(Command::new("podman")
                .arg("--root")
                .arg(self.dir.join("storage"))
                .arg("--runroot")
                .arg(self.dir.join("run"))
                .args(["--storage-driver", "vfs", "load", "-q", "-i"])
                .arg(&tar));
        }
    }

    fn launch(&mut self) {
        let child = Command::new("nsenter")
            .args(["-t", &self.holder_pid().to_string(), "-m", "--"])
            .arg(bin_dir().join("crio"))
            .arg("--config")
            .arg(self.dir.join("crio.conf"))
            .arg("--config-dir")
            .arg(self.dir.join("conf.d"))
            .args(["--log-level", "info"])
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:/usr/bin:/sbin:/bin",
                    peers().join("bin").display()
                ),
            )
            .stdin(Stdio::null())
            .stdout(self.log("crio"))
            .stderr(self.log("crio"))
            .spawn()
            .expect("starting crio");
        self.child = Some(child);
        let t = Instant::now();
        while !(self.dir.join("crio.sock").exists() && self.nri_socket().exists()) {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("crio exited ({st}):\n{}", self.log_tail());
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "crio's sockets did not appear:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The socket file appears before CRI-O serves on it.
        while !run(self.crictl().arg("version")).status.success() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "crio does not answer:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("logs/crio.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/crio.log")).unwrap_or_default()
    }

    /// Stops CRI-O (SIGKILL; containers keep running under conmon) and starts it
    /// again in the same namespace.
    pub fn restart(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.nri_socket());
        let _ = std::fs::remove_file(self.dir.join("crio.sock"));
        self.launch();
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Writes an executable plugin `name` (e.g. `10-bandwidth`) into the
    /// directory CRI-O launches plugins from.
    pub fn install_plugin(&self, name: &str, script: &str) {
        let p = self.plugin_dir().join(name);
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The OCI spec CRI-O wrote for container (or pod sandbox) `id`.
    pub fn spec(&self, id: &str) -> serde_json::Value {
        let p = self
            .dir
            .join("run/vfs-containers")
            .join(id)
            .join("userdata/config.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap()
    }
}

impl Cri for Crio {
    fn crictl(&self) -> Command {
        crictl_at(&self.dir.join("crio.sock"))
    }
    fn dir(&self) -> &Path {
        &self.dir
    }
    fn cgroup_root(&self) -> &str {
        &self.cgroup_root
    }
}

impl Drop for Crio {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("crio log (tail):\n{}", self.log_tail());
        }
        if self.child.is_some() {
            let _ = run(self.crictl().args(["rmp", "-fa"]));
        }
        self.stop();
        // conmon and anything else started from our directory.
        let _ = run(Command::new("pkill")
            .arg("-9")
            .arg("-f")
            .arg(self.dir.to_string_lossy().as_ref()));
        crate::e2e::remove_runtime_cgroups(&self.cgroup_root);
        if let Some(mut h) = self.holder.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        let _ = run(Command::new("ip").args(["link", "del", &self.bridge]));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
