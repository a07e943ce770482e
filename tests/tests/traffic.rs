//! Real TCP and UDP traffic between the root namespace and a namespace + cgroup
//! standing in for a pod. Bounds are wide (a noisy 2-core machine); the benchmark
//! reports precise figures. Privileged: root and NRI_BANDWIDTH_PRIVILEGED=1.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_core::datapath::{self as limiter, Datapath};
use nri_bandwidth_core::model::{Limit, Owner};
use nri_bandwidth_core::rate::Rate;
use nri_bandwidth_testkit::testbed::{Iperf3, Testbed};
use nri_bandwidth_tests::sender_node::SenderNode;
use nri_bandwidth_tests::{human_bps, privileged, share_key, test_pin_root};

/// Traffic tests would distort each other's rates on two cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const PORT: u16 = 5201;
const LOW: f64 = 0.80;
const HIGH: f64 = 1.05;

struct Env {
    tb: Testbed,
    dp: Datapath,
    root: std::path::PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = limiter::remove_tree(&self.root);
    }
}

fn env(tag: &str) -> Option<(std::sync::MutexGuard<'static, ()>, Env)> {
    env_on(tag, false)
}

/// `split`: the workload's veth is cut by a middle namespace for a delay line.
fn env_on(tag: &str, split: bool) -> Option<(std::sync::MutexGuard<'static, ()>, Env)> {
    if !privileged() {
        return None;
    }
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cgfs = CgroupFs::detect().unwrap();
    let mut tb = if split {
        Testbed::create_split(&cgfs, tag)
    } else {
        Testbed::create(&cgfs, tag)
    }
    .expect("testbed");
    tb.start_iperf3_server(PORT).unwrap();
    let root = test_pin_root(tag);
    let dp = Datapath::open(&root).unwrap();
    Some((g, Env { tb, dp, root }))
}

fn limit(e: &Env, ingress: Option<&str>, egress: Option<&str>) -> u64 {
    let l = Limit {
        ingress: ingress.map(|r| Rate::parse(r).unwrap()),
        egress: egress.map(|r| Rate::parse(r).unwrap()),
        ..Limit::default()
    };
    let cg = e.tb.cg();
    e.dp.limit(&cg, &l, &Owner::default()).unwrap();
    cg.id
}

fn goodput(target: std::net::IpAddr, reverse: bool, cc: &str, streams: u32, secs: u32) -> f64 {
    let mut c = Iperf3::new(target, PORT);
    c.reverse = reverse;
    c.congestion = Some(cc.into());
    c.streams = streams;
    c.seconds = secs;
    c.run().expect("iperf3").received_bps
}

fn assert_near(what: &str, got: f64, limit: f64) {
    let r = got / limit;
    assert!(
        (LOW..=HIGH).contains(&r),
        "{what}: {} is {r:.3} of the {} limit",
        human_bps(got),
        human_bps(limit)
    );
    eprintln!("{what}: {r:.3} of the limit");
}

#[test]
fn tcp_is_held_at_the_limit_both_ways_ipv4_ipv6_cubic_bbr() {
    let Some((_g, e)) = env("tcp") else { return };
    let unlimited = goodput(e.tb.peer_v4, false, "cubic", 1, 2);
    assert!(
        unlimited > 3.0 * 50e6,
        "the testbed must be able to exceed the limit ({unlimited})"
    );
    limit(&e, Some("50M"), Some("50M"));
    for (v6, cc) in [
        (false, "cubic"),
        (true, "bbr"),
        (false, "bbr"),
        (true, "cubic"),
    ] {
        let target = if v6 { e.tb.peer_v6 } else { e.tb.peer_v4 };
        for reverse in [false, true] {
            let what = format!(
                "{} {} {cc}",
                if v6 { "IPv6" } else { "IPv4" },
                if reverse { "egress" } else { "ingress" }
            );
            assert_near(&what, goodput(target, reverse, cc, 1, 4), 50e6);
        }
    }
}

