//! `bw-bench`: our limiter side by side with tc tbf set up the way the CNI
//! `bandwidth` plugin does it, on real TCP traffic, plus the datapath's per-packet
//! cost measured in the kernel.
//!
//! For every cell direction × rate × streams × congestion control, each limiter runs
//! once in the same testbed, one right after the other (ours, then tbf, then the next
//! cell), so both see the same machine conditions. Per run: iperf3 goodput against
//! the configured limit, sender retransmissions, and the RTT of pings sent to the
//! workload during the run (the queueing delay the limiter adds to the path).
//! Markdown goes to stdout (and `--out`), raw results to `--json`, progress to stderr.
//!
//! Needs root (`make bench` runs it with sudo). Everything it makes — namespace,
//! veth, cgroup, ifb, qdiscs, pinned programs and links under its private pin root —
//! is removed on exit, also after an error, a panic or Ctrl-C (SIGINT/SIGTERM stop
//! the bench after the current run; children in the terminal's process group die
//! with Ctrl-C, which ends that run early).

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, ValueEnum};
use serde::Serialize;

use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_core::datapath::abi::{self as abi, BwState};
use nri_bandwidth_core::datapath::bucket;
use nri_bandwidth_core::datapath::{self as limiter, Datapath};
use nri_bandwidth_core::model::{Entry, Limit, Owner, Source};
use nri_bandwidth_core::rate::Rate;
use nri_bandwidth_testkit::testbed::{self, Iperf3, Testbed};
use nri_bandwidth_testkit::testrun::{self, L4, Prog, SkbCtx, TestDatapath};
use nri_bandwidth_tests::delay_line::DelayLine;
use nri_bandwidth_tests::human_bps;
use nri_bandwidth_tests::tbf::{self, Direction, Tbf};

// ------------------------------------------------------------------ command line

#[derive(Parser, Debug)]
#[command(
    name = "bw-bench",
    about = "Benchmark nri-bandwidth against CNI-style tc tbf (needs root)",
    after_help = "Directions are the workload's: ingress = bytes it receives, egress = bytes it sends."
)]
struct Args {
    /// Limits to test, Kubernetes quantities in bits per second.
    #[arg(long, value_delimiter = ',', default_value = "1M,10M,100M,1G")]
    rates: Vec<Rate>,
    /// One-way delays in milliseconds between the host and the workload. 0 is the
    /// plain veth; anything else cuts it with a namespace where the user-space delay
    /// line holds every frame that long. Each delay gets its own testbed.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    delays: Vec<f64>,
    /// Runs per limiter and cell, alternating ours/tbf (mean and spread reported).
    #[arg(long, default_value_t = 1)]
    repeats: u32,
    /// Also measure CPU per gigabit: no limiter, ours and tbf+ifb at --cpu-rate,
    /// on the plain veth.
    #[arg(long)]
    cpu: bool,
    #[arg(long, default_value = "1G")]
    cpu_rate: Rate,
    /// Also time attaching and detaching limits on this many cgroups (0 = skip).
    #[arg(long, default_value_t = 0)]
    attach_cgroups: u32,
    /// Parallel TCP streams per run (iperf3 -P).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    streams: Vec<u32>,
    /// Congestion controls of the sender (iperf3 -C).
    #[arg(long, value_delimiter = ',', default_value = "cubic,bbr")]
    cc: Vec<String>,
    /// Directions to test.
    #[arg(long, value_delimiter = ',', default_value = "ingress,egress")]
    dirs: Vec<Dir>,
    /// Limiters to compare.
    #[arg(long, value_delimiter = ',', default_value = "ours,tbf")]
    limiters: Vec<LimiterKind>,
    /// Measured seconds per run (iperf3 -t).
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Seconds omitted at the start of each run (iperf3 -O; they come on top of --seconds).
    #[arg(long, default_value_t = 1)]
    omit: u32,
    /// Use the workload's IPv6 address instead of IPv4.
    #[arg(long)]
    ipv6: bool,
    /// Also write the markdown report to FILE.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write the raw results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Only measure the per-packet cost (no traffic).
    #[arg(long, conflicts_with = "no_cost")]
    cost_only: bool,
    /// Skip the per-packet cost measurement.
    #[arg(long)]
    no_cost: bool,
    /// Measure RTT under load with ping (the default).
    #[arg(long, overrides_with = "no_ping")]
    ping: bool,
    /// Do not ping during runs (the verdict then ignores RTT).
    #[arg(long, overrides_with = "ping")]
    no_ping: bool,
    /// Seconds to wait between runs, so queues drain and buckets refill.
    #[arg(long, default_value_t = 1.0)]
    pause: f64,
    /// TCP port of the iperf3 server in the workload.
    #[arg(long, default_value_t = 5311)]
    port: u16,
}

impl Args {
    fn ping_on(&self) -> bool {
        !self.no_ping
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Ingress => "ingress",
            Dir::Egress => "egress",
        }
    }
    fn tbf(self) -> Direction {
        match self {
            Dir::Ingress => Direction::Ingress,
            Dir::Egress => Direction::Egress,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum LimiterKind {
    Ours,
    Tbf,
}

// ------------------------------------------------------------------ interruption

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    if !INTERRUPTED.swap(true, Ordering::SeqCst) {
        let msg = b"\nbw-bench: interrupted, cleaning up after the current run\n";
        // SAFETY: write(2) is async-signal-safe; the buffer is static.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
        }
    }
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only touches an atomic and calls write(2).
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Sleeps, but returns early once interrupted or `stop` is set.
fn sleep_unless(d: Duration, stop: Option<&AtomicBool>) {
    let step = Duration::from_millis(20);
    let mut left = d;
    while !left.is_zero() {
        if interrupted() || stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            return;
        }
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
}

// ------------------------------------------------------------------ cleanup guards

/// The bench's private pin root: everything below it is removed on drop, together
/// with the lock file the limiter keeps for it in /run/nri-bandwidth.
struct PinRoot(PathBuf);

impl Drop for PinRoot {
    fn drop(&mut self) {
        if self.0.exists() {
            if let Err(e) = limiter::remove_tree(&self.0) {
                eprintln!("bw-bench: removing {}: {e}", self.0.display());
            }
        }
        // Same name as limiter.rs gives the lock of a pin root.
        let name: String = self
            .0
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let _ = std::fs::remove_file(Path::new("/run/nri-bandwidth").join(format!("lock{name}")));
    }
}

/// Our limit on the testbed's cgroup; removed on drop.
struct OurLimit<'a> {
    dp: &'a Datapath,
    cgid: u64,
    done: bool,
}

impl OurLimit<'_> {
    fn remove(mut self) -> Result<()> {
        self.done = true;
        self.dp
            .unlimit(self.cgid, Duration::ZERO)
            .map(|_| ())
            .context("removing our limit")
    }
}

impl Drop for OurLimit<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.dp.unlimit(self.cgid, Duration::ZERO);
        }
    }
}

// ------------------------------------------------------------------ results

#[derive(Clone, Debug, Serialize)]
struct Rtt {
    p50_ms: f64,
    p99_ms: f64,
    /// Echo replies received.
    samples: usize,
    /// Echo requests sent.
    sent: u32,
}

