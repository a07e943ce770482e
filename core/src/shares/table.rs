//! The receiving node's share table: for each of its limited addresses, the nodes
//! that reported sockets sending to it and when, and the share of the limit that
//! makes every sending socket equal, wherever it runs.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Nodes remembered per address; reports from more are not recorded (a node
/// not recorded is answered with the share it would get as one more sender).
pub const MAX_NODES_PER_ADDRESS: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Seen {
    sockets: u32,
    at: Instant,
    /// Where its reports come from, and the share it was last told.
    from: SocketAddr,
    told: u64,
}

/// Demand per limited address and sending node.
#[derive(Debug)]
pub struct ShareTable {
    expiry: Duration,
    by_dst: HashMap<IpAddr, HashMap<String, Seen>>,
}

impl ShareTable {
    /// A node's report counts for `expiry` after it arrived.
    pub fn new(expiry: Duration) -> Self {
        ShareTable {
            expiry,
            by_dst: HashMap::new(),
        }
    }

    /// Records that `node` (reporting from `from`) has `sockets` sending to `ip`
    /// (0: none right now, but it sent lately and may again).
    pub fn record(&mut self, ip: IpAddr, node: &str, from: SocketAddr, sockets: u32, now: Instant) {
        let nodes = self.by_dst.entry(ip).or_default();
        if nodes.len() >= MAX_NODES_PER_ADDRESS && !nodes.contains_key(node) {
            return;
        }
        let told = nodes.get(node).map_or(0, |s| s.told);
        nodes.insert(
            node.to_string(),
            Seen {
                sockets,
                at: now,
                from,
                told,
            },
        );
    }

    /// `node`'s share of `rate` toward `ip`, remembered as told to it.
    pub fn tell(&mut self, ip: IpAddr, node: &str, rate: u64, local: u32, now: Instant) -> u64 {
        let share = self.share(ip, node, rate, local, now);
        if let Some(s) = self.by_dst.get_mut(&ip).and_then(|m| m.get_mut(node)) {
            s.told = share;
        }
        share
    }

    /// The other live nodes sending to `ip` whose share is no longer what they
    /// were told, with where to tell them and the new share (remembered as told).
    pub fn changed(
        &mut self,
        ip: IpAddr,
        except: &str,
        rate: u64,
        local: u32,
        now: Instant,
    ) -> Vec<(SocketAddr, u64)> {
        let nodes: Vec<String> = self
            .live(ip, now)
            .map(|(n, _)| n.to_string())
            .filter(|n| n != except)
            .collect();
        let mut out = Vec::new();
        for n in nodes {
            let share = self.share(ip, &n, rate, local, now);
            if let Some(s) = self.by_dst.get_mut(&ip).and_then(|m| m.get_mut(&n))
                && s.told != share
            {
                s.told = share;
                out.push((s.from, share));
            }
        }
        out
    }

    fn live(&self, ip: IpAddr, now: Instant) -> impl Iterator<Item = (&str, u32)> {
        self.by_dst.get(&ip).into_iter().flat_map(move |m| {
            m.iter()
                .filter(move |(_, s)| now.saturating_duration_since(s.at) < self.expiry)
                .map(|(n, s)| (n.as_str(), s.sockets))
        })
    }

    /// Sockets of every other node sending to `ip` now.
    pub fn remote_sockets(&self, ip: IpAddr, now: Instant) -> u64 {
        self.live(ip, now).map(|(_, n)| n as u64).sum()
    }

    /// The share of `rate` for `node` toward `ip`, this node's own senders having
    /// `local` sockets on it.
    pub fn share(&self, ip: IpAddr, node: &str, rate: u64, local: u32, now: Instant) -> u64 {
        let mine = self
            .live(ip, now)
            .find(|(n, _)| *n == node)
            .map_or(0, |(_, s)| s);
        split(rate, mine, self.remote_sockets(ip, now) + local as u64)
    }

    /// The share of this node's own senders (`local` sockets) toward `ip`.
    pub fn local_share(&self, ip: IpAddr, rate: u64, local: u32, now: Instant) -> u64 {
        split(rate, local, self.remote_sockets(ip, now) + local as u64)
    }

    /// Whether any other node reported on `ip` lately.
    pub fn has_remote(&self, ip: IpAddr, now: Instant) -> bool {
        self.live(ip, now).next().is_some()
    }

    /// Forgets reports past their expiry; returns the addresses left with none.
    pub fn expire(&mut self, now: Instant) -> Vec<IpAddr> {
        let expiry = self.expiry;
        let mut emptied = Vec::new();
        self.by_dst.retain(|ip, nodes| {
            nodes.retain(|_, s| now.saturating_duration_since(s.at) < expiry);
            if nodes.is_empty() {
                emptied.push(*ip);
            }
            !nodes.is_empty()
        });
        emptied
    }