#[test]
fn eight_streams_share_the_budget() {
    let Some((_g, e)) = env("multi") else { return };
    limit(&e, Some("40M"), Some("40M"));
    assert_near(
        "8 streams ingress",
        goodput(e.tb.peer_v4, false, "cubic", 8, 4),
        40e6,
    );
    assert_near(
        "8 streams egress",
        goodput(e.tb.peer_v4, true, "bbr", 8, 4),
        40e6,
    );
}

/// Eight new bbr flows leaving a workload limited to 1M. Two things let such flows
/// through at up to twice the limit: each flow's first ten segments, which the
/// kernel sends unpaced (2.0x the limit over the first second), and, at round
/// trips under a millisecond, super-packets of tens of kilobytes whose paced gaps
/// hid sockets from the active count, so the others' paces added up past the
/// limit (1.04-1.12 over whole runs).
#[test]
fn eight_new_flows_hold_a_low_egress_limit_from_their_first_second() {
    let Some((_g, e)) = env("young") else { return };
    limit(&e, None, Some("1M"));
    let mut c = Iperf3::new(e.tb.peer_v4, PORT);
    c.reverse = true;
    c.congestion = Some("bbr".into());
    c.streams = 8;
    c.seconds = 4;
    c.omit = 0;
    c.interval = Some(0.1);
    let r = c.run().expect("iperf3");
    let first = r.first_second();
    assert!(!first.is_empty(), "no receiver intervals: {r:?}");
    let first = first.iter().sum::<f64>() / first.len() as f64 / 1e6;
    let whole = r.received_bps / 1e6;
    eprintln!("1M x 8 bbr egress: first second {first:.3}, whole run {whole:.3} of the limit");
    assert!(
        (0.5..=1.5).contains(&first),
        "first second at {first:.3} of the limit"
    );
    assert!(
        (LOW..=1.02).contains(&whole),
        "whole run at {whole:.3} of the limit"
    );
}