/// What our datapath counted during one run (packets, bytes, drops and marks of the
/// tested direction; ACK-gate, pacing and clamp events of the whole cgroup).
#[derive(Clone, Debug, Serialize)]
struct OursCounters {
    cgroup_id: u64,
    packets: u64,
    bytes: u64,
    dropped_packets: u64,
    marked_packets: u64,
    acks_gated: u64,
    pacing_sets: u64,
    clamp_sets: u64,
}

/// One iperf3 run under one limiter (or none).
#[derive(Clone, Debug, Serialize)]
struct Run {
    limiter: String,
    error: Option<String>,
    /// Receiver goodput, bits per second.
    received_bps: f64,
    /// received_bps / configured limit.
    goodput_ratio: Option<f64>,
    retransmits: u64,
    /// Approximate: bytes received / MSS (1448 for IPv4, 1428 for IPv6).
    packets_approx: u64,
    /// retransmits as a percentage of packets_approx.
    retr_pct: f64,
    rtt: Option<Rtt>,
    intervals_bps: Vec<f64>,
    /// Receiver goodput per 100 ms from the start (omitted part included): (s, bit/s).
    series: Vec<(f64, f64)>,
    /// Receiver goodput over the first second / limit (> 1: the limiter let a
    /// burst through before it held).
    first_second_ratio: Option<f64>,
    /// Highest 100 ms receiver goodput within the first second / limit.
    first_peak_ratio: Option<f64>,
    /// CPU busy time of the whole machine during the run, seconds (/proc/stat).
    cpu_busy_s: f64,
    /// Congestion control iperf3 reported for the sender.
    congestion: String,
    /// Bucket size both limiters were given, bytes.
    burst_bytes: Option<u64>,
    ours: Option<OursCounters>,
}

impl Run {
    fn failed(limiter: &str, error: String) -> Run {
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
struct Cell {
    delay_ms: f64,
    direction: Dir,
    rate: String,
    rate_bps: u64,
    streams: u32,
    cc: String,
    /// The repeats merged (means; see [`merge`]).
    ours: Option<Run>,
    tbf: Option<Run>,
    ours_runs: Vec<Run>,
    tbf_runs: Vec<Run>,
    /// (min, max) goodput/limit over the repeats.
    ours_spread: Option<(f64, f64)>,
    tbf_spread: Option<(f64, f64)>,
    pass: bool,
    verdict: String,
    failed: Vec<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
struct CostRow {
    case: String,
    ns_per_packet: f64,
    ratio_to_empty: f64,
    verdict: String,
    runs_ns: Vec<f64>,
}

#[derive(Debug, Default, Serialize)]
struct Meta {
    date_utc: String,
    kernel: String,
    cores: usize,
    cpu: String,
    default_cc: String,
    iperf3: String,
    seconds: u32,
    omit: u32,
    repeats: u32,
    delays_ms: Vec<f64>,
    ipv6: bool,
    ping: bool,
    tbf_latency_ms: u32,
    burst: String,
}

/// The unlimited run through one testbed, and what the delay line saw meanwhile:
/// the ceiling every limited figure at that delay is valid under.
#[derive(Debug, Serialize)]
struct Baseline {
    delay_ms: f64,
    direction: Dir,
    streams: u32,
    run: Run,
    line: Option<LineStats>,
}

#[derive(Debug, Serialize)]
struct LineStats {
    frames: u64,
    bytes: u64,
    kernel_drops: u64,
    send_errors: u64,
    late_p50_us: f64,
    late_p99_us: f64,
    late_max_us: f64,
    /// Whether the line's threads got SCHED_FIFO.
    realtime: bool,
}

#[derive(Debug, Serialize)]
struct CpuRow {
    direction: Dir,
    limiter: String,
    received_bps: f64,
    cpu_busy_s: f64,
    /// Busy CPU seconds (all cores) per gigabit received.
    cpu_s_per_gbit: f64,
}

#[derive(Debug, Default, Serialize)]
struct AttachStats {
    cgroups: u32,
    attach_p50_ms: f64,
    attach_p99_ms: f64,
    update_p50_ms: f64,
    detach_p50_ms: f64,
    detach_p99_ms: f64,
}

#[derive(Debug, Default, Serialize)]
struct Results {
    meta: Meta,
    cost: Vec<CostRow>,
    baseline: Vec<Baseline>,
    cells: Vec<Cell>,
    cpu: Vec<CpuRow>,
    attach: Option<AttachStats>,
    passed: usize,
    interrupted: bool,
}

/// Markdown that goes to stdout as it is produced and is kept for `--out`.
#[derive(Default)]
struct Report {
    md: String,
}

impl Report {
    fn line(&mut self, s: impl AsRef<str>) {
        let s = s.as_ref();
        println!("{s}");
        let _ = std::io::stdout().flush();
        self.md.push_str(s);
        self.md.push('\n');
    }
}

// ------------------------------------------------------------------ main

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(msg) = validate(&args) {
        Args::command()
            .error(clap::error::ErrorKind::ValueValidation, msg)
            .exit();
    }
    install_signal_handlers();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "bw-bench: needs root (network namespaces, cgroups, eBPF, tc): run it with sudo or `make bench`"
        );
        return ExitCode::from(1);
    }
    let mut results = Results::default();
    let mut report = Report::default();
    let outcome = run(&args, &mut results, &mut report);
    results.interrupted = interrupted();
    if results.interrupted {
        report.line("\n_Interrupted: the results above are partial._");
    }
    let mut code = match &outcome {
        Ok(()) if results.interrupted => ExitCode::from(130),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bw-bench: {e:#}");
            ExitCode::from(1)
        }
    };
    if let Some(p) = &args.out {
        if let Err(e) = std::fs::write(p, &report.md) {
            eprintln!("bw-bench: writing {}: {e}", p.display());
            code = ExitCode::from(1);
        }
    }
    if let Some(p) = &args.json {
        let written = serde_json::to_string_pretty(&results)
            .map_err(std::io::Error::other)
            .and_then(|j| std::fs::write(p, j + "\n"));
        if let Err(e) = written {
            eprintln!("bw-bench: writing {}: {e}", p.display());
            code = ExitCode::from(1);
        }
    }
    code
}

fn validate(a: &Args) -> std::result::Result<(), String> {
    if a.streams.iter().any(|&s| s == 0 || s > 128) {
        return Err("--streams: each value must be 1..=128".into());
    }
    if a.cc
        .iter()
        .any(|c| c.is_empty() || !c.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err("--cc: names like cubic, bbr, reno".into());
    }
    if a.seconds < 2 {
        return Err("--seconds must be at least 2".into());
    }
    if !(0.0..=60.0).contains(&a.pause) {
        return Err("--pause must be between 0 and 60 seconds".into());
    }
    if a.rates.is_empty() || a.dirs.is_empty() || a.limiters.is_empty() {
        return Err("--rates, --dirs and --limiters need at least one value".into());
    }
    Ok(())
}

