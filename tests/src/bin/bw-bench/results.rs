//! The raw results as they go to `--json` (bench-report reads these field names),
//! and the Markdown report that goes to stdout and `--out`.

use std::io::Write as _;

use serde::Serialize;

use nri_bandwidth_core::model::Entry;

use crate::args::Dir;

#[derive(Clone, Debug, Serialize)]
pub struct Rtt {
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Echo replies received.
    pub samples: usize,
    /// Echo requests sent.
    pub sent: u32,
}

/// What our datapath counted during one run (packets, bytes, drops and marks of the
/// tested direction; ACK-gate, pacing and clamp events of the whole cgroup).
#[derive(Clone, Debug, Serialize)]
pub struct OursCounters {
    pub cgroup_id: u64,
    pub packets: u64,
    pub bytes: u64,
    pub dropped_packets: u64,
    pub marked_packets: u64,
    pub acks_gated: u64,
    pub pacing_sets: u64,
    pub clamp_sets: u64,
}

/// One iperf3 run under one limiter (or none).
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub limiter: String,
    pub error: Option<String>,
    /// Receiver goodput, bits per second.
    pub received_bps: f64,
    /// received_bps / configured limit.
    pub goodput_ratio: Option<f64>,
    pub retransmits: u64,
    /// Approximate: bytes received / MSS (1448 for IPv4, 1428 for IPv6).
    pub packets_approx: u64,
    /// retransmits as a percentage of packets_approx.
    pub retr_pct: f64,
    pub rtt: Option<Rtt>,
    pub intervals_bps: Vec<f64>,
    /// Receiver goodput per 100 ms from the start (omitted part included): (s, bit/s).
    pub series: Vec<(f64, f64)>,
    /// Receiver goodput over the first second / limit (> 1: the limiter let a
    /// burst through before it held).
    pub first_second_ratio: Option<f64>,
    /// Highest 100 ms receiver goodput within the first second / limit.
    pub first_peak_ratio: Option<f64>,
    /// CPU busy time of the whole machine during the run, seconds (/proc/stat).
    pub cpu_busy_s: f64,
    /// Congestion control iperf3 reported for the sender.
    pub congestion: String,
    /// Bucket size both limiters were given, bytes.
    pub burst_bytes: Option<u64>,
    pub ours: Option<OursCounters>,
}

impl Run {
    pub fn failed(limiter: &str, error: String) -> Run {
        Run {
            limiter: limiter.into(),
            error: Some(error),
            received_bps: f64::NAN,
            goodput_ratio: None,
            retransmits: 0,
            packets_approx: 0,
            retr_pct: f64::NAN,
            rtt: None,
            intervals_bps: Vec::new(),
            series: Vec::new(),
            first_second_ratio: None,
            first_peak_ratio: None,
            cpu_busy_s: f64::NAN,
            congestion: String::new(),
            burst_bytes: None,
            ours: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub delay_ms: f64,
    pub direction: Dir,
    pub rate: String,
    pub rate_bps: u64,
    pub streams: u32,
    pub cc: String,
    /// The repeats merged (means; see [`merge`]).
    pub ours: Option<Run>,
    pub tbf: Option<Run>,
    pub ours_runs: Vec<Run>,
    pub tbf_runs: Vec<Run>,
    /// (min, max) goodput/limit over the repeats.
    pub ours_spread: Option<(f64, f64)>,
    pub tbf_spread: Option<(f64, f64)>,
    pub pass: bool,
    pub verdict: String,
    pub failed: Vec<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CostRow {
    pub case: String,
    pub ns_per_packet: f64,
    pub ratio_to_empty: f64,
    pub verdict: String,
    pub runs_ns: Vec<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Meta {
    pub date_utc: String,
    pub kernel: String,
    pub cores: usize,
    pub cpu: String,
    pub default_cc: String,
    pub iperf3: String,
    pub seconds: u32,
    pub omit: u32,
    pub repeats: u32,
    pub delays_ms: Vec<f64>,
    pub ipv6: bool,
    pub ping: bool,
    pub tbf_latency_ms: u32,
    pub burst: String,
}

/// The unlimited run through one testbed, and what the delay line saw meanwhile:
/// the ceiling every limited figure at that delay is valid under.
#[derive(Debug, Serialize)]
pub struct Baseline {
    pub delay_ms: f64,
    pub direction: Dir,
    pub streams: u32,
    pub run: Run,
    pub line: Option<LineStats>,
}

#[derive(Debug, Serialize)]
pub struct LineStats {
    pub frames: u64,
    pub bytes: u64,
    pub kernel_drops: u64,
    pub send_errors: u64,
    pub late_p50_us: f64,
    pub late_p99_us: f64,
    pub late_max_us: f64,
    /// Whether the line's threads got SCHED_FIFO.
    pub realtime: bool,
}

#[derive(Debug, Serialize)]
pub struct CpuRow {
    pub direction: Dir,
    pub limiter: String,
    pub received_bps: f64,
    pub cpu_busy_s: f64,
    /// Busy CPU seconds (all cores) per gigabit received.
    pub cpu_s_per_gbit: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct AttachStats {
    pub cgroups: u32,
    pub attach_p50_ms: f64,
    pub attach_p99_ms: f64,
    pub update_p50_ms: f64,
    pub detach_p50_ms: f64,
    pub detach_p99_ms: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub meta: Meta,
    pub cost: Vec<CostRow>,
    pub baseline: Vec<Baseline>,
    pub cells: Vec<Cell>,
    pub cpu: Vec<CpuRow>,
    pub attach: Option<AttachStats>,
    /// With --transfers: completion times instead of the matrix.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transfers: Vec<crate::transfers::TransferRow>,
    /// With --cross-node: sender-side ingress across nodes instead of the matrix.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cross_node: Vec<crate::cross_node::CrossRow>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cross_node_follow: Vec<crate::cross_node::FollowRow>,
    pub passed: usize,
    pub interrupted: bool,
}

pub fn counters(e: &Entry, dir: Dir) -> OursCounters {
    let d = match dir {
        Dir::Ingress => &e.ingress,
        Dir::Egress => &e.egress,
    };
    OursCounters {
        cgroup_id: e.cgroup_id,
        packets: d.packets,
        bytes: d.bytes,
        dropped_packets: d.dropped_packets,
        marked_packets: d.marked_packets,
        acks_gated: e.acks_gated,
        pacing_sets: e.pacing_sets,
        clamp_sets: e.clamp_sets,
    }
}

impl OursCounters {
    /// Counts since `before` (same cgroup); `None` leaves them as they are.
    pub fn since(mut self, before: Option<&OursCounters>) -> OursCounters {
        if let Some(b) = before {
            self.packets = self.packets.saturating_sub(b.packets);
            self.bytes = self.bytes.saturating_sub(b.bytes);
            self.dropped_packets = self.dropped_packets.saturating_sub(b.dropped_packets);
            self.marked_packets = self.marked_packets.saturating_sub(b.marked_packets);
            self.acks_gated = self.acks_gated.saturating_sub(b.acks_gated);
            self.pacing_sets = self.pacing_sets.saturating_sub(b.pacing_sets);
            self.clamp_sets = self.clamp_sets.saturating_sub(b.clamp_sets);
        }
        self
    }
}

/// Markdown that goes to stdout as it is produced and is kept for `--out`.
#[derive(Default)]
pub struct Report {
    pub md: String,
}

impl Report {
    pub fn line(&mut self, s: impl AsRef<str>) {
        let s = s.as_ref();
        println!("{s}");
        let _ = std::io::stdout().flush();
        self.md.push_str(s);
        self.md.push('\n');
    }
}
