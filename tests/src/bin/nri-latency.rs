//! Handler latency of the NRI plugin under a real containerd: creates N pods (each
//! with a bandwidth annotation and one started container) through CRI, removes
//! them, and prints the plugin's own p50/p99 per NRI call from its metrics
//! endpoint, as a markdown table. `make bench-nri` runs it for 10 and 100 pods.
//!
//! usage: nri-latency [PODS...]     (default: 10 100; needs root and built peers)

use std::time::Instant;

use nri_bandwidth_tests::e2e::{Containerd, Cri, PluginProc, scrape};

fn main() {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![10, 100]
    } else {
        counts
    };
    println!("| pods | NRI call | calls | p50 ms | p99 ms |\n|---|---|---|---|---|");
    for (i, &n) in counts.iter().enumerate() {
        let ctd = Containerd::start(&format!("lat{i}"), 80 + i as u8);
        let pins = nri_bandwidth_tests::test_pin_root(&format!("lat{i}"));
        let addr = format!("127.0.0.1:{}", 19105 + i);
        let plugin = PluginProc::start(
            &ctd.nri_socket(),
            &pins,
            &ctd.dir.join("plugin.log"),
            &["--metrics-address", &addr],
        );
        let t = Instant::now();
        let mut pods = Vec::new();
        for k in 0..n {
            let uid = format!("lat-{k}");
            let pod = ctd.run_pod(
                &format!("p{k}"),
                &uid,
                &[("kubernetes.io/egress-bandwidth", "50M")],
            );
            ctd.run_container(&pod, &uid, "app", 5201);
            pods.push(pod);
        }
        eprintln!("{n} pods created in {:.1} s", t.elapsed().as_secs_f64());
        for p in &pods {
            ctd.remove_pod(p);
        }
        let m = scrape(&addr);
        let mut methods: Vec<String> = m
            .lines()
            .filter(|l| l.starts_with("nri_bandwidth_handler_duration_seconds_count"))
            .map(|l| l.to_string())
            .collect();
        methods.sort();
        for line in methods {
            let method = line.split('"').nth(1).unwrap_or("?").to_string();
            let count = line.rsplit(' ').next().unwrap_or("0");
            let q = |q: &str| {
                let key = format!(
                    "nri_bandwidth_handler_latency_recent_seconds{{method=\"{method}\",quantile=\"{q}\"}} "
                );
                m.lines()
                    .find_map(|l| l.strip_prefix(&key))
                    .and_then(|v| v.parse::<f64>().ok())
                    .map_or(f64::NAN, |v| v * 1e3)
            };
            println!(
                "| {n} | {method} | {count} | {:.2} | {:.2} |",
                q("0.5"),
                q("0.99")
            );
        }
        drop(plugin);
        drop(ctd);
        let _ = nri_bandwidth_core::datapath::remove_tree(&pins);
    }
}
