//! Harness for the end-to-end suites: a private containerd (own root, state,
//! sockets, NRI socket, CNI bridge) built from its Go module, images built locally
//! and imported, pods driven through crictl, and our plugin as a separate process.
//! Nothing on the host is touched but what it creates, and Drop removes all of it
//! (pods, shims, bridge, cgroups, pins), also when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Enables the end-to-end suites (needs root, built peers, runc).
pub const E2E_ENV: &str = "NRI_BANDWIDTH_E2E";

/// True when e2e tests should run (privileged switch plus the e2e one).
pub fn enabled() -> bool {
    if !crate::privileged() {
        return false;
    }
    let on = std::env::var(E2E_ENV).is_ok_and(|v| v == "1");
    if !on {
        eprintln!("skipped: set {E2E_ENV}=1 (make e2e) to run the containerd end-to-end suite");
    }
    on
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where tests/e2e/build-peers.sh put containerd, crictl and the CNI plugins.
pub fn peers() -> PathBuf {
    std::env::var_os("NRI_BANDWIDTH_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/peers"))
}

pub(crate) fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

pub(crate) fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Builds the pause and bwload images once per run (cached by binary age).
pub fn images(cache: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(cache).unwrap();
    let mut tars = Vec::new();
    for name in ["pause", "bwload"] {
        let bin = cache.join(name);
        let src = workspace().join("tests/e2e/images").join(name);
        ok(Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(&src)
            .env("CGO_ENABLED", "0")
            .env("GOTOOLCHAIN", "local"));
        let tar = cache.join(format!("{name}.tar"));
        ok(Command::new(workspace().join("packaging/oci-image.sh"))
            .arg(format!("localhost/{name}:e2e"))
            .arg(&tar)
            .arg(format!("/{name}"))
            .arg(format!("{}:/{name}", bin.display())));
        tars.push(tar);
    }
    (tars[0].clone(), cache.join("bwload"))
}

/// Which containerd to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// containerd 2.x (`.cache/peers/bin`), config version 3, NRI on by default.
    V2,
    /// containerd 1.7 (`.cache/peers/containerd-1.7`), config version 2, NRI
    /// switched on in the config.
    V17,
}

impl Flavor {
    fn bin_dir(self) -> PathBuf {
        match self {
            Flavor::V2 => peers().join("bin"),
            Flavor::V17 => peers().join("containerd-1.7"),
        }
    }
    pub fn available(self) -> bool {
        self.bin_dir().join("containerd").is_file()
    }
}

pub struct Containerd {
    pub flavor: Flavor,
    pub dir: PathBuf,
    child: Option<Child>,
    pub bridge: String,
    pub subnet: String,
    pub cgroup_root: String,
    /// The process whose namespaces containerd runs in (a cluster's node).
    node: Option<u32>,
}

impl Containerd {
    /// Starts a private containerd with NRI on `dir/nri.sock`. `tag` keeps
    /// parallel suites apart (bridge name, subnet, cgroup parent).
    pub fn start(tag: &str, octet: u8) -> Containerd {
        Self::start_flavor(Flavor::V2, tag, octet)
    }

    pub fn start_flavor(flavor: Flavor, tag: &str, octet: u8) -> Containerd {
        Self::start_opts(flavor, tag, octet, false, None)
    }

    /// A containerd 2.x for a Kubernetes node (tests/src/cluster.rs): it runs in
    /// the network and mount namespaces of process `node`, with its NRI socket at
    /// the DaemonSet's path (/var/run/nri/nri.sock, private to that namespace),
    /// its pods below `cgroup_root`.
    pub fn start_in_node(tag: &str, octet: u8, node: u32, cgroup_root: &str) -> Containerd {
        Self::start_opts(Flavor::V2, tag, octet, false, Some((node, cgroup_root)))
    }

    /// A containerd 2.x whose CNI chain ends with the CNI bandwidth plugin, as a
    /// cluster that limits with it: containerd hands it the pod's
    /// `kubernetes.io/*-bandwidth` annotations.
    pub fn start_with_cni_bandwidth(tag: &str, octet: u8) -> Containerd {
        Self::start_opts(Flavor::V2, tag, octet, true, None)
    }

