//! The share-exchange agent: one thread and one UDP socket doing both sides.
//!
//! As a sending node it keeps an entry in the senders' map (`map_dst`) for every
//! limited pod on another node that the [`Directory`] names, reads how many local
//! sockets sent to each lately, reports that to the pod's node every interval,
//! and paces toward the pod at the share the answer gives, or at the pod's whole
//! limit while no answer is fresh.
//!
//! As a receiving node it answers each report with the reporting node's share of
//! the limit (sockets count equally wherever they run) and lowers the rate of its
//! own senders toward the pod to theirs.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::datapath::Datapath;
use crate::datapath::senders::REMOTE;
use crate::shares::seal::{self, Freshness, Keyring, Reload, Stamper};
use crate::shares::table::ShareTable;
use crate::shares::wire::{self, DemandEntry, Message, ShareEntry};

/// A limited pod on another node, as the API tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemotePod {
    /// Its ingress limit, bytes/s (IP bytes).
    pub rate: u64,
    /// Its node's share-exchange address.
    pub node: SocketAddr,
    /// Its node's name: the only node whose answers set its share (shared: the
    /// directory is copied every tick).
    pub node_name: std::sync::Arc<str>,
}

/// What the agent paces toward: written by the API watch, read every interval.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    pub remote: HashMap<IpAddr, RemotePod>,
    /// The watch has listed once: an entry of ours that is not in `remote` is
    /// stale and goes (until then entries left by an earlier run are kept).
    pub ready: bool,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// This node's name, as the API knows it.
    pub node: String,
    pub bind: SocketAddr,
    /// The key every node's daemon shares: datagrams are sealed with it, and
    /// those that do not verify are refused.
    pub key: Keyring,
    /// How often demand is reported and shares are revised.
    pub interval: Duration,
    /// How long a report counts at the receiver, and an answer at the sender.
    pub expiry: Duration,
    /// A destination stays in the reports this long after its last active socket,
    /// so its share is ready when it sends again.
    pub idle_report: Duration,
    /// A local pod's senders stay marked as paced this long after the last
    /// report of demand from another node: a flow that starts after a pause
    /// would otherwise meet the strict gate and a bare BDP window until the
    /// first report (an early stall costs cubic its retransmission timeouts).
    pub mark_hold: Duration,
}

impl Config {
    pub fn new(node: &str, bind: SocketAddr, key: impl Into<Keyring>) -> Self {
        Config {
            node: node.to_string(),
            bind,
            key: key.into(),
            interval: Duration::from_millis(250),
            expiry: Duration::from_secs(1),
            idle_report: Duration::from_secs(5),
            mark_hold: Duration::from_secs(60),
        }
    }
}

/// Counters for the metrics endpoint and the tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub demands_sent: AtomicU64,
    pub demands_received: AtomicU64,
    pub shares_sent: AtomicU64,
    pub shares_received: AtomicU64,
    /// Datagrams that failed a check, or answers about pods of another node.
    pub refused: AtomicU64,
    /// Of those, datagrams whose seal did not verify or whose stamp was stale
    /// or replayed (a node with another key, a clock far off, or a forgery).
    pub unauthenticated: AtomicU64,
    pub send_errors: AtomicU64,
}

/// The running agent; stops (and gives its own senders their whole rate back)
/// when dropped.
pub struct Agent {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
    pub stats: Arc<Stats>,
}

impl Agent {
    /// Binds the socket and starts the thread.
    pub fn start(dp: Datapath, cfg: Config, dir: Arc<Mutex<Directory>>) -> io::Result<Agent> {
        let sock = UdpSocket::bind(cfg.bind).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("binding the share exchange to {}: {e}", cfg.bind),
            )
        })?;
        let addr = sock.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let mut w = Worker {
            dp,
            sock,
            dir,
            stats: stats.clone(),
            table: ShareTable::new(cfg.expiry),
            cfg,
            seq: 0,
            got: HashMap::new(),
            written: HashMap::new(),
            active_at: HashMap::new(),
            marks: HashMap::new(),
            swept: false,
            warned: HashSet::new(),
            stamps: Stamper::default(),
            fresh: Freshness::default(),
            answered: HashSet::new(),
            key_trouble: Trouble::default(),
            map_trouble: Trouble::default(),
        };
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("share-exchange".into())
            .spawn(move || w.run(&flag))?;
        Ok(Agent {
            stop,
            thread: Some(thread),
            addr,
            stats,
        })
    }

    /// The address the exchange listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    dp: Datapath,
    sock: UdpSocket,
    dir: Arc<Mutex<Directory>>,
    stats: Arc<Stats>,
    table: ShareTable,
    cfg: Config,
    seq: u64,
    /// Sender side: the latest share per remote pod, and when it came.
    got: HashMap<IpAddr, (u64, Instant)>,
    /// Remote entries this agent wrote, with the rate written.
    written: HashMap<IpAddr, u64>,
    active_at: HashMap<IpAddr, Instant>,
    /// Local pods another node reported demand toward, and when last.
    marks: HashMap<IpAddr, Instant>,
    swept: bool,
    /// Sources already warned about (a flood logs once per source).
    warned: HashSet<IpAddr>,
    stamps: Stamper,
    fresh: Freshness,
    /// Nodes whose answers were taken (logged once each: the exchange works).
    answered: HashSet<SocketAddr>,
    /// The key file re-read every 10 s, the senders' map every interval: a
    /// lasting failure of either is warned about once, not at every try.
    key_trouble: Trouble,
    map_trouble: Trouble,
}

