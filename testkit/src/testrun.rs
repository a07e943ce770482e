//! Running the datapath programs in the kernel on synthetic packets through
//! BPF_PROG_TEST_RUN: verdicts, CE marks, congestion-notification return codes,
//! counters and bucket arithmetic, without any network. Used by the in-kernel tests
//! and the benchmark's per-packet cost. Needs root (CAP_BPF + CAP_NET_ADMIN).
//!
//! A test run gets a fresh cgroup storage that user space cannot reach, so this
//! loads the test build of the programs (`abi::BPF_TEST_OBJECT`, bw.bpf.c with
//! -DBW_TEST), which read their state from key 0 of `bw_test_state` instead; the
//! production object has no such map.

use std::mem::{offset_of, size_of};
use std::time::Duration;

use aya::maps::Array;
use aya::programs::{CgroupSkb, TestRun, TestRunOptions};
use aya::{Ebpf, EbpfLoader};

use nri_bandwidth_core::datapath::abi::{self, BPF_TEST_OBJECT, BwState};
use nri_bandwidth_core::datapath::sys::uapi::__sk_buff;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prog {
    Ingress,
    Egress,
    /// `return 1`: the baseline for per-packet cost.
    Empty,
}

impl Prog {
    fn name(self) -> &'static str {
        match self {
            Prog::Ingress => abi::PROG_INGRESS,
            Prog::Egress => abi::PROG_EGRESS,
            Prog::Empty => abi::TEST_PROG_EMPTY,
        }
    }
}

/// Verdicts as the kernel defines them for cgroup_skb programs (`BW_VERDICT_*`).
pub const DROP: u32 = abi::VERDICT_DROP;
pub const PASS: u32 = abi::VERDICT_PASS;
pub const DROP_CN: u32 = abi::VERDICT_DROP_CN;
pub const PASS_CN: u32 = abi::VERDICT_PASS_CN;

pub struct TestDatapath {
    ebpf: Ebpf,
    ifindex: u32,
}

#[derive(Clone, Debug)]
pub struct RunResult {
    pub verdict: u32,
    pub packet_out: Vec<u8>,
    /// Kernel's average time per run.
    pub duration: Duration,
}

/// Context fields a test can set on the packet.
#[derive(Clone, Copy, Debug, Default)]
pub struct SkbCtx {
    /// 0 = a real (non-loopback) interface, picked automatically.
    pub ifindex: u32,
    pub gso_segs: u32,
    pub gso_size: u32,
}

impl TestDatapath {
    /// Loads a private copy of the programs (nothing is pinned or attached).
    pub fn load() -> Result<Self, String> {
        let mut ebpf = EbpfLoader::new()
            .load(BPF_TEST_OBJECT)
            .map_err(|e| format!("loading object: {e}"))?;
        for p in [Prog::Ingress, Prog::Egress, Prog::Empty] {
            let prog: &mut CgroupSkb = ebpf
                .program_mut(p.name())
                .ok_or("program missing")?
                .try_into()
                .map_err(|e| format!("{e}"))?;
            prog.load()
                .map_err(|e| format!("loading {}: {e}", p.name()))?;
        }
        Ok(TestDatapath {
            ebpf,
            ifindex: non_loopback_ifindex()?,
        })
    }

    pub fn set_state(&mut self, st: &BwState) {
        let mut m: Array<_, BwState> =
            Array::try_from(self.ebpf.map_mut(abi::TEST_MAP_STATE).expect("map"))
                .expect("map type");
        m.set(0, *st, 0).expect("updating bw_test_state");
    }

    pub fn state(&self) -> BwState {
        let m: Array<_, BwState> =
            Array::try_from(self.ebpf.map(abi::TEST_MAP_STATE).expect("map")).expect("map type");
        m.get(&0, 0).expect("reading bw_test_state")
    }

    /// Runs `prog` on `packet` (Ethernet frame) `repeat` times.
    pub fn run(
        &self,
        prog: Prog,
        packet: &[u8],
        ctx: SkbCtx,
        repeat: u32,
    ) -> Result<RunResult, String> {
        let p: &CgroupSkb = self
            .ebpf
            .program(prog.name())
            .ok_or("program missing")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        let ifindex = if ctx.ifindex == 0 {
            self.ifindex
        } else {
            ctx.ifindex
        };
        let skb = skb_ctx(ifindex, ctx.gso_segs, ctx.gso_size);
        let mut out = vec![0u8; packet.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            ctx_in: Some(&skb),
            repeat: repeat.max(1),
            ..TestRunOptions::default()
        };
        let r = p.test_run(opts).map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            format!("BPF_PROG_TEST_RUN: {e}{cause}")
        })?;
        out.truncate(r.data_size_out as usize);
        Ok(RunResult {
            verdict: r.return_value,
            packet_out: out,
            duration: r.duration,
        })
    }
}