    fn start_opts(
        flavor: Flavor,
        tag: &str,
        octet: u8,
        cni_bandwidth: bool,
        in_node: Option<(u32, &str)>,
    ) -> Containerd {
        let node = in_node.map(|(pid, _)| pid);
        let dir = std::env::temp_dir().join(format!("nbw-e2e-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in [
            "root",
            "state",
            "nri-plugins",
            "nri-conf",
            "cni-conf",
            "logs",
        ] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let peers = peers();
        assert!(
            flavor.available(),
            "containerd not built: run tests/e2e/build-peers.sh (make e2e does)"
        );
        let d = dir.display();
        let nri_socket = match node {
            Some(_) => "/var/run/nri/nri.sock".to_string(),
            None => format!("{d}/nri.sock"),
        };
        let cni = peers.join("cni");
        // Everything but the CRI section (and the version line) is the same in both
        // config formats; NRI is off by default in 1.7, on in 2.x: always say so.
        let (version, cri) = if flavor == Flavor::V17 {
            (
                2,
                format!(
                    r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:e2e"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni}"
    conf_dir = "{d}/cni-conf"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    # Its own shim: the 2.x one refuses 1.7's start protocol.
    runtime_path = "{shim}"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      BinaryName = "/usr/sbin/runc"
      SystemdCgroup = false
"#,
                    cni = cni.display(),
                    shim = flavor.bin_dir().join("containerd-shim-runc-v2").display()
                ),
            )
        } else {
            (
                3,
                format!(
                    r#"[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "localhost/pause:e2e"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["{cni}"]
  conf_dir = "{d}/cni-conf"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  BinaryName = "/usr/sbin/runc"
  SystemdCgroup = false
"#,
                    cni = cni.display()
                ),
            )
        };
        // restrict_oom_score_adj: this machine lacks CAP_SYS_RESOURCE, so runc
        // cannot lower oom_score_adj below ours.
        let config = format!(
            r#"version = {version}
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.nri.v1.nri"]
  disable = false
  socket_path = "{nri_socket}"
  plugin_path = "{d}/nri-plugins"
  plugin_config_path = "{d}/nri-conf"
{cri}"#
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let bridge = format!("nbwe{tag}");
        let subnet = format!("10.252.{octet}");
        std::fs::write(
            dir.join("cni-conf/10-e2e.conflist"),
            // A node's pods reach the apiserver's service address through the
            // bridge: they need a default route.
            bridge_conflist(
                &format!("nbw-e2e-{tag}"),
                &bridge,
                &subnet,
                &dir.join("ipam"),
                node.is_some(),
                cni_bandwidth,
            ),
        )
        .unwrap();
        let mut c = Containerd {
            flavor,
            dir,
            child: None,
            bridge,
            subnet,
            cgroup_root: match in_node {
                Some((_, root)) => root.to_string(),
                None => format!("/nbw-e2e-{tag}-{}", std::process::id()),
            },
            node,
        };
        c.launch();
        let (pause, _) = images(&peers.join("images"));
        let bwload = peers.join("images/bwload.tar");
        for tar in [pause, bwload] {
            ok(c.ctr().args(["images", "import"]).arg(&tar));
        }
        c
    }

    fn launch(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .unwrap();
        let bin = self.flavor.bin_dir().join("containerd");
        let mut cmd = match self.node {
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.args(["-t", &pid.to_string(), "-n", "-m", "--"]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .env("PATH", self.path_env())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        self.child = Some(child);
        self.wait_for(&self.nri_socket(), "containerd's NRI socket");
        self.wait_for(&self.dir.join("containerd.sock"), "containerd's socket");
    }

    fn wait_for(&self, p: &Path, what: &str) {
        let t = Instant::now();
        while !p.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{what} did not appear; see {}",
                self.dir.join("containerd.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops and starts containerd (pods keep running in their shims).
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.nri_socket());
        let _ = std::fs::remove_file(self.dir.join("containerd.sock"));
        self.launch();
    }

    fn path_env(&self) -> String {
        format!(
            "{}:{}",
            peers().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// The NRI socket as this process reaches it.
    pub fn nri_socket(&self) -> PathBuf {
        match self.node {
            Some(pid) => PathBuf::from(format!("/proc/{pid}/root/run/nri/nri.sock")),
            None => self.dir.join("nri.sock"),
        }
    }

    pub fn ctr(&self) -> Command {
        let mut c = Command::new(self.flavor.bin_dir().join("ctr"));
        c.arg("-a")
            .arg(self.dir.join("containerd.sock"))
            .args(["-n", "k8s.io"]);
        c
    }
}

impl Cri for Containerd {
    fn crictl(&self) -> Command {
        crictl_at(&self.dir.join("containerd.sock"))
    }
    fn dir(&self) -> &Path {
        &self.dir
    }
    fn cgroup_root(&self) -> &str {
        &self.cgroup_root
    }
}

/// A CNI network list: a bridge `bridge` with `subnet`.0/24 (host-local IPAM
/// with its state in `ipam_dir`), portmap, and optionally a default route and the
/// CNI bandwidth plugin.
pub(crate) fn bridge_conflist(
    name: &str,
    bridge: &str,
    subnet: &str,
    ipam_dir: &Path,
    default_route: bool,
    cni_bandwidth: bool,
) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"{name}","plugins":[
 {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,
   "ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}.0/24"}}]],"dataDir":"{ipam}"{routes}}}}},
 {{"type":"portmap","capabilities":{{"portMappings":true}}}}{bw}]}}"#,
        ipam = ipam_dir.display(),
        routes = if default_route {
            r#","routes":[{"dst":"0.0.0.0/0"}]"#
        } else {
            ""
        },
        bw = if cni_bandwidth {
            r#",
 {"type":"bandwidth","capabilities":{"bandwidth":true}}"#
        } else {
            ""
        }
    )
}