fn run(a: &Args, results: &mut Results, report: &mut Report) -> Result<()> {
    results.meta = meta(a);
    header(&results.meta, report);

    if !a.no_cost {
        eprintln!("measuring per-packet cost (BPF_PROG_TEST_RUN, 1,000,000 repeats × 3)...");
        let rows = measure_cost(a.ipv6).context("measuring per-packet cost")?;
        cost_table(&rows, report);
        results.cost = rows;
    }
    if a.cost_only || interrupted() {
        return Ok(());
    }
    matrix(a, results, report)
}

// ------------------------------------------------------------------ environment

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn meta(a: &Args) -> Meta {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let iperf3 = Command::new("iperf3")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "not installed".into());
    Meta {
        date_utc: utc_now(),
        kernel: read_trim("/proc/sys/kernel/osrelease"),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu,
        default_cc: read_trim("/proc/sys/net/ipv4/tcp_congestion_control"),
        iperf3,
        seconds: a.seconds,
        omit: a.omit,
        repeats: a.repeats,
        delays_ms: a.delays.clone(),
        ipv6: a.ipv6,
        ping: a.ping_on(),
        tbf_latency_ms: tbf::LATENCY_MS,
        burst: format!(
            "both limiters: max(20 ms of rate, {} B) (our default)",
            bucket::MIN_BURST_BYTES
        ),
    }
}

fn header(m: &Meta, r: &mut Report) {
    r.line("# nri-bandwidth benchmark: ours vs CNI-style tbf");
    r.line("");
    r.line(format!("- date: {}", m.date_utc));
    r.line(format!("- kernel: {}", m.kernel));
    r.line(format!("- cores: {} ({})", m.cores, m.cpu));
    r.line(format!("- default congestion control: {}", m.default_cc));
    r.line(format!("- {}", m.iperf3));
    r.line(format!(
        "- runs: {} s measured after {} s omitted, {}, RTT under load: {}",
        m.seconds,
        m.omit,
        if m.ipv6 { "IPv6" } else { "IPv4" },
        if m.ping { "ping every 10 ms" } else { "off" }
    ));
    r.line(format!(
        "- burst: {}; tbf `latency {}ms` as the CNI bandwidth plugin",
        m.burst, m.tbf_latency_ms
    ));
}

/// "YYYY-MM-DD HH:MM:SS UTC".
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02} UTC",
        t / 3600,
        t % 3600 / 60,
        t % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

// ------------------------------------------------------------------ per-packet cost

const COST_REPEAT: u32 = 1_000_000;
const COST_RUNS: usize = 3;
const NS_PER_SEC: u64 = 1_000_000_000;

fn mono_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * NS_PER_SEC + ts.tv_nsec as u64
}

/// Both directions limited at 1 Gbit/s as the limiter would configure them, except
/// that the bucket holds 30 s of credit: a million back-to-back 1500-byte packets are
/// 12 s of a 1 Gbit/s bucket, and the pass path must stay the one measured. The
/// per-packet work (parse, GCRA charge, counters) does not depend on these values.
fn cost_state() -> BwState {
    let rate = 125_000_000; // 1 Gbit/s in bytes per second
    let mut d = bucket::dir_config(rate, None);
    d.burst_ns = 30 * NS_PER_SEC;
    BwState {
        cgid: 1,
        abi: abi::ABI_VERSION,
        dir: [d, d],
        clamp_budget: bucket::clamp_budget(rate),
        ..BwState::default()
    }
}

type StateFn = fn(&mut BwState, u64);

struct CostCase {
    name: &'static str,
    prog: Prog,
    packet: Vec<u8>,
    /// Puts the bucket where the case needs it, given CLOCK_MONOTONIC now.
    state: StateFn,
}

fn under_limit(_: &mut BwState, _: u64) {}

/// Egress debt past the mark threshold but far from the drop threshold for the
/// whole run: the congestion-notification + CE-mark path.
fn egress_marking(st: &mut BwState, now: u64) {
    let d = &mut st.dir[abi::DIR_EGRESS];
    d.burst_ns = bucket::DEFAULT_BURST_NS;
    d.drop_ns = 3600 * NS_PER_SEC;
    d.tat = now + 2 * d.mark_ns;
}

/// Egress debt far past the drop threshold: the drop path.
fn egress_dropping(st: &mut BwState, now: u64) {
    let d = &mut st.dir[abi::DIR_EGRESS];
    d.burst_ns = bucket::DEFAULT_BURST_NS;
    d.tat = now + 3600 * NS_PER_SEC;
}

/// Ingress bucket in debt: the workload's own ACKs are withheld (the ACK gate).
fn ingress_in_debt(st: &mut BwState, now: u64) {
    st.dir[abi::DIR_INGRESS].tat = now + 3600 * NS_PER_SEC;
}

fn cost_cases(v6: bool) -> Vec<CostCase> {
    let ip = if v6 { 40 } else { 20 };
    let tcp_payload = 1500 - ip - 32; // 20-byte TCP header + 12 bytes of timestamps
    let udp_payload = 1500 - ip - 8;
    let data = |ecn| {
        testrun::packet(
            v6,
            L4::Tcp {
                flags: testrun::TCP_ACK | testrun::TCP_PSH,
                payload: tcp_payload,
            },
            ecn,
        )
    };
    let ack = testrun::packet(
        v6,
        L4::Tcp {
            flags: testrun::TCP_ACK,
            payload: 0,
        },
        testrun::NOT_ECT,
    );
    let udp = testrun::packet(
        v6,
        L4::Udp {
            payload: udp_payload,
        },
        testrun::NOT_ECT,
    );
    vec![
        CostCase {
            name: "empty program (baseline)",
            prog: Prog::Empty,
            packet: data(testrun::NOT_ECT),
            state: under_limit,
        },
        CostCase {
            name: "egress TCP data, 1500 B, under limit",
            prog: Prog::Egress,
            packet: data(testrun::NOT_ECT),
            state: under_limit,
        },
        CostCase {
            name: "egress pure ACK",
            prog: Prog::Egress,
            packet: ack.clone(),
            state: under_limit,
        },
        CostCase {
            name: "ingress TCP data, 1500 B, under limit",
            prog: Prog::Ingress,
            packet: data(testrun::NOT_ECT),
            state: under_limit,
        },
        CostCase {
            name: "egress UDP, 1500 B, under limit",
            prog: Prog::Egress,
            packet: udp.clone(),
            state: under_limit,
        },
        CostCase {
            name: "ingress UDP, 1500 B, under limit",
            prog: Prog::Ingress,
            packet: udp,
            state: under_limit,
        },
        CostCase {
            name: "(over limit) egress TCP data, ECT(0): CE mark + CN",
            prog: Prog::Egress,
            packet: data(testrun::ECT0),
            state: egress_marking,
        },
        CostCase {
            name: "(over limit) egress TCP data past drop threshold",
            prog: Prog::Egress,
            packet: data(testrun::NOT_ECT),
            state: egress_dropping,
        },
        CostCase {
            name: "(over limit) egress pure ACK, ingress in debt: ACK gated",
            prog: Prog::Egress,
            packet: ack,
            state: ingress_in_debt,
        },
    ]
}

fn verdict_name(v: u32) -> String {
    match v {
        testrun::DROP => "DROP".into(),
        testrun::PASS => "PASS".into(),
        testrun::DROP_CN => "DROP_CN".into(),
        testrun::PASS_CN => "PASS_CN".into(),
        other => other.to_string(),
    }
}

