//! Pod-to-pod traffic between the nodes of a [`Cluster`] and what a node's
//! senders are paced toward, for the two-node suite and benchmark.

use std::time::{Duration, Instant};

use crate::cluster::{Cluster, Node};
use crate::e2e::peers;
use crate::workspace_bin;

/// The port of the bwload servers in [`pod`].
pub const PORT: u16 = 8080;

/// A bwload server pod bound to `node` (no scheduler decision to wait for).
pub fn pod(name: &str, node: &str, annotations: serde_json::Value) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "bwload",
                "image": "localhost/bwload:e2e",
                "imagePullPolicy": "Never",
                "args": ["serve", format!(":{PORT}")],
                // Choosing bbr needs it when bbr is not in the node's allowed list.
                "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}
            }]
        }
    })
    .to_string()
}

/// The pods every two-node run uses: `receiver` on the first node with
/// `bps` as both limits, `sender` on the joined one; returns the receiver's
/// address once both are Ready.
pub fn start_pods(c: &Cluster, bps: u64) -> String {
    c.apply(&pod(
        "receiver",
        &c.nodes[0].name,
        serde_json::json!({
            "kubernetes.io/ingress-bandwidth": bps.to_string(),
            "kubernetes.io/egress-bandwidth": bps.to_string(),
        }),
    ));
    c.apply(&pod("sender", &c.nodes[1].name, serde_json::json!({})));
    for p in ["receiver", "sender"] {
        c.kubectl_ok(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{p}"),
            "--timeout=120s",
        ]);
    }
    c.kubectl_ok(&["get", "pod", "receiver", "-o", "jsonpath={.status.podIP}"])
}

/// What one `bwload flows` run in a pod measured.
pub struct Run {
    pub bps: f64,
    pub retrans: f64,
    pub segs: f64,
}

impl Run {
    pub fn retr_pct(&self) -> f64 {
        100.0 * self.retrans / self.segs.max(1.0)
    }
}

/// `flows` transfers of `secs` (after a second of warm-up) with congestion
/// control `cc` from pod `from` to `ip`: mode "R" = the server's pod receives,
/// "S" = it sends.
pub fn flows(
    c: &Cluster,
    from: &str,
    ip: &str,
    mode: &str,
    secs: u32,
    flows: u32,
    cc: &str,
) -> Run {
    let args = bwload_args(ip, mode, secs, flows, cc);
    let mut argv = vec!["exec", from, "--", "/bwload"];
    argv.extend(args.iter().map(String::as_str));
    parse_run(&c.kubectl_ok(&argv))
}

/// The same from node `n`'s own network namespace, outside every pod (so not
/// paced by the node's senders' program).
pub fn flows_from_node(n: &Node, ip: &str, mode: &str, secs: u32, flows: u32, cc: &str) -> Run {
    let out = n
        .in_node(peers().join("images/bwload"))
        .args(bwload_args(ip, mode, secs, flows, cc))
        .output()
        .expect("running bwload");
    assert!(
        out.status.success(),
        "bwload on {}: {}",
        n.name,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_run(String::from_utf8_lossy(&out.stdout).trim())
}

fn bwload_args(ip: &str, mode: &str, secs: u32, flows: u32, cc: &str) -> Vec<String> {
    vec![
        "flows".into(),
        format!("{ip}:{PORT}"),
        mode.into(),
        secs.to_string(),
        flows.to_string(),
        cc.into(),
    ]
}

fn parse_run(out: &str) -> Run {
    let v: Vec<f64> = out
        .split_whitespace()
        .map(|x| {
            x.parse()
                .unwrap_or_else(|_| panic!("bwload printed {out:?}"))
        })
        .collect();
    assert_eq!(v.len(), 3, "bwload printed {out:?}");
    Run {
        bps: v[0],
        retrans: v[1],
        segs: v[2],
    }
}

/// Sets the receiver pod's limit in `dir` ("ingress" or "egress") to `bps` with
/// kubectl, as an operator changes it on a running pod.
pub fn annotate_receiver(c: &Cluster, dir: &str, bps: u64) {
    c.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "pod/receiver",
        &format!("kubernetes.io/{dir}-bandwidth={bps}"),
    ]);
}

/// The destinations a node's senders are paced toward (`bwctl senders list`).
pub fn destination(n: &Node, ip: &str) -> Option<serde_json::Value> {
    let out = n
        .in_node(workspace_bin("bwctl"))
        .args(["senders", "list", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bwctl senders list on {}: {}",
        n.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    rows.into_iter().find(|r| r["address"] == ip)
}

/// Waits until node `n` no longer paces toward `ip` (its limit lifted or its pod
/// gone); panics with `why` after `limit`.
pub fn wait_forgotten(n: &Node, ip: &str, limit: Duration, why: &str) {
    let t = Instant::now();
    while destination(n, ip).is_some() {
        assert!(
            t.elapsed() < limit,
            "{} still paces toward {ip} {limit:?} after {why}",
            n.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until node `n` paces its senders toward `ip` at `bps` as a remote
/// destination (its share is the whole limit: no other node sends there);
/// returns how long that took.
pub fn wait_share(c: &Cluster, n: &Node, ip: &str, bps: u64, limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let d = destination(n, ip);
        // Shares are whole bytes per second: within 1 % of the limit.
        if d.as_ref().is_some_and(|d| {
            d["place"] == "remote"
                && d["rate_bps"]
                    .as_u64()
                    .is_some_and(|r| r.abs_diff(bps) <= bps / 100)
        }) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < limit,
            "{} paces toward {ip} as {d:?}, not a remote destination at {bps} bit/s, after {limit:?}; daemons' logs:\n{}",
            n.name,
            c.container_log("kube-system", "nri-bandwidth-", "nri-bandwidth")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