/// crictl for the CRI socket `sock`.
pub fn crictl_at(sock: &Path) -> Command {
    let mut c = Command::new(peers().join("bin/crictl"));
    let ep = format!("unix://{}", sock.display());
    c.args([
        "--runtime-endpoint",
        &ep,
        "--image-endpoint",
        &ep,
        "--timeout",
        "20s",
    ]);
    c
}

/// What the suites do through CRI with crictl, the same for every runtime.
pub trait Cri {
    /// crictl pointed at this runtime's socket.
    fn crictl(&self) -> Command;
    /// The runtime's private directory (pod and container configs go there).
    fn dir(&self) -> &Path;
    /// The cgroup parent every pod of this runtime goes under.
    fn cgroup_root(&self) -> &str;

    /// Creates a pod; `annotations` as (key, value). Returns the raw crictl result.
    fn try_run_pod(&self, name: &str, uid: &str, annotations: &[(&str, &str)]) -> Output {
        let ann: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        let pod = serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": uid, "attempt": 0},
            "labels": {
                "io.kubernetes.pod.name": name,
                "io.kubernetes.pod.namespace": "default",
                "io.kubernetes.pod.uid": uid,
            },
            "annotations": ann,
            // As a kubelet sends it: each container its own PID namespace (CRI-O
            // then runs no infra container, whose oom_score_adj of -998 this
            // machine may not set).
            "linux": {
                "cgroup_parent": format!("{}/pod{uid}", self.cgroup_root()),
                "security_context": {"namespace_options": {"pid": 1}},
            },
            "log_directory": self.dir().join("logs").join(uid),
        });
        let f = self.dir().join(format!("pod-{uid}.json"));
        std::fs::write(&f, pod.to_string()).unwrap();
        run(self.crictl().arg("runp").arg(&f))
    }

    fn run_pod(&self, name: &str, uid: &str, annotations: &[(&str, &str)]) -> String {
        let out = self.try_run_pod(name, uid, annotations);
        assert!(
            out.status.success(),
            "runp {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Creates and starts a bwload server container named `name` in pod `pod_id`.
    fn run_container(&self, pod_id: &str, uid: &str, name: &str, port: u16) -> String {
        let id = self.create_container(pod_id, uid, name, port);
        ok(self.crictl().args(["start", &id]));
        id
    }

    /// Creates (does not start) a bwload server container; returns its id.
    fn create_container(&self, pod_id: &str, uid: &str, name: &str, port: u16) -> String {
        self.create_annotated_container(pod_id, uid, name, port, &[])
    }

    /// Creates a bwload server container whose own CRI config carries
    /// `annotations` (a kubelet puts none of the pod's there).
    fn create_annotated_container(
        &self,
        pod_id: &str,
        uid: &str,
        name: &str,
        port: u16,
        annotations: &[(&str, &str)],
    ) -> String {
        let ann: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        let ctr = serde_json::json!({
            "metadata": {"name": name},
            // The label a kubelet sets; CRI-O names the container to NRI by it.
            "labels": {"io.kubernetes.container.name": name},
            "annotations": ann,
            "image": {"image": "localhost/bwload:e2e"},
            "args": ["serve", format!(":{port}")],
            "log_path": format!("{name}.log"),
            "linux": {"security_context": {"namespace_options": {"pid": 1}}},
        });
        let f = self.dir().join(format!("ctr-{uid}-{name}.json"));
        std::fs::write(&f, ctr.to_string()).unwrap();
        ok(self
            .crictl()
            .arg("create")
            .arg(pod_id)
            .arg(&f)
            .arg(self.dir().join(format!("pod-{uid}.json"))))
    }

    fn pod_ip(&self, pod_id: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&ok(self.crictl().args(["inspectp", pod_id]))).unwrap();
        v["status"]["network"]["ip"]
            .as_str()
            .expect("pod IP")
            .to_string()
    }

    fn remove_pod(&self, pod_id: &str) {
        ok(self.crictl().args(["stopp", pod_id]));
        ok(self.crictl().args(["rmp", pod_id]));
    }

    /// Goodput in bit/s of one transfer with the pod: mode "R" = the pod receives
    /// (its ingress), "S" = the pod sends (its egress).
    fn measure(&self, ip: &str, port: u16, mode: &str, secs: u32) -> f64 {
        measure(ip, port, mode, secs)
    }
}

