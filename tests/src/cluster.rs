//! A one-node Kubernetes cluster for the end-to-end suite, built from Go modules
//! (tests/e2e/build-k8s-peers.sh): etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and a kubelet on the e2e containerd, with certificates and
//! kubeconfigs made here.
//!
//! The node is a network namespace plus a private mount namespace held by one
//! `sleep` process, so nothing the cluster does reaches the host:
//! - its own network: the apiserver listens on the service address 10.96.0.1:443
//!   (on the namespace's `lo`), so pods reach it at the address the kubelet gives
//!   them without a kube-proxy; the CNI bridge and the pods live there too;
//! - its own `/run` (the NRI socket at the DaemonSet's path, /var/run/nri) and
//!   its own bpffs on /sys/fs/bpf (the DaemonSet's pins are private);
//! - fake files over the six /proc/sys entries the kubelet checks, holding the
//!   values it wants, with `protectKernelDefaults` so it only reads them;
//! - its own cgroup root (the kubelet's `cgroupRoot`), removed on drop.
//!
//! Drop stops everything, removes pods, cgroups, the namespace and the directory,
//! also when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::e2e::{Containerd, ok, peers, run, workspace};

/// Kubernetes release of the peers (tests/e2e/build-k8s-peers.sh K8S_VERSION).
pub const K8S_VERSION: &str = "v1.37.2";
/// The service address the kubelet tells pods the apiserver is at.
pub const SERVICE_IP: &str = "10.96.0.1";