fn measure_cost(v6: bool) -> Result<Vec<CostRow>> {
    let mut td = TestDatapath::load()
        .map_err(|e| anyhow::anyhow!("loading the datapath for test runs: {e}"))?;
    let mut rows: Vec<CostRow> = Vec::new();
    for case in cost_cases(v6) {
        let mut runs = Vec::new();
        let mut verdict = 0;
        for _ in 0..COST_RUNS {
            // A fresh bucket per run: each run spends 1.5 GB of credit.
            let mut st = cost_state();
            (case.state)(&mut st, mono_now_ns());
            td.set_state(&st);
            let r = td
                .run(case.prog, &case.packet, SkbCtx::default(), COST_REPEAT)
                .map_err(|e| anyhow::anyhow!("{}: {e}", case.name))?;
            verdict = r.verdict;
            runs.push(r.duration.as_nanos() as f64);
        }
        let ns = runs.iter().copied().fold(f64::INFINITY, f64::min);
        let empty = rows.first().map_or(ns, |r| r.ns_per_packet);
        eprintln!(
            "  {:<58} {ns:>5.0} ns  {}",
            case.name,
            verdict_name(verdict)
        );
        rows.push(CostRow {
            case: case.name.into(),
            ns_per_packet: ns,
            ratio_to_empty: ns / empty,
            verdict: verdict_name(verdict),
            runs_ns: runs,
        });
    }
    Ok(rows)
}

fn cost_table(rows: &[CostRow], r: &mut Report) {
    r.line("");
    r.line("## Per-packet cost (in-kernel BPF_PROG_TEST_RUN)");
    r.line("");
    r.line(format!(
        "Both directions limited at 1 Gbit/s; {COST_REPEAT} repeats per run, min of {COST_RUNS} runs; \
         the kernel's average time per packet (1 ns resolution)."
    ));
    r.line("");
    r.line("| case | ns/packet | × empty | verdict |");
    r.line("|---|---|---|---|");
    for c in rows {
        r.line(format!(
            "| {} | {:.0} | {:.2} | {} |",
            c.case, c.ns_per_packet, c.ratio_to_empty, c.verdict
        ));
    }
}

// ------------------------------------------------------------------ traffic matrix

struct Bench<'a> {
    a: &'a Args,
    tb: Testbed,
    /// The delay line bridging the testbed's middle namespace (delay > 0).
    line: Option<DelayLine>,
    delay_ms: f64,
    target: IpAddr,
    port: u16,
}

impl<'a> Bench<'a> {
    /// A testbed for one delay, with its delay line and iperf3 server running.
    fn new(a: &'a Args, cgfs: &CgroupFs, delay_ms: f64) -> Result<Self> {
        let tb = if delay_ms > 0.0 {
            Testbed::create_split(cgfs, "bench")
        } else {
            Testbed::create(cgfs, "bench")
        }
        .context("creating the testbed")?;
        let target = if a.ipv6 { tb.peer_v6 } else { tb.peer_v4 };
        eprintln!(
            "testbed: netns {} ({target}), host side {}, cgroup {}, one-way delay {delay_ms} ms",
            tb.ns, tb.host_if, tb.cgroup_rel
        );
        let mut b = Bench {
            a,
            tb,
            line: None,
            delay_ms,
            target,
            port: a.port,
        };
        b.start_line()?;
        b.tb.start_iperf3_server(b.port)
            .context("starting iperf3 in the workload")?;
        std::thread::sleep(Duration::from_millis(200));
        Ok(b)
    }

    fn start_line(&mut self) -> Result<()> {
        if let Some(m) = &self.tb.middle {
            let d = Duration::from_secs_f64(self.delay_ms / 1000.0);
            self.line =
                Some(DelayLine::start(&m.ns, &m.a, &m.b, d).context("starting the delay line")?);
        }
        Ok(())
    }

    /// What the delay line saw since it started; a fresh line takes over.
    fn line_stats(&mut self) -> Result<Option<LineStats>> {
        let Some(line) = self.line.take() else {
            return Ok(None);
        };
        let st = line.stop();
        self.start_line()?;
        let both = [&st.a_to_b, &st.b_to_a];
        let late: Vec<f64> = both
            .iter()
            .flat_map(|d| d.late_us.iter().copied())
            .collect();
        Ok(Some(LineStats {
            frames: both.iter().map(|d| d.frames).sum(),
            bytes: both.iter().map(|d| d.bytes).sum(),
            kernel_drops: both.iter().map(|d| d.kernel_drops).sum(),
            send_errors: both.iter().map(|d| d.send_errors).sum(),
            late_p50_us: nri_bandwidth_testkit::quantile(&late, 0.5),
            late_p99_us: nri_bandwidth_testkit::quantile(&late, 0.99),
            late_max_us: late.iter().copied().fold(f64::NAN, f64::max),
            realtime: both.iter().all(|d| d.realtime),
        }))
    }
}

/// Busy CPU time of the whole machine so far, seconds (all cores; /proc/stat
/// counts in USER_HZ = 100).
fn cpu_busy_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return f64::NAN;
    }
    // user nice system idle iowait irq softirq steal ...
    let total: f64 = v.iter().take(8).sum();
    (total - v[3] - v[4]) / 100.0
}

/// The repeats of one limiter in one cell as one run: mean goodput, summed
/// retransmissions over summed packets, mean RTT quantiles, the worst first-second
/// peak; counters and the time series of the first successful run.
fn merge(runs: &[Run]) -> Option<Run> {
    let ok: Vec<&Run> = runs.iter().filter(|r| r.error.is_none()).collect();
    let Some(first) = ok.first() else {
        return runs.first().cloned();
    };
    let n = ok.len() as f64;
    let mean = |f: &dyn Fn(&Run) -> f64| ok.iter().map(|r| f(r)).sum::<f64>() / n;
    let mut m = (*first).clone();
    m.received_bps = mean(&|r| r.received_bps);
    m.goodput_ratio = first
        .goodput_ratio
        .map(|_| mean(&|r| r.goodput_ratio.unwrap_or(f64::NAN)));
    m.retransmits = ok.iter().map(|r| r.retransmits).sum::<u64>() / ok.len() as u64;
    let packets: u64 = ok.iter().map(|r| r.packets_approx).sum();
    let retr: u64 = ok.iter().map(|r| r.retransmits).sum();
    m.packets_approx = packets / ok.len() as u64;
    m.retr_pct = if packets == 0 {
        0.0
    } else {
        retr as f64 * 100.0 / packets as f64
    };
    let rtts: Vec<&Rtt> = ok
        .iter()
        .filter_map(|r| r.rtt.as_ref())
        .filter(|x| x.samples > 0)
        .collect();
    if !rtts.is_empty() {
        let k = rtts.len() as f64;
        m.rtt = Some(Rtt {
            p50_ms: rtts.iter().map(|x| x.p50_ms).sum::<f64>() / k,
            p99_ms: rtts.iter().map(|x| x.p99_ms).sum::<f64>() / k,
            samples: rtts.iter().map(|x| x.samples).sum(),
            sent: rtts.iter().map(|x| x.sent).sum(),
        });
    }
    m.first_second_ratio = first
        .first_second_ratio
        .map(|_| mean(&|r| r.first_second_ratio.unwrap_or(f64::NAN)));
    m.first_peak_ratio = ok
        .iter()
        .filter_map(|r| r.first_peak_ratio)
        .reduce(f64::max);
    m.cpu_busy_s = mean(&|r| r.cpu_busy_s);
    Some(m)
}