/// The `struct __sk_buff` the kernel copies in, as bytes. Everything a test run
/// does not accept must be zero, padding included, so the fields are written into
/// a zeroed buffer at the offsets of the generated struct (bindgen checked them
/// against clang), never through a typed copy that could leave padding undefined.
fn skb_ctx(ifindex: u32, gso_segs: u32, gso_size: u32) -> Vec<u8> {
    let mut skb = vec![0u8; size_of::<__sk_buff>()];
    for (off, v) in [
        (offset_of!(__sk_buff, ifindex), ifindex),
        (offset_of!(__sk_buff, gso_segs), gso_segs),
        (offset_of!(__sk_buff, gso_size), gso_size),
    ] {
        skb[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    skb
}

/// test_run attaches packets to loopback unless told otherwise, and the programs
/// never limit loopback, so tests name a real interface.
fn non_loopback_ifindex() -> Result<u32, String> {
    let mut best = None;
    for e in std::fs::read_dir("/sys/class/net")
        .map_err(|e| e.to_string())?
        .flatten()
    {
        if e.file_name() == "lo" {
            continue;
        }
        if let Ok(s) = std::fs::read_to_string(e.path().join("ifindex"))
            && let Ok(i) = s.trim().parse::<u32>()
        {
            best = Some(best.map_or(i, |b: u32| b.min(i)));
        }
    }
    best.ok_or_else(|| "no network interface other than lo in this namespace".into())
}

/// Layer-4 content of a synthetic packet.
#[derive(Clone, Copy, Debug)]
pub enum L4 {
    Tcp { flags: u8, payload: usize },
    Udp { payload: usize },
    Icmp { payload: usize },
}

/// TCP flag bits (`BW_TCP_*` of ebpf/bw_maps.h, the ones the programs test).
pub use nri_bandwidth_core::datapath::abi::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};

/// ECN codepoints of the IP header.
pub const NOT_ECT: u8 = 0;
pub const ECT0: u8 = 2;
pub const CE: u8 = 3;

/// Builds an Ethernet frame with an IPv4 or IPv6 packet (checksums left zero: the
/// programs never look at them).
pub fn packet(v6: bool, l4: L4, ecn: u8) -> Vec<u8> {
    let (proto, l4_hdr, payload) = match l4 {
        L4::Tcp { flags, payload } => {
            let mut h = vec![0u8; 32]; // 20 + 12 bytes of timestamp option
            h[0..2].copy_from_slice(&40000u16.to_be_bytes());
            h[2..4].copy_from_slice(&5201u16.to_be_bytes());
            h[12] = 8 << 4;
            h[13] = flags;
            h[14..16].copy_from_slice(&65535u16.to_be_bytes());
            (6u8, h, payload)
        }
        L4::Udp { payload } => {
            let mut h = vec![0u8; 8];
            h[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
            (17u8, h, payload)
        }
        L4::Icmp { payload } => (
            if v6 { 58 } else { 1 },
            vec![8u8, 0, 0, 0, 0, 0, 0, 0],
            payload,
        ),
    };
    let l4_len = l4_hdr.len() + payload;
    let mut f = vec![0u8; 12];
    if v6 {
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        let mut ip = vec![0u8; 40];
        ip[0] = 0x60; // version 6, traffic class high nibble 0
        ip[1] = ecn << 4; // traffic class low nibble holds the ECN bits
        ip[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        ip[6] = proto;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        ip[24..40].copy_from_slice(&"fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&ip);
    } else {
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut ip = vec![0u8; 20];
        ip[0] = 0x45;
        ip[1] = ecn;
        ip[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        f.extend_from_slice(&ip);
    }
    f.extend_from_slice(&l4_hdr);
    f.extend(std::iter::repeat_n(0xabu8, payload));
    f
}

/// The ECN bits of an Ethernet frame built by [`packet`] (or handed back by a test
/// run, which rewrites the Ethernet header: the IP version nibble decides).
pub fn ecn_of(frame: &[u8]) -> u8 {
    if frame[14] >> 4 == 6 {
        (frame[15] >> 4) & 3
    } else {
        frame[15] & 3
    }
}
