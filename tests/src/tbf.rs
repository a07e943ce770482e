//! tc `tbf` set up the way the CNI `bandwidth` plugin does it, on a testbed's
//! host-side veth, so the benchmark can hold our limiter side by side with what
//! Kubernetes users get today.
//!
//! - workload ingress (bytes the pod receives): `tbf` as the root qdisc of the
//!   host-side veth, which is the interface that sends into the pod:
//!   `tc qdisc add dev <host_if> root tbf rate <R>bit burst <B> latency 25ms`;
//! - workload egress (bytes the pod sends): the plugin cannot shape on the veth's
//!   receive side, so it redirects everything that arrives there to an `ifb` device
//!   and shapes on the ifb's transmit side: `ip link add <ifb> type ifb`,
//!   `tc qdisc add dev <host_if> handle ffff: ingress`,
//!   `tc filter add dev <host_if> parent ffff: protocol all u32 match u32 0 0 action
//!   mirred egress redirect dev <ifb>` and the same `tbf` as root qdisc of the ifb.
//!
//! **Burst.** Both limiters get the same bucket: [`default_burst`] is our limiter's
//! default ([`nri_bandwidth_core::datapath::bucket::burst_bytes`] with no operator value, 20 ms of
//! the rate and at least the direction's floor). That is deliberately *not* what
//! containerd does: it hands the plugin a burst of 512 MiB when the pod has no burst
//! annotation, which lets tbf pass seconds of traffic at line rate after any idle
//! period (512 MiB is 43 s at 100 Mbit/s) and would make every short benchmark run a
//! measurement of the burst instead of the rate. `latency 25ms` (the queue limit) is
//! the plugin's constant.
//!
//! Everything made is removed on drop (qdiscs, filter, ifb), also when the caller
//! panics; deleting what a vanished interface took with it is not an error.

use std::io;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use nri_bandwidth_core::datapath::bucket;
use nri_bandwidth_core::rate::Rate;
use nri_bandwidth_testkit::testbed::Testbed;

/// The queue limit the CNI bandwidth plugin gives tbf, in milliseconds.
pub const LATENCY_MS: u32 = 25;

/// Linux interface names hold at most 15 bytes (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Ingress: tbf on the host-side veth. Egress: ifb redirect and tbf on the ifb.
pub use nri_bandwidth_core::datapath::bucket::Direction;

/// The burst both limiters get in the benchmark: our limiter's default for `rate`
/// (see the module comment for why not containerd's 512 MiB).
pub fn default_burst(rate: Rate, direction: Direction) -> u64 {
    bucket::burst_bytes(rate.bytes_per_sec(), None, direction)
}

/// An ifb name derived from the host-side interface, so that parallel testbeds never
/// share one: `nbh123450` becomes `nbi123450`; any other name gets a per-process
/// sequence. Never longer than 15 bytes.
pub fn ifb_name_for(host_if: &str) -> String {
    let name = match host_if.strip_prefix("nbh") {
        Some(rest) => format!("nbi{rest}"),
        None => format!(
            "nbi{}x{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        ),
    };
    name.chars().take(IFNAME_MAX).collect()
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// Fails with the package to install when `tc` (or `ip`) is missing.
pub fn check_tools() -> Result<()> {
    for bin in ["tc", "ip"] {
        if !on_path(bin) {
            bail!("`{bin}` not found: install iproute2 (apt-get install iproute2)");
        }
    }
    Ok(())
}

/// Runs a command and returns its stderr as the error when it fails.
fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                anyhow::anyhow!("`{}` not found: install iproute2", args[0])
            } else {
                anyhow::anyhow!("running `{}`: {e}", args.join(" "))
            }
        })?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs a cleanup command, ignoring failures (the thing may be gone already).
