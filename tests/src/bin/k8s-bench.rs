//! Figures of the daemon on a real Kubernetes node (tests/src/cluster.rs), as a
//! markdown table on stdout:
//! - watch-to-kernel latency: from the API call that changes a running pod's
//!   annotation to the new rate in the node's pinned limit, over N changes;
//! - the daemon's resident memory with the watch on, at 0 and at M limited pods.
//!
//! usage: k8s-bench [CHANGES (100)] [PODS (100)]     (root; `make bench-k8s`)

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use nri_bandwidth_core::datapath::Datapath;
use nri_bandwidth_tests::cluster::Cluster;

const PIN_ROOT: &str = "/sys/fs/bpf/nri-bandwidth";

fn pod_yaml(name: &str, ingress: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations:
    kubernetes.io/ingress-bandwidth: {ingress}
    kubernetes.io/egress-bandwidth: 5M
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: app
      image: localhost/bwload:e2e
      imagePullPolicy: Never
      args: ["serve", ":8080"]
"#
    )
}

/// The pod's ingress limit in the node's pins (read through the node's root).
fn kernel_ingress(dp: &Datapath, pod: &str) -> Option<u64> {
    dp.list()
        .ok()?
        .into_iter()
        .find(|e| e.owner.pod_name == pod && e.owner.container.is_empty())
        .and_then(|e| e.ingress_bps)
}

/// The daemon's resident set in KiB: the process running the DaemonSet's
/// binary with the DaemonSet's socket argument.
fn daemon_rss_kib() -> Option<u64> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.starts_with("/usr/local/bin/nri-bandwidth\0")
            && cmd.contains("--socket=/var/run/nri/")
        {
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            return status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
        }
    }
    None
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let changes: usize = args.next().map_or(100, |a| a.parse().expect("CHANGES"));
    let pods: usize = args.next().map_or(100, |a| a.parse().expect("PODS"));

    let t = Instant::now();
    let c = Cluster::start("b", 82);
    let ready = t.elapsed();
    c.install_daemonset();
    c.apply(&pod_yaml("latency", "10M"));
    c.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/latency",
        "--timeout=120s",
    ]);
    let pins = c.node_path(PIN_ROOT);
    let dp = Datapath::open_existing(&pins)
        .expect("the node's pins")
        .expect("the daemon pinned nothing");
    let t = Instant::now();
    while kernel_ingress(&dp, "latency") != Some(10_000_000) {
        assert!(t.elapsed() < Duration::from_secs(30), "pod never limited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rss_one = daemon_rss_kib();

    // N changes, each waited for in the pins before the next.
    let kubeconfig = c.dir.join("admin.kubeconfig");
    let dp_path = pins.clone();
    let mut lat = c.in_node_net(move |rt| {
        rt.block_on(async move {
            let (client, _) = nri_plugin::k8s::connect(Some(&kubeconfig), Some("bench"))
                .await
                .expect("API client");
            let client: Client = client;
            let api: Api<Pod> = Api::namespaced(client, "default");
            let dp = Datapath::open_existing(&dp_path).unwrap().unwrap();
            let mut lat = Vec::with_capacity(changes);
            for i in 0..changes {
                let mbit = 11 + (i % 40) as u64;
                let patch = serde_json::json!({"metadata": {"annotations": {
                    "kubernetes.io/ingress-bandwidth": format!("{mbit}M")}}});
                let t = Instant::now();
                api.patch("latency", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("patch");
                while kernel_ingress(&dp, "latency") != Some(mbit * 1_000_000) {
                    assert!(
                        t.elapsed() < Duration::from_secs(10),
                        "change {i} not applied"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                lat.push(t.elapsed());
                // Distinct values in a row: back to 10M is not needed, 11..50M cycle.
            }
            lat
        })
    });
    lat.sort();

    // M limited pods, then the daemon's memory.
    let t = Instant::now();
    let many: String = (0..pods)
        .map(|i| pod_yaml(&format!("many-{i}"), "20M"))
        .collect::<Vec<_>>()
        .join("---\n");
    c.apply(&many);
    let dp_many = Datapath::open_existing(&pins).unwrap().unwrap();
    loop {
        let n = dp_many
            .list()
            .map(|l| {
                l.iter()
                    .filter(|e| e.owner.pod_name.starts_with("many-"))
                    .count()
            })
            .unwrap_or(0);
        if n >= pods {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(900),
            "only {n} of {pods} pods limited after 15 min"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let pods_up = t.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    let rss_many = daemon_rss_kib();

    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    println!(
        "# nri-bandwidth on a Kubernetes node ({} from modules)\n",
        nri_bandwidth_tests::cluster::K8S_VERSION
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| watch-to-kernel latency, {} changes: p50 / p99 / max | {} / {} / {} ms |",
        lat.len(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().unwrap())
    );
    let kib = |v: Option<u64>| v.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!("| daemon RSS, watch on, 1 limited pod | {} |", kib(rss_one));
    println!(
        "| daemon RSS, watch on, {} limited pods | {} |",
        pods + 1,
        kib(rss_many)
    );
    println!(
        "| cluster start to node Ready | {:.1} s |",
        ready.as_secs_f64()
    );
    println!(
        "| {pods} pods created to all limited | {:.1} s |",
        pods_up.as_secs_f64()
    );
    println!(
        "\nLatency: from the API call that patches the pod's annotation (kube-rs, \
         merge patch) to the new rate read back from the node's pinned limit \
         (polled every millisecond)."
    );
}