/// The largest congestion window (segments) among the workload's TCP sockets
/// that have sent data on `port` (iperf3's control connection excluded).
fn sending_cwnd(e: &Env, port: u16) -> u32 {
    let out =
        e.tb.workload_command("ss")
            .unwrap()
            .args([
                "-tin",
                "state",
                "established",
                &format!("( sport = :{port} )"),
            ])
            .output()
            .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |line: &str, key: &str| -> Option<u64> {
        let at = line.find(key)? + key.len();
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    text.lines()
        .filter(|l| field(l, "bytes_acked:").is_some_and(|b| b > 50_000))
        .filter_map(|l| field(l, " cwnd:"))
        .max()
        .map_or(0, |c| c as u32)
}

/// Lifting a limit gives running flows back everything it held them with: their
/// pace and the congestion-window clamp a low pace brings (100 ms of the pace, a
/// few segments at 1M, which alone would hold a flow far below the path).
#[test]
fn a_running_flow_runs_free_once_its_low_limit_is_lifted() {
    let Some((_g, e)) = env("lift") else { return };
    let id = limit(&e, None, Some("1M"));
    let run = running_egress_flow(e.tb.peer_v4, 7, Some("cubic"));
    std::thread::sleep(Duration::from_millis(2500));
    let held = sending_cwnd(&e, PORT);
    assert!(e.dp.unlimit(id, Duration::from_millis(500)).unwrap());
    std::thread::sleep(Duration::from_millis(2000));
    let free = sending_cwnd(&e, PORT);
    let r = run.join().unwrap();
    let iv = &r.intervals_bps;
    assert!(iv.len() >= 7, "intervals: {iv:?}");
    let (early, late) = (iv[1], (iv[iv.len() - 2] + iv[iv.len() - 1]) / 2.0);
    eprintln!(
        "held {} with a window of {held} segments, lifted {} with {free}",
        human_bps(early),
        human_bps(late),
    );
    assert!(early < 1.5e6, "held at 1M: {}", human_bps(early));
    // 1M: a pace of about 120 KB/s, 100 ms of it is 9 segments (+1).
    assert!(
        (1..=10).contains(&held),
        "window of a socket paced at 1M: {held} segments"
    );
    assert!(free > 20, "window after the lift: {free} segments");
    assert!(late > 100e6, "after the lift {}", human_bps(late));
}

#[test]
fn loopback_inside_the_workload_is_not_limited() {
    let Some((_g, mut e)) = env("lo") else { return };
    limit(&e, Some("10M"), Some("10M"));
    e.tb.spawn_in_workload("iperf3", &["-s", "-p", "5301"])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out =
        e.tb.workload_command("iperf3")
            .unwrap()
            .args(["-c", "127.0.0.1", "-p", "5301", "-t", "2", "-J"])
            .output()
            .unwrap();
    let r = nri_bandwidth_testkit::testbed::parse_iperf3(&String::from_utf8_lossy(&out.stdout))
        .unwrap();
    assert!(
        r.received_bps > 10.0 * 10e6,
        "loopback ran at {} bit/s under a 10M limit",
        r.received_bps
    );
}

#[test]
fn udp_is_policed_to_the_limit() {
    let Some((_g, e)) = env("udp") else { return };
    let id = limit(&e, Some("20M"), Some("20M"));
    for reverse in [false, true] {
        let before = e.dp.entry(id).unwrap().unwrap();
        let t = Instant::now();
        let mut cmd = std::process::Command::new("iperf3");
        cmd.args([
            "-c",
            &e.tb.peer_v4.to_string(),
            "-p",
            &PORT.to_string(),
            "-u",
            "-b",
            "100M",
            "-t",
            "3",
            "-J",
        ]);
        if reverse {
            cmd.arg("-R");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success() || !out.stdout.is_empty(),
            "iperf3 -u failed"
        );
        let secs = t.elapsed().as_secs_f64();
        let after = e.dp.entry(id).unwrap().unwrap();
        let (b, a) = if reverse {
            (before.egress, after.egress)
        } else {
            (before.ingress, after.ingress)
        };
        let passed_bps = (a.bytes - b.bytes) as f64 * 8.0 / secs;
        let dropped = a.dropped_packets - b.dropped_packets;
        eprintln!(
            "UDP {}: passed {}, dropped {dropped}",
            if reverse { "egress" } else { "ingress" },
            human_bps(passed_bps)
        );
        assert!(
            dropped > 1000,
            "offered 5x the limit, the policer must drop"
        );
        assert!(
            passed_bps < 1.10 * 20e6,
            "UDP passed {passed_bps} bit/s through a 20M limit"
        );
        assert!(passed_bps > 0.30 * 20e6, "UDP starved: {passed_bps} bit/s");
    }
}

#[test]
fn pod_limit_is_shared_by_its_containers() {
    let Some((_g, mut e)) = env("pod") else {
        return;
    };
    // Two "containers" below the limited pod cgroup, each with its own server.
    let cgfs = CgroupFs::detect().unwrap();
    let mut ports = Vec::new();
    for (i, port) in [(0, 5211u16), (1, 5212u16)] {
        let dir = cgfs.create(&format!("{}/c{i}", e.tb.cgroup_rel)).unwrap();
        e.tb.start_iperf3_server_in(&dir, port).unwrap();
        ports.push(port);
    }
    limit(&e, None, Some("40M"));
    let target = e.tb.peer_v4;
    let runs: Vec<_> = ports
        .iter()
        .map(|&p| {
            std::thread::spawn(move || {
                let mut c = Iperf3::new(target, p);
                c.reverse = true;
                c.seconds = 4;
                c.run().expect("iperf3").received_bps
            })
        })
        .collect();
    let rates: Vec<f64> = runs.into_iter().map(|h| h.join().unwrap()).collect();
    let sum: f64 = rates.iter().sum();
    eprintln!(
        "containers: {:?}",
        rates.iter().map(|&r| human_bps(r)).collect::<Vec<_>>()
    );
    assert_near("pod total over two containers", sum, 40e6);
    assert!(
        rates.iter().all(|&r| r > 0.15 * 40e6),
        "one container starved: {rates:?}"
    );
}

/// One flow out of the workload for `seconds`, in the background, so a test can
/// change the limit under it (`cc`: None for the system default).
fn running_egress_flow(
    target: std::net::IpAddr,
    seconds: u32,
    cc: Option<&str>,
) -> std::thread::JoinHandle<nri_bandwidth_testkit::testbed::Iperf3Result> {
    let cc = cc.map(str::to_string);
    std::thread::spawn(move || {
        let mut c = Iperf3::new(target, PORT);
        c.reverse = true;
        c.congestion = cc;
        c.seconds = seconds;
        c.omit = 0;
        c.run().expect("iperf3")
    })
}

#[test]
fn a_rate_change_applies_to_running_flows() {
    let Some((_g, e)) = env("chg") else { return };
    let id = limit(&e, None, Some("20M"));
    let run = running_egress_flow(e.tb.peer_v4, 6, None);
    std::thread::sleep(Duration::from_millis(3000));
    let l = Limit {
        egress: Some(Rate::parse("80M").unwrap()),
        ..Limit::default()
    };
    let cg = e.tb.cg();
    e.dp.limit(&cg, &l, &Owner::default()).unwrap();
    assert_eq!(cg.id, id);
    let r = run.join().unwrap();
    let iv = &r.intervals_bps;
    assert!(iv.len() >= 6, "intervals: {iv:?}");
    let early = (iv[1] + iv[2]) / 2.0;
    let late = (iv[iv.len() - 2] + iv[iv.len() - 1]) / 2.0;
    eprintln!(
        "before the change {}, after {}",
        human_bps(early),
        human_bps(late)
    );
    assert!((LOW..=HIGH).contains(&(early / 20e6)), "before: {early}");
    assert!((LOW..=HIGH).contains(&(late / 80e6)), "after: {late}");
}

/// Work conservation: a container held at 5M by its own limit leaves the rest of
/// the pod's 20M to its sibling instead of wasting it (the pod moved 0.73 of its
/// limit before). Both directions.
#[test]
fn a_capped_container_gives_its_unused_share_of_the_pod_back() {
    let Some((_g, mut e)) = env("wc") else {
        return;
    };
    let cgfs = CgroupFs::detect().unwrap();
    let mut kids = Vec::new();
    for (i, port) in [(0, 5221u16), (1, 5222u16)] {
        let dir = cgfs.create(&format!("{}/c{i}", e.tb.cgroup_rel)).unwrap();
        e.tb.start_iperf3_server_in(&dir, port).unwrap();
        kids.push((cgfs.cgroup(dir).unwrap(), port));
    }
    limit(&e, Some("20M"), Some("20M"));
    let cap = Limit {
        ingress: Some(Rate::parse("5M").unwrap()),
        egress: Some(Rate::parse("5M").unwrap()),
        ..Limit::default()
    };
    e.dp.limit(&kids[0].0, &cap, &Owner::default()).unwrap();
    let target = e.tb.peer_v4;
    for reverse in [true, false] {
        let runs: Vec<_> = kids
            .iter()
            .map(|&(_, p)| {
                std::thread::spawn(move || {
                    let mut c = Iperf3::new(target, p);
                    c.reverse = reverse;
                    c.seconds = 5;
                    c.run().expect("iperf3").received_bps
                })
            })
            .collect();
        let r: Vec<f64> = runs.into_iter().map(|h| h.join().unwrap()).collect();
        let dir = if reverse { "egress" } else { "ingress" };
        eprintln!(
            "{dir}: capped {} + sibling {} = {:.3} of the pod's 20M",
            human_bps(r[0]),
            human_bps(r[1]),
            (r[0] + r[1]) / 20e6
        );
        assert!(
            r[0] < 1.10 * 5e6,
            "{dir}: the capped container got {}",
            human_bps(r[0])
        );
        let total = (r[0] + r[1]) / 20e6;
        assert!(
            (0.85..=HIGH).contains(&total),
            "{dir}: the pod moved {total:.3} of its limit"
        );
    }
    e.dp.unlimit(kids[0].0.id, Duration::ZERO).unwrap();
}

/// Local senders need no gate: a sender on this node (in a cgroup the senders'
/// program is attached to) is paced at the receiving workload's ingress limit, so
/// the limit holds without the ACK gate and its spurious retransmissions. The same
/// transfer from an unpaced sender is measured for comparison.
#[test]
fn a_local_sender_is_paced_at_the_receivers_ingress_limit() {
    let Some((_g, e)) = env("send") else { return };
    let sc = SendersScope::new("senders");
    let id = limit(&e, Some("20M"), None);
    let target = e.tb.peer_v4;
    let run = |paced: bool| {
        let mut c = Iperf3::new(target, PORT);
        c.seconds = 4;
        c.cgroup = paced.then(|| sc.dir.clone());
        c.run().expect("iperf3")
    };
    let gated = run(false);
    sc.pace_toward(&e, id, target, "20M");
    let paced = run(true);
    let pkts =
        |r: &nri_bandwidth_testkit::testbed::Iperf3Result| r.received_bps * 4.0 / 8.0 / 1448.0;
    eprintln!(
        "gate only: {} retr {}; paced sender: {} retr {}",
        human_bps(gated.received_bps),
        gated.retransmits,
        human_bps(paced.received_bps),
        paced.retransmits
    );
    assert_near("paced local sender", paced.received_bps, 20e6);
    assert!(
        (paced.retransmits as f64) < 0.005 * pkts(&paced),
        "a paced sender should not need probes: {} retransmissions",
        paced.retransmits
    );
    // Unlimiting takes the destination away and gives the sender its pace back.
    assert!(e.dp.unlimit(id, Duration::ZERO).unwrap());
    assert!(e.dp.destinations().unwrap().is_empty());
    let free = run(true);
    assert!(
        free.received_bps > 100e6,
        "still paced: {}",
        human_bps(free.received_bps)
    );
    assert!(e.dp.detach_senders(sc.cg.id).unwrap());
}

/// A cgroup of its own for the senders' program, removed also when a test fails.
struct SendersScope {
    dir: std::path::PathBuf,
    cg: nri_bandwidth_core::cgroup::Cgroup,
}

impl SendersScope {
    fn new(tag: &str) -> Self {
        let cgfs = CgroupFs::detect().unwrap();
        let rel = format!("/nri-bandwidth-test/{tag}-{}", std::process::id());
        let dir = cgfs.create(&rel).unwrap();
        let cg = cgfs.cgroup(dir.clone()).unwrap();
        SendersScope { dir, cg }
    }

    /// Paces this cgroup's senders toward `target`, the workload `id` whose
    /// ingress is limited to `rate`.
    fn pace_toward(&self, e: &Env, id: u64, target: std::net::IpAddr, rate: &str) {
        let bytes = Rate::parse(rate).unwrap().bytes_per_sec();
        e.dp.set_destinations(id, &[target], Some(bytes)).unwrap();
        e.dp.attach_senders(&self.cg).unwrap();
    }
}

impl Drop for SendersScope {
    fn drop(&mut self) {
        nri_bandwidth_testkit::testbed::remove_test_cgroup(&self.dir);
    }
}

/// A paced sender that fills the receiver's window by bytes sends a short segment
/// every round (the clamp's two segments advertise as 3,072 B with a 1 KB
/// window-scale unit), and each short segment costs a whole header on the wire.
/// The pace must pay for those headers: a pace that assumed full segments ran
/// ~1.5 % past the limit, until the bucket was in debt and the gate held ACKs.
/// Measured on the workload's own ingress counter (IP bytes), between 1.5 s and
/// 5 s of the flow.
#[test]
fn a_paced_sender_pays_for_the_headers_of_its_short_segments() {
    let Some((_g, e)) = env("shortseg") else {
        return;
    };
    let sc = SendersScope::new("senders-short");
    let id = limit(&e, Some("20M"), None);
    let target = e.tb.peer_v4;
    sc.pace_toward(&e, id, target, "20M");
    let mut c = Iperf3::new(target, PORT);
    c.seconds = 6;
    c.cgroup = Some(sc.dir.clone());
    let bytes = || e.dp.entry(id).unwrap().expect("the limit").ingress.bytes;
    let (r, wire) = std::thread::scope(|s| {
        let h = s.spawn(|| c.run().expect("iperf3"));
        std::thread::sleep(Duration::from_millis(1500));
        let (b0, t0) = (bytes(), Instant::now());
        std::thread::sleep(Duration::from_millis(3500));
        let (b1, t1) = (bytes(), Instant::now());
        let wire = (b1 - b0) as f64 * 8.0 / (t1 - t0).as_secs_f64();
        (h.join().unwrap(), wire)
    });
    let gated = e.dp.entry(id).unwrap().expect("the limit").acks_gated;
    eprintln!(
        "paced sender: goodput {}, on the wire {} ({:.4} of 20M), retr {}, ACKs gated {gated}",
        human_bps(r.received_bps),
        human_bps(wire),
        wire / 20e6,
        r.retransmits
    );
    assert_near("paced sender's goodput", r.received_bps, 20e6);
    assert!(
        wire <= 20e6 * 1.007,
        "the paced sender ran {:.4} of the limit on the wire",
        wire / 20e6
    );
    assert_eq!(gated, 0, "the gate held ACKs of a paced sender");
    assert!(e.dp.unlimit(id, Duration::ZERO).unwrap());
    assert!(e.dp.detach_senders(sc.cg.id).unwrap());
}

/// The send window the peer of `s` offered in its handshake (nothing else has
/// been exchanged yet, so it is the SYN's or SYN-ACK's window).
fn offered_window(s: &std::net::TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain data; the kernel fills at most `len` bytes of it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_snd_wnd
}

/// A window offered in the handshake cannot be taken back, and the default
/// (about 64 KB) is half a second of 1M: a limited workload offers a few
/// segments instead, both as the server (SYN-ACK) and as the client (SYN).
#[test]
fn a_limited_workload_offers_a_small_window_in_the_handshake() {
    use std::net::{SocketAddr, TcpListener, TcpStream};
    let Some((_g, mut e)) = env("rwnd") else {
        return;
    };
    let server = SocketAddr::new(e.tb.peer_v4, PORT);
    let as_server = || {
        let s = TcpStream::connect_timeout(&server, Duration::from_secs(5)).unwrap();
        offered_window(&s)
    };
    let listener = TcpListener::bind(SocketAddr::new(e.tb.host_v4, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let as_client = |e: &mut Env| {
        // bash's /dev/tcp: a client inside the workload that holds its connection.
        let script = format!("exec 3<>/dev/tcp/{}/{port}; sleep 2", e.tb.host_v4);
        e.tb.spawn_in_workload("bash", &["-c", &script]).unwrap();
        let (s, _) = listener.accept().unwrap();
        offered_window(&s)
    };
    let (free_server, free_client) = (as_server(), as_client(&mut e));
    limit(&e, Some("1M"), None);
    let (held_server, held_client) = (as_server(), as_client(&mut e));
    eprintln!(
        "offered windows: unlimited {free_server}/{free_client} B, 1M ingress \
         {held_server}/{held_client} B (as server/as client)"
    );
    for (what, free, held) in [
        ("server", free_server, held_server),
        ("client", free_client, held_client),
    ] {
        assert!(
            free > 20_000,
            "unlimited as {what}: the kernel's default window, got {free} B"
        );
        // Two segments in the handshake; as the client, what the peer holds is
        // already the third packet's window: the clamp's whole segments, rounded
        // up to the window scale.
        assert!(
            (2_000..=8_192).contains(&held),
            "limited to 1M as {what}: a few segments, got {held} B"
        );
    }
}

/// A remote sender 40 ms of round trip away whose share of one bandwidth-delay
/// product is a few segments (1M: about 3.3) fills the advertised window to the
/// byte, and the kernel advertises the clamp rounded up to its window-scale unit:
/// without the bucket's feedback on the window such a sender ran 2-3 % over the
/// limit for as long as the bucket's burst lasted. Held, it stays under.
#[test]
fn a_remote_sender_behind_a_long_round_trip_is_held_under_the_limit() {
    use nri_bandwidth_tests::delay_line::DelayLine;
    let Some((_g, e)) = env_on("rtt", true) else {
        return;
    };
    let m = e.tb.middle.as_ref().expect("a middle namespace");
    let line = DelayLine::start(&m.ns, &m.a, &m.b, Duration::from_millis(20)).expect("delay line");
    limit(&e, Some("1M"), None);
    let mut c = Iperf3::new(e.tb.peer_v4, PORT);
    c.congestion = Some("cubic".into());
    c.seconds = 8;
    let got = c.run().expect("iperf3").received_bps;
    drop(line);
    let r = got / 1e6;
    eprintln!("1M ingress at 40 ms RTT, cubic: {r:.3} of the limit");
    // Payload over a limit counted in IP bytes: a full pipe reads about 0.96.
    assert!(
        (LOW..=1.0).contains(&r),
        "1M ingress at 40 ms RTT: {} is {r:.3} of the limit",
        human_bps(got)
    );
}

/// Two sending nodes toward one pod on a third share its ingress limit through
/// the share exchange: together they stay at the limit with no retransmissions to
/// speak of, and the pod's node splits it by sockets (1 against 3). Each node is
/// its own pin root and agent on this kernel; the pod is behind the receiver's
/// gate as usual, which stays the backstop.
#[test]
fn two_sending_nodes_share_a_remote_pods_ingress() {
    use nri_bandwidth_core::shares::agent::{Agent, Config, Directory, RemotePod};
    use std::sync::Arc;
    let Some((_g, mut e)) = env("xnode") else {
        return;
    };
    e.tb.start_iperf3_server(PORT + 1).unwrap();
    let rate = Rate::parse("20M").unwrap().bytes_per_sec();
    let id = limit(&e, Some("20M"), None);
    let target = e.tb.peer_v4;
    e.dp.set_destinations(id, &[target], Some(rate)).unwrap();
    let lo: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let receiver = Agent::start(
        Datapath::open(&e.root).unwrap(),
        Config::new("node-r", lo, share_key()),
        Arc::new(Mutex::new(Directory {
            ready: true,
            ..Directory::default()
        })),
    )
    .unwrap();
    let dir = Arc::new(Mutex::new(Directory {
        remote: [(
            target,
            RemotePod {
                rate,
                node: receiver.local_addr(),
                node_name: "node-r".into(),
            },
        )]
        .into(),
        ready: true,
    }));
    let (a, b) = (
        SenderNode::new("xnode-a").unwrap(),
        SenderNode::new("xnode-b").unwrap(),
    );
    let agent_a = Agent::start(
        a.datapath().unwrap(),
        Config::new("node-a", lo, share_key()),
        dir.clone(),
    )
    .unwrap();
    let agent_b = Agent::start(
        b.datapath().unwrap(),
        Config::new("node-b", lo, share_key()),
        dir.clone(),
    )
    .unwrap();
    let client = |port: u16, streams: u32, scope: &std::path::Path| {
        let mut c = Iperf3::new(target, port);
        c.seconds = 6;
        c.omit = 2;
        c.streams = streams;
        c.cgroup = Some(scope.to_path_buf());
        c
    };
    let (ca, cb) = (client(PORT, 1, &a.scope), client(PORT + 1, 3, &b.scope));
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| ca.run().expect("iperf3 from node a"));
        let hb = s.spawn(|| cb.run().expect("iperf3 from node b"));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let total = ra.received_bps + rb.received_bps;
    let pkts = total * 6.0 / 8.0 / 1448.0;
    let retr = ra.retransmits + rb.retransmits;
    let st = |a: &Agent| {
        use std::sync::atomic::Ordering::Relaxed;
        (
            a.stats.demands_sent.load(Relaxed),
            a.stats.shares_received.load(Relaxed),
        )
    };
    eprintln!(
        "node a (1 socket): {}, node b (3): {}, together {} ({:.3} of 20M), retr {retr}; \
         reports/answers a {:?} b {:?}",
        human_bps(ra.received_bps),
        human_bps(rb.received_bps),
        human_bps(total),
        total / 20e6,
        st(&agent_a),
        st(&agent_b)
    );
    assert_near("two sending nodes together", total, 20e6);
    assert!(
        total <= 20e6,
        "two nodes together above the limit: {}",
        human_bps(total)
    );
    let part_a = ra.received_bps / total;
    assert!(
        (0.12..=0.40).contains(&part_a),
        "node a (1 of 4 sockets) moved {part_a:.3} of the total"
    );
    assert!(
        (retr as f64) < 0.01 * pkts,
        "paced senders should not need the gate: {retr} retransmissions of ~{pkts:.0} packets"
    );
    assert!(
        st(&agent_a).1 > 0 && st(&agent_b).1 > 0,
        "no shares answered"
    );
}
