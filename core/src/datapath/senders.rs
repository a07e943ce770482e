//! Sender-side ingress for local senders: the addresses of limited workloads
//! (`map_dst`, keyed by address, with the receiving limit's rate) and the
//! attachment of `bw_senders` to the cgroup(s) holding the node's senders, so a
//! socket on this node sending to a limited workload is paced at its share of that
//! workload's ingress and the receiver's ACK gate is left for senders elsewhere.
//!
//! Pins: `map_dst`, `prog_senders`, `senders/<cgroup id>/sockops` (one link per
//! senders' cgroup).

use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::cgroup::Cgroup;
use crate::datapath::abi::{self, BwDst, BwDstKey};
use crate::datapath::sys::{self, AttachType};
use crate::datapath::{Datapath, DatapathError, io_err};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// The map key of an address (a v4-mapped IPv6 address as IPv4, as the kernel
/// side looks it up).
pub fn key_of(ip: IpAddr) -> BwDstKey {
    let mut k = BwDstKey::default();
    match ip {
        IpAddr::V4(v4) => {
            k.family = AF_INET;
            k.addr[..4].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => return key_of(IpAddr::V4(v4)),
            None => {
                k.family = AF_INET6;
                k.addr.copy_from_slice(&v6.octets());
            }
        },
    }
    k
}

/// The address of a map key.
pub fn ip_of(k: &BwDstKey) -> Option<IpAddr> {
    match k.family {
        AF_INET => Some(IpAddr::from(<[u8; 4]>::try_from(&k.addr[..4]).ok()?)),
        AF_INET6 => Some(IpAddr::from(k.addr)),
        _ => None,
    }
}

/// The owner recorded for a destination on another node: no cgroup here.
pub const REMOTE: u64 = 0;

/// A destination as the node's senders see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The local limit's cgroup id, or [`REMOTE`].
    pub cgid: u64,
    /// Bytes/s the node's senders share toward it (IP bytes).
    pub rate: u64,
    /// Local sockets that sent to it in this or the last epoch.
    pub active: u32,
}

/// The clock `bpf_ktime_get_coarse_ns` reads (CLOCK_MONOTONIC, coarse).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sockets counted toward `d` in epoch `e` or the one before: the current
/// epoch's count grows as its sockets are seen, the last one's is complete.
fn active_now(d: &BwDst, e: u64) -> u32 {
    let slot = |x: u64| d.active[(x & 1) as usize];
    if d.epoch == e {
        slot(e).max(slot(e.wrapping_sub(1)))
    } else if d.epoch.wrapping_add(1) == e {
        slot(d.epoch)
    } else {
        0
    }
}

