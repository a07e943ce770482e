//! The datapath programs run in the kernel on synthetic packets (BPF_PROG_TEST_RUN):
//! verdicts, CE marks, congestion-notification return codes, counters, bucket
//! arithmetic, and two CPUs racing on one bucket. Privileged: needs root and
//! NRI_BANDWIDTH_PRIVILEGED=1.

use nri_bandwidth_core::datapath::abi::{self as abi, BwState};
use nri_bandwidth_core::datapath::bucket;
use nri_bandwidth_testkit::testrun::{
    CE, DROP, DROP_CN, ECT0, L4, NOT_ECT, PASS, PASS_CN, Prog, SkbCtx, TCP_ACK, TCP_PSH, TCP_SYN,
    TestDatapath, ecn_of, packet,
};
use nri_bandwidth_tests::privileged;

const IN: usize = abi::DIR_INGRESS;
const OUT: usize = abi::DIR_EGRESS;

fn clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we own.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The precise clock the ACK gate reads (bpf_ktime_get_ns).
fn now_ns() -> u64 {
    clock(libc::CLOCK_MONOTONIC)
}

/// The tick clock buckets read (bpf_ktime_get_coarse_ns).
fn coarse_ns() -> u64 {
    clock(libc::CLOCK_MONOTONIC_COARSE)
}

/// A configured state: rates in bits per second.
fn state(ingress: Option<u64>, egress: Option<u64>) -> BwState {
    let mut st = BwState {
        cgid: 1,
        abi: abi::ABI_VERSION,
        ..BwState::default()
    };
    if let Some(r) = ingress {
        st.dir[IN] = bucket::dir_config(r / 8, None, bucket::Direction::Ingress);
        st.clamp_budget = bucket::clamp_budget(r / 8);
    }
    if let Some(r) = egress {
        st.dir[OUT] = bucket::dir_config(r / 8, None, bucket::Direction::Egress);
    }
    st
}

fn tcp(flags: u8, payload: usize, ecn: u8) -> Vec<u8> {
    packet(false, L4::Tcp { flags, payload }, ecn)
}

fn data(ecn: u8) -> Vec<u8> {
    tcp(TCP_ACK | TCP_PSH, 1448, ecn)
}

fn ack() -> Vec<u8> {
    tcp(TCP_ACK, 0, NOT_ECT)
}

fn udp(payload: usize) -> Vec<u8> {
    packet(false, L4::Udp { payload }, NOT_ECT)
}

/// IP bytes of a frame (what the limiter counts for an unsegmented packet).
fn ip_len(frame: &[u8]) -> u64 {
    (frame.len() - 14) as u64
}

fn setup(st: &BwState) -> Option<TestDatapath> {
    if !privileged() {
        return None;
    }
    let mut dp = TestDatapath::load().expect("loading the datapath for test runs");
    dp.set_state(st);
    Some(dp)
}

/// Puts direction `dir` `debt_ns` into debt now (after loading, which takes long
/// enough that a debt computed before it would have been repaid).
fn set_debt(dp: &mut TestDatapath, dir: usize, debt_ns: u64) -> u64 {
    let mut st = dp.state();
    st.dir[dir].tat = now_ns() + debt_ns;
    dp.set_state(&st);
    st.dir[dir].tat
}

fn run(dp: &TestDatapath, prog: Prog, pkt: &[u8]) -> (u32, Vec<u8>) {
    let r = dp.run(prog, pkt, SkbCtx::default(), 1).expect("test run");
    (r.verdict, r.packet_out)
}

#[test]
fn unconfigured_state_passes_everything() {
    let Some(dp) = setup(&BwState::default()) else {
        return;
    };
    for prog in [Prog::Ingress, Prog::Egress] {
        for pkt in [data(ECT0), ack(), udp(1400)] {
            assert_eq!(run(&dp, prog, &pkt).0, PASS);
        }
    }
    assert_eq!(
        dp.state(),
        BwState::default(),
        "an unconfigured state must not be written"
    );
}

/// The baseline of the per-packet cost lives in the test object only.
#[test]
fn empty_baseline_passes() {
    let Some(dp) = setup(&state(Some(1_000_000), Some(1_000_000))) else {
        return;
    };
    assert_eq!(run(&dp, Prog::Empty, &data(ECT0)).0, PASS);
    assert_eq!(
        dp.state().dir[OUT].packets,
        0,
        "the baseline touches no state"
    );
}

