//! `--cross-node`: ingress held at the senders of other nodes. The workload is a
//! pod on the receiving node (its own pin root and share-exchange agent); each
//! sending node is a pin root of its own with a cgroup holding its senders, the
//! senders' program and an agent, all on this kernel and talking over loopback.
//! The traffic crosses the testbed's delay line like any remote sender's.
//!
//! Per delay × rate × streams × congestion control: one sending node, then two
//! at once (each with `streams` flows); goodput against the limit, sender
//! retransmissions, and the first second. Per delay, once: how long a share takes
//! to follow a change in demand (a second node starts sending) and a change of
//! the pod's limit (the exchange's part; the API watch's comes on top).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_core::datapath::Datapath;
use nri_bandwidth_core::rate::Rate;
use nri_bandwidth_core::shares::agent::{Agent, Config, Directory, RemotePod};
use nri_bandwidth_testkit::testbed::{Iperf3, Iperf3Result};
use nri_bandwidth_tests::sender_node::SenderNode;
use nri_bandwidth_tests::share_key;

use crate::args::Args;
use crate::bench::{Bench, PinRoot, bench_owner, ingress_limit};
use crate::results::Report;
use nri_bandwidth_tests::interrupt::{interrupted, sleep_unless};

#[derive(Clone, Debug, Serialize)]
pub struct CrossRow {
    pub delay_ms: f64,
    pub rate_bps: u64,
    pub streams: u32,
    pub cc: String,
    pub nodes: u32,
    pub goodput_ratio: f64,
    pub retransmits: u64,
    pub retr_pct: f64,
    /// Node a's part of the total (two nodes; a and b run the same flows).
    pub part_a: Option<f64>,
    pub first_second_ratio: Option<f64>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FollowRow {
    pub delay_ms: f64,
    /// A second node starts sending: until node a's pace is at most 0.55 of the limit.
    pub demand_ms: Option<f64>,
    /// The pod's limit doubles: until node a's pace is at least 0.9 of the new share.
    pub limit_ms: Option<f64>,
}

struct Cluster {
    recv_dp: Datapath,
    _recv_agent: Agent,
    recv_addr: SocketAddr,
    nodes: Vec<(SenderNode, Agent, Arc<Mutex<Directory>>)>,
}

impl Cluster {
    fn start(pins: &PinRoot) -> Result<Cluster> {
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let recv_dp = Datapath::open(&pins.0).context("loading the receiving node's datapath")?;
        let recv_agent = Agent::start(
            Datapath::open(&pins.0)?,
            Config::new("node-r", lo, share_key()),
            Arc::new(Mutex::new(Directory {
                ready: true,
                ..Directory::default()
            })),
        )?;
        let recv_addr = recv_agent.local_addr();
        let mut nodes = Vec::new();
        for name in ["a", "b"] {
            let n = SenderNode::new(&format!("bench-node-{name}"))?;
            let dir = Arc::new(Mutex::new(Directory {
                ready: true,
                ..Directory::default()
            }));
            let agent = Agent::start(
                n.datapath()?,
                Config::new(&format!("node-{name}"), lo, share_key()),
                dir.clone(),
            )?;
            nodes.push((n, agent, dir));
        }
        Ok(Cluster {
            recv_dp,
            _recv_agent: recv_agent,
            recv_addr,
            nodes,
        })
    }

    /// The pod's ingress limit on its node, with its address as the plugin
    /// records it (the receiving agent answers only for those).
    fn limit_pod(
        &self,
        cg: &nri_bandwidth_core::cgroup::Cgroup,
        target: IpAddr,
        rate: Rate,
    ) -> Result<(), nri_bandwidth_core::datapath::DatapathError> {
        self.recv_dp
            .limit(cg, &ingress_limit(rate), &bench_owner())?;
        self.recv_dp
            .set_destinations(cg.id, &[target], Some(rate.bytes_per_sec()))
    }

    /// What the API would tell every sending node: the pod's address and limit.
    fn announce(&self, target: IpAddr, rate: Option<u64>) {
        for (_, _, dir) in &self.nodes {
            let mut d = dir.lock().unwrap();
            d.remote.clear();
            if let Some(rate) = rate {
                d.remote.insert(
                    target,
                    RemotePod {
                        rate,
                        node: self.recv_addr,
                        node_name: "node-r".into(),
                    },
                );
            }
        }
    }

