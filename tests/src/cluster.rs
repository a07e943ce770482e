//! A Kubernetes cluster for the end-to-end suite, built from Go modules
//! (tests/e2e/build-k8s-peers.sh): etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and a kubelet on the e2e containerd, with certificates and
//! kubeconfigs made here; [`Cluster::join`] adds a second node with its own
//! kubelet and containerd, reached through a delay line.
//!
//! A node is a network namespace plus a private mount namespace held by one
//! `sleep` process, so nothing the cluster does reaches the host:
//! - its own network: the apiserver listens on the service address 10.96.0.1:443
//!   (on the namespace's `lo`), so pods reach it at the address the kubelet gives
//!   them without a kube-proxy; the CNI bridge and the pods live there too;
//! - its own `/run` (the NRI socket at the DaemonSet's path, /var/run/nri) and
//!   its own bpffs on /sys/fs/bpf (the DaemonSet's pins are private);
//! - fake files over the six /proc/sys entries the kubelet checks, holding the
//!   values it wants, with `protectKernelDefaults` so it only reads them;
//! - its own cgroup root (the kubelet's `cgroupRoot`, `/<node name>-<pid>`),
//!   removed on drop.
//!
//! The first node runs the control plane. A joined node's namespace is linked to
//! the first's by two veths bridged in a third namespace by the user-space
//! [`DelayLine`] (this kernel has no netem): API, kubelet and pod-to-pod traffic
//! between the nodes all cross it. Pod addresses are routed, not masqueraded, so
//! a pod sees its peers' own addresses as on a routed pod network.
//!
//! Drop stops everything, removes pods, cgroups, the namespace and the directory,
//! also when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::delay_line::DelayLine;
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

/// One kubelet's node: its namespaces, containerd and kubelet.
pub struct Node {
    pub name: String,
    pub ip: String,
    pub netns: String,
    /// Its kubelet's directories, logs and sysctl files.
    pub dir: PathBuf,
    holder: Option<Child>,
    kubelet: Option<Child>,
    pub ctd: Option<Containerd>,
}

/// The link between the first node and a joined one.
struct Wire {
    netns: String,
    line: Option<DelayLine>,
}

pub struct Cluster {
    pub dir: PathBuf,
    /// The first node (control plane) and any joined ones.
    pub nodes: Vec<Node>,
    /// Control plane, stopped in reverse order.
    procs: Vec<(&'static str, Child)>,
    wire: Option<Wire>,
}

impl Node {
    fn new(dir: PathBuf, tag: &str, ip: String) -> Node {
        for d in ["kubelet", "pod-logs", "sysctl", "logs"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        Node {
            dir,
            name: format!("nbw-node-{tag}"),
            ip,
            netns: format!("nbwk{tag}{}", std::process::id()),
            holder: None,
            kubelet: None,
            ctd: None,
        }
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.dir.join("logs").join(format!("{name}.log"))).unwrap()
    }

    fn ns(&self, args: &[&str]) {
        ok(Command::new("ip").args(["-n", &self.netns]).args(args));
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
        let t = Instant::now();
        while !self.dir.join("namespaces-ready").exists() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the node's namespaces are not up; see {}",
                self.dir.join("logs").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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

    /// A path inside the node's mount namespace, as this process can reach it.
    pub fn node_path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{}", self.holder_pid(), p))
    }

    /// The kubelet's cgroup root: the node containerd's private parent, in every
    /// hierarchy of this hybrid host (the kubelet refuses a root that is missing).
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let Some(ctd) = &self.ctd else {
            return Vec::new();
        };
        let root = &ctd.cgroup_root;
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

