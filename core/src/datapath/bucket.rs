//! Turning a configured rate and burst into the numbers the kernel bucket uses
//! (`struct bw_dir`). Pure arithmetic, so every default is unit-tested here.

use crate::datapath::abi::BwDir;

/// Credit a bucket keeps while idle, as time at the configured rate. The ACK gate
/// needs at least one sender probe timeout (~8 ms on Linux at HZ=250) of credit, or
/// tokens earned while the sender waits overflow and goodput drops; 20 ms held
/// 0.93-1.0 of the rate in measurements, and bounds the burst a pod can send after
/// idling to 20 ms worth of its rate (runtimes hand CNI 512 MiB instead).
pub const DEFAULT_BURST_NS: u64 = 20_000_000;

/// The datapath reads a tick-granular clock (1-4 ms steps) per packet, so a bucket
/// shallower than a few ticks would starve between ticks: operators' bursts are
/// raised to at least this much time at the rate.
pub const MIN_BURST_NS: u64 = 10_000_000;

/// Which way a bucket limits, from the workload's point of view: the two have
/// different floors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// The smallest bucket in this direction.
    pub fn min_burst_bytes(self) -> u64 {
        match self {
            Direction::Ingress => MIN_INGRESS_BURST_BYTES,
            Direction::Egress => MIN_EGRESS_BURST_BYTES,
        }
    }
}

/// The smallest egress bucket: a few full-size frames. Pacing holds egress TCP, so
/// the bucket only bounds what leaves at once; a deeper floor let flows at low
/// rates overshoot (docs/design.md, "Burst"). Policed packets larger than the
/// bucket pass when it is full (`police` in bw_packet.h), so GSO super-packets
/// still get through at any rate.
pub const MIN_EGRESS_BURST_BYTES: u64 = 4096;

/// The smallest ingress bucket. While the ACK gate holds a remote sender, credit
/// accrues until the sender's probe; a shallower bucket loses it and goodput
/// drops (measured with 4 KiB: docs/design.md, "Burst").
pub const MIN_INGRESS_BURST_BYTES: u64 = SUPER_PACKET_BYTES;

/// One GSO/GRO super-packet: 64 KiB of payload plus headers. TCP debt may always
/// reach two of them before the drop threshold, so an aggregate the veth hands
/// the hook at a low rate is never dropped for its size alone.
pub const SUPER_PACKET_BYTES: u64 = 64 * 1024 + 4096;

/// Receive-window slack beyond rate x RTT, as time at the rate, shared by a
/// cgroup's receiving sockets: what a flow may have in flight beyond one
/// bandwidth-delay product. Small enough that the debt the ACK gate must repay is
/// refilled within one sender probe timeout (measured: 1 ms held 0.93-1.0).
pub const CLAMP_BUDGET_NS: u64 = 1_000_000;

/// Debt past which TCP packets are dropped: far beyond anything pacing or the ACK
/// gate lets build up, so drops only hit traffic that ignores every other signal
/// (`BW_MIN_DROP_NS`, which the egress program's lower threshold for a new
/// flow's unpaced first segments is floored at too).
pub const MIN_DROP_NS: u64 = crate::datapath::abi::ffi::BW_MIN_DROP_NS as u64;

/// Bursts of debt a new flow's unpaced first segments may run up in the egress
/// program before it drops them (`BW_YOUNG_DROP_BURSTS`).
pub const YOUNG_DROP_BURSTS: u64 = crate::datapath::abi::ffi::BW_YOUNG_DROP_BURSTS as u64;

const NS_PER_SEC: u128 = 1_000_000_000;

/// `bytes * mult >> shift` must not overflow for packets up to 2 MiB (BIG TCP
/// super-packets are at most 512 KiB), so mult stays below 2^43.
const MAX_MULT: u128 = 1 << 43;

/// Fixed-point factor for ns per byte, so the per-packet path has no division.
pub fn cost_factor(bytes_per_sec: u64) -> (u64, u32) {
    assert!(bytes_per_sec > 0);
    let rate = bytes_per_sec as u128;
    let mut shift = 32u32;
    loop {
        let mult = (NS_PER_SEC << shift).div_ceil(rate);
        if mult < MAX_MULT || shift == 0 {
            return (mult.min(MAX_MULT - 1) as u64, shift);
        }
        shift -= 1;
    }
}

/// Nanoseconds `bytes` take at `bytes_per_sec`.
pub fn ns_for(bytes: u64, bytes_per_sec: u64) -> u64 {
    ((bytes as u128 * NS_PER_SEC).div_ceil(bytes_per_sec as u128)).min(u64::MAX as u128) as u64
}

/// The burst in bytes: the operator's value, or [`DEFAULT_BURST_NS`] of the rate,
/// never below the direction's floor nor [`MIN_BURST_NS`] of the rate.
pub fn burst_bytes(bytes_per_sec: u64, burst: Option<u64>, dir: Direction) -> u64 {
    let of = |ns: u64| (bytes_per_sec as u128 * ns as u128 / NS_PER_SEC) as u64;
    burst
        .unwrap_or(of(DEFAULT_BURST_NS))
        .max(dir.min_burst_bytes())
        .max(of(MIN_BURST_NS))
}

