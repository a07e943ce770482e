//! `two-node-bench`: pod-to-pod traffic between two real nodes of one cluster
//! (tests/src/cluster.rs: two kubelets and containerds, linked through the delay
//! line), with the Helm chart's sender-side ingress on both, as a markdown table
//! on stdout. A limited pod on node a; traffic from a pod on node b (its node
//! paces it: ingress held at the sender), from node b's own host process (not in
//! any pod, so not paced: the receiver's gate holds it, as for a sender outside
//! the cluster), and from the limited pod to node b's pod (egress). Before the
//! limited cells of each delay, the same pods with no limit: what the path itself
//! carries, the ceiling the 1G cells are read against. Then the time from an
//! annotation change to the new rate at node b's senders.
//!
//! usage: two-node-bench [--delays 0.2,2] [--rates 1M,10M,100M,1G] [--flows 1,8]
//!        [--cc cubic,bbr] [--seconds 4] [--changes 10]     (root; `make bench-two-nodes`)

use std::time::{Duration, Instant};

use clap::Parser;
use nri_bandwidth_core::rate::Rate;
use nri_bandwidth_tests::cluster::Cluster;
use nri_bandwidth_tests::human_bps;
use nri_bandwidth_tests::interrupt::{install_signal_handlers, interrupted};
use nri_bandwidth_tests::two_nodes::{
    Run, annotate_receiver, flows, flows_from_node, start_pods, wait_forgotten, wait_share,
};

#[derive(Parser)]
#[command(name = "two-node-bench")]
struct Args {
    /// One-way delays between the nodes, ms.
    #[arg(long, value_delimiter = ',', default_value = "0.2,2")]
    delays: Vec<f64>,
    #[arg(long, value_delimiter = ',', default_value = "1M,10M,100M,1G")]
    rates: Vec<Rate>,
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    flows: Vec<u32>,
    #[arg(long, value_delimiter = ',', default_value = "cubic,bbr")]
    cc: Vec<String>,
    /// Measured seconds per cell (after one second of warm-up).
    #[arg(long, default_value_t = 4)]
    seconds: u32,
    /// Annotation changes timed to the remote sender's rate.
    #[arg(long, default_value_t = 10)]
    changes: u32,
}

struct Row {
    delay: f64,
    path: &'static str,
    rate: u64,
    flows: u32,
    cc: String,
    run: Run,
}

/// The same pods with no limit on either side.
struct Ceiling {
    delay: f64,
    flows: u32,
    cc: String,
    ingress: Run,
    egress: Run,
}

/// Removes the receiver's limits and waits until node b no longer paces toward it.
fn lift_limit(c: &Cluster, ip: &str) {
    for dir in ["ingress", "egress"] {
        c.kubectl_ok(&[
            "annotate",
            "pod/receiver",
            &format!("kubernetes.io/{dir}-bandwidth-"),
        ]);
    }
    wait_forgotten(
        &c.nodes[1],
        ip,
        Duration::from_secs(20),
        "its limits were removed",
    );
}

fn set_limit(c: &Cluster, ip: &str, bps: u64) {
    for dir in ["ingress", "egress"] {
        annotate_receiver(c, dir, bps);
    }
    wait_share(c, &c.nodes[1], ip, bps, Duration::from_secs(20));
}

