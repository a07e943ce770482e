//! Two nodes of one cluster (tests/src/cluster.rs: the second node joined with its
//! own containerd and kubelet, the nodes linked through the delay line): the Helm
//! chart with sender-side ingress on both nodes, a limited pod on one node and its
//! peer pod on the other. Checked with traffic between the pods: ingress held at
//! the sending node (no retransmissions, which the receiver's gate alone would
//! cause), egress at the limited pod, both at 0.2 and 2 ms one way; the sending
//! node's share follows an annotation change. Needs root, NRI_BANDWIDTH_PRIVILEGED=1
//! and NRI_BANDWIDTH_E2E=1 (`make e2e`).

use std::time::Duration;

use nri_bandwidth_tests::cluster::Cluster;
use nri_bandwidth_tests::e2e::{enabled, near};
use nri_bandwidth_tests::two_nodes::{
    annotate_receiver, flows, start_pods, wait_forgotten, wait_share,
};

const LIMIT: u64 = 10_000_000;

/// Ingress paced at the sending node: the rate, and retransmissions of the
/// order of none (the receiver's gate alone retransmits percents at this
/// delay; the benchmark has the figures).
fn check_ingress(c: &Cluster, ip: &str, what: &str, n: u32, cc: &str, limit: u64) {
    let r = flows(c, "sender", ip, "R", 4, n, cc);
    near(
        &format!("{what}: ingress from the other node, {n} x {cc}"),
        r.bps,
        limit as f64,
    );
    eprintln!(
        "  retransmitted {} of {} segments ({:.3} %)",
        r.retrans,
        r.segs,
        r.retr_pct()
    );
    assert!(
        r.retr_pct() <= 1.0,
        "{what}: {:.2} % of segments retransmitted: the sender was not paced",
        r.retr_pct()
    );
}

#[test]
fn pods_on_two_nodes_are_limited_both_ways_and_paced_at_the_sender() {
    if !enabled() {
        return;
    }
    let mut c = Cluster::start("x", 87);
    c.join("y", 88, Duration::from_micros(200));
    // Each node paces the sockets of its own pods only (both nodes share this
    // kernel, so `/` would be both).
    let scope = format!("senders.scope=/$(NODE_NAME)-{}", std::process::id());
    c.install_chart(&["senders.enabled=true", &scope]);
    let log = || c.container_log("kube-system", "nri-bandwidth-", "nri-bandwidth");
    c.wait(
        "both daemons registered with NRI, pacing and exchanging shares",
        Duration::from_secs(60),
        |_| {
            let l = log();
            l.matches("registered as 50-bandwidth").count() >= 2
                && l.matches("are paced toward limited pods").count() >= 2
                && l.matches("share exchange on udp port").count() >= 2
        },
    );

    let ip = start_pods(&c, LIMIT);
    let learned = wait_share(&c, &c.nodes[1], &ip, LIMIT, Duration::from_secs(30));
    eprintln!("the sending node learned the receiver's limit {learned:?} after it was Ready");

    for n in [1, 8] {
        check_ingress(&c, &ip, "0.2 ms", n, "cubic", LIMIT);
    }
    // Both daemons read the chart's key: node a's answers to node b's demand
    // (sent while its sockets were active) came sealed and verified.
    let l = log();
    assert!(
        l.contains("answers from") && !l.contains("seal does not verify"),
        "no verified answer from the receiving node; daemons' logs:\n{l}"
    );
    check_ingress(&c, &ip, "0.2 ms", 1, "bbr", LIMIT);
    // The limited pod sends to the other node at its egress limit.
    near(
        "0.2 ms: egress to the other node",
        flows(&c, "sender", &ip, "S", 4, 1, "cubic").bps,
        LIMIT as f64,
    );

    c.set_delay(Duration::from_millis(2));
    check_ingress(&c, &ip, "2 ms", 1, "cubic", LIMIT);
    near(
        "2 ms: egress to the other node",
        flows(&c, "sender", &ip, "S", 4, 1, "cubic").bps,
        LIMIT as f64,
    );

    // An annotation change reaches the other node's senders through the
    // cluster watch, without any traffic.
    annotate_receiver(&c, "ingress", 2 * LIMIT);
    let took = wait_share(&c, &c.nodes[1], &ip, 2 * LIMIT, Duration::from_secs(10));
    eprintln!("annotation change to the remote sender's rate: {took:?}");
    check_ingress(&c, &ip, "2 ms, changed", 1, "cubic", 2 * LIMIT);

    // The pod gone: the other node forgets it.
    c.kubectl_ok(&["delete", "pod", "receiver", "--wait=true"]);
    wait_forgotten(
        &c.nodes[1],
        &ip,
        Duration::from_secs(30),
        "the pod was deleted",
    );
}