/// (min, max) goodput ratio over the successful repeats.
fn spread(runs: &[Run]) -> Option<(f64, f64)> {
    let v: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.goodput_ratio)
        .filter(|x| x.is_finite())
        .collect();
    if v.is_empty() {
        return None;
    }
    Some((
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    ))
}

fn matrix(a: &Args, results: &mut Results, report: &mut Report) -> Result<()> {
    let want_ours = a.limiters.contains(&LimiterKind::Ours);
    let want_tbf = a.limiters.contains(&LimiterKind::Tbf);
    if want_tbf {
        tbf::check_tools()?;
    }
    // Declared first so it is dropped last: after the testbed and the datapath.
    let pins = PinRoot(nri_bandwidth_tests::test_pin_root("bench"));
    let dp = if want_ours || a.attach_cgroups > 0 {
        Some(Datapath::open(&pins.0).context("loading the datapath")?)
    } else {
        None
    };
    let cgfs = CgroupFs::detect().context("finding the cgroup v2 mount")?;

    if let (Some(dp), n) = (&dp, a.attach_cgroups) {
        if n > 0 {
            let st = attach_timing(dp, &cgfs, n)?;
            report.line("");
            report.line(format!("## Attach and detach ({n} cgroups, one at a time)"));
            report.line("");
            report.line("| attach p50 / p99 ms | update in place p50 ms | detach p50 / p99 ms |");
            report.line("|---|---|---|");
            report.line(format!(
                "| {:.3} / {:.3} | {:.3} | {:.3} / {:.3} |",
                st.attach_p50_ms,
                st.attach_p99_ms,
                st.update_p50_ms,
                st.detach_p50_ms,
                st.detach_p99_ms
            ));
            results.attach = Some(st);
        }
    }
    if a.cpu && !interrupted() {
        cpu_section(a, dp.as_ref().filter(|_| want_ours), &cgfs, results, report)?;
    }

    let total = a.delays.len() * a.dirs.len() * a.rates.len() * a.streams.len() * a.cc.len();
    let mut n = 0;
    'delays: for &delay in &a.delays {
        if interrupted() {
            break;
        }
        let mut b = Bench::new(a, &cgfs, delay)?;
        report.line("");
        report.line(format!("## One-way delay {delay} ms"));
        report.line("");
        report.line("Unlimited (no limiter), cubic: the ceiling of this testbed.");
        report.line("");
        report.line("| direction | streams | goodput | retr (%pkts) | RTT p50/p99 ms | line frames | line drops | line late p50/p99/max µs |");
        report.line("|---|---|---|---|---|---|---|---|");
        let most = a.streams.iter().copied().max().unwrap_or(1);
        let mut counts = vec![1];
        if most > 1 {
            counts.push(most);
        }
        for &dir in &a.dirs {
            for &streams in &counts {
                if interrupted() {
                    break 'delays;
                }
                eprintln!(
                    "baseline {} ms {}: unlimited, {streams} stream(s), cubic",
                    delay,
                    dir.name()
                );
                let run = b.measure("none", dir, streams, "cubic", None);
                let line = b.line_stats()?;
                eprintln!("    {}", progress(&run));
                report.line(format!(
                    "| {} | {streams} | {} | {} | {} | {} |",
                    dir.name(),
                    if run.error.is_some() {
                        err_cell(&run)
                    } else {
                        human_bps(run.received_bps)
                    },
                    retr_cell(&run),
                    rtt_cell(&run),
                    line.as_ref().map_or("— | — | —".into(), |l| format!(
                        "{} | {} | {:.0}/{:.0}/{:.0}",
                        l.frames,
                        l.kernel_drops + l.send_errors,
                        l.late_p50_us,
                        l.late_p99_us,
                        l.late_max_us
                    ))
                ));
                results.baseline.push(Baseline {
                    delay_ms: delay,
                    direction: dir,
                    streams,
                    run,
                    line,
                });
                b.recover();
                b.pause();
            }
        }

        report.line("");
        report.line(format!("### Ours vs tbf at {delay} ms one way"));
        report.line("");
        report.line(
            "| direction | rate | streams | cc | ours goodput/limit | tbf goodput/limit | ours retr (%pkts) | tbf retr (%pkts) | ours RTT p50/p99 ms | tbf RTT p50/p99 ms | verdict |",
        );
        report.line("|---|---|---|---|---|---|---|---|---|---|---|");
        for &dir in &a.dirs {
            for &rate in &a.rates {
                for &streams in &a.streams {
                    for cc in &a.cc {
                        if interrupted() {
                            break 'delays;
                        }
                        n += 1;
                        eprintln!(
                            "[{n}/{total}] {delay} ms {} {rate} ×{streams} {cc}",
                            dir.name()
                        );
                        let mut cell = Cell {
                            delay_ms: delay,
                            direction: dir,
                            rate: rate.to_string(),
                            rate_bps: rate.bits_per_sec(),
                            streams,
                            cc: cc.clone(),
                            ours: None,
                            tbf: None,
                            ours_runs: Vec::new(),
                            tbf_runs: Vec::new(),
                            ours_spread: None,
                            tbf_spread: None,
                            pass: false,
                            verdict: String::new(),
                            failed: Vec::new(),
                        };
                        // Alternate the limiters within each repeat, so both see the
                        // same conditions.
                        for _ in 0..a.repeats {
                            for &lim in &a.limiters {
                                if interrupted() {
                                    break;
                                }
                                let run = match (lim, &dp) {
                                    (LimiterKind::Ours, Some(dp)) if want_ours => {
                                        b.run_ours(dp, dir, rate, streams, cc)
                                    }
                                    (LimiterKind::Ours, _) => continue,
                                    (LimiterKind::Tbf, _) => b.run_tbf(dir, rate, streams, cc),
                                };
                                eprintln!("    {:<4} {}", run.limiter, progress(&run));
                                match lim {
                                    LimiterKind::Ours => cell.ours_runs.push(run),
                                    LimiterKind::Tbf => cell.tbf_runs.push(run),
                                }
                                b.recover();
                                b.pause();
                            }
                        }
                        if interrupted() {
                            break 'delays;
                        }
                        cell.ours = merge(&cell.ours_runs);
                        cell.tbf = merge(&cell.tbf_runs);
                        cell.ours_spread = spread(&cell.ours_runs);
                        cell.tbf_spread = spread(&cell.tbf_runs);
                        let v = verdict(
                            cell.ours.as_ref(),
                            cell.tbf.as_ref(),
                            a.ping_on() && want_ours && want_tbf,
                        );
                        cell.pass = v.pass;
                        cell.verdict = v.text;
                        cell.failed = v.failed;
                        eprintln!("    verdict: {}", cell.verdict);
                        report.line(matrix_row(&cell));
                        results.cells.push(cell);
                    }
                }
            }
        }
    }
    summary(results, a, report);
    Ok(())
}