    fn start_kubelet(&mut self, pki: &Path) {
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
            ip = self.ip,
            ca = pki.join("ca.crt").display(),
        );
        std::fs::write(self.dir.join("kubelet.yaml"), config).unwrap();
        let kubeconfig = pki
            .parent()
            .unwrap()
            .join(format!("{}.kubeconfig", self.name));
        let child = self
            .in_node(k8s_bin().join("kubelet"))
            .args([
                format!("--config={d}/kubelet.yaml"),
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--root-dir={d}/kubelet"),
                format!("--cert-dir={d}/kubelet/pki"),
                format!("--hostname-override={}", self.name),
                format!("--node-ip={}", self.ip),
            ])
            .stdin(Stdio::null())
            .stdout(self.log("kubelet"))
            .stderr(self.log("kubelet.err"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting the kubelet: {e}"));
        self.kubelet = Some(child);
    }

    fn stop_kubelet(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            let _ = k.kill();
            let _ = k.wait();
        }
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
}

impl Drop for Node {
    fn drop(&mut self) {
        // The kubelet first, so it does not restart what containerd's drop removes.
        self.stop_kubelet();
        let cgroups = self.cgroup_dirs();
        drop(self.ctd.take());
        for d in cgroups {
            crate::e2e::remove_cgroup_tree(&d);
        }
        if let Some(mut h) = self.holder.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        let _ = run(Command::new("ip").args(["netns", "del", &self.netns]));
    }
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
        for d in ["pki", "etcd", "logs"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let first = Node::new(dir.clone(), tag, format!("10.253.{octet}.2"));
        let mut c = Cluster {
            dir,
            nodes: vec![first],
            procs: Vec::new(),
            wire: None,
        };
        c.first_network();
        c.nodes[0].hold_namespaces();
        c.certificates();
        c.start_control_plane();
        c.start_node(0, tag, octet);
        c
    }

    /// Starts the node's containerd and kubelet; waits until it is Ready.
    fn start_node(&mut self, i: usize, tag: &str, octet: u8) {
        let n = &mut self.nodes[i];
        n.ctd = Some(Containerd::start_in_node(
            tag,
            octet,
            n.holder_pid(),
            &format!("/{}-{}", n.name, std::process::id()),
        ));
        n.start_kubelet(&self.dir.join("pki"));
        let name = n.name.clone();
        self.wait("the node registered", Duration::from_secs(120), |c| {
            c.kubectl(&["get", "node", &name]).status.success()
        });
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Ready",
            &format!("node/{name}"),
            "--timeout=180s",
        ]);
    }

    fn first_network(&self) {
        let n = self.first();
        ok(Command::new("ip").args(["netns", "add", &n.netns]));
        n.ns(&["link", "set", "lo", "up"]);
        n.ns(&["addr", "add", &format!("{SERVICE_IP}/32"), "dev", "lo"]);
        // The node's address on a veth whose both ends stay in the namespace
        // (this kernel has no dummy devices).
        n.ns(&[
            "link", "add", "node0", "type", "veth", "peer", "name", "node0p",
        ]);
        n.ns(&["link", "set", "node0p", "up"]);
        n.ns(&["addr", "add", &format!("{}/24", n.ip), "dev", "node0"]);
        n.ns(&["link", "set", "node0", "up"]);
        // The kubelet wants a default route to find the node's address family.
        let gw = n.ip.rsplit_once('.').unwrap().0.to_string() + ".1";
        n.ns(&["route", "add", "default", "via", &gw, "dev", "node0"]);
    }

