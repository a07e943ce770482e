//! The share exchange between nodes, on this kernel: each "node" is its own pin
//! root (its own senders' map) and agent on loopback. What an agent writes to the
//! senders' map for remote pods, what it accepts from whom, and what it answers
//! as the receiving node. Privileged (BPF maps): root and NRI_BANDWIDTH_PRIVILEGED=1.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nri_bandwidth_core::cgroup::{Cgroup, CgroupFs};
use nri_bandwidth_core::datapath::senders::REMOTE;
use nri_bandwidth_core::datapath::{self as limiter, Datapath};
use nri_bandwidth_core::model::{Limit, Owner};
use nri_bandwidth_core::rate::Rate;
use nri_bandwidth_core::shares::agent::{Agent, Config, Directory, RemotePod};
use nri_bandwidth_core::shares::seal::{self, Key, Stamper};
use nri_bandwidth_core::shares::wire::{self, DemandEntry, Message, ShareEntry, Shares};
use nri_bandwidth_tests::{privileged, share_key, test_pin_root};

struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        let _ = limiter::remove_tree(&self.0);
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// `msg` sealed as the tests' nodes seal it (one stamp sequence for all).
fn sealed(msg: &[u8]) -> Vec<u8> {
    static STAMPS: Mutex<Stamper> = Mutex::new(Stamper::new());
    seal::seal(&share_key(), STAMPS.lock().unwrap().stamp(), msg)
}

fn quick(node: &str) -> Config {
    let mut c = Config::new(node, loopback(), share_key());
    c.interval = Duration::from_millis(50);
    c.expiry = Duration::from_millis(400);
    c.mark_hold = Duration::from_millis(1200);
    c
}

/// Polls `f` for up to 3 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for: {what}");
}

/// A test cgroup, removed on drop (also when the test fails).
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        nri_bandwidth_testkit::testbed::remove_test_cgroup(&self.0);
    }
}