/// CPU per gigabit on the plain veth: no limiter, ours, tbf+ifb; one cubic stream.
fn cpu_section(
    a: &Args,
    dp: Option<&Datapath>,
    cgfs: &CgroupFs,
    results: &mut Results,
    report: &mut Report,
) -> Result<()> {
    let mut b = Bench::new(a, cgfs, 0.0)?;
    report.line("");
    report.line(format!(
        "## CPU per gigabit (plain veth, 1 cubic stream, limit {})",
        a.cpu_rate
    ));
    report.line("");
    report.line("| direction | limiter | goodput | busy CPU s (all cores) | CPU s per Gbit |");
    report.line("|---|---|---|---|---|");
    for &dir in &a.dirs {
        for lim in ["none", "ours", "tbf"] {
            if interrupted() {
                return Ok(());
            }
            eprintln!("cpu {} {lim}", dir.name());
            let run = match (lim, dp) {
                ("none", _) => b.measure("none", dir, 1, "cubic", None),
                ("ours", Some(dp)) => b.run_ours(dp, dir, a.cpu_rate, 1, "cubic"),
                ("ours", None) => continue,
                _ => b.run_tbf(dir, a.cpu_rate, 1, "cubic"),
            };
            eprintln!("    {}", progress(&run));
            if run.error.is_none() {
                let gbit = run.received_bps * f64::from(a.seconds + a.omit) / 1e9;
                let row = CpuRow {
                    direction: dir,
                    limiter: lim.into(),
                    received_bps: run.received_bps,
                    cpu_busy_s: run.cpu_busy_s,
                    cpu_s_per_gbit: run.cpu_busy_s / gbit,
                };
                report.line(format!(
                    "| {} | {lim} | {} | {:.2} | {:.3} |",
                    dir.name(),
                    human_bps(row.received_bps),
                    row.cpu_busy_s,
                    row.cpu_s_per_gbit
                ));
                results.cpu.push(row);
            }
            b.recover();
            b.pause();
        }
    }
    Ok(())
}

/// Attach, update and detach times over `n` fresh cgroups, one at a time.
fn attach_timing(dp: &Datapath, cgfs: &CgroupFs, n: u32) -> Result<AttachStats> {
    let base = format!("/nri-bandwidth-test/attach-{}", std::process::id());
    let limit = Limit {
        ingress: Some(Rate::parse("10M").unwrap()),
        egress: Some(Rate::parse("10M").unwrap()),
        ..Limit::default()
    };
    let update = Limit {
        ingress: Some(Rate::parse("20M").unwrap()),
        ..limit.clone()
    };
    let owner = Owner {
        pod_name: "bw-bench-attach".into(),
        ..Owner::default()
    };
    let (mut att, mut upd, mut det) = (Vec::new(), Vec::new(), Vec::new());
    let mut made = Vec::new();
    let mut outcome = Ok(());
    for i in 0..n {
        let rel = format!("{base}/cg{i}");
        let dir = match cgfs.create(&rel) {
            Ok(d) => d,
            Err(e) => {
                outcome = Err(anyhow::anyhow!("creating {rel}: {e}"));
                break;
            }
        };
        made.push(dir.clone());
        let t = std::time::Instant::now();
        let cg = match cgfs.cgroup(dir.clone()) {
            Ok(cg) => cg,
            Err(e) => {
                outcome = Err(anyhow::anyhow!("reading {rel}: {e}"));
                break;
            }
        };
        let cgid = match dp.limit(&cg, &limit, &owner) {
            Ok(()) => cg.id,
            Err(e) => {
                outcome = Err(anyhow::anyhow!("limiting {rel}: {e}"));
                break;
            }
        };
        att.push(t.elapsed().as_secs_f64() * 1e3);
        let t = std::time::Instant::now();
        let _ = dp.limit(&cg, &update, &owner);
        upd.push(t.elapsed().as_secs_f64() * 1e3);
        let t = std::time::Instant::now();
        let _ = dp.unlimit(cgid, Duration::ZERO);
        det.push(t.elapsed().as_secs_f64() * 1e3);
    }
    for d in made.iter().rev() {
        let _ = cgfs.remove(d);
    }
    if let Ok(parent) = cgfs.resolve(&base) {
        let _ = cgfs.remove(&parent);
    }
    outcome?;
    Ok(AttachStats {
        cgroups: n,
        attach_p50_ms: nri_bandwidth_testkit::quantile(&att, 0.5),
        attach_p99_ms: nri_bandwidth_testkit::quantile(&att, 0.99),
        update_p50_ms: nri_bandwidth_testkit::quantile(&upd, 0.5),
        detach_p50_ms: nri_bandwidth_testkit::quantile(&det, 0.5),
        detach_p99_ms: nri_bandwidth_testkit::quantile(&det, 0.99),
    })
}