#[test]
fn loopback_is_never_limited() {
    let Some(mut dp) = setup(&state(Some(1_000_000), Some(1_000_000))) else {
        return;
    };
    // Deep in debt both ways: anything that is limited would be dropped.
    set_debt(&mut dp, IN, 10_000_000_000);
    set_debt(&mut dp, OUT, 10_000_000_000);
    let lo = SkbCtx {
        ifindex: 1,
        ..SkbCtx::default()
    };
    for (prog, pkt) in [
        (Prog::Egress, data(ECT0)),
        (Prog::Egress, ack()),
        (Prog::Ingress, udp(1000)),
    ] {
        let r = dp.run(prog, &pkt, lo, 1).unwrap();
        assert_eq!(r.verdict, PASS);
        assert_eq!(
            ecn_of(&r.packet_out),
            ecn_of(&pkt),
            "loopback packet was marked"
        );
    }
    let after = dp.state();
    assert_eq!(
        after.dir[IN].packets + after.dir[OUT].packets,
        0,
        "loopback was counted"
    );
}

#[test]
fn within_rate_passes_and_counts_ip_bytes() {
    let Some(dp) = setup(&state(Some(100_000_000), Some(100_000_000))) else {
        return;
    };
    let d = data(ECT0);
    for prog in [Prog::Egress, Prog::Ingress] {
        let (v, out) = run(&dp, prog, &d);
        assert_eq!(v, PASS);
        // test_run hands back its own Ethernet header; the IP packet must be untouched.
        assert!(
            out[14..] == d[14..],
            "{prog:?} changed a packet within the rate"
        );
    }
    let st = dp.state();
    for dir in [IN, OUT] {
        assert_eq!(st.dir[dir].packets, 1);
        assert_eq!(st.dir[dir].bytes, ip_len(&d));
        assert_eq!(st.dir[dir].drop_packets + st.dir[dir].mark_packets, 0);
    }
}

#[test]
fn unlimited_direction_passes_but_still_counts() {
    let Some(dp) = setup(&state(Some(1_000_000), None)) else {
        return;
    };
    for _ in 0..100 {
        assert_eq!(run(&dp, Prog::Egress, &data(NOT_ECT)).0, PASS);
    }
    let st = dp.state();
    assert_eq!(st.dir[OUT].packets, 100);
    assert_eq!(st.dir[OUT].tat, 0, "an unlimited direction has no bucket");
}

#[test]
fn egress_tcp_in_debt_gets_congestion_notification_and_ce() {
    let st = state(None, Some(100_000_000));
    let d = st.dir[OUT];
    let Some(mut dp) = setup(&st) else { return };
    // Debt between the mark and drop thresholds.
    set_debt(&mut dp, OUT, (d.mark_ns + d.drop_ns) / 2);
    let (v, out) = run(&dp, Prog::Egress, &data(ECT0));
    assert_eq!(
        v, PASS_CN,
        "TCP past the mark must pass with congestion notification"
    );
    assert_eq!(
        ecn_of(&out),
        CE,
        "an ECT packet past the mark must carry CE"
    );
    let (v, out) = run(&dp, Prog::Egress, &data(NOT_ECT));
    assert_eq!(v, PASS_CN);
    assert_eq!(ecn_of(&out), NOT_ECT, "a non-ECT packet must never get CE");
    let st = dp.state();
    assert_eq!(st.dir[OUT].mark_packets, 2);
    assert_eq!(
        st.dir[OUT].drop_packets, 0,
        "TCP must not be dropped before the drop threshold"
    );
}

#[test]
fn egress_tcp_far_past_the_limit_is_dropped_with_notification_small_packets_later() {
    let st = state(None, Some(100_000_000));
    let d = st.dir[OUT];
    let Some(mut dp) = setup(&st) else { return };
    set_debt(&mut dp, OUT, d.drop_ns + d.drop_ns / 2);
    assert_eq!(run(&dp, Prog::Egress, &data(ECT0)).0, DROP_CN);
    // Pure ACKs and SYNs get twice the room so connections keep working.
    assert_eq!(run(&dp, Prog::Egress, &ack()).0, PASS_CN);
    assert_eq!(run(&dp, Prog::Egress, &tcp(TCP_SYN, 0, NOT_ECT)).0, PASS_CN);
    let st = dp.state();
    assert_eq!(st.dir[OUT].drop_packets, 1);
    assert_eq!(st.dir[OUT].drop_bytes, ip_len(&data(ECT0)));
}

#[test]
fn egress_tcp_packet_larger_than_the_whole_allowance_passes_only_from_a_full_bucket() {
    // A drop threshold below one data packet's cost stands in for a super-packet at
    // a low rate (test runs cannot carry 64 KiB).
    let mut st = state(None, Some(1_000_000));
    let cost = bucket::ns_for(ip_len(&data(NOT_ECT)), st.dir[OUT].rate);
    st.dir[OUT].burst_ns = cost / 8;
    st.dir[OUT].mark_ns = cost / 16;
    st.dir[OUT].drop_ns = cost / 2;
    let Some(dp) = setup(&st) else { return };
    assert_eq!(
        run(&dp, Prog::Egress, &data(NOT_ECT)).0,
        PASS_CN,
        "an oversized packet must pass from a full bucket (else it is refused forever)"
    );
    assert_eq!(
        run(&dp, Prog::Egress, &data(NOT_ECT)).0,
        DROP_CN,
        "the next one finds the bucket spent and the debt past the threshold"
    );
    let st = dp.state();
    assert_eq!((st.dir[OUT].packets, st.dir[OUT].drop_packets), (1, 1));
}