    /// Adds a second node (its own namespaces, containerd, kubelet, pod subnet
    /// 10.252.`octet`.0/24) linked to the first through a delay line of
    /// `one_way` each way; returns once it is Ready.
    pub fn join(&mut self, tag: &str, octet: u8, one_way: Duration) -> &Node {
        assert!(self.wire.is_none(), "one joined node at most");
        let pid = std::process::id();
        let link = format!("10.251.{octet}");
        let node = Node::new(
            self.dir.join(format!("node-{tag}")),
            tag,
            format!("{link}.2"),
        );
        ok(Command::new("ip").args(["netns", "add", &node.netns]));
        let wire = format!("nbww{tag}{pid}");
        ok(Command::new("ip").args(["netns", "add", &wire]));
        self.wire = Some(Wire {
            netns: wire.clone(),
            line: None,
        });
        self.nodes.push(node);
        let (a, b) = (&self.nodes[0], &self.nodes[1]);
        for (i, n) in [a, b].into_iter().enumerate() {
            ok(Command::new("ip").args([
                "-n",
                &wire,
                "link",
                "add",
                &format!("w{i}"),
                "type",
                "veth",
                "peer",
                "name",
                "link0",
                "netns",
                &n.netns,
            ]));
            ok(Command::new("ip").args(["-n", &wire, "link", "set", &format!("w{i}"), "up"]));
            n.ns(&[
                "addr",
                "add",
                &format!("{link}.{}/24", i + 1),
                "dev",
                "link0",
            ]);
            n.ns(&["link", "set", "link0", "up"]);
            // Both nodes route pods of the other (the CNI bridge's gateway sets
            // forwarding on, but only once its first pod starts).
            ok(Command::new("ip").args([
                "netns",
                "exec",
                &n.netns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ]));
        }
        // The wire's own stack stays silent.
        for k in ["all", "default"] {
            ok(Command::new("ip").args([
                "netns",
                "exec",
                &wire,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{k}.disable_ipv6=1"),
            ]));
        }
        b.ns(&["link", "set", "lo", "up"]);
        // Everything else (the apiserver's service address, the first node's
        // address and pods) is behind the first node.
        b.ns(&["route", "add", "default", "via", &format!("{link}.1")]);
        a.ns(&[
            "route",
            "add",
            &format!("10.252.{octet}.0/24"),
            "via",
            &format!("{link}.2"),
        ]);
        self.set_delay(one_way);
        self.nodes[1].hold_namespaces();
        self.node_certificate(&self.nodes[1].name.clone());
        self.start_node(1, tag, octet);
        &self.nodes[1]
    }

    /// The one-way delay between the nodes (a new line replaces the old one).
    pub fn set_delay(&mut self, one_way: Duration) {
        let w = self.wire.as_mut().expect("no joined node");
        drop(w.line.take());
        w.line = Some(DelayLine::start(&w.netns, "w0", "w1", one_way).expect("the delay line"));
    }

    /// The first node: the control plane's, where the API is served.
    pub fn first(&self) -> &Node {
        &self.nodes[0]
    }

    pub fn holder_pid(&self) -> u32 {
        self.first().holder_pid()
    }

    /// A command run in the first node's network and mount namespaces.
    pub fn in_node(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.first().in_node(program)
    }

