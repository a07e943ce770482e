//! End to end on a real Kubernetes node (tests/src/cluster.rs: apiserver, etcd,
//! controller-manager, scheduler and kubelet built from their modules, on the e2e
//! containerd): the DaemonSet and RBAC from examples/ applied with kubectl, the
//! example pod's limits measured with traffic, live changes from the pod watch,
//! Events, and the daemon pod recreated while an annotation changes.
//! Needs root, NRI_BANDWIDTH_PRIVILEGED=1 and NRI_BANDWIDTH_E2E=1 (`make e2e`).

use std::time::{Duration, Instant};

use nri_bandwidth_tests::cluster::Cluster;
use nri_bandwidth_tests::e2e::{enabled, near, workspace};
use nri_bandwidth_tests::workspace_bin;

const PORT: u16 = 8080;
const DS_LABEL: &str = "app.kubernetes.io/name=nri-bandwidth";

fn read_yaml(rel: &str) -> serde_yaml::Value {
    let text = std::fs::read_to_string(workspace().join(rel)).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// examples/pod-bandwidth.yaml with its container swapped for the e2e server
/// image (the example's agnhost image is not on this offline machine); the
/// annotations, the part under test, are the file's own.
fn example_pod() -> String {
    let mut pod = read_yaml("examples/pod-bandwidth.yaml");
    let c = &mut pod["spec"]["containers"][0];
    c["image"] = "localhost/bwload:e2e".into();
    c["imagePullPolicy"] = "Never".into();
    c["args"] = serde_yaml::to_value(["serve", &format!(":{PORT}")]).unwrap();
    serde_yaml::to_string(&pod).unwrap()
}

/// The limit the node's kernel holds for a pod, from `bwctl list --json` run in
/// the node (its pins are on the node's private bpffs).
fn kernel_limit(c: &Cluster, pod: &str) -> Option<(Option<u64>, Option<u64>)> {
    let out = c
        .in_node(workspace_bin("bwctl"))
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bwctl list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    list.iter()
        .find(|e| e["owner"]["pod_name"] == pod && e["owner"]["container"] == "")
        .map(|e| (e["ingress_bps"].as_u64(), e["egress_bps"].as_u64()))
}

fn events(c: &Cluster, pod: &str) -> Vec<serde_json::Value> {
    let out = c.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

fn wait_event(c: &Cluster, pod: &str, kind: &str, reason: &str) -> serde_json::Value {
    let t = Instant::now();
    loop {
        if let Some(e) = events(c, pod)
            .into_iter()
            .find(|e| e["type"] == kind && e["reason"] == reason)
        {
            return e;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no {kind} {reason} Event for {pod}: {:#?}",
            events(c, pod)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The daemon pod's name (there is one node).
fn daemon_pod(c: &Cluster) -> String {
    c.kubectl_ok(&[
        "-n",
        "kube-system",
        "get",
        "pods",
        "-l",
        DS_LABEL,
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])
}

fn annotate(c: &Cluster, kv: &str) {
    c.kubectl_ok(&["annotate", "--overwrite", "pod/bandwidth-demo", kv]);
}

/// Waits until the kernel holds `want` for the pod; returns how long it took.
fn wait_kernel(c: &Cluster, want: (Option<u64>, Option<u64>), limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let have = kernel_limit(c, "bandwidth-demo");
        if have == Some(want) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < limit,
            "the node still holds {have:?}, not {want:?}, after {limit:?}; daemon log:\n{}",
            c.container_log("kube-system", "nri-bandwidth-", "nri-bandwidth")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_daemonset_limits_pods_and_follows_their_annotations() {
    if !enabled() {
        return;
    }
    let c = Cluster::start("k", 81);

    c.install_daemonset();
    let log = || c.container_log("kube-system", "nri-bandwidth-", "nri-bandwidth");
    c.wait(
        "the daemon registered with NRI and watching pods",
        Duration::from_secs(60),
        |_| {
            let l = log();
            l.contains("registered as 50-bandwidth") && l.contains("pod watch on")
        },
    );

    // The example pod: both limits measured with traffic from the node.
    c.apply(&example_pod());
    c.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/bandwidth-demo",
        "--timeout=120s",
    ]);
    let ip = c.kubectl_ok(&[
        "get",
        "pod",
        "bandwidth-demo",
        "-o",
        "jsonpath={.status.podIP}",
    ]);
    assert_eq!(
        kernel_limit(&c, "bandwidth-demo"),
        Some((Some(10_000_000), Some(5_000_000)))
    );
    near("ingress 10M", c.measure(&ip, PORT, "R", 3), 10e6);
    near("egress 5M", c.measure(&ip, PORT, "S", 3), 5e6);
    let applied = wait_event(&c, "bandwidth-demo", "Normal", "BandwidthLimited");
    eprintln!("event: {}", applied["message"]);

    // A changed annotation: the running pod's limit changes in place.
    annotate(&c, "kubernetes.io/ingress-bandwidth=20M");
    let took = wait_kernel(
        &c,
        (Some(20_000_000), Some(5_000_000)),
        Duration::from_secs(5),
    );
    eprintln!("annotation change to kernel: {took:?}");
    near("ingress changed to 20M", c.measure(&ip, PORT, "R", 3), 20e6);
    wait_event(&c, "bandwidth-demo", "Normal", "BandwidthChanged");

    // A malformed value: a Warning Event naming it; the limit in force stays.
    annotate(&c, "kubernetes.io/egress-bandwidth=5 lots");
    let warning = wait_event(&c, "bandwidth-demo", "Warning", "InvalidBandwidth");
    let msg = warning["message"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains("kubernetes.io/egress-bandwidth") && msg.contains("5 lots"),
        "the Warning should name the key and the value: {msg}"
    );
    assert_eq!(
        kernel_limit(&c, "bandwidth-demo"),
        Some((Some(20_000_000), Some(5_000_000)))
    );

    // The daemon pod deleted; while the DaemonSet brings it back, the annotation
    // changes: the new daemon applies it when it comes back.
    let old = daemon_pod(&c);
    c.kubectl_ok(&["-n", "kube-system", "delete", "pod", &old, "--wait=true"]);
    annotate(&c, "kubernetes.io/ingress-bandwidth=5M");
    annotate(&c, "kubernetes.io/egress-bandwidth=8M");
    c.daemonset_ready();
    let new = daemon_pod(&c);
    assert_ne!(old, new, "the DaemonSet made a new daemon pod");
    wait_kernel(
        &c,
        (Some(5_000_000), Some(8_000_000)),
        Duration::from_secs(60),
    );
    near(
        "ingress changed while the daemon was away, 5M",
        c.measure(&ip, PORT, "R", 3),
        5e6,
    );
    near("egress 8M", c.measure(&ip, PORT, "S", 3), 8e6);

    // Annotations removed: unlimited in place.
    c.kubectl_ok(&[
        "annotate",
        "pod/bandwidth-demo",
        "kubernetes.io/ingress-bandwidth-",
        "kubernetes.io/egress-bandwidth-",
    ]);
    let t = Instant::now();
    while kernel_limit(&c, "bandwidth-demo").is_some() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the limit stayed after its annotations were removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    annotate(&c, "kubernetes.io/ingress-bandwidth=10M");
    wait_kernel(&c, (Some(10_000_000), None), Duration::from_secs(5));

    // Deleted: nothing of it left in the node's pins. The limit goes with the
    // sandbox (RemovePodSandbox), which the kubelet removes at its next garbage
    // collection, once a minute.
    c.kubectl_ok(&["delete", "pod", "bandwidth-demo", "--wait=true"]);
    let t = Instant::now();
    while kernel_limit(&c, "bandwidth-demo").is_some() {
        assert!(
            t.elapsed() < Duration::from_secs(150),
            "pins left 150 s after the pod was deleted"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("pod deleted to pins gone: {:?}", t.elapsed());
}