impl Bench<'_> {
    /// One iperf3 run from the root namespace to the workload, with pings alongside.
    fn measure(
        &self,
        limiter: &str,
        dir: Dir,
        streams: u32,
        cc: &str,
        limit_bps: Option<u64>,
    ) -> Run {
        let a = self.a;
        let mut c = Iperf3::new(self.target, self.port);
        c.seconds = a.seconds;
        c.omit = a.omit;
        c.streams = streams;
        c.reverse = dir == Dir::Egress;
        c.congestion = Some(cc.to_string());
        c.interval = Some(0.1);

        // iperf3 runs omit + seconds; ping from omit + 0.5 s until 0.5 s before the end.
        let done = Arc::new(AtomicBool::new(false));
        let count = ((a.seconds - 1) * 100).max(10);
        let pinger = a.ping_on().then(|| {
            let done = Arc::clone(&done);
            let target = self.target;
            let start = Duration::from_millis(u64::from(a.omit) * 1000 + 500);
            std::thread::spawn(move || {
                sleep_unless(start, Some(&done));
                if done.load(Ordering::SeqCst) || interrupted() {
                    return None;
                }
                Some(testbed::ping_rtts(target, count, 0.01))
            })
        });
        let cpu0 = cpu_busy_s();
        let res = c.run();
        let cpu = cpu_busy_s() - cpu0;
        done.store(true, Ordering::SeqCst);
        let rtt = pinger.and_then(|h| match h.join() {
            Ok(Some(Ok(v))) => Some(Rtt {
                p50_ms: nri_bandwidth_testkit::quantile(&v, 0.5),
                p99_ms: nri_bandwidth_testkit::quantile(&v, 0.99),
                samples: v.len(),
                sent: count,
            }),
            Ok(Some(Err(e))) => {
                eprintln!("    ping failed: {e}");
                None
            }
            _ => None,
        });
        let r = match res {
            Ok(r) => r,
            Err(e) => return Run::failed(limiter, e.to_string()),
        };
        let mss = if a.ipv6 { 1428.0 } else { 1448.0 };
        let packets = (r.received_bps * f64::from(a.seconds) / 8.0 / mss).round() as u64;
        // The first second as the receiver saw it, from 100 ms intervals.
        let first: Vec<f64> = r
            .receiver_series
            .iter()
            .filter(|(t, _)| *t <= 1.0 + 1e-6)
            .map(|(_, bps)| *bps)
            .collect();
        let first_ratio = |v: f64| limit_bps.map(|l| v / l as f64);
        let (first_second_ratio, first_peak_ratio) = if first.is_empty() {
            (None, None)
        } else {
            (
                first_ratio(first.iter().sum::<f64>() / first.len() as f64),
                first_ratio(first.iter().copied().fold(0.0, f64::max)),
            )
        };
        Run {
            limiter: limiter.into(),
            error: None,
            received_bps: r.received_bps,
            goodput_ratio: limit_bps.map(|l| r.received_bps / l as f64),
            retransmits: r.retransmits,
            packets_approx: packets,
            retr_pct: if packets == 0 {
                0.0
            } else {
                r.retransmits as f64 * 100.0 / packets as f64
            },
            rtt,
            intervals_bps: r.intervals_bps,
            series: r.receiver_series,
            first_second_ratio,
            first_peak_ratio,
            cpu_busy_s: cpu,
            congestion: r.congestion,
            burst_bytes: None,
            ours: None,
        }
    }

    fn run_ours(&self, dp: &Datapath, dir: Dir, rate: Rate, streams: u32, cc: &str) -> Run {
        let limit = Limit {
            ingress: (dir == Dir::Ingress).then_some(rate),
            egress: (dir == Dir::Egress).then_some(rate),
            ..Limit::default()
        };
        let owner = Owner {
            source: Source::Manual,
            pod_name: "bw-bench".into(),
            ..Owner::default()
        };
        let cg = self.tb.cg();
        let cgid = match dp.limit(&cg, &limit, &owner) {
            Ok(()) => cg.id,
            Err(e) => return Run::failed("ours", format!("setting the limit: {e}")),
        };
        let guard = OurLimit {
            dp,
            cgid,
            done: false,
        };
        // The kernel keeps a cgroup's counters across unlimit/limit: report the delta.
        let before = dp.entry(cgid).ok().flatten().map(|e| counters(&e, dir));
        let mut run = self.measure("ours", dir, streams, cc, Some(rate.bits_per_sec()));
        run.burst_bytes = Some(bucket::burst_bytes(rate.bytes_per_sec(), None));
        match dp.entry(cgid) {
            Ok(Some(e)) => run.ours = Some(counters(&e, dir).since(before.as_ref())),
            Ok(None) => eprintln!("    our limit vanished during the run"),
            Err(e) => eprintln!("    reading our counters: {e}"),
        }
        if let Err(e) = guard.remove() {
            eprintln!("    {e:#}");
        }
        run
    }

    fn run_tbf(&self, dir: Dir, rate: Rate, streams: u32, cc: &str) -> Run {
        let t = match Tbf::for_testbed(&self.tb, dir.tbf(), rate) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("    tbf: {e:#}");
                return Run::failed("tbf", format!("setting up tbf: {e:#}"));
            }
        };
        let mut run = self.measure("tbf", dir, streams, cc, Some(rate.bits_per_sec()));
        run.burst_bytes = Some(t.burst());
        drop(t);
        run
    }

    /// After a failed run the server may be gone: start a new one on the next port.
    fn recover(&mut self) {
        if interrupted() || self.server_listening() {
            return;
        }
        self.port += 1;
        eprintln!(
            "    iperf3 server not listening; starting one on port {}",
            self.port
        );
        if let Err(e) = self.tb.start_iperf3_server(self.port) {
            eprintln!("    {e}");
        }
    }

    fn server_listening(&self) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.tb.ns, "ss", "-ltnH"])
            .arg(format!("sport = :{}", self.port))
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    }

    fn pause(&self) {
        sleep_unless(Duration::from_secs_f64(self.a.pause), None);
    }
}

fn counters(e: &Entry, dir: Dir) -> OursCounters {
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
    fn since(mut self, before: Option<&OursCounters>) -> OursCounters {
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

// ------------------------------------------------------------------ verdict and tables

struct Verdict {
    pass: bool,
    text: String,
    failed: Vec<&'static str>,
}

const MIN_RATIO: f64 = 0.94;
const MAX_RATIO: f64 = 1.0;
/// Ours may retransmit at most this many percentage points of packets more than tbf.
const RETR_SLACK_PCT: f64 = 1.0;

fn verdict(ours: Option<&Run>, tbf: Option<&Run>, rtt: bool) -> Verdict {
    let (Some(o), Some(t)) = (ours, tbf) else {
        return Verdict {
            pass: false,
            text: "— (needs ours and tbf)".into(),
            failed: vec![],
        };
    };
    if o.error.is_some() {
        return Verdict {
            pass: false,
            text: "✗ ours failed to run".into(),
            failed: vec!["error"],
        };
    }
    if t.error.is_some() {
        return Verdict {
            pass: false,
            text: "✗ tbf failed to run: no comparison".into(),
            failed: vec!["error"],
        };
    }
    let mut why = Vec::new();
    let mut failed = Vec::new();
    let r = o.goodput_ratio.unwrap_or(f64::NAN);
    if r.is_nan() || r < MIN_RATIO {
        why.push(format!("goodput {r:.3} < {MIN_RATIO}"));
        failed.push("goodput");
    } else if r > MAX_RATIO {
        why.push(format!("goodput {r:.3} > {MAX_RATIO:.1} (over the limit)"));
        failed.push("goodput");
    }
    if o.retr_pct > t.retr_pct + RETR_SLACK_PCT {
        why.push(format!(
            "retr {:.2}% > tbf {:.2}% + {RETR_SLACK_PCT}",
            o.retr_pct, t.retr_pct
        ));
        failed.push("retransmits");
    }
    if rtt {
        match (&o.rtt, &t.rtt) {
            (Some(a), Some(b)) if a.samples > 0 && b.samples > 0 => {
                if a.p99_ms >= b.p99_ms || a.p99_ms.is_nan() || b.p99_ms.is_nan() {
                    why.push(format!("p99 RTT {:.3} ≥ tbf {:.3} ms", a.p99_ms, b.p99_ms));
                    failed.push("rtt");
                }
            }
            _ => {
                why.push("no RTT samples".into());
                failed.push("rtt");
            }
        }
    }
    if why.is_empty() {
        Verdict {
            pass: true,
            text: "✓".into(),
            failed,
        }
    } else {
        Verdict {
            pass: false,
            text: format!("✗ {}", why.join("; ")),
            failed,
        }
    }
}

/// An error message fit for a table cell.
fn err_cell(r: &Run) -> String {
    let e = r.error.as_deref().unwrap_or("");
    let mut s: String = e.replace('|', "/").replace('\n', " ");
    if s.chars().count() > 70 {
        s = s.chars().take(70).collect::<String>() + "…";
    }
    format!("error: {s}")
}

fn ratio_cell(r: Option<&Run>) -> String {
    match r {
        None => "—".into(),
        Some(r) if r.error.is_some() => err_cell(r),
        Some(r) => r.goodput_ratio.map_or("—".into(), |x| format!("{x:.3}")),
    }
}

fn retr_cell(r: &Run) -> String {
    if r.error.is_some() {
        "—".into()
    } else {
        format!("{} ({:.2}%)", r.retransmits, r.retr_pct)
    }
}

fn rtt_cell(r: &Run) -> String {
    match &r.rtt {
        _ if r.error.is_some() => "—".into(),
        None => "—".into(),
        Some(x) if x.samples == 0 => "no replies".into(),
        Some(x) => {
            let lost = x.sent as usize - x.samples.min(x.sent as usize);
            let mut s = format!("{:.3}/{:.3}", x.p50_ms, x.p99_ms);
            if lost > 0 {
                s += &format!(" ({:.0}% lost)", lost as f64 * 100.0 / f64::from(x.sent));
            }
            s
        }
    }
}

fn opt_cell(r: Option<&Run>, f: fn(&Run) -> String) -> String {
    r.map_or("—".into(), f)
}

fn with_spread(cell: String, spread: Option<(f64, f64)>) -> String {
    match spread {
        Some((lo, hi)) if hi > lo => format!("{cell} ({lo:.3}–{hi:.3})"),
        _ => cell,
    }
}

fn matrix_row(c: &Cell) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        c.direction.name(),
        c.rate,
        c.streams,
        c.cc,
        with_spread(ratio_cell(c.ours.as_ref()), c.ours_spread),
        with_spread(ratio_cell(c.tbf.as_ref()), c.tbf_spread),
        opt_cell(c.ours.as_ref(), retr_cell),
        opt_cell(c.tbf.as_ref(), retr_cell),
        opt_cell(c.ours.as_ref(), rtt_cell),
        opt_cell(c.tbf.as_ref(), rtt_cell),
        c.verdict
    )
}

