//! One testbed at one delay (with its delay line and iperf3 server) and the runs
//! made on it: unlimited, under our limit, under tbf; plus the guards that undo
//! what a run set up.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

use nri_bandwidth_core::cgroup::{Cgroup, CgroupFs};
use nri_bandwidth_core::datapath::bucket;
use nri_bandwidth_core::datapath::{self as limiter, Datapath};
use nri_bandwidth_core::model::{Limit, Owner, Source};
use nri_bandwidth_core::rate::Rate;
use nri_bandwidth_testkit::quantile;
use nri_bandwidth_testkit::testbed::{self, Iperf3, Testbed};
use nri_bandwidth_tests::delay_line::DelayLine;
use nri_bandwidth_tests::tbf::Tbf;

use crate::args::{Args, Dir};
use crate::results::{LineStats, Rtt, Run, counters};
use nri_bandwidth_tests::interrupt::{interrupted, sleep_unless};

/// The bench's private pin root: everything below it is removed on drop, together
/// with the lock file the limiter keeps for it in /run/nri-bandwidth.
pub struct PinRoot(pub PathBuf);

impl Drop for PinRoot {
    fn drop(&mut self) {
        if self.0.exists()
            && let Err(e) = limiter::remove_tree(&self.0)
        {
            eprintln!("bw-bench: removing {}: {e}", self.0.display());
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

/// The owner the bench's limits are recorded under.
pub fn bench_owner() -> Owner {
    Owner {
        source: Source::Manual,
        pod_name: "bw-bench".into(),
        ..Owner::default()
    }
}

/// An ingress limit at `rate`.
pub fn ingress_limit(rate: Rate) -> Limit {
    Limit {
        ingress: Some(rate),
        ..Limit::default()
    }
}

/// Our limit on the testbed's cgroup; removed on drop.
pub struct OurLimit<'a> {
    dp: &'a Datapath,
    cgid: u64,
    done: bool,
}

impl OurLimit<'_> {
    pub fn remove(mut self) -> Result<()> {
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

pub struct Bench<'a> {
    a: &'a Args,
    tb: Testbed,
    /// The delay line bridging the testbed's middle namespace (delay > 0).
    line: Option<DelayLine>,
    delay_ms: f64,
    target: IpAddr,
    port: u16,
    /// With --local-senders: the client's own cgroup, where the senders' program goes.
    senders: Option<Cgroup>,
}

impl Drop for Bench<'_> {
    fn drop(&mut self) {
        if let Some(s) = &self.senders {
            nri_bandwidth_testkit::testbed::remove_test_cgroup(&s.dir);
        }
    }
}

impl<'a> Bench<'a> {
    /// A testbed for one delay, with its delay line and iperf3 server running.
    pub fn new(a: &'a Args, cgfs: &CgroupFs, delay_ms: f64) -> Result<Self> {
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
        let senders = if a.local_senders {
            let rel = format!("/nri-bandwidth-test/bench-senders-{}", std::process::id());
            let dir = cgfs.create(&rel).context("creating the senders' cgroup")?;
            Some(cgfs.cgroup(dir)?)
        } else {
            None
        };
        let mut b = Bench {
            a,
            tb,
            line: None,
            delay_ms,
            target,
            port: a.port,
            senders,
        };
        b.start_line()?;
        b.tb.start_iperf3_server(b.port)
            .context("starting iperf3 in the workload")?;
        std::thread::sleep(Duration::from_millis(200));
        Ok(b)
    }

    pub fn start_line(&mut self) -> Result<()> {
        if let Some(m) = &self.tb.middle {
            let d = Duration::from_secs_f64(self.delay_ms / 1000.0);
            self.line =
                Some(DelayLine::start(&m.ns, &m.a, &m.b, d).context("starting the delay line")?);
        }
        Ok(())
    }

    /// What the delay line saw since it started; a fresh line takes over.
    pub fn line_stats(&mut self) -> Result<Option<LineStats>> {
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
            late_p50_us: quantile(&late, 0.5),
            late_p99_us: quantile(&late, 0.99),
            late_max_us: late.iter().copied().fold(f64::NAN, f64::max),
            realtime: both.iter().all(|d| d.realtime),
        }))
    }
}

impl Bench<'_> {
    /// One iperf3 run from the root namespace to the workload, with pings alongside.
    /// The workload's cgroup, its address, and a way to start a process in it.
    pub fn workload(&mut self) -> (Cgroup, IpAddr, &mut Testbed) {
        (self.tb.cg(), self.target, &mut self.tb)
    }

    pub fn measure(
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
        c.cgroup = self.senders.as_ref().map(|s| s.dir.clone());

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
                p50_ms: quantile(&v, 0.5),
                p99_ms: quantile(&v, 0.99),
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
        let first = r.first_second();
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

    pub fn run_ours(&self, dp: &Datapath, dir: Dir, rate: Rate, streams: u32, cc: &str) -> Run {
        let limit = Limit {
            ingress: (dir == Dir::Ingress).then_some(rate),
            egress: (dir == Dir::Egress).then_some(rate),
            ..Limit::default()
        };
        let owner = bench_owner();
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
        if let (Some(scope), Some(r)) = (&self.senders, limit.ingress) {
            let paced = dp
                .attach_senders(scope)
                .and_then(|()| dp.set_destinations(cgid, &[self.target], Some(r.bytes_per_sec())));
            if let Err(e) = paced {
                return Run::failed("ours", format!("pacing the local sender: {e}"));
            }
        }
        // The kernel keeps a cgroup's counters across unlimit/limit: report the delta.
        let before = dp.entry(cgid).ok().flatten().map(|e| counters(&e, dir));
        let mut run = self.measure("ours", dir, streams, cc, Some(rate.bits_per_sec()));
        run.burst_bytes = Some(bucket::burst_bytes(rate.bytes_per_sec(), None, dir.tbf()));
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

    pub fn run_tbf(&self, dir: Dir, rate: Rate, streams: u32, cc: &str) -> Run {
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
    pub fn recover(&mut self) {
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

    pub fn server_listening(&self) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.tb.ns, "ss", "-ltnH"])
            .arg(format!("sport = :{}", self.port))
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    }

    pub fn pause(&self) {
        sleep_unless(Duration::from_secs_f64(self.a.pause), None);
    }
}

/// Busy CPU time of the whole machine so far, seconds (all cores; /proc/stat
/// counts in USER_HZ = 100).
pub fn cpu_busy_s() -> f64 {
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