fn bytes<T: aya::Pod>(v: &T) -> &[u8] {
    // SAFETY: T is Pod: reading its bytes is sound.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

fn from_bytes<T: aya::Pod + Default>(b: &[u8]) -> T {
    let mut v = T::default();
    let n = b.len().min(std::mem::size_of::<T>());
    // SAFETY: T is Pod (any bit pattern valid); at most size_of::<T>() bytes copied.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), (&mut v as *mut T).cast::<u8>(), n) };
    v
}

fn destination_of(d: &BwDst, epoch: u64) -> Destination {
    Destination {
        cgid: d.cgid,
        rate: d.rate,
        active: active_now(d, epoch),
    }
}

impl Datapath {
    fn senders_dir(&self, cgid: u64) -> PathBuf {
        self.pin_dir().join("senders").join(cgid.to_string())
    }

    /// Every destination with its entry, the whole map read in batches.
    pub fn destinations(&self) -> Result<Vec<(IpAddr, Destination)>, DatapathError> {
        let all = sys::map_entries_raw(
            self.dst_map(),
            std::mem::size_of::<BwDstKey>(),
            std::mem::size_of::<BwDst>(),
        )
        .map_err(io_err("reading", &self.pin_dir().join(abi::PIN_DST)))?;
        let epoch = monotonic_ns() >> abi::ffi::BW_EPOCH_SHIFT;
        Ok(all
            .iter()
            .filter_map(|(kb, vb)| {
                let ip = ip_of(&from_bytes::<BwDstKey>(kb))?;
                Some((ip, destination_of(&from_bytes::<BwDst>(vb), epoch)))
            })
            .collect())
    }

    /// Makes `addrs` the addresses of the limited cgroup `cgid`, whose ingress is
    /// `ingress_bytes_per_sec` (None or an empty list: it has none). An address
    /// that belonged to another cgroup moves to this one (a reused pod IP).
    pub fn set_destinations(
        &self,
        cgid: u64,
        addrs: &[IpAddr],
        ingress_bytes_per_sec: Option<u64>,
    ) -> Result<(), DatapathError> {
        let pin = self.pin_dir().join(abi::PIN_DST);
        let map = self.dst_map();
        let wanted: Vec<IpAddr> = match ingress_bytes_per_sec {
            Some(_) => addrs.to_vec(),
            None => Vec::new(),
        };
        for (ip, d) in self.destinations()? {
            if d.cgid == cgid && !wanted.contains(&ip) {
                sys::map_delete(map, bytes(&key_of(ip))).map_err(io_err("deleting from", &pin))?;
            }
        }
        if let Some(rate) = ingress_bytes_per_sec {
            for ip in wanted {
                let mut v = BwDst {
                    cgid,
                    rate,
                    ..BwDst::default()
                };
                // Keep the sender counting of an entry that is only updated.
                let mut old = vec![0u8; std::mem::size_of::<BwDst>()];
                if sys::map_lookup(map, bytes(&key_of(ip)), &mut old)
                    .map_err(io_err("reading", &pin))?
                {
                    let o: BwDst = from_bytes(&old);
                    v.epoch = o.epoch;
                    v.active = o.active;
                    v.pacing_sets = o.pacing_sets;
                }
                sys::map_update(map, bytes(&key_of(ip)), bytes(&v), sys::BPF_ANY)
                    .map_err(io_err("writing", &pin))?;
            }
        }
        Ok(())
    }

    /// The entry of `ip`, if it has one.
    fn dst_entry(&self, ip: IpAddr) -> Result<Option<BwDst>, DatapathError> {
        let mut vb = vec![0u8; std::mem::size_of::<BwDst>()];
        let found = sys::map_lookup(self.dst_map(), bytes(&key_of(ip)), &mut vb)
            .map_err(io_err("reading", &self.pin_dir().join(abi::PIN_DST)))?;
        Ok(found.then(|| from_bytes(&vb)))
    }

    /// What the node's senders do toward `ip`: whose limit it is, the rate they
    /// are paced at together and how many of their sockets sent to it lately.
    pub fn destination(&self, ip: IpAddr) -> Result<Option<Destination>, DatapathError> {
        let epoch = monotonic_ns() >> abi::ffi::BW_EPOCH_SHIFT;
        Ok(self.dst_entry(ip)?.map(|d| destination_of(&d, epoch)))
    }

    /// Makes `ip` a workload on another node whose ingress this node's senders
    /// share `rate` of (bytes/s). An address a limit on this node holds stays
    /// that limit's (false): the local limit is the one the node can see.
    pub fn set_remote_destination(&self, ip: IpAddr, rate: u64) -> Result<bool, DatapathError> {
        let pin = self.pin_dir().join(abi::PIN_DST);
        let old = self.dst_entry(ip)?;
        let mut v = match old {
            Some(o) if o.cgid != REMOTE => return Ok(false),
            Some(o) if o.rate == rate => return Ok(true),
            Some(o) => o,
            None => BwDst::default(),
        };
        v.cgid = REMOTE;
        v.rate = rate;
        sys::map_update(self.dst_map(), bytes(&key_of(ip)), bytes(&v), sys::BPF_ANY)
            .map_err(io_err("writing", &pin))?;
        Ok(true)
    }

    /// Sets the rate this node's senders share toward a destination that is
    /// already there (local or remote), keeping its sender counting; false when
    /// the address has no entry (it went away meanwhile: nothing is re-created).
    pub fn set_destination_rate(&self, ip: IpAddr, rate: u64) -> Result<bool, DatapathError> {
        let pin = self.pin_dir().join(abi::PIN_DST);
        let Some(mut v) = self.dst_entry(ip)? else {
            return Ok(false);
        };
        if v.rate == rate {
            return Ok(true);
        }
        v.rate = rate;
        match sys::map_update(
            self.dst_map(),
            bytes(&key_of(ip)),
            bytes(&v),
            sys::BPF_EXIST,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(io_err("writing", &pin)(e)),
        }
    }

    /// Marks the senders toward the limit of `cgid` as paced (other nodes report
    /// demand through the share exchange) or no longer; false when `cgid` has no
    /// limit. Written only when the mark changes.
    pub fn set_peers_paced(&self, cgid: u64, on: bool) -> Result<bool, DatapathError> {
        // Asked every interval, changed seldom: the lock only for a change.
        match self.peers_paced(cgid)? {
            None => return Ok(false),
            Some(was) if was == on => return Ok(true),
            Some(_) => {}
        }
        let _lock = self.lock()?;
        let Some(mut st) = self.read_state(cgid)? else {
            return Ok(false);
        };
        if (st.flags & abi::F_PEERS_PACED != 0) == on {
            return Ok(true);
        }
        st.flags ^= abi::F_PEERS_PACED;
        match sys::map_update_pod(self.state_map(), cgid, &st, sys::BPF_EXIST) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(io_err("writing", &self.pin_dir().join(abi::PIN_STATE))(e)),
        }
    }

    /// Whether the senders toward the limit of `cgid` are marked as paced; None
    /// when it has no limit.
    pub fn peers_paced(&self, cgid: u64) -> Result<Option<bool>, DatapathError> {
        Ok(self
            .read_state(cgid)?
            .map(|st| st.flags & abi::F_PEERS_PACED != 0))
    }

    /// Removes `ip` if it is a remote destination; false when it was not one.
    pub fn remove_remote_destination(&self, ip: IpAddr) -> Result<bool, DatapathError> {
        match self.dst_entry(ip)? {
            Some(d) if d.cgid == REMOTE => {
                sys::map_delete(self.dst_map(), bytes(&key_of(ip)))
                    .map_err(io_err("deleting from", &self.pin_dir().join(abi::PIN_DST)))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Attaches `bw_senders` to `scope` (the cgroup holding the node's senders, the
    /// cgroup v2 root on a node), pinned so it outlives this process.
    pub fn attach_senders(&self, scope: &Cgroup) -> Result<(), DatapathError> {
        let dir = self.senders_dir(scope.id);
        let pin = dir.join("sockops");
        if pin.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let prog = sys::obj_get(&self.pin_dir().join(abi::PIN_SENDERS)).map_err(io_err(
            "opening pinned",
            &self.pin_dir().join(abi::PIN_SENDERS),
        ))?;
        let cg = sys::open_dir(&scope.dir).map_err(io_err("opening cgroup", &scope.dir))?;
        let link = sys::link_create(prog.as_fd(), cg.as_fd(), AttachType::CgroupSockOps)
            .map_err(io_err("attaching the senders' program to", &scope.dir))?;
        sys::obj_pin(link.as_fd(), &pin).map_err(io_err("pinning link", &pin))
    }

    /// Detaches `bw_senders` from the cgroup with id `cgid`; false when it was not.
    pub fn detach_senders(&self, cgid: u64) -> Result<bool, DatapathError> {
        let dir = self.senders_dir(cgid);
        if !dir.exists() {
            return Ok(false);
        }
        detach_dir(&dir).map_err(io_err("unpinning", &dir))?;
        Ok(true)
    }

    /// The cgroup ids `bw_senders` is attached to.
    pub fn senders_scopes(&self) -> Vec<u64> {
        std::fs::read_dir(self.pin_dir().join("senders"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn detach_dir(dir: &Path) -> io::Result<()> {
    crate::datapath::links::unpin_link(&dir.join("sockops"))?;
    std::fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_counts_this_and_the_last_epoch_only() {
        let d = BwDst {
            epoch: 10,
            active: [3, 5], // epoch 10 counts in slot 0, epoch 9 in slot 1
            ..BwDst::default()
        };
        assert_eq!(active_now(&d, 10), 5);
        assert_eq!(active_now(&d, 11), 3);
        assert_eq!(active_now(&d, 12), 0);
        assert_eq!(active_now(&BwDst::default(), 1 << 40), 0);
    }

    #[test]
    fn keys_round_trip_and_v4_mapped_is_v4() {
        for ip in ["10.1.2.3", "fd00::7", "::ffff:10.1.2.3"] {
            let ip: IpAddr = ip.parse().unwrap();
            let k = key_of(ip);
            let back = ip_of(&k).unwrap();
            match ip {
                IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
                    assert_eq!(back, IpAddr::V4(v6.to_ipv4_mapped().unwrap()));
                    assert_eq!(k.family, AF_INET);
                }
                _ => assert_eq!(back, ip),
            }
        }
    }
}