fn quiet(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The plugin's tbf: `tc qdisc add dev <dev> root tbf rate <R>bit burst <B> latency 25ms`.
fn tbf_args(dev: &str, rate: Rate, burst: u64) -> Vec<String> {
    let rate = format!("{}bit", rate.bits_per_sec());
    let latency = format!("{LATENCY_MS}ms");
    [
        "tc",
        "qdisc",
        "add",
        "dev",
        dev,
        "root",
        "tbf",
        "rate",
        &rate,
        "burst",
        &burst.to_string(),
        "latency",
        &latency,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// tc state made on one host-side interface; removed on drop.
#[derive(Debug)]
pub struct Tbf {
    host_if: String,
    direction: Direction,
    rate: Rate,
    burst: u64,
    /// Root tbf on the host-side veth (workload ingress).
    root_qdisc: bool,
    /// `ffff:` ingress qdisc (and its redirect filter) on the host-side veth.
    ingress_qdisc: bool,
    /// The ifb device, once created.
    ifb: Option<String>,
}

impl Tbf {
    /// Shapes one direction of a testbed's workload at `rate` with [`default_burst`].
    pub fn for_testbed(tb: &Testbed, direction: Direction, rate: Rate) -> Result<Tbf> {
        let burst = default_burst(rate, direction);
        match direction {
            Direction::Ingress => Tbf::ingress(&tb.host_if, rate, burst),
            Direction::Egress => Tbf::egress(&tb.host_if, &ifb_name_for(&tb.host_if), rate, burst),
        }
    }

    fn empty(host_if: &str, direction: Direction, rate: Rate, burst: u64) -> Tbf {
        Tbf {
            host_if: host_if.to_string(),
            direction,
            rate,
            burst,
            root_qdisc: false,
            ingress_qdisc: false,
            ifb: None,
        }
    }

    /// Workload ingress: tbf as the root qdisc of `host_if` (the interface that
    /// sends into the workload).
    pub fn ingress(host_if: &str, rate: Rate, burst: u64) -> Result<Tbf> {
        check_tools()?;
        let mut t = Tbf::empty(host_if, Direction::Ingress, rate, burst);
        t.add_tbf(host_if)?;
        t.root_qdisc = true;
        Ok(t)
    }

    /// Workload egress: redirects everything `host_if` receives to a new ifb device
    /// `ifb` and shapes there.
    pub fn egress(host_if: &str, ifb: &str, rate: Rate, burst: u64) -> Result<Tbf> {
        check_tools()?;
        if ifb.is_empty() || ifb.len() > IFNAME_MAX {
            bail!("ifb name {ifb:?} must be 1 to {IFNAME_MAX} bytes long");
        }
        let mtu = std::fs::read_to_string(format!("/sys/class/net/{host_if}/mtu"))
            .with_context(|| format!("reading the MTU of {host_if} (does it exist?)"))?
            .trim()
            .to_string();
        // From here on, drop removes whatever part was made.
        let mut t = Tbf::empty(host_if, Direction::Egress, rate, burst);
        run(&["ip", "link", "add", "name", ifb, "mtu", &mtu, "type", "ifb"]).map_err(|e| {
            anyhow::anyhow!(
                "cannot create ifb device {ifb}: {e:#}; the kernel needs the ifb module \
                 (`modprobe ifb`, CONFIG_IFB) to shape workload egress CNI-style"
            )
        })?;
        t.ifb = Some(ifb.to_string());
        run(&["ip", "link", "set", "dev", ifb, "up"])?;
        t.add_tbf(ifb)?;
        run(&[
            "tc", "qdisc", "add", "dev", host_if, "handle", "ffff:", "ingress",
        ])?;
        t.ingress_qdisc = true;
        run(&[
            "tc", "filter", "add", "dev", host_if, "parent", "ffff:", "protocol", "all", "u32",
            "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb,
        ])?;
        Ok(t)
    }

    fn add_tbf(&self, dev: &str) -> Result<()> {
        let args = tbf_args(dev, self.rate, self.burst);
        run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    pub fn direction(&self) -> Direction {
        self.direction
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Bucket size in bytes given to tbf.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// The ifb device shaping workload egress, if any.
    pub fn ifb(&self) -> Option<&str> {
        self.ifb.as_deref()
    }
}

impl Drop for Tbf {
    fn drop(&mut self) {
        let dev = self.host_if.as_str();
        if self.ingress_qdisc {
            // Takes the redirect filter with it.
            quiet(&[
                "tc", "qdisc", "del", "dev", dev, "handle", "ffff:", "ingress",
            ]);
        }
        if self.root_qdisc {
            quiet(&["tc", "qdisc", "del", "dev", dev, "root"]);
        }
        if let Some(ifb) = self.ifb.take() {
            // Deleting the device removes its tbf too.
            quiet(&["ip", "link", "del", "dev", &ifb]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifb_names_fit_and_follow_the_veth() {
        assert_eq!(ifb_name_for("nbh123459"), "nbi123459");
        assert_eq!(ifb_name_for("nbh99999123456"), "nbi99999123456");
        let other = ifb_name_for("a-very-long-interface");
        assert!(
            other.starts_with("nbi") && other.len() <= IFNAME_MAX,
            "{other}"
        );
        assert!(ifb_name_for("nbh99999123456789").len() <= IFNAME_MAX);
    }

    #[test]
    fn burst_is_our_default_not_containerds() {
        let r = Rate::parse("1G").unwrap();
        assert_eq!(default_burst(r, Direction::Ingress), 2_500_000); // 20 ms at 1 Gbit/s
        let r = Rate::parse("10M").unwrap();
        assert_eq!(default_burst(r, Direction::Egress), 25_000);
        assert_eq!(
            default_burst(r, Direction::Ingress),
            bucket::MIN_INGRESS_BURST_BYTES
        );
    }

    #[test]
    fn tbf_command_matches_the_plugin() {
        let a = tbf_args("nbh1", Rate::parse("100M").unwrap(), 250_000);
        assert_eq!(
            a.join(" "),
            "tc qdisc add dev nbh1 root tbf rate 100000000bit burst 250000 latency 25ms"
        );
    }
}