/// The sysctls the kubelet's container manager checks, with the values it wants.
const KUBELET_SYSCTLS: [(&str, &str); 6] = [
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// Where the cluster binaries are (`K8S_PEERS` overrides).
pub fn k8s_bin() -> PathBuf {
    std::env::var_os("NRI_BANDWIDTH_K8S_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| peers().join(format!("k8s-{K8S_VERSION}")))
}

pub fn available() -> bool {
    ["kube-apiserver", "kubelet", "kubectl", "etcd"]
        .iter()
        .all(|b| k8s_bin().join(b).is_file())
}

pub struct Cluster {
    pub dir: PathBuf,
    pub netns: String,
    pub node: String,
    pub node_ip: String,
    holder: Option<Child>,
    /// Control plane and kubelet, stopped in reverse order.
    procs: Vec<(&'static str, Child)>,
    pub ctd: Option<Containerd>,
}

impl Cluster {
    /// Starts the whole cluster and waits until the node is Ready. `octet` keeps
    /// the node's and pods' subnets apart from other suites.
    pub fn start(tag: &str, octet: u8) -> Cluster {
        assert!(
            available(),
            "the Kubernetes peers are not built: run tests/e2e/build-k8s-peers.sh (make e2e does)"
        );
        let dir = std::env::temp_dir().join(format!("nbw-k8s-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["pki", "etcd", "kubelet", "pod-logs", "sysctl", "logs"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let netns = format!("nbwk{tag}{}", std::process::id());
        let mut c = Cluster {
            dir,
            netns,
            node: format!("nbw-node-{tag}"),
            node_ip: format!("10.253.{octet}.2"),
            holder: None,
            procs: Vec::new(),
            ctd: None,
        };
        c.network();
        c.hold_namespaces();
        c.certificates();
        c.start_control_plane();
        let ctd = Containerd::start_in_node(tag, octet, c.holder_pid());
        c.ctd = Some(ctd);
        c.start_kubelet();
        c.wait("the node registered", Duration::from_secs(120), |c| {
            c.kubectl(&["get", "node", &c.node]).status.success()
        });
        c.kubectl_ok(&[
            "wait",
            "--for=condition=Ready",
            &format!("node/{}", c.node),
            "--timeout=180s",
        ]);
        c
    }

    fn network(&self) {
        ok(Command::new("ip").args(["netns", "add", &self.netns]));
        let ns = |args: &[&str]| {
            ok(Command::new("ip").args(["-n", &self.netns]).args(args));
        };
        ns(&["link", "set", "lo", "up"]);
        ns(&["addr", "add", &format!("{SERVICE_IP}/32"), "dev", "lo"]);
        // The node's address on a veth whose both ends stay in the namespace
        // (this kernel has no dummy devices).
        ns(&[
            "link", "add", "node0", "type", "veth", "peer", "name", "node0p",
        ]);
        ns(&["link", "set", "node0p", "up"]);
        ns(&[
            "addr",
            "add",
            &format!("{}/24", self.node_ip),
            "dev",
            "node0",
        ]);
        ns(&["link", "set", "node0", "up"]);
        // The kubelet wants a default route to find the node's address family.
        let gw = self.node_ip.rsplit_once('.').unwrap().0.to_string() + ".1";
        ns(&["route", "add", "default", "via", &gw, "dev", "node0"]);
    }

    /// The process whose network and mount namespaces are the node's.
    fn hold_namespaces(&mut self) {
        let d = self.dir.display();
        let mut script = String::from(
            "set -e\n\
             mount -t tmpfs -o mode=755 tmpfs /run\n\
             mkdir -p /run/nri /run/netns\n\
             mount -t bpf bpf /sys/fs/bpf\n",
        );
        for (key, value) in KUBELET_SYSCTLS {
            let f = self.dir.join("sysctl").join(key.replace('/', "."));
            std::fs::write(&f, format!("{value}\n")).unwrap();
            script.push_str(&format!("mount --bind {} /proc/sys/{key}\n", f.display()));
        }
        script.push_str(&format!(
            "touch {d}/namespaces-ready\nexec sleep infinity\n"
        ));
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
            .arg(script)
            .stdin(Stdio::null())
            .stderr(self.log("namespaces"))
            .spawn()
            .expect("nsenter/unshare (util-linux)");
        self.holder = Some(child);
        self.wait("the node's namespaces", Duration::from_secs(10), |c| {
            c.dir.join("namespaces-ready").exists()
        });
    }

    pub fn holder_pid(&self) -> u32 {
        self.holder.as_ref().map_or(0, |h| h.id())
    }

    /// A command run in the node's network and mount namespaces.
    pub fn in_node(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.holder_pid().to_string(), "-n", "-m", "--"])
            .arg(program);
        c
    }

    /// Runs `f` on a thread inside the node's network namespace (where the API
    /// is) with a runtime of its own.
    pub fn in_node_net<T: Send + 'static>(
        &self,
        f: impl FnOnce(tokio::runtime::Runtime) -> T + Send + 'static,
    ) -> T {
        let ns = std::fs::File::open(format!("/var/run/netns/{}", self.netns)).unwrap();
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this thread only; the file stays open for the call.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            f(rt)
        })
        .join()
        .unwrap()
    }

    /// A path inside the node's mount namespace, as this process can reach it.
    pub fn node_path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{}", self.holder_pid(), p))
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.dir.join("logs").join(format!("{name}.log"))).unwrap()
    }

    fn pki(&self, f: &str) -> String {
        self.dir.join("pki").join(f).display().to_string()
    }

    fn certificates(&self) {
        let openssl = |args: &[&str]| {
            ok(Command::new("openssl").args(args));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=nri-bandwidth-test-ca",
            "-keyout",
            &self.pki("ca.key"),
            "-out",
            &self.pki("ca.crt"),
        ]);
        // The apiserver's serving certificate names every address it is reached at.
        let sans = format!(
            "subjectAltName=IP:{SERVICE_IP},IP:{},IP:127.0.0.1,DNS:kubernetes,\
             DNS:kubernetes.default,DNS:kubernetes.default.svc,\
             DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n",
            self.node_ip
        );
        self.sign("apiserver", "/CN=kube-apiserver", &sans);
        // Client certificates must be X.509 v3 (an extension file makes them so).
        let client = "extendedKeyUsage=clientAuth\n";
        self.sign("admin", "/O=system:masters/CN=admin", client);
        self.sign(
            "node",
            &format!("/O=system:nodes/CN=system:node:{}", self.node),
            client,
        );
        openssl(&["genrsa", "-out", &self.pki("sa.key"), "2048"]);
        openssl(&[
            "rsa",
            "-in",
            &self.pki("sa.key"),
            "-pubout",
            "-out",
            &self.pki("sa.pub"),
        ]);
        for (name, user) in [("admin", "admin"), ("node", "node")] {
            std::fs::write(
                self.dir.join(format!("{name}.kubeconfig")),
                format!(
                    "apiVersion: v1\nkind: Config\n\
                     clusters:\n- name: test\n  cluster:\n    server: https://{SERVICE_IP}:443\n    certificate-authority: {ca}\n\
                     users:\n- name: {user}\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n\
                     contexts:\n- name: test\n  context:\n    cluster: test\n    user: {user}\n\
                     current-context: test\n",
                    ca = self.pki("ca.crt"),
                    crt = self.pki(&format!("{name}.crt")),
                    key = self.pki(&format!("{name}.key")),
                ),
            )
            .unwrap();
        }
    }

    fn sign(&self, name: &str, subject: &str, ext: &str) {
        let extfile = self.dir.join("pki").join(format!("{name}.ext"));
        std::fs::write(&extfile, ext).unwrap();
        ok(Command::new("openssl").args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &self.pki(&format!("{name}.key")),
            "-out",
            &self.pki(&format!("{name}.csr")),
        ]));
        ok(Command::new("openssl").args([
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &self.pki(&format!("{name}.csr")),
            "-CA",
            &self.pki("ca.crt"),
            "-CAkey",
            &self.pki("ca.key"),
            "-CAcreateserial",
            "-out",
            &self.pki(&format!("{name}.crt")),
            "-extfile",
            &extfile.display().to_string(),
        ]));
    }

    fn spawn(&mut self, name: &'static str, args: &[String]) {
        let child = self
            .in_node(k8s_bin().join(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(self.log(name))
            .stderr(self.log(&format!("{name}.err")))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.procs.push((name, child));
    }

    fn start_control_plane(&mut self) {
        let d = self.dir.display().to_string();
        self.spawn("etcd", &[format!("--data-dir={d}/etcd")]);
        let admin = format!("--kubeconfig={d}/admin.kubeconfig");
        self.spawn(
            "kube-apiserver",
            &[
                "--etcd-servers=http://127.0.0.1:2379".into(),
                "--bind-address=0.0.0.0".into(),
                "--secure-port=443".into(),
                format!("--advertise-address={}", self.node_ip),
                format!("--tls-cert-file={}", self.pki("apiserver.crt")),
                format!("--tls-private-key-file={}", self.pki("apiserver.key")),
                format!("--client-ca-file={}", self.pki("ca.crt")),
                format!("--kubelet-client-certificate={}", self.pki("admin.crt")),
                format!("--kubelet-client-key={}", self.pki("admin.key")),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={}", self.pki("sa.pub")),
                format!("--service-account-signing-key-file={}", self.pki("sa.key")),
                "--service-cluster-ip-range=10.96.0.0/24".into(),
                "--authorization-mode=Node,RBAC".into(),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
            ],
        );
        self.wait("kube-apiserver /readyz", Duration::from_secs(120), |c| {
            c.kubectl(&["get", "--raw=/readyz"]).status.success()
        });
        self.spawn(
            "kube-controller-manager",
            &[
                admin.clone(),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--service-account-private-key-file={}", self.pki("sa.key")),
                format!("--root-ca-file={}", self.pki("ca.crt")),
                "--use-service-account-credentials=false".into(),
                "--profiling=false".into(),
            ],
        );
        self.spawn(
            "kube-scheduler",
            &[
                admin,
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                "--profiling=false".into(),
            ],
        );
    }

    /// The kubelet's cgroup root: the e2e containerd's private parent, in every
    /// hierarchy of this hybrid host (the kubelet refuses a root that is missing).
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let root = &self.ctd.as_ref().unwrap().cgroup_root;
        let mut dirs = Vec::new();
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                if e.path().join("cgroup.procs").exists() {
                    dirs.push(e.path().join(root.trim_start_matches('/')));
                }
            }
        }
        if Path::new("/sys/fs/cgroup/cgroup.procs").exists() {
            dirs.push(PathBuf::from(format!("/sys/fs/cgroup{root}")));
        }
        dirs
    }

    fn start_kubelet(&mut self) {
        for d in self.cgroup_dirs() {
            let _ = std::fs::create_dir_all(&d);
            // A new v1 cpuset starts empty: give it the parent's.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = std::fs::read_to_string(d.parent().unwrap().join(f)) {
                    let _ = std::fs::write(d.join(f), v.trim());
                }
            }
        }
        let d = self.dir.display().to_string();
        let ctd = self.ctd.as_ref().unwrap();
        let config = format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {root}