#[test]
fn udp_is_policed_both_ways_without_debt() {
    let Some(mut dp) = setup(&state(Some(10_000_000), Some(10_000_000))) else {
        return;
    };
    // 1 ms over the rate: UDP may not borrow.
    let tat_in = set_debt(&mut dp, IN, 1_000_000);
    set_debt(&mut dp, OUT, 1_000_000);
    assert_eq!(
        run(&dp, Prog::Egress, &udp(1400)).0,
        DROP_CN,
        "egress drop uses CN (ENOBUFS, not EPERM)"
    );
    assert_eq!(run(&dp, Prog::Ingress, &udp(1400)).0, DROP);
    let st = dp.state();
    assert_eq!((st.dir[IN].drop_packets, st.dir[OUT].drop_packets), (1, 1));
    assert_eq!(
        st.dir[IN].tat, tat_in,
        "a dropped packet must not be charged"
    );
}

#[test]
fn ingress_tcp_backstop_marks_then_drops() {
    let st = state(Some(100_000_000), None);
    let d = st.dir[IN];
    let Some(mut dp) = setup(&st) else { return };
    set_debt(&mut dp, IN, (d.mark_ns + d.drop_ns) / 2);
    let (v, out) = run(&dp, Prog::Ingress, &data(ECT0));
    assert_eq!(v, PASS, "ingress may only pass or drop");
    assert_eq!(ecn_of(&out), CE);
    set_debt(&mut dp, IN, 2 * d.drop_ns);
    assert_eq!(run(&dp, Prog::Ingress, &data(ECT0)).0, DROP);
    assert_eq!(
        run(&dp, Prog::Ingress, &ack()).0,
        PASS,
        "pure ACKs carry no payload: never dropped"
    );
}

#[test]
fn ipv6_packets_are_parsed_and_marked() {
    let st = state(None, Some(100_000_000));
    let d = st.dir[OUT];
    let Some(mut dp) = setup(&st) else { return };
    set_debt(&mut dp, OUT, (d.mark_ns + d.drop_ns) / 2);
    let p = packet(
        true,
        L4::Tcp {
            flags: TCP_ACK,
            payload: 1428,
        },
        ECT0,
    );
    let (v, out) = run(&dp, Prog::Egress, &p);
    assert_eq!(v, PASS_CN);
    assert_eq!(ecn_of(&out), CE);
    let u = packet(true, L4::Udp { payload: 1000 }, NOT_ECT);
    assert_eq!(
        run(&dp, Prog::Egress, &u).0,
        DROP_CN,
        "IPv6 UDP is policed like IPv4"
    );
}

#[test]
fn receiver_acks_are_withheld_while_ingress_is_in_debt() {
    let Some(mut dp) = setup(&state(Some(100_000_000), None)) else {
        return;
    };
    set_debt(&mut dp, IN, 1_000_000);
    assert_eq!(
        run(&dp, Prog::Egress, &ack()).0,
        DROP,
        "a pure ACK must be withheld"
    );
    assert_eq!(
        run(&dp, Prog::Egress, &tcp(TCP_SYN | TCP_ACK, 0, NOT_ECT)).0,
        PASS,
        "handshakes pass"
    );
    assert_eq!(
        run(&dp, Prog::Egress, &data(NOT_ECT)).0,
        PASS,
        "data (with piggybacked ACK) passes"
    );
    assert_eq!(dp.state().acks_gated, 1);

    // Once repaid, ACKs flow again.
    let mut st = dp.state();
    st.dir[IN].tat = 0;
    dp.set_state(&st);
    assert_eq!(run(&dp, Prog::Egress, &ack()).0, PASS);

    // The ablation switch turns the gate off.
    st.flags = abi::F_NO_ACK_GATE;
    dp.set_state(&st);
    set_debt(&mut dp, IN, 1_000_000);
    assert_eq!(run(&dp, Prog::Egress, &ack()).0, PASS);
}

