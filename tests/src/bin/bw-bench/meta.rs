//! The machine and the settings a run was made with: the report's header.

use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use nri_bandwidth_core::datapath::bucket;
use nri_bandwidth_tests::tbf;

use crate::args::Args;
use crate::results::{Meta, Report};

pub fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

pub fn meta(a: &Args) -> Meta {
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
            "both limiters: max(20 ms of rate, {} B ingress, {} B egress) (our default)",
            bucket::MIN_INGRESS_BURST_BYTES,
            bucket::MIN_EGRESS_BURST_BYTES
        ),
    }
}

pub fn header(m: &Meta, r: &mut Report) {
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
pub fn utc_now() -> String {
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
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
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
}