fn main() {
    let a = Args::parse();
    // The cluster's drop removes it: an interrupt stops after the current cell.
    install_signal_handlers();
    let started = Instant::now();
    let mut c = Cluster::start("p", 89);
    let first = Duration::from_secs_f64(a.delays[0] / 1000.0);
    c.join("q", 90, first);
    let scope = format!("senders.scope=/$(NODE_NAME)-{}", std::process::id());
    c.install_chart(&["senders.enabled=true", &scope]);
    let (na, nb) = (c.nodes[0].name.clone(), c.nodes[1].name.clone());
    let ip = start_pods(&c, a.rates[0].bits_per_sec());
    eprintln!(
        "two-node-bench: cluster of {na} and {nb} up in {:?}",
        started.elapsed()
    );

    let mut rows = Vec::new();
    let mut ceilings = Vec::new();
    for (i, &delay) in a.delays.iter().enumerate() {
        if i > 0 {
            c.set_delay(Duration::from_secs_f64(delay / 1000.0));
        }
        lift_limit(&c, &ip);
        for &n in &a.flows {
            for cc in &a.cc {
                if interrupted() {
                    break;
                }
                let ingress = flows(&c, "sender", &ip, "R", a.seconds, n, cc);
                let egress = flows(&c, "sender", &ip, "S", a.seconds, n, cc);
                eprintln!(
                    "  {delay} ms no limit x{n} {cc}: into the pod {}, out {}",
                    human_bps(ingress.bps),
                    human_bps(egress.bps)
                );
                ceilings.push(Ceiling {
                    delay,
                    flows: n,
                    cc: cc.clone(),
                    ingress,
                    egress,
                });
            }
        }
        for &rate in &a.rates {
            let bps = rate.bits_per_sec();
            set_limit(&c, &ip, bps);
            for &n in &a.flows {
                for cc in &a.cc {
                    for path in ["pod on node b", "host of node b", "egress to node b"] {
                        if interrupted() {
                            print_report(&a, &rows, &ceilings, &mut [], started.elapsed());
                            return;
                        }
                        let run = match path {
                            "pod on node b" => flows(&c, "sender", &ip, "R", a.seconds, n, cc),
                            "host of node b" => {
                                flows_from_node(&c.nodes[1], &ip, "R", a.seconds, n, cc)
                            }
                            _ => flows(&c, "sender", &ip, "S", a.seconds, n, cc),
                        };
                        eprintln!(
                            "  {delay} ms {} x{n} {cc} {path}: {:.3} retr {:.2} %",
                            human_bps(bps as f64),
                            run.bps / bps as f64,
                            run.retr_pct()
                        );
                        rows.push(Row {
                            delay,
                            path,
                            rate: bps,
                            flows: n,
                            cc: cc.clone(),
                            run,
                        });
                    }
                }
            }
        }
    }

    // Annotation changes to node b's senders, alternating between two rates.
    let mut follow = Vec::new();
    let base = a.rates.iter().map(|r| r.bits_per_sec()).min().unwrap();
    for k in 0..a.changes {
        if interrupted() {
            break;
        }
        let bps = if k % 2 == 0 { 2 * base } else { base };
        annotate_receiver(&c, "ingress", bps);
        follow.push(wait_share(
            &c,
            &c.nodes[1],
            &ip,
            bps,
            Duration::from_secs(20),
        ));
    }

    print_report(&a, &rows, &ceilings, &mut follow, started.elapsed());
}

fn print_report(
    a: &Args,
    rows: &[Row],
    ceilings: &[Ceiling],
    follow: &mut [Duration],
    took: Duration,
) {
    println!("# Two nodes: pod-to-pod traffic across the delay line\n");
    println!(
        "`two-node-bench` ({} s per cell after 1 s of warm-up; whole run {:.0} s). Two \
         kubelets with their own containerd and network namespace on one kernel, \
         linked through the user-space delay line; the chart with `senders.enabled` \
         on both. Goodput is what the connections delivered after the warm-up (the \
         sockets' own acknowledged or received bytes); retransmitted is the \
         sending sockets' own count over all segments they sent \
         (not known for egress, sent by the limited pod).\n",
        a.seconds,
        took.as_secs_f64()
    );
    println!("## Ingress held at the senders, between real nodes\n");
    println!("| one way | sender | limit | flows | cc | goodput / limit | retransmitted |");
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        let retr = if r.path.starts_with("egress") {
            "-".to_string()
        } else {
            format!("{:.2} %", r.run.retr_pct())
        };
        println!(
            "| {} ms | {} | {} | {} | {} | {:.3} | {} |",
            r.delay,
            r.path,
            human_bps(r.rate as f64),
            r.flows,
            r.cc,
            r.run.bps / r.rate as f64,
            retr
        );
    }
    // The goodput band, the same for every path.
    let (lo, hi) = (0.94, 1.0);
    println!();
    for p in ["pod on node b", "host of node b", "egress to node b"] {
        let v: Vec<&Row> = rows.iter().filter(|r| r.path == p).collect();
        let ok = v
            .iter()
            .filter(|r| (lo..=hi).contains(&(r.run.bps / r.rate as f64)))
            .count();
        println!(
            "- {p}: {ok} of {} cells in [{lo}, {hi}] of the limit",
            v.len()
        );
    }
    if !ceilings.is_empty() {
        println!(
            "\n## The path without a limit\n\nThe same pods with the receiver's \
             annotations removed (no program attached to either pod, node b not \
             pacing toward it): what this two-node setup carries at all, the ceiling \
             the 1G cells are read against.\n"
        );
        println!(
            "| one way | flows | cc | node b's pod → limited pod | retransmitted | limited pod → node b's pod |"
        );
        println!("|---|---|---|---|---|---|");
        for r in ceilings {
            println!(
                "| {} ms | {} | {} | {} | {:.2} % | {} |",
                r.delay,
                r.flows,
                r.cc,
                human_bps(r.ingress.bps),
                r.ingress.retr_pct(),
                human_bps(r.egress.bps)
            );
        }
    }
    follow.sort();
    if !follow.is_empty() {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "\n## An annotation change to the other node's senders\n\n\
             {} changes of the pod's ingress annotation, each timed from `kubectl \
             annotate` returning to node b's senders' map holding the new rate \
             (polled every 20 ms with `bwctl senders list`): median {:.0} ms, \
             slowest {:.0} ms.",
            follow.len(),
            ms(follow[follow.len() / 2]),
            ms(follow[follow.len() - 1])
        );
    }
}