/// A test cgroup with an 8M ingress limit (1,000,000 bytes/s) on `dp`.
fn limited_cgroup(dp: &Datapath, tag: &str) -> (Cgroup, TestCgroup) {
    let cgfs = CgroupFs::detect().unwrap();
    let rel = format!("/nri-bandwidth-test/{tag}-{}", std::process::id());
    let cgdir = TestCgroup(cgfs.create(&rel).unwrap());
    let cg = cgfs.cgroup(cgdir.0.clone()).unwrap();
    let l = Limit {
        ingress: Some(Rate::parse("8M").unwrap()),
        ..Limit::default()
    };
    dp.limit(&cg, &l, &Owner::default()).unwrap();
    (cg, cgdir)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A sending node paces toward each remote pod the API names, at the share its
/// node answers, and only that node's answer counts; garbage is refused and the
/// agent goes on; a pod the API no longer names loses its entry.
#[test]
fn a_sending_node_takes_shares_only_from_the_pods_node() {
    if !privileged() {
        return;
    }
    let root = Root(test_pin_root("xsend"));
    let dp = Datapath::open(&root.0).unwrap();
    let pods_node = UdpSocket::bind(loopback()).unwrap();
    pods_node
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let pod = ip("10.77.0.5");
    let dir = Arc::new(Mutex::new(Directory {
        remote: HashMap::from([(
            pod,
            RemotePod {
                rate: 1_000_000,
                node: pods_node.local_addr().unwrap(),
                node_name: "node-p".into(),
            },
        )]),
        ready: true,
    }));
    let agent = Agent::start(
        Datapath::open(&root.0).unwrap(),
        quick("node-a"),
        dir.clone(),
    )
    .unwrap();
    // Before any answer: the pod's whole limit.
    eventually("the remote pod's entry", || {
        dp.destination(pod)
            .unwrap()
            .is_some_and(|d| d.cgid == REMOTE && d.rate == 1_000_000)
    });

    let shares_from = |node: &str, rate: Option<u64>| {
        wire::encode(&Message::Shares(Shares {
            v: wire::VERSION,
            node: node.into(),
            seq: 1,
            shares: vec![ShareEntry { ip: pod, rate }],
        }))
    };
    let shares_of = |rate: Option<u64>| shares_from("node-p", rate);
    let answer = |from: &UdpSocket, rate: Option<u64>| {
        from.send_to(&sealed(&shares_of(rate)), agent.local_addr())
            .unwrap();
    };
    let refusals = |what: &str, n: u64| {
        eventually(what, || {
            agent
                .stats
                .unauthenticated
                .load(std::sync::atomic::Ordering::Relaxed)
                >= n
        })
    };
    // Another node cannot set the share of a pod that is not its own.
    let impostor = UdpSocket::bind(loopback()).unwrap();
    impostor
        .send_to(&sealed(&shares_from("node-z", Some(1))), agent.local_addr())
        .unwrap();
    // Truncated and oversized datagrams are refused whole.
    impostor
        .send_to(
            &sealed(br#"{"kind":"shares","v":1,"se"#),
            agent.local_addr(),
        )
        .unwrap();
    impostor
        .send_to(
            &sealed(&vec![b' '; wire::MAX_DATAGRAM + 10]),
            agent.local_addr(),
        )
        .unwrap();
    eventually("three refusals", || {
        agent
            .stats
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    });
    assert_eq!(dp.destination(pod).unwrap().unwrap().rate, 1_000_000);

    // Even from the pod's node's address, an answer without the key is refused:
    // unsealed, or sealed with another key.
    pods_node
        .send_to(&shares_of(Some(100_000)), agent.local_addr())
        .unwrap();
    let other = Key::new("other", b"a key the cluster does not use").unwrap();
    let forged = seal::seal(&other, Stamper::new().stamp(), &shares_of(Some(100_000)));
    pods_node.send_to(&forged, agent.local_addr()).unwrap();
    refusals("two unauthenticated datagrams refused", 2);
    assert_eq!(dp.destination(pod).unwrap().unwrap().rate, 1_000_000);

    // The pod's node answers: its share is the pace, never above the limit.
    let first = sealed(&shares_of(Some(250_000)));
    pods_node.send_to(&first, agent.local_addr()).unwrap();
    eventually("the share", || {
        dp.destination(pod).unwrap().unwrap().rate == 250_000
    });
    answer(&pods_node, Some(5_000_000));
    eventually("the share capped at the limit", || {
        dp.destination(pod).unwrap().unwrap().rate == 1_000_000
    });
    // The pod's node may answer from another of its addresses (a node with
    // several interfaces answers from the one that routes back): its name decides.
    let other_address = UdpSocket::bind(loopback()).unwrap();
    answer(&other_address, Some(300_000));
    eventually("the share again", || {
        dp.destination(pod).unwrap().unwrap().rate == 300_000
    });
    // The first answer, recorded and played again, is refused.
    pods_node.send_to(&first, agent.local_addr()).unwrap();
    refusals("the replay refused", 3);
    assert_ne!(dp.destination(pod).unwrap().unwrap().rate, 250_000);
    // No fresh answer for the expiry: back to the whole limit.
    eventually("the limit after the answers stop", || {
        dp.destination(pod).unwrap().unwrap().rate == 1_000_000
    });

    // A limit of this node on the same address is not overwritten.
    let local = ip("10.77.0.6");
    let (cg, cgdir) = limited_cgroup(&dp, "xsend");
    dp.set_destinations(cg.id, &[local], Some(1_000_000))
        .unwrap();
    dir.lock().unwrap().remote.insert(
        local,
        RemotePod {
            rate: 5,
            node: pods_node.local_addr().unwrap(),
            node_name: "node-p".into(),
        },
    );
    std::thread::sleep(Duration::from_millis(200));
    let d = dp.destination(local).unwrap().unwrap();
    assert_eq!((d.cgid, d.rate), (cg.id, 1_000_000));

    // The watch no longer names the pod: its entry goes, the local one stays.
    dir.lock().unwrap().remote.clear();
    eventually("the entry's removal", || {
        dp.destination(pod).unwrap().is_none()
    });
    assert!(dp.destination(local).unwrap().is_some());
    drop(agent);
    assert!(dp.unlimit(cg.id, Duration::ZERO).unwrap());
    drop(cgdir);
}

/// The receiving node answers a demand with the asking node's share of its pod's
/// ingress (sockets count equally wherever they run), "not limited here" for an
/// address it has no limit for, and lowers its own senders' rate while others send.
#[test]
fn a_receiving_node_answers_shares_by_sockets() {
    if !privileged() {
        return;
    }
    let root = Root(test_pin_root("xrecv"));
    let dp = Datapath::open(&root.0).unwrap();
    let (cg, cgdir) = limited_cgroup(&dp, "xrecv");
    let pod = ip("fd00:77::5");
    dp.set_destinations(cg.id, &[pod], Some(1_000_000)).unwrap();
    let agent = Agent::start(
        Datapath::open(&root.0).unwrap(),
        quick("node-r"),
        Arc::new(Mutex::new(Directory {
            ready: true,
            ..Directory::default()
        })),
    )
    .unwrap();

    let shares = |sock: &UdpSocket| -> Shares {
        let mut buf = vec![0u8; 65536];
        let (n, from) = sock.recv_from(&mut buf).expect("an answer");
        assert_eq!(from, agent.local_addr());
        let (_, msg) = seal::open(&share_key(), &buf[..n]).expect("a sealed answer");
        match wire::decode(msg).unwrap() {
            Message::Shares(s) => s,
            m => panic!("expected shares, got {m:?}"),
        }
    };
    let ask = |node: &str, sock: &UdpSocket, sockets: u32| -> Vec<ShareEntry> {
        for dg in wire::demands(
            node,
            7,
            &[
                DemandEntry { ip: pod, sockets },
                DemandEntry {
                    ip: ip("10.77.1.1"),
                    sockets: 1,
                },
            ],
        ) {
            sock.send_to(&sealed(&dg), agent.local_addr()).unwrap();
        }
        let s = shares(sock);
        assert_eq!(s.seq, 7);
        s.shares
    };
    let a = UdpSocket::bind(loopback()).unwrap();
    let b = UdpSocket::bind(loopback()).unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    }
    // 8M is 1,000,000 bytes/s: alone, node a has it all.
    let got = ask("node-a", &a, 1);
    assert_eq!(got[0].rate, Some(1_000_000));
    assert_eq!(got[1].rate, None, "no limit here for 10.77.1.1");
    // Node b with three sockets: three quarters for b, a quarter for a.
    assert_eq!(ask("node-b", &b, 3)[0].rate, Some(750_000));
    // Node a is told at once, not at its next report (seq 0: unasked).
    let pushed = shares(&a);
    assert_eq!(pushed.seq, 0);
    assert_eq!(
        pushed.shares,
        vec![ShareEntry {
            ip: pod,
            rate: Some(250_000)
        }]
    );
    assert_eq!(ask("node-a", &a, 1)[0].rate, Some(250_000));
    // This node's own senders (none active) get what one more socket would,
    // and the pod's senders count as paced (its window clamp leaves them slack).
    eventually("the local share", || {
        dp.destination(pod).unwrap().unwrap().rate == 200_000
    });
    assert_eq!(dp.peers_paced(cg.id).unwrap(), Some(true));
    // Nobody asks for the expiry: the whole limit again; the mark stays for
    // its hold (a flow after a pause still finds it), then goes.
    let quiet = std::time::Instant::now();
    eventually("the whole limit", || {
        dp.destination(pod).unwrap().unwrap().rate == 1_000_000
    });
    assert_eq!(
        dp.peers_paced(cg.id).unwrap(),
        Some(true),
        "the mark went with the demand, {:?} after the last report",
        quiet.elapsed()
    );
    eventually("the mark lifted", || {
        dp.peers_paced(cg.id).unwrap() == Some(false)
    });
    assert!(
        quiet.elapsed() >= Duration::from_millis(700),
        "the mark was lifted {:?} after the last report, before its hold",
        quiet.elapsed()
    );
    // A name that is no DNS name is refused, and the agent answers the next one.
    a.send_to(
        &sealed(br#"{"kind":"demand","v":2,"node":"../etc","seq":1,"sockets":[]}"#),
        agent.local_addr(),
    )
    .unwrap();
    assert_eq!(ask("node-a", &a, 2)[0].rate, Some(1_000_000));
    assert!(
        agent
            .stats
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    drop(agent);
    assert!(dp.unlimit(cg.id, Duration::ZERO).unwrap());
    drop(cgdir);
}

/// The senders' map is read whole in batches (the agent's report every tick):
/// more entries than one batch holds, of both families, all come back once with
/// their rates, and removed ones are gone.
#[test]
fn the_senders_map_is_read_whole_across_batches() {
    if !privileged() {
        return;
    }
    let root = Root(test_pin_root("xbatch"));
    let dp = Datapath::open(&root.0).unwrap();
    let addr = |i: u32| -> IpAddr {
        if i.is_multiple_of(2) {
            IpAddr::from([10, 78, (i >> 8) as u8, i as u8])
        } else {
            format!("fd00:78::{i:x}").parse().unwrap()
        }
    };
    let n = 1000u32;
    for i in 0..n {
        assert!(
            dp.set_remote_destination(addr(i), 1000 + u64::from(i))
                .unwrap()
        );
    }
    let mut got: Vec<(IpAddr, u64)> = dp
        .destinations()
        .unwrap()
        .into_iter()
        .map(|(ip, d)| {
            assert_eq!(d.cgid, REMOTE);
            (ip, d.rate)
        })
        .collect();
    got.sort();
    let mut want: Vec<(IpAddr, u64)> = (0..n).map(|i| (addr(i), 1000 + u64::from(i))).collect();
    want.sort();
    assert_eq!(got, want);
    for i in (0..n).step_by(2) {
        dp.remove_remote_destination(addr(i)).unwrap();
    }
    let left = dp.destinations().unwrap();
    assert_eq!(left.len(), n as usize / 2);
    assert!(left.iter().all(|(ip, _)| ip.is_ipv6()));
}
