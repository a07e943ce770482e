//! The comparison a Kubernetes user makes: a private containerd 2.x whose CNI chain
//! ends with the real CNI bandwidth plugin (built from its Go module), one pod
//! limited by that plugin (`kubernetes.io/*-bandwidth`, which containerd hands to
//! it) and one by ours (the same values under `nri-bandwidth.io/*-bandwidth`, which
//! the CNI plugin does not read), the same workload and traffic, alternating.
//! Our daemon runs only while our pod exists, so the CNI pod is never limited twice.
//!
//! Per run: goodput over the measured seconds (bwload, after one second of warm-up),
//! RTT of pings from the host to the pod beside the flow, and the wire rate every
//! 100 ms from the pod's host-side counters (ingress: the pod's veth tx, after tbf;
//! egress: the bridge's rx, after the ifb), from which the first-second overshoot.
//! JSON lines on stdout. Needs root and built peers (`make peers`).
//!
//! usage: cni-compare [SECONDS] [REPEATS]   (default 8 2)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nri_bandwidth_testkit::quantile;
use nri_bandwidth_testkit::testbed::ping_rtts;
use nri_bandwidth_tests::e2e::{self, Containerd, Cri, PluginProc};
use serde::Serialize;

#[derive(Serialize)]
struct Row {
    limiter: &'static str,
    direction: &'static str,
    rate_bps: u64,
    repeat: u32,
    goodput_bps: f64,
    ratio: f64,
    rtt_p50_ms: f64,
    rtt_p99_ms: f64,
    /// Wire bytes over the first second after the transfer started / limit.
    first_second_ratio: f64,
    /// (seconds since start, bit/s on the wire) every 100 ms.
    series: Vec<(f64, f64)>,
}

fn read_u64(p: &str) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The pod's host-side veth: the only port of the bridge while one pod runs.
fn pod_veth(bridge: &str) -> String {
    let ports: Vec<String> = std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ports.len(), 1, "expected one pod on {bridge}: {ports:?}");
    ports[0].clone()
}

fn one(
    ctd: &Containerd,
    limiter: &'static str,
    dir: &'static str,
    rate: &str,
    secs: u32,
    k: usize,
) -> (f64, Vec<f64>, Vec<(f64, f64)>) {
    let key = match limiter {
        "cni" => format!("kubernetes.io/{dir}-bandwidth"),
        _ => format!("nri-bandwidth.io/{dir}-bandwidth"),
    };
    let uid = format!("cmp-{limiter}-{k}");
    let pod = ctd.run_pod(&uid, &uid, &[(&key, rate)]);
    ctd.run_container(&pod, &uid, "load", 5201);
    let ip = ctd.pod_ip(&pod);
    let veth = pod_veth(&ctd.bridge);
    let counter = if dir == "ingress" {
        format!("/sys/class/net/{veth}/statistics/tx_bytes")
    } else {
        format!("/sys/class/net/{}/statistics/rx_bytes", ctd.bridge)
    };
    std::thread::sleep(Duration::from_millis(300));

    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut last = read_u64(&counter);
            let mut out = Vec::new();
            let mut tick = t0;
            while !done.load(Ordering::Relaxed) {
                tick += Duration::from_millis(100);
                if let Some(d) = tick.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                let now = read_u64(&counter);
                out.push((
                    tick.duration_since(t0).as_secs_f64(),
                    (now - last) as f64 * 8.0 / 0.1,
                ));
                last = now;
            }
            out
        })
    };
    let pinger = {
        let ip = ip.parse().unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            ping_rtts(ip, (secs - 1) * 100, 0.01).unwrap_or_default()
        })
    };
    // bwload: "R" = the pod receives (its ingress), "S" = it sends.
    let mode = if dir == "ingress" { "R" } else { "S" };
    let goodput = e2e::measure(&ip, 5201, mode, secs);
    done.store(true, Ordering::Relaxed);
    let series = sampler.join().unwrap();
    let rtts = pinger.join().unwrap();
    ctd.remove_pod(&pod);
    (goodput, rtts, series)
}

/// Bits on the wire in the first second (headers included, as both limits count).
fn first_second_bits(series: &[(f64, f64)]) -> f64 {
    series
        .iter()
        .filter(|(t, _)| *t <= 1.0 + 1e-6)
        .map(|(_, bps)| bps * 0.1)
        .sum()
}

fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let secs = args.first().copied().unwrap_or(8);
    let repeats = args.get(1).copied().unwrap_or(2);
    let ctd = Containerd::start_with_cni_bandwidth("cmp", 90);
    let pins = nri_bandwidth_tests::PinRoot::new("cni-compare");
    let mut k = 0;
    for dir in ["ingress", "egress"] {
        for (rate, bps) in [("10M", 10_000_000u64), ("100M", 100_000_000)] {
            for repeat in 0..repeats {
                for limiter in ["cni", "ours"] {
                    k += 1;
                    eprintln!("cni-compare: {limiter} {dir} {rate} #{repeat}");
                    let plugin = (limiter == "ours").then(|| {
                        PluginProc::start(
                            &ctd.nri_socket(),
                            &pins.0,
                            &ctd.dir.join("plugin.log"),
                            &[],
                        )
                    });
                    let (goodput, rtts, series) = one(&ctd, limiter, dir, rate, secs, k);
                    drop(plugin);
                    let row = Row {
                        limiter,
                        direction: dir,
                        rate_bps: bps,
                        repeat,
                        goodput_bps: goodput,
                        ratio: goodput / bps as f64,
                        rtt_p50_ms: quantile(&rtts, 0.5),
                        rtt_p99_ms: quantile(&rtts, 0.99),
                        first_second_ratio: first_second_bits(&series) / bps as f64,
                        series,
                    };
                    println!("{}", serde_json::to_string(&row).unwrap());
                }
            }
        }
    }
}
