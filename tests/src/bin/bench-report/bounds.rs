//! What TCP itself allows a cell, whatever the limiter: the arithmetic the report
//! puts beside a missed goal, so a reader can tell a limiter's fault from the
//! path's. Segments are 1,448 B of payload in 1,500 B on the wire (IPv4 with
//! timestamps); a full pipe is therefore 1448/1500 of the limit.

use nri_bandwidth_core::datapath::bucket::{self, Direction};

/// Payload and wire bytes of a full-sized segment.
const MSS: f64 = 1448.0;
const WIRE: f64 = 1500.0;
/// Linux's initial congestion window, in segments; the kernel also sends a new
/// flow's first this-many data segments unpaced.
const INITIAL_WINDOW: f64 = 10.0;
/// The smallest receive window that keeps a bulk sender going without the
/// receiver's delayed-ACK timer: two segments.
const FLOOR_SEGMENTS: f64 = 2.0;

/// The most goodput/limit `streams` flows in slow start (initial window 10,
/// doubling every round trip until each holds its share of one BDP) can deliver
/// in the receiver's first second, when data first arrives `one_way_s` after the
/// start. Any limiter that does not speed the sender up is below it.
pub fn slow_start_first_second(limit_bps: f64, streams: u32, rtt_s: f64, one_way_s: f64) -> f64 {
    let full = MSS / WIRE;
    let per_flow = limit_bps * full / f64::from(streams.max(1));
    let bdp_segments = per_flow * rtt_s / 8.0 / MSS;
    let mut left = (1.0 - one_way_s).max(0.0);
    let mut window = INITIAL_WINDOW;
    let mut segments = 0.0;
    while left > 0.0 && rtt_s > 0.0 {
        let this_round = window.min(bdp_segments);
        let part = (left / rtt_s).min(1.0);
        segments += this_round * part;
        left -= rtt_s;
        window *= 2.0;
    }
    (segments * f64::from(streams.max(1)) * MSS * 8.0 / limit_bps).min(full)
}

/// What `streams` receiving sockets with the smallest workable window (two
/// segments each) clock through per second at round trip `rtt_s`: above the
/// limit, a receiver alone cannot hold the rate with its window and must gate.
pub fn window_floor_bps(streams: u32, rtt_s: f64) -> f64 {
    f64::from(streams) * FLOOR_SEGMENTS * MSS * 8.0 / rtt_s
}

/// Seconds at the limit that `streams` new flows' unpaced first segments take.
pub fn unpaced_start_s(limit_bps: f64, streams: u32) -> f64 {
    f64::from(streams) * INITIAL_WINDOW * WIRE * 8.0 / limit_bps
}

/// The egress bucket's default burst at `limit_bps`, and the debt (both in
/// seconds) past which the egress hook drops a new flow's unpaced first segments
/// (bw_packet.h `young_drop_limit`): together the most such segments may run
/// ahead of the limit.
pub fn unpaced_allowance_s(limit_bps: f64) -> (f64, f64) {
    let d = bucket::dir_config((limit_bps / 8.0) as u64, None, Direction::Egress);
    let young = (bucket::YOUNG_DROP_BURSTS * d.burst_ns)
        .max(bucket::MIN_DROP_NS)
        .min(d.drop_ns);
    (d.burst_ns as f64 / 1e9, young as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_ceiling_at_a_long_round_trip() {
        // 100 Mbit/s at 20 ms one way: ~335 segments of BDP, six rounds to get
        // there, so about 0.79 of the limit in the first second.
        let c = slow_start_first_second(100e6, 1, 0.0402, 0.02);
        assert!((0.77..0.81).contains(&c), "{c}");
        // Short round trips reach the share at once: a full pipe.
        let c = slow_start_first_second(10e6, 1, 0.0006, 0.0002);
        assert!(c > 0.95, "{c}");
    }

    #[test]
    fn window_floor_exceeds_low_limits_at_short_round_trips() {
        // One flow, 0.6 ms: 2 x 1448 B per round trip is ~39 Mbit/s.
        let w = window_floor_bps(1, 0.0006);
        assert!((38e6..40e6).contains(&w), "{w}");
        assert!(window_floor_bps(8, 0.0402) > 1e6);
    }

    #[test]
    fn eight_flows_first_segments_take_most_of_a_second_at_one_megabit() {
        let s = unpaced_start_s(1e6, 8);
        assert!((0.95..0.97).contains(&s), "{s}");
    }

    #[test]
    fn first_segments_may_run_ahead_by_four_bursts_at_one_megabit() {
        // 1M: the 4 KiB floor is 33 ms, four of them 131 ms.
        let (burst, debt) = unpaced_allowance_s(1e6);
        assert!((0.032..0.034).contains(&burst), "{burst}");
        assert!((0.130..0.133).contains(&debt), "{debt}");
        // 100M: 20 ms bursts, so the 100 ms floor.
        let (burst, debt) = unpaced_allowance_s(100e6);
        assert!((burst - 0.02).abs() < 1e-9 && (debt - 0.1).abs() < 1e-9);
    }
}