/// Configuration fields of one direction; bucket state and counters are left zero
/// for the caller to merge with what the kernel already holds.
pub fn dir_config(bytes_per_sec: u64, burst: Option<u64>, dir: Direction) -> BwDir {
    let (cost_mult, cost_shift) = cost_factor(bytes_per_sec);
    let burst_ns = ns_for(burst_bytes(bytes_per_sec, burst, dir), bytes_per_sec);
    BwDir {
        rate: bytes_per_sec,
        cost_mult,
        cost_shift,
        burst_ns,
        // Marks start once the debt is half a burst: well past what the ACK gate and
        // pacing leave in normal operation, early enough to beat the drop threshold.
        mark_ns: burst_ns / 2,
        drop_ns: (4 * burst_ns)
            .max(MIN_DROP_NS)
            .max(ns_for(2 * SUPER_PACKET_BYTES, bytes_per_sec)),
        ..BwDir::default()
    }
}

/// A socket counts as active (and takes a share of the rate) once it moved this
/// many bytes in an epoch: 1/64 of what the whole cgroup may move in one (~537 ms),
/// at most [`MAX_ACTIVE_BYTES`], so a control connection that trickles a few bytes
/// does not dilute the share of bulk flows, while a new bulk flow is counted
/// within its first round trips (until it is, it may send at the whole rate).
pub fn active_bytes(bytes_per_sec: u64) -> u64 {
    let epoch_ns = 1u128 << 29;
    ((bytes_per_sec as u128 * epoch_ns / NS_PER_SEC / 64) as u64).clamp(1, MAX_ACTIVE_BYTES)
}

/// Three segments: what a flow starting up moves in its first round trip
/// (`BW_MAX_ACTIVE_BYTES`, which local senders are counted with too).
pub const MAX_ACTIVE_BYTES: u64 = crate::datapath::abi::ffi::BW_MAX_ACTIVE_BYTES as u64;

/// Window slack in bytes shared by the receiving sockets of a cgroup (the kernel
/// adds rate x each socket's RTT).
pub fn clamp_budget(bytes_per_sec: u64) -> u64 {
    (bytes_per_sec as u128 * CLAMP_BUDGET_NS as u128 / NS_PER_SEC) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(bytes: u64, bytes_per_sec: u64) -> u64 {
        let (m, s) = cost_factor(bytes_per_sec);
        (bytes * m) >> s
    }

    #[test]
    fn fixed_point_cost_is_accurate_across_the_kubernetes_range() {
        // 1 kbit/s .. 1 Pbit/s, the bounds Kubernetes accepts.
        for bps in [
            125u64,
            1_250_000,
            12_500_000,
            125_000_000,
            1_250_000_000,
            125_000_000_000_000,
        ] {
            for bytes in [64u64, 1500, 65_536, 2 << 20] {
                let exact = bytes as f64 * 1e9 / bps as f64;
                let got = cost(bytes, bps) as f64;
                let err = (got - exact).abs() / exact.max(1.0);
                assert!(
                    err < 1e-4 || (got - exact).abs() <= 1.0,
                    "{bps} B/s {bytes} B: {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn cost_never_overflows_for_largest_packets_at_lowest_rate() {
        let (m, _) = cost_factor(125);
        assert!((m as u128) * (2u128 << 20) < u64::MAX as u128);
    }

    #[test]
    fn default_burst_is_20ms_of_rate_but_at_least_the_directions_floor() {
        use Direction::{Egress, Ingress};
        for dir in [Ingress, Egress] {
            assert_eq!(burst_bytes(125_000_000, None, dir), 2_500_000); // 1 Gbit/s
            assert_eq!(burst_bytes(125_000_000, Some(4 << 20), dir), 4 << 20);
            assert_eq!(
                burst_bytes(125_000_000, Some(1500), dir),
                1_250_000,
                "at least 10 ms"
            );
        }
        // 10 Mbit/s: 20 ms is 25 KB, below the ingress floor only.
        assert_eq!(burst_bytes(1_250_000, None, Egress), 25_000);
        assert_eq!(burst_bytes(1_250_000, None, Ingress), SUPER_PACKET_BYTES);
        assert_eq!(burst_bytes(1_250_000, Some(1500), Egress), 12_500);
        assert_eq!(burst_bytes(125_000, None, Egress), MIN_EGRESS_BURST_BYTES);
        assert_eq!(burst_bytes(125_000, Some(1500), Egress), 4096);
    }

    #[test]
    fn tcp_debt_always_has_room_for_two_super_packets() {
        for bps in [125u64, 125_000, 1_250_000, 125_000_000] {
            let d = dir_config(bps, None, Direction::Egress);
            assert!(d.drop_ns >= ns_for(2 * SUPER_PACKET_BYTES, bps), "{d:?}");
        }
    }

    #[test]
    fn thresholds_are_ordered() {
        for (bps, dir) in [125u64, 1_250_000, 125_000_000, 1_250_000_000]
            .into_iter()
            .flat_map(|b| [(b, Direction::Ingress), (b, Direction::Egress)])
        {
            let d = dir_config(bps, None, dir);
            assert!(d.mark_ns < d.burst_ns && d.burst_ns < d.drop_ns, "{d:?}");
            assert!(d.drop_ns >= MIN_DROP_NS);
        }
    }

    #[test]
    fn clamp_budget_is_one_millisecond_of_rate() {
        assert_eq!(clamp_budget(12_500_000), 12_500);
        assert_eq!(clamp_budget(125_000_000), 125_000);
    }
}