    /// Node `i`'s pace toward `target`, bytes/s.
    fn pace(&self, i: usize, target: IpAddr) -> Option<u64> {
        self.nodes[i].0.dp.destination(target).ok()?.map(|d| d.rate)
    }
}

fn client(
    a: &Args,
    target: IpAddr,
    port: u16,
    streams: u32,
    cc: &str,
    scope: &SenderNode,
) -> Iperf3 {
    let mut c = Iperf3::new(target, port);
    c.seconds = a.seconds;
    c.omit = a.omit;
    c.streams = streams;
    c.congestion = Some(cc.to_string());
    c.interval = Some(0.1);
    c.cgroup = Some(scope.scope.clone());
    c
}

/// The receiver's goodput over the first second of the runs, added up.
fn first_second(runs: &[&Iperf3Result]) -> Option<f64> {
    let mut per_slot: HashMap<u64, f64> = HashMap::new();
    for r in runs {
        for (t, bps) in &r.receiver_series {
            if *t <= 1.0 + 1e-6 {
                *per_slot.entry((t * 10.0).round() as u64).or_default() += bps;
            }
        }
    }
    (!per_slot.is_empty()).then(|| per_slot.values().sum::<f64>() / per_slot.len() as f64)
}

pub fn cross_node_section(
    a: &Args,
    cgfs: &CgroupFs,
    rows: &mut Vec<CrossRow>,
    follow: &mut Vec<FollowRow>,
    report: &mut Report,
) -> Result<()> {
    for &delay in &a.delays {
        if interrupted() {
            break;
        }
        let pins = PinRoot(nri_bandwidth_tests::test_pin_root("bench-xnode"));
        let mut bench = Bench::new(a, cgfs, delay)?;
        let (cg, target, tb) = bench.workload();
        tb.start_iperf3_server(a.port + 1)
            .context("starting the second iperf3 server")?;
        let cluster = Cluster::start(&pins)?;
        for &rate in &a.rates {
            for &streams in &a.streams {
                for cc in &a.cc {
                    for nodes in [1u32, 2] {
                        if interrupted() {
                            return Ok(());
                        }
                        let row = cell(a, &cluster, &cg, target, delay, rate, streams, cc, nodes);
                        eprintln!(
                            "  {delay} ms {} x{streams} {cc} {nodes} node(s): {:.3} retr {} ({:.2}%){}",
                            nri_bandwidth_tests::human_bps(rate.bits_per_sec() as f64),
                            row.goodput_ratio,
                            row.retransmits,
                            row.retr_pct,
                            row.error
                                .as_deref()
                                .map(|e| format!(" error: {e}"))
                                .unwrap_or_default()
                        );
                        rows.push(row);
                        sleep_unless(Duration::from_secs_f64(a.pause), None);
                    }
                }
            }
        }
        follow.push(follow_times(a, &cluster, &cg, target, delay));
        drop(cluster);
        drop(bench);
    }
    table(rows, follow, report);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn cell(
    a: &Args,
    cluster: &Cluster,
    cg: &nri_bandwidth_core::cgroup::Cgroup,
    target: IpAddr,
    delay: f64,
    rate: Rate,
    streams: u32,
    cc: &str,
    nodes: u32,
) -> CrossRow {
    let mut row = CrossRow {
        delay_ms: delay,
        rate_bps: rate.bits_per_sec(),
        streams,
        cc: cc.to_string(),
        nodes,
        goodput_ratio: 0.0,
        retransmits: 0,
        retr_pct: 0.0,
        part_a: None,
        first_second_ratio: None,
        error: None,
    };
    if let Err(e) = cluster.limit_pod(cg, target, rate) {
        row.error = Some(format!("setting the limit: {e}"));
        return row;
    }
    cluster.announce(target, Some(rate.bytes_per_sec()));
    // The senders' maps take the pod within an interval.
    std::thread::sleep(Duration::from_millis(600));
    let clients: Vec<Iperf3> = (0..nodes as usize)
        .map(|i| {
            client(
                a,
                target,
                a.port + i as u16,
                streams,
                cc,
                &cluster.nodes[i].0,
            )
        })
        .collect();
    let results: Vec<std::io::Result<Iperf3Result>> = std::thread::scope(|s| {
        let hs: Vec<_> = clients.iter().map(|c| s.spawn(|| c.run())).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    cluster.announce(target, None);
    let _ = cluster.recv_dp.unlimit(cg.id, Duration::ZERO);
    let ok: Vec<Iperf3Result> = match results.into_iter().collect::<std::io::Result<Vec<_>>>() {
        Ok(v) => v,
        Err(e) => {
            row.error = Some(e.to_string());
            return row;
        }
    };
    let total: f64 = ok.iter().map(|r| r.received_bps).sum();
    let limit_bps = rate.bits_per_sec() as f64;
    row.goodput_ratio = total / limit_bps;
    row.retransmits = ok.iter().map(|r| r.retransmits).sum();
    let packets = total * f64::from(a.seconds) / 8.0 / 1448.0;
    row.retr_pct = if packets > 0.0 {
        row.retransmits as f64 * 100.0 / packets
    } else {
        0.0
    };
    if nodes == 2 && total > 0.0 {
        row.part_a = Some(ok[0].received_bps / total);
    }
    row.first_second_ratio = first_second(&ok.iter().collect::<Vec<_>>()).map(|b| b / limit_bps);
    row
}

/// Polls `f` every 5 ms for up to 5 s; the time until it held.
fn time_until(mut f: impl FnMut() -> bool) -> Option<f64> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if f() {
            return Some(t0.elapsed().as_secs_f64() * 1000.0);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Node a sends alone at 10M; node b starts; later the pod's limit doubles.
fn follow_times(
    a: &Args,
    cluster: &Cluster,
    cg: &nri_bandwidth_core::cgroup::Cgroup,
    target: IpAddr,
    delay: f64,
) -> FollowRow {
    let mut row = FollowRow {
        delay_ms: delay,
        demand_ms: None,
        limit_ms: None,
    };
    let rate = Rate::parse("10M").unwrap();
    let set = |r: Rate| cluster.limit_pod(cg, target, r);
    if set(rate).is_err() {
        return row;
    }
    cluster.announce(target, Some(rate.bytes_per_sec()));
    std::thread::sleep(Duration::from_millis(600));
    let full = rate.bytes_per_sec();
    let mut ca = client(a, target, a.port, 1, "cubic", &cluster.nodes[0].0);
    ca.seconds = 9;
    ca.omit = 0;
    ca.interval = None;
    let mut cb = client(a, target, a.port + 1, 1, "cubic", &cluster.nodes[1].0);
    cb.seconds = 3;
    cb.omit = 0;
    cb.interval = None;
    std::thread::scope(|s| {
        let ha = s.spawn(|| ca.run());
        std::thread::sleep(Duration::from_secs(2));
        let hb = s.spawn(|| cb.run());
        row.demand_ms = time_until(|| {
            cluster
                .pace(0, target)
                .is_some_and(|p| p * 100 <= full * 55)
        });
        let _ = hb.join();
        // Node b has stopped; node a has the whole limit again after the expiry.
        std::thread::sleep(Duration::from_millis(1500));
        let doubled = Rate::parse("20M").unwrap();
        let t0 = Instant::now();
        if set(doubled).is_ok() {
            cluster.announce(target, Some(doubled.bytes_per_sec()));
            let want = doubled.bytes_per_sec() * 9 / 10;
            row.limit_ms = time_until(|| cluster.pace(0, target).is_some_and(|p| p >= want))
                .map(|_| t0.elapsed().as_secs_f64() * 1000.0);
        }
        let _ = ha.join();
    });
    cluster.announce(target, None);
    let _ = cluster.recv_dp.unlimit(cg.id, Duration::ZERO);
    row
}

fn table(rows: &[CrossRow], follow: &[FollowRow], r: &mut Report) {
    r.line("\n## Ingress held at the senders of other nodes (`--cross-node`)\n");
    r.line(
        "Each sending node is its own pin root, senders' cgroup and share-exchange agent on this \
         kernel; the pod's node answers with each node's share. Two nodes run the same flows at once.\n",
    );
    r.line("| one-way delay | rate | streams | cc | sending nodes | goodput/limit | retr (%pkts) | node a's part | first second | verdict |");
    r.line("|---|---|---|---|---|---|---|---|---|---|");
    for x in rows {
        let verdict = if let Some(e) = &x.error {
            format!("error: {e}")
        } else {
            let mut why = Vec::new();
            if !(0.94..=1.0).contains(&x.goodput_ratio) {
                why.push(format!("goodput {:.3}", x.goodput_ratio));
            }
            let retr_goal = if x.nodes == 1 { 0.1 } else { 0.5 };
            if x.retr_pct > retr_goal {
                why.push(format!("retr {:.2}% > {retr_goal}%", x.retr_pct));
            }
            if why.is_empty() {
                "✓".into()
            } else {
                format!("✗ {}", why.join("; "))
            }
        };
        r.line(format!(
            "| {} ms | {} | {} | {} | {} | {:.3} | {} ({:.2}%) | {} | {} | {verdict} |",
            x.delay_ms,
            nri_bandwidth_tests::human_bps(x.rate_bps as f64),
            x.streams,
            x.cc,
            x.nodes,
            x.goodput_ratio,
            x.retransmits,
            x.retr_pct,
            x.part_a.map_or("—".into(), |p| format!("{p:.2}")),
            x.first_second_ratio
                .map_or("—".into(), |f| format!("{f:.2}")),
        ));
    }
    let passed = rows
        .iter()
        .filter(|x| {
            x.error.is_none()
                && (0.94..=1.0).contains(&x.goodput_ratio)
                && x.retr_pct <= if x.nodes == 1 { 0.1 } else { 0.5 }
        })
        .count();
    r.line(format!(
        "\n**{passed} of {} cells** meet goodput in [0.94, 1.0] and retransmissions ≤ 0.1 % (one node) / ≤ 0.5 % (two nodes).\n",
        rows.len()
    ));
    r.line("How fast a node's pace follows (10M, one cubic flow from node a; polled every 5 ms in node a's map):\n");
    r.line("| one-way delay | node b starts → node a ≤ 0.55 of the limit | limit doubled → node a ≥ 0.9 of it |");
    r.line("|---|---|---|");
    let ms = |v: Option<f64>| v.map_or("not within 5 s".into(), |m| format!("{m:.0} ms"));
    for f in follow {
        r.line(format!(
            "| {} ms | {} | {} |",
            f.delay_ms,
            ms(f.demand_ms),
            ms(f.limit_ms)
        ));
    }
}