#[test]
fn super_packets_are_charged_per_segment_headers() {
    let Some(dp) = setup(&state(None, Some(1_000_000_000))) else {
        return;
    };
    // A GSO packet of 2 segments of 1448 bytes (test runs take at most a page): one
    // set of headers in the skb, two on the wire.
    let p = tcp(TCP_ACK, 2 * 1448, ECT0);
    let ctx = SkbCtx {
        gso_segs: 2,
        gso_size: 1448,
        ..SkbCtx::default()
    };
    let before = coarse_ns();
    let r = dp.run(Prog::Egress, &p, ctx, 1).unwrap();
    let after = coarse_ns();
    assert_eq!(r.verdict, PASS);
    let st = dp.state();
    let wire = ip_len(&p) + (20 + 32);
    assert_eq!(
        st.dir[OUT].bytes, wire,
        "per-segment IP+TCP headers must be counted"
    );
    // Charged from a full bucket: tat = now - burst + cost(wire).
    let d = st.dir[OUT];
    let cost = bucket::ns_for(wire, d.rate);
    let lo = before - d.burst_ns + cost;
    let hi = after - d.burst_ns + cost + 2;
    assert!(
        (lo..=hi).contains(&d.tat),
        "tat {} not in [{lo}, {hi}]",
        d.tat
    );
}

#[test]
fn burst_then_rate() {
    // 10 Mbit/s: the default burst (20 ms, 25 KB) admits 16 full-size UDP packets at once.
    let Some(dp) = setup(&state(None, Some(10_000_000))) else {
        return;
    };
    let p = udp(1472);
    let n = 1000;
    let started = std::time::Instant::now();
    let r = dp.run(Prog::Egress, &p, SkbCtx::default(), n).unwrap();
    let wall = started.elapsed();
    let st = dp.state();
    let d = st.dir[OUT];
    assert_eq!(
        d.packets + d.drop_packets,
        n as u64,
        "every run must be counted exactly once"
    );
    let burst_pkts = bucket::burst_bytes(d.rate, None, bucket::Direction::Egress) / ip_len(&p);
    // The run takes well under a millisecond of program time, but a busy
    // machine can preempt it between repetitions: allow the tokens earned over
    // the call's wall time (at least the program's own time).
    let ns = (wall.as_nanos() as u64).max(r.duration.as_nanos() as u64 * n as u64);
    let earned = ns * d.rate / 1_000_000_000 / ip_len(&p);
    assert!(
        d.packets >= burst_pkts && d.packets <= burst_pkts + earned + 2,
        "passed {} packets; burst allows {burst_pkts} (+{earned} earned)",
        d.packets
    );
}

#[test]
fn a_datagram_larger_than_the_bucket_passes_only_when_it_is_full() {
    // A bucket shallower than one datagram stands for a GSO super-packet at a low
    // rate (test runs cannot carry one): it must neither pass at once nor never.
    let mut st = state(None, Some(1_000_000));
    let p = udp(1472);
    let cost = bucket::ns_for(ip_len(&p), st.dir[OUT].rate);
    st.dir[OUT].burst_ns = cost / 3;
    let Some(dp) = setup(&st) else {
        return;
    };
    assert_eq!(
        run(&dp, Prog::Egress, &p).0,
        PASS,
        "a full bucket passes it"
    );
    let r = dp.run(Prog::Egress, &p, SkbCtx::default(), 20).unwrap();
    assert_eq!(r.verdict, DROP_CN, "the debt it left holds the next ones");
    let st = dp.state();
    assert_eq!((st.dir[OUT].packets, st.dir[OUT].drop_packets), (1, 20));
    // Repaid and full again after its cost plus the burst, and a tick of clock.
    std::thread::sleep(std::time::Duration::from_nanos(cost + cost / 3 + 5_000_000));
    assert_eq!(run(&dp, Prog::Egress, &p).0, PASS, "full again: passes");
}

#[test]
fn two_cpus_racing_on_one_bucket_neither_lose_counts_nor_over_admit() {
    let Some(dp) = setup(&state(None, Some(1_000_000_000))) else {
        return;
    };
    let cpus = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    let per_thread = 300_000u32;
    let p = udp(1472);
    let start = coarse_ns();
    std::thread::scope(|s| {
        for cpu in 0..cpus {
            let (dp, p) = (&dp, &p);
            s.spawn(move || {
                pin_to_cpu(cpu);
                dp.run(Prog::Egress, p, SkbCtx::default(), per_thread)
                    .unwrap();
            });
        }
    });
    // The bucket's clock ticks: allow one tick (at most 4 ms) on either side.
    let elapsed = coarse_ns() - start + 4_000_000;
    let d = dp.state().dir[OUT];
    assert_eq!(
        d.packets + d.drop_packets,
        cpus as u64 * per_thread as u64,
        "counters lost updates under concurrency"
    );
    let allowed = d.burst_ns.saturating_add(elapsed) as u128 * d.rate as u128 / 1_000_000_000;
    let passed = d.bytes as u128;
    assert!(
        passed <= allowed + 2 * ip_len(&p) as u128,
        "over-admission: passed {passed} bytes, the rate allows {allowed} in {elapsed} ns"
    );
    assert!(
        d.packets > 0 && d.drop_packets > 0,
        "the bucket must both pass and police"
    );
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity on the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