    /// Runs `f` on a thread inside the node's network namespace (where the API
    /// is) with a runtime of its own.
    pub fn in_node_net<T: Send + 'static>(
        &self,
        f: impl FnOnce(tokio::runtime::Runtime) -> T + Send + 'static,
    ) -> T {
        let ns = std::fs::File::open(format!("/var/run/netns/{}", self.first().netns)).unwrap();
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

    /// A path inside the first node's mount namespace, as this process can reach it.
    pub fn node_path(&self, p: &str) -> PathBuf {
        self.first().node_path(p)
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
            self.first().ip
        );
        self.sign("apiserver", "/CN=kube-apiserver", &sans);
        // Client certificates must be X.509 v3 (an extension file makes them so).
        self.sign(
            "admin",
            "/O=system:masters/CN=admin",
            "extendedKeyUsage=clientAuth\n",
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
        self.kubeconfig("admin", "admin");
        self.node_certificate(&self.first().name);
    }

    /// A kubelet's client certificate and kubeconfig, `<node>.kubeconfig`.
    fn node_certificate(&self, node: &str) {
        self.sign(
            node,
            &format!("/O=system:nodes/CN=system:node:{node}"),
            "extendedKeyUsage=clientAuth\n",
        );
        self.kubeconfig(node, node);
    }

    /// `<name>.kubeconfig` for the user of certificate pki/<name>.crt.
    fn kubeconfig(&self, name: &str, user: &str) {
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
                format!("--advertise-address={}", self.first().ip),
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
                // exec and logs reach kubelets at their address (no DNS here).
                "--kubelet-preferred-address-types=InternalIP".into(),
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
        let dirs: Vec<PathBuf> = std::iter::once(self.dir.join("logs"))
            .chain(self.nodes.iter().skip(1).map(|n| n.dir.join("logs")))
            .collect();
        for rd in dirs.iter().filter_map(|d| std::fs::read_dir(d).ok()) {
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

    /// The log of a container of a pod, read from the kubelets' log directories
    /// (every node's pods whose names start with `pod_prefix`).
    pub fn container_log(&self, namespace: &str, pod_prefix: &str, container: &str) -> String {
        let mut out = String::new();
        for rd in self
            .nodes
            .iter()
            .filter_map(|n| std::fs::read_dir(n.dir.join("pod-logs")).ok())
        {
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

    /// Goodput in bit/s of one bwload transfer from the first node to a pod's
    /// server: "R" = the pod receives, "S" = the pod sends.
    pub fn measure(&self, ip: &str, port: u16, mode: &str, secs: u32) -> f64 {
        self.first().measure(ip, port, mode, secs)
    }

    /// The DaemonSet and its RBAC as examples/ has them, applied with kubectl,
    /// its image made like `make image` does and imported with the test server
    /// image; returns once the DaemonSet has rolled out.
    pub fn install_daemonset(&self) {
        self.import_images();
        for f in ["examples/rbac.yaml", "examples/daemonset.yaml"] {
            self.kubectl_ok(&["apply", "-f", &workspace().join(f).display().to_string()]);
        }
        self.daemonset_ready();
    }

    /// The Helm chart (charts/nri-bandwidth) rendered by helm with `set`
    /// values and applied with kubectl, on every node; returns once it has
    /// rolled out.
    pub fn install_chart(&self, set: &[&str]) {
        self.import_images();
        let mut helm = Command::new(peers().join("bin/helm"));
        helm.arg("template")
            .arg("nri-bandwidth")
            .arg(workspace().join("charts/nri-bandwidth"))
            .args(["--namespace", "kube-system"]);
        for s in set {
            helm.args(["--set", s]);
        }
        self.apply(&ok(&mut helm));
        self.daemonset_ready();
    }

    /// The daemon's image (named as examples/daemonset.yaml and the chart's
    /// default values name it) and the test server's, on every node.
    fn import_images(&self) {
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
    }

    /// Waits until the DaemonSet's pods are rolled out (again).
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

    /// Imports an image archive into every node's containerd.
    pub fn import(&self, tar: &Path) {
        for n in &self.nodes {
            n.import(tar);
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
            let _ = std::fs::create_dir_all(&keep);
            let _ = run(Command::new("cp")
                .arg("-r")
                .arg(self.dir.join("logs"))
                .arg(keep.join("control-plane")));
            for n in &self.nodes {
                for d in ["logs", "pod-logs"] {
                    let _ = run(Command::new("cp")
                        .arg("-r")
                        .arg(n.dir.join(d))
                        .arg(keep.join(format!("{}-{d}", n.name))));
                }
            }
            eprintln!("logs kept in {}", keep.display());
        }
        // Kubelets first, so they do not restart what containerd's drop removes.
        for n in &mut self.nodes {
            n.stop_kubelet();
        }
        while let Some((_, mut child)) = self.procs.pop() {
            let _ = child.kill();
            let _ = child.wait();
        }
        while let Some(n) = self.nodes.pop() {
            drop(n);
        }
        if let Some(mut w) = self.wire.take() {
            drop(w.line.take());
            let _ = run(Command::new("ip").args(["netns", "del", &w.netns]));
        }
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