/// A failure met again at every try while it lasts: warned once (again when its
/// message changes), at debug level after that, and its end logged once.
#[derive(Debug, Default)]
struct Trouble(Option<String>);

impl Trouble {
    /// Logs `msg` as a warning unless it is what was last warned about; returns
    /// whether it did.
    fn failed(&mut self, msg: String) -> bool {
        if self.0.as_deref() == Some(msg.as_str()) {
            log::debug!("{msg}");
            return false;
        }
        log::warn!("{msg}");
        self.0 = Some(msg);
        true
    }

    /// The failure is over: logs `msg` if there was one; returns whether there was.
    fn ended(&mut self, msg: &str) -> bool {
        if self.0.take().is_some() {
            log::info!("{msg}");
            return true;
        }
        false
    }
}

impl Worker {
    fn run(&mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; seal::OVERHEAD + wire::MAX_DATAGRAM + 1];
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next {
                self.tick(now);
                next = now + self.cfg.interval;
            }
            let wait = next
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let _ = self.sock.set_read_timeout(Some(wait));
            match self.sock.recv_from(&mut buf) {
                Ok((n, src)) => {
                    // A dual-stack socket sees IPv4 peers as v4-mapped addresses.
                    let src = SocketAddr::new(src.ip().to_canonical(), src.port());
                    self.handle(&buf[..n], src, Instant::now())
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                // ICMP errors of earlier sends (a node without the exchange) surface here.
                Err(e) => log::debug!("share exchange: {e}"),
            }
        }
        self.restore_local();
    }

    fn tick(&mut self, now: Instant) {
        match self.cfg.key.reload(now) {
            Reload::NotDue => {}
            Reload::Failed(e) => {
                self.key_trouble
                    .failed(format!("share exchange: {e}; keeping the current key"));
            }
            read => {
                self.key_trouble
                    .ended("share exchange: the key file is readable again");
                if read == Reload::Changed {
                    log::info!(
                        "share exchange: the key changed; the previous one still opens datagrams for {:?}",
                        seal::ROTATION_GRACE
                    );
                }
            }
        }
        let dir = self.dir.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.pace_remote(&dir, now);
        self.report(&dir, now);
        self.revise_local(now);
    }

    /// `to` as this socket can send to it: v4-mapped from a dual-stack socket.
    fn reachable(&self, to: SocketAddr) -> SocketAddr {
        match (to.ip(), self.sock.local_addr()) {
            (IpAddr::V4(v4), Ok(SocketAddr::V6(_))) => {
                SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), to.port())
            }
            _ => to,
        }
    }

    /// Seals and sends one datagram, counted in `sent` or as an error (a node that does not
    /// answer is the common case, and the next interval tries again).
    fn send(&mut self, msg: &[u8], to: SocketAddr, sent: fn(&Stats) -> &AtomicU64) {
        let dg = seal::seal(self.cfg.key.sealing(), self.stamps.stamp(), msg);
        match self.sock.send_to(&dg, self.reachable(to)) {
            Ok(_) => sent(&self.stats).fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                log::debug!("share exchange: sending to {to}: {e}");
                self.stats.send_errors.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    fn warn_once(&mut self, ip: IpAddr, msg: String) {
        if self.warned.insert(ip) {
            log::warn!("{msg}");
        } else {
            log::debug!("{msg}");
        }
    }

    /// The entries of remote pods: added, at their share (or whole limit while no
    /// answer is fresh), and removed once the watch no longer names them.
    fn pace_remote(&mut self, dir: &Directory, now: Instant) {
        for (ip, pod) in &dir.remote {
            let share = self
                .got
                .get(ip)
                .filter(|(_, at)| now.saturating_duration_since(*at) < self.cfg.expiry)
                .map_or(pod.rate, |(s, _)| (*s).min(pod.rate));
            self.write_remote(*ip, share);
        }
        if !dir.ready {
            return;
        }
        let stale: Vec<IpAddr> = self
            .written
            .keys()
            .filter(|ip| !dir.remote.contains_key(ip))
            .copied()
            .collect();
        for ip in stale {
            self.forget(ip);
        }
        if !self.swept {
            // Entries an earlier run left for pods that are gone by now.
            self.swept = true;
            if let Ok(all) = self.dp.destinations() {
                for (ip, d) in all {
                    if d.cgid == REMOTE && !dir.remote.contains_key(&ip) {
                        self.forget(ip);
                    }
                }
            }
        }
    }

    fn write_remote(&mut self, ip: IpAddr, rate: u64) {
        if self.written.get(&ip) == Some(&rate) {
            return;
        }
        match self.dp.set_remote_destination(ip, rate) {
            Ok(true) => {
                self.written.insert(ip, rate);
            }
            Ok(false) => {} // a limit on this node holds the address
            Err(e) => self.warn_once(ip, format!("pacing toward {ip}: {e}")),
        }
    }

    fn forget(&mut self, ip: IpAddr) {
        if let Err(e) = self.dp.remove_remote_destination(ip) {
            log::warn!("removing the pace toward {ip}: {e}");
            return;
        }
        self.written.remove(&ip);
        self.got.remove(&ip);
        self.active_at.remove(&ip);
    }

    /// Reports each receiving node the sockets sending to its pods. The senders'
    /// map is read whole, in batches: one lookup per remote pod was most of the
    /// agent's CPU with thousands of them.
    fn report(&mut self, dir: &Directory, now: Instant) {
        self.seq += 1;
        if self.written.is_empty() {
            return; // nothing paced toward another node: nothing to read or report
        }
        let counts: HashMap<IpAddr, u32> = match self.dp.destinations() {
            Ok(all) => all.into_iter().map(|(ip, d)| (ip, d.active)).collect(),
            Err(e) => {
                self.map_trouble
                    .failed(format!("share exchange: reading the senders' map: {e}"));
                return;
            }
        };
        self.map_trouble
            .ended("share exchange: the senders' map is readable again");
        let mut per_node: HashMap<SocketAddr, Vec<DemandEntry>> = HashMap::new();
        for (ip, pod) in &dir.remote {
            if !self.written.contains_key(ip) {
                continue;
            }
            let Some(&active) = counts.get(ip) else {
                continue;
            };
            if active > 0 {
                self.active_at.insert(*ip, now);
            }
            let lately = self
                .active_at
                .get(ip)
                .is_some_and(|t| now.saturating_duration_since(*t) < self.cfg.idle_report);
            if lately {
                per_node.entry(pod.node).or_default().push(DemandEntry {
                    ip: *ip,
                    sockets: active,
                });
            }
        }
        for (node, entries) in per_node {
            for dg in wire::demands(&self.cfg.node, self.seq, &entries) {
                self.send(&dg, node, |s| &s.demands_sent);
            }
        }
    }

    /// The limit on this node that `ip` belongs to: its cgroup id, its whole
    /// ingress limit (bytes/s) and the local sockets sending to it.
    fn local_limit(&self, ip: IpAddr) -> Option<(u64, u64, u32)> {
        let d = self.dp.destination(ip).ok()??;
        if d.cgid == REMOTE {
            return None;
        }
        let full = self.dp.entry(d.cgid).ok()??.ingress_bps?.div_ceil(8);
        Some((d.cgid, full, d.active))
    }

    /// This node's own senders toward its limited pods: their share while other
    /// nodes send too, the whole limit once none has for the expiry. The paced
    /// mark outlasts the demand by `mark_hold`.
    fn revise_local(&mut self, now: Instant) {
        let hold = self.cfg.mark_hold;
        let lifted: Vec<IpAddr> = self
            .marks
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) >= hold)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in lifted {
            self.marks.remove(&ip);
            self.set_local(ip, false, now);
        }
        for ip in self.table.expire(now) {
            self.set_local(ip, false, now);
        }
        for ip in self.table.addresses() {
            self.marks.insert(ip, now);
            self.set_local(ip, true, now);
        }
    }

    /// `shared`: other nodes report demand toward `ip`, so this node's senders
    /// get their share and the pod's window clamp treats its senders as paced.
    fn set_local(&self, ip: IpAddr, shared: bool, now: Instant) {
        let Some((cgid, full, active)) = self.local_limit(ip) else {
            return;
        };
        let rate = if shared {
            self.table.local_share(ip, full, active, now)
        } else {
            full
        };
        if let Err(e) = self.dp.set_destination_rate(ip, rate) {
            log::warn!("pacing this node's senders toward {ip}: {e}");
        }
        // `marks` holds only marks within their hold (revise_local lifts the rest).
        let marked = shared || self.marks.contains_key(&ip);
        if let Err(e) = self.dp.set_peers_paced(cgid, marked) {
            log::warn!("marking the senders toward {ip} as paced: {e}");
        }
    }

    fn restore_local(&mut self) {
        let now = Instant::now();
        let held: Vec<IpAddr> = self.marks.drain().map(|(ip, _)| ip).collect();
        for ip in self.table.addresses().into_iter().chain(held) {
            self.set_local(ip, false, now);
        }
    }

    fn handle(&mut self, buf: &[u8], src: SocketAddr, now: Instant) {
        let opened = self
            .cfg
            .key
            .open(buf, now)
            .and_then(|(stamp, msg)| self.fresh.check(src, stamp).map(|()| msg));
        let buf = match opened {
            Ok(msg) => msg,
            Err(e) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                self.stats.unauthenticated.fetch_add(1, Ordering::Relaxed);
                self.warn_once(src.ip(), format!("share exchange: from {src}: {e}"));
                return;
            }
        };
        let m = match wire::decode(buf) {
            Ok(m) => m,
            Err(e) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                self.warn_once(src.ip(), format!("share exchange: from {src}: {e}"));
                return;
            }
        };
        match m {
            Message::Demand(d) => {
                self.stats.demands_received.fetch_add(1, Ordering::Relaxed);
                let mut shares = Vec::with_capacity(d.sockets.len());
                let mut pushes: HashMap<SocketAddr, Vec<ShareEntry>> = HashMap::new();
                for e in &d.sockets {
                    let rate = self.local_limit(e.ip).map(|(_, full, active)| {
                        self.table.record(e.ip, &d.node, src, e.sockets, now);
                        // The others learn of a change in demand now, not at
                        // their next report.
                        for (to, share) in self.table.changed(e.ip, &d.node, full, active, now) {
                            pushes.entry(to).or_default().push(ShareEntry {
                                ip: e.ip,
                                rate: Some(share),
                            });
                        }
                        self.table.tell(e.ip, &d.node, full, active, now)
                    });
                    shares.push(ShareEntry { ip: e.ip, rate });
                }
                for (to, entries) in pushes {
                    let dg = wire::shares(&self.cfg.node, 0, entries);
                    self.send(&dg, to, |s| &s.shares_sent);
                }
                let out = wire::shares(&self.cfg.node, d.seq, shares);
                self.send(&out, src, |s| &s.shares_sent);
            }
            Message::Shares(s) => {
                self.stats.shares_received.fetch_add(1, Ordering::Relaxed);
                let dir = self.dir.lock().unwrap_or_else(|e| e.into_inner()).clone();
                for e in s.shares {
                    let Some(pod) = dir.remote.get(&e.ip) else {
                        continue;
                    };
                    if *pod.node_name != *s.node {
                        // Only the pod's own node decides its shares.
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                        self.warn_once(
                            src.ip(),
                            format!(
                                "share exchange: node {} ({src}) answered for {}, a pod of {}",
                                s.node, e.ip, pod.node_name
                            ),
                        );
                        continue;
                    }
                    let share = e.rate.unwrap_or(pod.rate).min(pod.rate);
                    self.got.insert(e.ip, (share, now));
                    self.write_remote(e.ip, share);
                    if self.answered.insert(src) {
                        log::info!(
                            "share exchange: answers from node {} ({src}) verified and taken",
                            s.node
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Trouble;

    #[test]
    fn a_lasting_failure_warns_once_and_again_after_it_ended() {
        let mut t = Trouble::default();
        assert!(!t.ended("fine"), "nothing had failed");
        assert!(t.failed("map unreadable".into()));
        assert!(!t.failed("map unreadable".into()), "the same failure again");
        assert!(t.failed("key too short".into()), "another message warns");
        assert!(t.ended("readable again"));
        assert!(!t.ended("readable again"), "its end is logged once");
        assert!(t.failed("key too short".into()), "a new episode warns");
    }
}