    /// Addresses with reports.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.by_dst.keys().copied().collect()
    }
}

/// `rate` split evenly among `total` sockets, for a party with `mine` of them. A
/// party with none gets what one more socket would (it is about to send, or just
/// stopped), and with no sockets anywhere the whole rate.
pub fn split(rate: u64, mine: u32, total: u64) -> u64 {
    if total == 0 {
        return rate;
    }
    if mine == 0 {
        return rate / (total + 1);
    }
    (rate as u128 * mine as u128 / total as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn from(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 168, 0, 1], port))
    }

    #[test]
    fn a_new_sender_changes_the_shares_the_others_were_told() {
        let now = Instant::now();
        let mut t = ShareTable::new(Duration::from_secs(2));
        let p = ip("10.0.1.5");
        t.record(p, "a", from(1), 2, now);
        assert_eq!(t.tell(p, "a", 800, 0, now), 800);
        assert!(t.changed(p, "a", 800, 0, now).is_empty());
        t.record(p, "b", from(2), 2, now);
        assert_eq!(t.tell(p, "b", 800, 0, now), 400);
        // a was told 800: it is told 400 now, once.
        assert_eq!(t.changed(p, "b", 800, 0, now), vec![(from(1), 400)]);
        assert!(t.changed(p, "b", 800, 0, now).is_empty());
        // A report of a's own keeps what it was told.
        t.record(p, "a", from(1), 2, now);
        assert!(t.changed(p, "b", 800, 0, now).is_empty());
    }

    #[test]
    fn shares_follow_sockets_wherever_they_are() {
        let now = Instant::now();
        let mut t = ShareTable::new(Duration::from_secs(2));
        let p = ip("10.0.1.5");
        t.record(p, "a", from(1), 1, now);
        t.record(p, "b", from(2), 3, now);
        assert_eq!(t.share(p, "a", 800, 0, now), 200);
        assert_eq!(t.share(p, "b", 800, 0, now), 600);
        // The receiving node's own senders count as one more party.
        assert_eq!(t.share(p, "a", 800, 4, now), 100);
        assert_eq!(t.local_share(p, 800, 4, now), 400);
        // An unknown node is offered what one more socket would get.
        assert_eq!(t.share(p, "c", 800, 0, now), 160);
    }

    #[test]
    fn a_silent_node_stops_counting_after_the_expiry() {
        let t0 = Instant::now();
        let mut t = ShareTable::new(Duration::from_secs(2));
        let p = ip("fd00::5");
        t.record(p, "a", from(1), 1, t0);
        t.record(p, "b", from(2), 1, t0 + Duration::from_secs(1));
        let later = t0 + Duration::from_millis(2500);
        assert_eq!(t.share(p, "b", 1000, 0, later), 1000);
        assert!(t.expire(later).is_empty());
        let gone = t0 + Duration::from_secs(4);
        assert_eq!(t.expire(gone), vec![p]);
        assert!(!t.has_remote(p, gone));
        assert!(t.addresses().is_empty());
    }

    #[test]
    fn a_flood_of_node_names_is_bounded() {
        let now = Instant::now();
        let mut t = ShareTable::new(Duration::from_secs(2));
        let p = ip("10.0.0.1");
        for i in 0..MAX_NODES_PER_ADDRESS + 100 {
            t.record(p, &format!("n{i}"), from(1), 1, now);
        }
        assert_eq!(t.remote_sockets(p, now), MAX_NODES_PER_ADDRESS as u64);
    }

    proptest! {
        /// The shares of the parties with sockets never add up to more than the
        /// rate, and each is within one byte/s of its socket count's part.
        #[test]
        fn active_shares_never_exceed_the_rate(
            rate in 1u64..(1u64 << 40),
            socks in proptest::collection::vec(0u32..64, 1..12),
            local in 0u32..64,
        ) {
            let now = Instant::now();
            let mut t = ShareTable::new(Duration::from_secs(2));
            let p = ip("10.9.9.9");
            for (i, n) in socks.iter().enumerate() {
                t.record(p, &format!("node-{i}"), from(i as u16), *n, now);
            }
            let total: u64 = socks.iter().map(|n| *n as u64).sum::<u64>() + local as u64;
            let mut sum = if local > 0 { t.local_share(p, rate, local, now) } else { 0 };
            for (i, n) in socks.iter().enumerate() {
                let s = t.share(p, &format!("node-{i}"), rate, local, now);
                if *n > 0 {
                    sum += s;
                    let exact = rate as f64 * *n as f64 / total as f64;
                    prop_assert!((s as f64 - exact).abs() <= 1.0);
                } else {
                    prop_assert!(s <= rate);
                }
            }
            prop_assert!(sum <= rate);
        }
    }
}
