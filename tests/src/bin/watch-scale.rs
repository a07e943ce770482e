//! `watch-scale`: the daemon's cluster watch (sender-side ingress across nodes)
//! against a real apiserver holding many limited pods of other nodes, as a
//! markdown table on stdout. The pods are synthetic: API objects bound to
//! synthetic Node objects, with an address and host address written to their
//! status (no kubelet runs them). The daemon is the real binary, in the node's
//! network namespace, with a private pin root and senders' cgroup; it learns every
//! pod from its watch and keeps one senders'-map entry per address.
//!
//! usage: watch-scale [PODS (10000)] [NODES (100)]     (root; `make bench-scale`)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_core::datapath::{self as limiter, Datapath};
use nri_bandwidth_tests::cluster::Cluster;
use nri_bandwidth_tests::{test_pin_root, workspace_bin};

/// The daemon under test and everything it was given; all removed on drop.
struct Daemon {
    child: Option<Child>,
    pins: PathBuf,
    scope: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(c: &Cluster, pins: &Path, scope_rel: &str, log: &Path) -> Child {
        let _ = std::fs::remove_file(log);
        // The exchange starts only with a key (the other nodes are synthetic).
        let key = c.dir.join("share-key");
        std::fs::write(&key, "watch-scale's share-exchange key").expect("writing the key");
        Command::new("nsenter")
            .args(["-t", &c.holder_pid().to_string(), "-n", "--"])
            .arg(workspace_bin("nri-bandwidth"))
            .arg(format!(
                "--socket={}",
                c.dir.join("no-runtime.sock").display()
            ))
            .arg(format!("--pin-root={}", pins.display()))
            .arg(format!("--sender-scope={scope_rel}"))
            .arg(format!("--share-key-file={}", key.display()))
            .arg(format!(
                "--kubeconfig={}",
                c.dir.join("admin.kubeconfig").display()
            ))
            .arg(format!("--node-name={}", c.first().name))
            .arg(format!("--log-file={}", log.display()))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nri-bandwidth")
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn stop(&mut self) {
        if let Some(mut ch) = self.child.take() {
            let _ = ch.kill();
            let _ = ch.wait();
        }
    }

    /// Resident set (KiB) and CPU time used so far (s).
    fn usage(&self) -> (u64, f64) {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces): utime is the 12th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let cpu = (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / hz;
        (rss, cpu)
    }

    fn log_has(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|l| l.contains(needle))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let _ = limiter::remove_tree(&self.pins);
        nri_bandwidth_testkit::testbed::remove_test_cgroup(&self.scope);
    }
}

fn wait(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < limit, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

fn synthetic_pod(i: usize, nodes: usize) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("synthetic-{i}"),
            "annotations": {"kubernetes.io/ingress-bandwidth": "10M"}
        },
        "spec": {
            "nodeName": format!("synthetic-node-{}", i % nodes),
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "app", "image": "localhost/none:0"}]
        }
    }))
    .unwrap()
}

fn pod_status(i: usize, nodes: usize) -> serde_json::Value {
    let ip = format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256);
    serde_json::json!({"status": {
        "phase": "Running",
        "hostIP": format!("10.254.{}.{}", (i % nodes) / 256, (i % nodes) % 256 + 1),
        "podIP": ip,
        "podIPs": [{"ip": ip}]
    }})
}