containerRuntimeEndpoint: unix://{sock}
failSwapOn: false
protectKernelDefaults: true
address: {ip}
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
  x509:
    clientCAFile: {ca}
authorization:
  mode: AlwaysAllow
podLogsDir: {d}/pod-logs
resolvConf: /etc/resolv.conf
localStorageCapacityIsolation: false
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
"#,
            root = ctd.cgroup_root,
            sock = ctd.dir.join("containerd.sock").display(),
            ip = self.node_ip,
            ca = self.pki("ca.crt"),
        );
        std::fs::write(self.dir.join("kubelet.yaml"), config).unwrap();
        self.spawn(
            "kubelet",
            &[
                format!("--config={d}/kubelet.yaml"),
                format!("--kubeconfig={d}/node.kubeconfig"),
                format!("--root-dir={d}/kubelet"),
                format!("--cert-dir={d}/kubelet/pki"),
                format!("--hostname-override={}", self.node),
                format!("--node-ip={}", self.node_ip),
            ],
        );
    }

    /// kubectl as cluster admin, in the node's network namespace.
    fn kubectl_cmd(&self) -> Command {
        let mut c = self.in_node(k8s_bin().join("kubectl"));
        c.arg(format!(
            "--kubeconfig={}",
            self.dir.join("admin.kubeconfig").display()
        ));
        c
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        run(self.kubectl_cmd().args(args))
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            self.diagnose()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `kubectl apply -f -` with `yaml` on stdin.
    pub fn apply(&self, yaml: &str) -> String {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd()
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until `done` holds, polling every 100 ms; fails with the logs' tails.
    pub fn wait(&self, what: &str, limit: Duration, done: impl Fn(&Cluster) -> bool) {
        let t = Instant::now();
        while !done(self) {
            assert!(
                t.elapsed() < limit,
                "{what} not within {limit:?}{}",
                self.diagnose()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of every component's log, for a failure message.
    pub fn diagnose(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.join("logs")) {
            let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            files.sort();
            for f in files {
                let text = std::fs::read_to_string(&f).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(8).collect();
                if !tail.is_empty() {
                    s.push_str(&format!("\n--- {} ---\n", f.display()));
                    for l in tail.iter().rev() {
                        s.push_str(l);
                        s.push('\n');
                    }
                }
            }
        }
        s
    }

    /// The log of a container of a pod, read from the kubelet's log directory.
    pub fn container_log(&self, namespace: &str, pod_prefix: &str, container: &str) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.join("pod-logs")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !name.starts_with(&format!("{namespace}_{pod_prefix}")) {
                    continue;
                }
                if let Ok(files) = std::fs::read_dir(e.path().join(container)) {
                    let mut files: Vec<_> = files.flatten().map(|f| f.path()).collect();
                    files.sort();
                    for f in files {
                        out.push_str(&std::fs::read_to_string(f).unwrap_or_default());
                    }
                }
            }
        }
        out
    }

    /// Goodput in bit/s of one bwload transfer from the node to a pod's server:
    /// "R" = the pod receives, "S" = the pod sends.
    pub fn measure(&self, ip: &str, port: u16, mode: &str, secs: u32) -> f64 {
        let out = ok(self.in_node(peers().join("images/bwload")).args([
            "client",
            &format!("{ip}:{port}"),
            mode,
            &secs.to_string(),
        ]));
        out.parse()
            .unwrap_or_else(|_| panic!("bwload printed {out:?}"))
    }

    /// The DaemonSet and its RBAC as examples/ has them, applied with kubectl,
    /// its image made like `make image` does and imported with the test server
    /// image; returns once the DaemonSet has rolled out.
    pub fn install_daemonset(&self) {
        let ds = workspace().join("examples/daemonset.yaml");
        let ds: serde_json::Value = serde_json::from_str(&self.kubectl_ok(&[
            "create",
            "--dry-run=client",
            "-o",
            "json",
            "-f",
            &ds.display().to_string(),
        ]))
        .unwrap();
        let image = ds["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .expect("the DaemonSet's image");
        self.import(&daemon_image(&self.dir, image));
        self.import(&peers().join("images/bwload.tar"));
        for f in ["examples/rbac.yaml", "examples/daemonset.yaml"] {
            self.kubectl_ok(&["apply", "-f", &workspace().join(f).display().to_string()]);
        }
        self.daemonset_ready();
    }

    /// Waits until the DaemonSet's pod is rolled out (again).
    pub fn daemonset_ready(&self) {
        self.kubectl_ok(&[
            "-n",
            "kube-system",
            "rollout",
            "status",
            "ds/nri-bandwidth",
            "--timeout=180s",
        ]);
    }

    /// Imports an image archive into containerd's k8s.io namespace.
    pub fn import(&self, tar: &Path) {
        ok(self
            .ctd
            .as_ref()
            .unwrap()
            .ctr()
            .args(["images", "import"])
            .arg(tar));
    }

    fn stop_kubelet_and_control_plane(&mut self) {
        while let Some((_, mut child)) = self.procs.pop() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("cluster logs:{}", self.diagnose());
            // Whole logs for a look afterwards (the directory goes below).
            let keep = std::env::temp_dir().join("nbw-k8s-failed-logs");
            let _ = std::fs::remove_dir_all(&keep);
            let _ = run(Command::new("cp")
                .arg("-r")
                .arg(self.dir.join("logs"))
                .arg(&keep));
            let _ = run(Command::new("cp")
                .arg("-r")
                .arg(self.dir.join("pod-logs"))
                .arg(keep.join("pods")));
            eprintln!("logs kept in {}", keep.display());
        }
        // The kubelet first, so it does not restart what containerd's drop removes.
        self.stop_kubelet_and_control_plane();
        let cgroups = if self.ctd.is_some() {
            self.cgroup_dirs()
        } else {
            Vec::new()
        };
        drop(self.ctd.take());
        for d in cgroups {
            crate::e2e::remove_cgroup_tree(&d);
        }
        if let Some(mut h) = self.holder.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        let _ = run(Command::new("ip").args(["netns", "del", &self.netns]));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The DaemonSet's image `name`, made by the script `make image` uses from the
/// binaries this test run built (target/<profile>), written to `dir`.
fn daemon_image(dir: &Path, name: &str) -> PathBuf {
    let tar = dir.join("nri-bandwidth-image.tar");
    let mut script = Command::new(workspace().join("packaging/oci-image.sh"));
    script
        .arg(name)
        .arg(&tar)
        .arg("/usr/local/bin/nri-bandwidth");
    for b in ["nri-bandwidth", "bwctl", "nri-bandwidth-hook"] {
        script.arg(format!(
            "{}:/usr/local/bin/{b}",
            crate::workspace_bin(b).display()
        ));
    }
    ok(&mut script);
    tar
}