fn progress(r: &Run) -> String {
    if r.error.is_some() {
        return err_cell(r);
    }
    let mut s = human_bps(r.received_bps);
    if let Some(x) = r.goodput_ratio {
        s += &format!(" = {x:.3} of limit");
    }
    s += &format!(", retr {} ({:.2}%)", r.retransmits, r.retr_pct);
    if r.rtt.is_some() {
        s += &format!(", RTT {} ms", rtt_cell(r));
    }
    if let Some(o) = &r.ours {
        s += &format!(
            ", dropped {} marked {} acks gated {}",
            o.dropped_packets, o.marked_packets, o.acks_gated
        );
    }
    s
}

fn summary(results: &mut Results, a: &Args, r: &mut Report) {
    let cells = &results.cells;
    let passed = cells.iter().filter(|c| c.pass).count();
    results.passed = passed;
    let count = |what: &str| cells.iter().filter(|c| c.failed.contains(&what)).count();
    r.line("");
    r.line(format!(
        "**Summary: {passed} of {} cells passed** (failed on goodput: {}, retransmits: {}, RTT: {}; error cells: {}).",
        cells.len(),
        count("goodput"),
        count("retransmits"),
        count("rtt"),
        count("error"),
    ));
    r.line("");
    r.line("Notes:");
    r.line(format!(
        "- ✓ needs all of: ours goodput/limit in [{MIN_RATIO}, {MAX_RATIO:.1}]; ours retransmits ≤ tbf's + {RETR_SLACK_PCT}% of packets; {}.",
        if a.ping_on() {
            "ours p99 RTT < tbf's"
        } else {
            "(RTT not measured: --no-ping)"
        }
    ));
    r.line("- goodput = receiver's TCP payload bits/s; limit = configured bits/s. Limits count IP bytes, headers included, so ~0.96 is a full pipe.");
    r.line("- retransmits are the sender's (the workload's for egress). Packets are approximate: bytes received / MSS (1448 B IPv4, 1428 B IPv6).");
    r.line("- RTT: ping from the root namespace to the workload every 10 ms during the measured part of the run. Echo requests and replies share the veth (and tbf's queue) with the flow; our cgroup programs never see them, so this measures the queueing delay a limiter adds for everything else on the path.");
    r.line("- Only the tested direction is limited, for both limiters. Both get the same bucket (our default burst); containerd would give the CNI plugin 512 MiB, which lets tbf pass seconds at line rate.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    fn ok_run(ratio: f64, retr_pct: f64, p99: f64) -> Run {
        let mut r = Run::failed("x", String::new());
        r.error = None;
        r.goodput_ratio = Some(ratio);
        r.retr_pct = retr_pct;
        r.rtt = Some(Rtt {
            p50_ms: p99 / 2.0,
            p99_ms: p99,
            samples: 100,
            sent: 100,
        });
        r
    }

    #[test]
    fn verdict_criteria() {
        let t = ok_run(0.956, 0.5, 20.0);
        assert!(verdict(Some(&ok_run(0.97, 0.2, 0.1)), Some(&t), true).pass);
        let v = verdict(Some(&ok_run(0.90, 0.2, 0.1)), Some(&t), true);
        assert_eq!(v.failed, vec!["goodput"]);
        let v = verdict(Some(&ok_run(1.02, 0.2, 0.1)), Some(&t), true);
        assert!(v.text.contains("over the limit"));
        let v = verdict(Some(&ok_run(0.97, 1.6, 0.1)), Some(&t), true);
        assert_eq!(v.failed, vec!["retransmits"]);
        let v = verdict(Some(&ok_run(0.97, 0.2, 25.0)), Some(&t), true);
        assert_eq!(v.failed, vec!["rtt"]);
        assert!(verdict(Some(&ok_run(0.97, 0.2, 25.0)), Some(&t), false).pass);
        let e = Run::failed("tbf", "boom".into());
        assert_eq!(
            verdict(Some(&ok_run(0.97, 0.2, 0.1)), Some(&e), true).failed,
            vec!["error"]
        );
        assert!(!verdict(None, Some(&t), true).pass);
    }

    #[test]
    fn error_cells_do_not_break_tables() {
        let r = Run::failed("ours", "a | b\nc".into());
        assert!(!err_cell(&r).contains('|') && !err_cell(&r).contains('\n'));
    }

    #[test]
    fn cost_state_stays_under_limit_for_a_whole_run() {
        let st = cost_state();
        let d = st.dir[abi::DIR_EGRESS];
        // A million 1500-byte packets at 1 Gbit/s is 12 s of credit.
        assert!(d.burst_ns > 12 * NS_PER_SEC);
        assert_eq!(d.rate, 125_000_000);
    }

    #[test]
    fn defaults_parse() {
        let a = Args::try_parse_from(["bw-bench"]).unwrap();
        assert_eq!(a.rates.len(), 4);
        assert_eq!(a.delays, vec![0.0]);
        assert_eq!(a.streams, vec![1, 8]);
        assert_eq!(a.cc, vec!["cubic", "bbr"]);
        assert_eq!(a.dirs, vec![Dir::Ingress, Dir::Egress]);
        assert_eq!(a.limiters, vec![LimiterKind::Ours, LimiterKind::Tbf]);
        assert!(a.ping_on());
        let a = Args::try_parse_from(["bw-bench", "--no-ping"]).unwrap();
        assert!(!a.ping_on());
        let a = Args::try_parse_from(["bw-bench", "--no-ping", "--ping"]).unwrap();
        assert!(a.ping_on());
        assert!(Args::try_parse_from(["bw-bench", "--cost-only", "--no-cost"]).is_err());
        assert!(Args::try_parse_from(["bw-bench", "--rates", "10Mbps"]).is_err());
    }
}