fn main() {
    let mut args = std::env::args().skip(1);
    let pods: usize = args.next().map_or(10_000, |a| a.parse().expect("PODS"));
    let nodes: usize = args.next().map_or(100, |a| a.parse().expect("NODES"));
    assert!(nri_bandwidth_testkit::is_root(), "watch-scale needs root");

    let c = Cluster::start("s", 84);
    let cgfs = CgroupFs::detect().expect("cgroup v2");
    let scope_rel = format!("/nri-bandwidth-test/scale-{}", std::process::id());
    let scope = cgfs.create(&scope_rel).expect("senders' cgroup");
    let pins = test_pin_root("scale");
    let log = c.dir.join("logs").join("scale-daemon.log");
    // The guard first: a failed start still removes the cgroup and pins.
    let mut d = Daemon {
        child: None,
        pins: pins.clone(),
        scope,
        log: log.clone(),
    };
    d.child = Some(Daemon::start(&c, &pins, &scope_rel, &log));
    wait("the daemon's first list", Duration::from_secs(60), || {
        d.log_has("cluster watch: 0 address(es)")
    });
    std::thread::sleep(Duration::from_secs(2));
    let (rss0, _) = d.usage();

    // Nodes and pods, then their status, as a kubelet would write it.
    let kubeconfig = c.dir.join("admin.kubeconfig");
    let t = Instant::now();
    c.in_node_net(move |rt| {
        rt.block_on(async move {
            let (client, _) = nri_plugin::k8s::connect(Some(&kubeconfig), Some("scale"))
                .await
                .expect("API client");
            let node_api: Api<Node> = Api::all(client.clone());
            for n in 0..nodes {
                let node: Node = serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": format!("synthetic-node-{n}")}
                }))
                .unwrap();
                node_api
                    .create(&PostParams::default(), &node)
                    .await
                    .expect("node");
            }
            let api: Api<Pod> = Api::namespaced(client, "default");
            futures::stream::iter(0..pods)
                .map(|i| {
                    let api = api.clone();
                    async move {
                        let p = synthetic_pod(i, nodes);
                        api.create(&PostParams::default(), &p).await.expect("pod");
                        api.patch_status(
                            &format!("synthetic-{i}"),
                            &PatchParams::default(),
                            &Patch::Merge(pod_status(i, nodes)),
                        )
                        .await
                        .expect("pod status");
                    }
                })
                .buffer_unordered(16)
                .collect::<Vec<()>>()
                .await;
        })
    });
    let created = t.elapsed();
    let dp = Datapath::open_existing(&pins)
        .expect("the daemon's pins")
        .expect("the daemon pinned nothing");
    let count = |dp: &Datapath| dp.destinations().map_or(0, |v| v.len());
    let caught_up = wait(
        "every pod in the senders' map",
        Duration::from_secs(120),
        || count(&dp) >= pods,
    );
    std::thread::sleep(Duration::from_secs(3));
    let (rss_full, cpu_a) = d.usage();
    let steady = Duration::from_secs(20);
    std::thread::sleep(steady);
    let (_, cpu_b) = d.usage();

    // A restart: the whole list at once.
    d.stop();
    let t = Instant::now();
    d.child = Some(Daemon::start(&c, &pins, &scope_rel, &log));
    let want = format!("cluster watch: {pods} address(es)");
    let relist = wait(
        "the restarted daemon's list",
        Duration::from_secs(300),
        || d.log_has(&want),
    );
    let (rss_restart, cpu_restart) = d.usage();
    let _ = t;

    let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    println!(
        "# The cluster watch at {pods} limited pods on {nodes} other nodes ({} from modules)\n",
        nri_bandwidth_tests::cluster::K8S_VERSION
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| daemon resident memory, no limited pods | {} |",
        mib(rss0)
    );
    println!(
        "| {pods} pods created and given a status (API, 16 at a time) | {:.1} s |",
        created.as_secs_f64()
    );
    println!(
        "| last status written → every address in the senders' map | {:.2} s |",
        caught_up.as_secs_f64()
    );
    println!("| senders'-map entries | {} |", count(&dp));
    println!(
        "| daemon resident memory, {pods} pods | {} |",
        mib(rss_full)
    );
    println!(
        "| daemon CPU with nothing changing ({} s, 250 ms exchange interval) | {:.3} CPU-s/s |",
        steady.as_secs(),
        (cpu_b - cpu_a) / steady.as_secs_f64()
    );
    println!(
        "| restart → whole list in the directory | {:.2} s, {:.2} CPU-s, {} resident |",
        relist.as_secs_f64(),
        cpu_restart,
        mib(rss_restart)
    );
    drop(d);
    drop(c);
}
