//! The cost section: per packet, CPU per gigabit, attach times (bw-bench), the
//! daemon at scale (nri-synth) and under real containerd (nri-latency).

use nri_bandwidth_tests::human_bps;
use serde_json::Value;

use crate::values::{Out, f, fmt3};

pub fn cost(o: &mut Out, m: &Value, synth: &[Value], nri_latency: &str) {
    o.l("");
    o.l("## Cost");
    o.l("");
    o.l("### Per packet (BPF_PROG_TEST_RUN, in the kernel)");
    o.l("");
    o.table("| case | ns per packet | × empty program |");
    for r in m["cost"].as_array().into_iter().flatten() {
        o.l(format!(
            "| {} | {:.1} | {:.2} |",
            r["case"].as_str().unwrap_or("?"),
            f(&r["ns_per_packet"]),
            f(&r["ratio_to_empty"])
        ));
    }
    o.l("");
    o.l("### CPU per gigabit (whole machine, /proc/stat, plain veth, one cubic stream)");
    o.l("");
    o.table("| direction | limiter | goodput | busy CPU s per Gbit received |");
    for r in m["cpu"].as_array().into_iter().flatten() {
        o.l(format!(
            "| {} | {} | {} | {:.3} |",
            r["direction"].as_str().unwrap_or("?"),
            r["limiter"].as_str().unwrap_or("?"),
            human_bps(f(&r["received_bps"])),
            f(&r["cpu_s_per_gbit"])
        ));
    }
    if let Some(at) = m["attach"].as_object() {
        o.l("");
        o.l(format!(
            "### Attach and detach ({} cgroups, one at a time, through the library)",
            at.get("cgroups").cloned().unwrap_or_default()
        ));
        o.l("");
        o.table("| attach p50 / p99 ms | update in place p50 ms | detach p50 / p99 ms |");
        let g = |k: &str| at.get(k).map_or(f64::NAN, f);
        o.l(format!(
            "| {} / {} | {} | {} / {} |",
            fmt3(g("attach_p50_ms")),
            fmt3(g("attach_p99_ms")),
            fmt3(g("update_p50_ms")),
            fmt3(g("detach_p50_ms")),
            fmt3(g("detach_p99_ms"))
        ));
    }
    o.l("");
    o.l("### The daemon at scale (synthetic runtime: the real plugin binary, real cgroups and limits)");
    o.l("");
    o.l("`nri-synth` launches `nri-bandwidth` as containerd launches plugins and drives N pods through \
         RunPodSandbox / RemovePodSandbox; latency is what the runtime waits (its 2 s budget).");
    o.l("");
    o.table("| pods | RunPodSandbox p50 / p99 ms | RemovePodSandbox p50 / p99 ms | RSS idle → with N pods (peak) MiB |");
    for r in synth {
        let mib = |k: &str| r[k].as_u64().unwrap_or(0) as f64 / 1024.0;
        o.l(format!(
            "| {} | {} / {} | {} / {} | {:.1} → {:.1} ({:.1}) |",
            r["pods"],
            fmt3(f(&r["run_p50_ms"])),
            fmt3(f(&r["run_p99_ms"])),
            fmt3(f(&r["remove_p50_ms"])),
            fmt3(f(&r["remove_p99_ms"])),
            mib("rss_idle_kib"),
            mib("rss_kib"),
            mib("rss_peak_kib")
        ));
    }
    o.l("");
    o.l("### Handler latency under real containerd (the plugin's own timing, from its metrics)");
    o.l("");
    for line in nri_latency.lines().filter(|l| l.starts_with('|')) {
        o.l(line);
    }
}
