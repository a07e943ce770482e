//! The command line of bw-bench: what to measure, and the two enums (direction,
//! limiter) that name a cell's axes in the JSON.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde::Serialize;

use nri_bandwidth_core::rate::Rate;
use nri_bandwidth_tests::tbf::Direction;

#[derive(Parser, Debug)]
#[command(
    name = "bw-bench",
    about = "Benchmark nri-bandwidth against CNI-style tc tbf (needs root)",
    after_help = "Directions are the workload's: ingress = bytes it receives, egress = bytes it sends."
)]
pub struct Args {
    /// Limits to test, Kubernetes quantities in bits per second.
    #[arg(long, value_delimiter = ',', default_value = "1M,10M,100M,1G")]
    pub rates: Vec<Rate>,
    /// One-way delays in milliseconds between the host and the workload. 0 is the
    /// plain veth; anything else cuts it with a namespace where the user-space delay
    /// line holds every frame that long. Each delay gets its own testbed.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub delays: Vec<f64>,
    /// Runs per limiter and cell, alternating ours/tbf (mean and spread reported).
    #[arg(long, default_value_t = 1)]
    pub repeats: u32,
    /// Also measure CPU per gigabit: no limiter, ours and tbf+ifb at --cpu-rate,
    /// on the plain veth.
    #[arg(long)]
    pub cpu: bool,
    #[arg(long, default_value = "1G")]
    pub cpu_rate: Rate,
    /// Also time attaching and detaching limits on this many cgroups (0 = skip).
    #[arg(long, default_value_t = 0)]
    pub attach_cgroups: u32,
    /// Parallel TCP streams per run (iperf3 -P).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub streams: Vec<u32>,
    /// Congestion controls of the sender (iperf3 -C).
    #[arg(long, value_delimiter = ',', default_value = "cubic,bbr")]
    pub cc: Vec<String>,
    /// Directions to test.
    #[arg(long, value_delimiter = ',', default_value = "ingress,egress")]
    pub dirs: Vec<Dir>,
    /// Limiters to compare.
    #[arg(long, value_delimiter = ',', default_value = "ours,tbf")]
    pub limiters: Vec<LimiterKind>,
    /// Measured seconds per run (iperf3 -t).
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// Seconds omitted at the start of each run (iperf3 -O; they come on top of --seconds).
    #[arg(long, default_value_t = 1)]
    pub omit: u32,
    /// Use the workload's IPv6 address instead of IPv4.
    #[arg(long)]
    pub ipv6: bool,
    /// Also write the markdown report to FILE.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write the raw results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Only measure the per-packet cost (no traffic).
    #[arg(long, conflicts_with = "no_cost")]
    pub cost_only: bool,
    /// Skip the per-packet cost measurement.
    #[arg(long)]
    pub no_cost: bool,
    /// Measure RTT under load with ping (the default).
    #[arg(long, overrides_with = "no_ping")]
    pub ping: bool,
    /// Do not ping during runs (the verdict then ignores RTT).
    #[arg(long, overrides_with = "ping")]
    pub no_ping: bool,
    /// Seconds to wait between runs, so queues drain and buckets refill.
    #[arg(long, default_value_t = 1.0)]
    pub pause: f64,
    /// TCP port of the iperf3 server in the workload.
    #[arg(long, default_value_t = 5311)]
    pub port: u16,
    /// The same-node scenario: the client runs in a cgroup of its own that the
    /// senders' program is attached to, so for our ingress limit the sender is
    /// paced toward the workload (the receiver's gate stays as backstop).
    #[arg(long)]
    pub local_senders: bool,
    /// Instead of the matrix: ingress held at the senders of other nodes, one and
    /// two sending nodes (each its own pin root and share-exchange agent), at each
    /// delay, rate, stream count and congestion control.
    #[arg(long, conflicts_with = "transfers")]
    pub cross_node: bool,
    /// Instead of the matrix: completion times of request/response transfers to the
    /// workload (it receives SIZE bytes, answers one) at each rate and delay, for
    /// no limit, ours and tbf.
    #[arg(long)]
    pub transfers: bool,
    /// Transfer sizes in bytes, with --transfers.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10000,100000,1000000,10000000"
    )]
    pub transfer_sizes: Vec<u64>,
    /// Transfers per size, limiter and rate (a quarter of that, at least 3, for the
    /// largest size).
    #[arg(long, default_value_t = 20)]
    pub transfer_repeats: u32,
}

impl Args {
    pub fn ping_on(&self) -> bool {
        !self.no_ping
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    pub fn name(self) -> &'static str {
        match self {
            Dir::Ingress => "ingress",
            Dir::Egress => "egress",
        }
    }
    pub fn tbf(self) -> Direction {
        match self {
            Dir::Ingress => Direction::Ingress,
            Dir::Egress => Direction::Egress,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimiterKind {
    Ours,
    Tbf,
}

#[cfg(test)]
mod tests {
    use super::*;

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