/// The limits pinned under `pins` (none when nothing was ever pinned there).
pub fn pinned_entries(pins: &Path) -> Vec<nri_bandwidth_core::model::Entry> {
    match nri_bandwidth_core::datapath::Datapath::open_existing(pins).unwrap() {
        Some(dp) => dp.list().unwrap(),
        None => Vec::new(),
    }
}

/// Asserts that no link is pinned under `pins` any more.
pub fn assert_no_links(pins: &Path) {
    let links: Vec<_> =
        std::fs::read_dir(nri_bandwidth_core::datapath::abi_dir(pins).join("links"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
    assert!(links.is_empty(), "pinned links left: {links:?}");
}

/// Every runtime's `kill -9` scenario: a pod limited at 10M egress stays limited
/// with the daemon dead; one pod removed and one created (15M ingress) while it is
/// down are reconciled when it comes back. Returns the first pod's id and IP.
pub fn limits_outlive_a_killed_daemon(
    rt: &impl Cri,
    plugin: &mut PluginProc,
    pins: &Path,
) -> (String, String) {
    let a = rt.run_pod("a", "uid-k1", &[("kubernetes.io/egress-bandwidth", "10M")]);
    rt.run_container(&a, "uid-k1", "app", 5201);
    let gone = rt.run_pod(
        "gone",
        "uid-k2",
        &[("kubernetes.io/egress-bandwidth", "10M")],
    );
    assert_eq!(pinned_entries(pins).len(), 2);

    plugin.kill9();
    let ip = rt.pod_ip(&a);
    near(
        "egress with the daemon killed",
        rt.measure(&ip, 5201, "S", 3),
        10e6,
    );
    rt.remove_pod(&gone);
    let b = rt.run_pod("b", "uid-k3", &[("kubernetes.io/ingress-bandwidth", "15M")]);
    rt.run_container(&b, "uid-k3", "app", 5201);

    plugin.restart();
    let names: Vec<String> = pinned_entries(pins)
        .into_iter()
        .map(|x| x.owner.pod_name)
        .collect();
    assert!(
        names.iter().any(|n| n == "b"),
        "a pod created while the daemon was down gets its limit: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "gone"),
        "a pod removed while the daemon was down loses its limit: {names:?}"
    );
    let ipb = rt.pod_ip(&b);
    near(
        "ingress of the pod created while the daemon was down",
        rt.measure(&ipb, 5201, "R", 3),
        15e6,
    );
    (a, ip)
}

/// Bounds of a rate measured through a runtime (pod start, a few seconds of
/// traffic on a busy 2-core machine): the benchmark reports precise figures.
pub const LOW: f64 = 0.70;
pub const HIGH: f64 = 1.10;

/// Prints a measured goodput against its limit and asserts it is within
/// [`LOW`, `HIGH`] of it.
pub fn near(what: &str, got: f64, limit: f64) {
    let r = got / limit;
    eprintln!(
        "{what}: {:.2} Mbit/s = {r:.3} of {:.0} Mbit/s",
        got / 1e6,
        limit / 1e6
    );
    assert!(
        (LOW..=HIGH).contains(&r),
        "{what}: {:.2} Mbit/s is {r:.3} of the {:.0} Mbit/s limit",
        got / 1e6,
        limit / 1e6
    );
}

/// Goodput in bit/s of one bwload transfer from this host with a bwload server at
/// `ip:port`: mode "R" = the server receives, "S" = the server sends.
pub fn measure(ip: &str, port: u16, mode: &str, secs: u32) -> f64 {
    let bin = peers().join("images/bwload");
    let out =
        ok(Command::new(bin).args(["client", &format!("{ip}:{port}"), mode, &secs.to_string()]));
    out.parse()
        .unwrap_or_else(|_| panic!("bwload printed {out:?}"))
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = run(self.crictl().args(["rmp", "-fa"]));
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Shims that outlived containerd (a failed test): kill what runs from our dir.
        let _ = run(Command::new("pkill")
            .arg("-9")
            .arg("-f")
            .arg(self.dir.to_string_lossy().as_ref()));
        let _ = run(Command::new("ip").args(["link", "del", &self.bridge]));
        remove_runtime_cgroups(&self.cgroup_root);
        let _ = run(Command::new("umount").arg("-R").arg(&self.dir));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes a runtime's cgroup parent `cgroup_root` (a path below the cgroup
/// root) from the v2 hierarchy and, on a hybrid host where runc also makes them,
/// from every v1 hierarchy; whatever still runs in them (a failed test's
/// containers) is killed first.
pub(crate) fn remove_runtime_cgroups(cgroup_root: &str) {
    let rel = cgroup_root.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    if let Ok(fs) = nri_bandwidth_core::cgroup::CgroupFs::detect() {
        let v2 = fs.root().join(rel);
        if v2.is_dir() {
            let _ = std::fs::write(v2.join("cgroup.kill"), "1");
            std::thread::sleep(Duration::from_millis(100));
        }
        remove_cgroup_tree(&v2);
    }
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in rd.flatten() {
            remove_cgroup_tree(&h.path().join(rel));
        }
    }
}

pub(crate) fn remove_cgroup_tree(p: &Path) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(p);
}

/// Our daemon as a separate process (so tests can kill -9 it).
pub struct PluginProc {
    child: Option<Child>,
    pub log: PathBuf,
    args: Vec<String>,
}

impl PluginProc {
    pub fn start(socket: &Path, pin_root: &Path, log: &Path, extra: &[&str]) -> PluginProc {
        let mut args = vec![
            "--socket".to_string(),
            socket.display().to_string(),
            "--pin-root".into(),
            pin_root.display().to_string(),
            "--log-file".into(),
            log.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut p = PluginProc {
            child: None,
            log: log.to_path_buf(),
            args,
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let child = Command::new(crate::workspace_bin("nri-bandwidth"))
            .args(&self.args)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting nri-bandwidth");
        self.child = Some(child);
        self.wait_log("synchronize:", 0);
    }

    /// Waits until the log has `n + 1` lines containing `needle`.
    pub fn wait_log(&self, needle: &str, n: usize) {
        let t = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.matches(needle).count() > n {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "plugin log never said {needle:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's pid (0 once killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        let n = self.log_text().matches("synchronize:").count();
        let child = Command::new(crate::workspace_bin("nri-bandwidth"))
            .args(&self.args)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_log("synchronize:", n);
    }
}

impl Drop for PluginProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Fetches the plugin's Prometheus text from `addr`.
pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
