//! The datapath as user space sees it: loads the programs once per host, attaches
//! them to cgroups, sets and updates limits in place, detaches, and reads counters —
//! all through pinned objects, so any process (daemon, hook, bwctl) can pick up
//! where another left off.
//!
//! Pin layout under the root (default /sys/fs/bpf/nri-bandwidth):
//! ```text
//! v<ABI>/prog_ingress prog_egress prog_sockops   programs, loaded once per host
//! v<ABI>/map_state                               cgroup storage: config, buckets, counters
//! v<ABI>/map_meta                                who limited which cgroup, and how
//! v<ABI>/links/<cgroup id>/{ingress,egress,sockops}   one pinned bpf_link each
//! ```
//! Removing a limit unpins its three links (the kernel then frees the attachment and
//! its storage) and deletes its meta entry: nothing of it is left behind.
//!
//! | module | its one job |
//! |---|---|
//! | `abi` | the structs and constants shared with `ebpf/` |
//! | `bucket` | rate → bucket arithmetic written into `bw_state` |
//! | `codec` | model ↔ `bw_state` / `bw_meta` |
//! | `links` | the three programs and their pinned cgroup links |
//! | `loader` | loading the object and pinning it |
//! | `pins` | the pin root: bpffs, lock, per-ABI directory |
//! | `senders` | local senders paced toward limited destinations |
//! | `sys` | the bpf(2) commands aya does not expose for pinned objects |

pub mod abi;
pub mod bucket;
pub mod codec;
pub mod links;
mod loader;
pub mod pins;
pub mod senders;
pub mod sys;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cgroup::Cgroup;
use crate::model::{Entry, Limit, Owner};
use abi::{BwMeta, BwState};
pub use pins::{DEFAULT_PIN_ROOT, abi_dir, remove_tree};

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "not running as root: {what} needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (and CAP_SYS_ADMIN where bpffs is not mounted yet)"
    )]
    NotRoot { what: String },
    #[error(
        "the pinned datapath at {} is incomplete ({missing} is missing) but still holds {held}; \
         not reloading over it, which would detach every limit: inspect it, then remove it with `rm -r {}`",
        .dir.display(), .dir.display()
    )]
    Incomplete {
        dir: PathBuf,
        missing: String,
        held: String,
    },
    #[error("pin root {}: {err}", .root.display())]
    Busy { root: PathBuf, err: io::Error },
    #[error("cannot record the owner of {}: {reason}", .dir.display())]
    Owner { dir: PathBuf, reason: String },
    #[error("the kernel lacks a feature the datapath needs ({what}): {detail}")]
    MissingKernelFeature { what: String, detail: String },
    #[error("bpffs at {path}: {err}")]
    Bpffs { path: PathBuf, err: io::Error },
    #[error("loading the eBPF programs: {0}")]
    Load(String),
    #[error("{what} {path}: {err}")]
    Io {
        what: String,
        path: PathBuf,
        err: io::Error,
    },
    #[error("no limit is set on cgroup {0}")]
    NotLimited(String),
    #[error("a limit needs an ingress or an egress rate (or both)")]
    NothingToLimit,
    #[error("the datapath is not loaded on this host (nothing is limited)")]
    NotLoaded,
}

type Result<T> = std::result::Result<T, DatapathError>;

pub(crate) fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> DatapathError + use<> {
    let what = what.to_string();
    let path = path.to_path_buf();
    move |err| DatapathError::Io { what, path, err }
}

fn id_err(what: &str, cgid: u64) -> impl FnOnce(io::Error) -> DatapathError + use<> {
    io_err(&format!("{what} cgroup id"), Path::new(&cgid.to_string()))
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(DatapathError::NotRoot { what: what.into() });
    }
    Ok(())
}

fn lock(root: &Path, wait: Option<Duration>) -> Result<std::fs::File> {
    pins::lock(root, wait).map_err(|err| match err.kind() {
        io::ErrorKind::TimedOut => DatapathError::Busy {
            root: root.into(),
            err,
        },
        _ => io_err("locking", root)(err),
    })
}

/// What an ABI directory holds besides a whole datapath (for the refusal to
/// reload over it), or None when it is empty or absent.
fn leftovers(dir: &Path) -> Option<String> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let links = std::fs::read_dir(dir.join("links")).map_or(0, |d| d.count());
    if links > 0 {
        return Some(format!("{links} limit(s) in links/"));
    }
    let pins: Vec<&String> = names.iter().filter(|n| *n != "links").collect();
    (!pins.is_empty()).then(|| {
        pins.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    })
}

fn pin_ino(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(abi::PIN_META)).map_or(0, |m| m.ino())
}

/// The loaded datapath, opened from its pins.
pub struct Datapath {
    dir: PathBuf,
    progs: Vec<OwnedFd>,
    state: OwnedFd,
    meta: OwnedFd,
    dst: OwnedFd,
    root: PathBuf,
    /// Inode of the `map_meta` pin when opened: a different one means the datapath
    /// was purged and loaded again under us (see [`Datapath::is_current`]).
    meta_ino: u64,
    /// How long a change waits for the pin-root lock (None: as long as it takes).
    lock_wait: Option<Duration>,
}

impl Datapath {
    /// Opens the datapath below `root`, loading and pinning it first if this host
    /// does not have it yet (mounting bpffs if needed).
    pub fn open(root: &Path) -> Result<Self> {
        require_root("loading the datapath")?;
        pins::ensure(root).map_err(|err| DatapathError::Bpffs {
            path: root.into(),
            err,
        })?;
        let dir = abi_dir(root);
        {
            let _lock = lock(root, None)?;
            if !dir.join(abi::PIN_META).exists() {
                // Never reload over what is left: the reload would replace the
                // maps and silently drop every limit still pinned there.
                if let Some(held) = leftovers(&dir) {
                    return Err(DatapathError::Incomplete {
                        dir,
                        missing: abi::PIN_META.into(),
                        held,
                    });
                }
                pins::warn_other_abis(root);
                loader::load_and_pin(&dir)?;
            }
        }
        Self::from_pins(root, dir)
    }

    /// Opens an already loaded datapath; `Ok(None)` when this host has none (so
    /// read-only commands never load programs).
    pub fn open_existing(root: &Path) -> Result<Option<Self>> {
        require_root("reading the pinned limits")?;
        let dir = abi_dir(root);
        if !dir.join(abi::PIN_META).exists() {
            return Ok(None);
        }
        Self::from_pins(root, dir).map(Some)
    }

    /// Opens the pinned objects. The lock is taken per change, not held, so a
    /// long-running daemon and `bwctl` can both work on the same pins.
    fn from_pins(root: &Path, dir: PathBuf) -> Result<Self> {
        let get = |name: &str| {
            let p = dir.join(name);
            sys::obj_get(&p).map_err(io_err("opening pinned", &p))
        };
        let progs = links::PROGS
            .iter()
            .map(|p| get(p.pin))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            state: get(abi::PIN_STATE)?,
            meta: get(abi::PIN_META)?,
            dst: get(abi::PIN_DST)?,
            progs,
            meta_ino: pin_ino(&dir),
            dir,
            root: root.to_path_buf(),
            lock_wait: None,
        })
    }

    /// Bounds how long each change waits for the pin-root lock; past it the change
    /// fails with [`DatapathError::Busy`] (the daemon and the hook answer their
    /// runtime in time instead of hanging behind a long `bwctl` removal).
    pub fn with_lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = Some(wait);
        self
    }

    /// The same lock bound as `other` (for a datapath opened again).
    pub fn with_lock_wait_of(mut self, other: &Datapath) -> Self {
        self.lock_wait = other.lock_wait;
        self
    }

    /// The pin root this datapath was opened from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// False when the pins were removed or replaced since this was opened (e.g.
    /// `bwctl unlimit --all --purge` under a running daemon): the maps held here
    /// are no longer the ones the programs on the node use.
    pub fn is_current(&self) -> bool {
        self.meta_ino != 0 && pin_ino(&self.dir) == self.meta_ino
    }

    fn lock(&self) -> Result<std::fs::File> {
        lock(&self.root, self.lock_wait)
    }

    fn state_map(&self) -> std::os::fd::BorrowedFd<'_> {
        self.state.as_fd()
    }

    fn dst_map(&self) -> std::os::fd::BorrowedFd<'_> {
        self.dst.as_fd()
    }

    /// The directory holding this ABI's pins.
    pub fn pin_dir(&self) -> &Path {
        &self.dir
    }

    /// Limits `cg`, or updates its limit in place when one is set already: links
    /// stay, bucket state and counters carry over.
    pub fn limit(&self, cg: &Cgroup, limit: &Limit, owner: &Owner) -> Result<()> {
        if limit.is_empty() {
            return Err(DatapathError::NothingToLimit);
        }
        let _lock = self.lock()?;
        let fd = sys::open_dir(&cg.dir).map_err(io_err("opening cgroup", &cg.dir))?;
        // The directory opened must be the cgroup that was resolved, not one made
        // again under the same name since.
        let ino = std::fs::File::from(fd.try_clone().map_err(io_err("opening cgroup", &cg.dir))?)
            .metadata()
            .map_err(io_err("reading cgroup", &cg.dir))?
            .ino();
        if ino != cg.id {
            return Err(io_err("limiting", &cg.dir)(io::Error::other(format!(
                "the cgroup was replaced (id {} is now {ino})",
                cg.id
            ))));
        }
        let cgid = cg.id;
        let links = links::links_dir(&self.dir, cgid);
        let fresh = !links.exists();
        std::fs::create_dir_all(&links).map_err(io_err("creating", &links))?;
        let mut created = Vec::new();
        let attached = (|| {
            links::attach_missing(&self.progs, fd.as_fd(), &cg.dir, &links, &mut created)?;
            self.write_state(cgid, limit)?;
            self.write_meta(cgid, &cg.rel, limit, owner)
        })();
        if let Err(e) = attached {
            // Leave nothing half-made behind: a failed limit pins nothing.
            for p in &created {
                let _ = std::fs::remove_file(p);
            }
            if fresh {
                let _ = std::fs::remove_dir(&links);
                let _ = sys::map_delete(self.meta.as_fd(), &cgid.to_ne_bytes());
            }
            return Err(e);
        }
        Ok(())
    }

    fn read_state(&self, cgid: u64) -> Result<Option<BwState>> {
        sys::map_lookup_pod(self.state.as_fd(), cgid).map_err(id_err("reading state of", cgid))
    }

    fn write_state(&self, cgid: u64, limit: &Limit) -> Result<()> {
        let old = self
            .read_state(cgid)?
            .ok_or_else(|| DatapathError::MissingKernelFeature {
                what: "cgroup storage shared by programs (Linux >= 5.9)".into(),
                detail: format!("no storage for cgroup id {cgid} after attaching"),
            })?;
        let st = codec::state_with_limit(&old, cgid, limit);
        // A counter bumped between our read and this write is lost; limits change
        // rarely and the alternative (a lock on the per-packet path) costs every packet.
        sys::map_update_pod(self.state.as_fd(), cgid, &st, sys::BPF_EXIST)
            .map_err(id_err("writing state of", cgid))
    }

    fn write_meta(&self, cgid: u64, rel: &str, limit: &Limit, owner: &Owner) -> Result<()> {
        let created = self
            .read_meta(cgid)?
            .map_or_else(now_unix_ns, |m| m.created_ns);
        let m = codec::meta_of(cgid, rel, limit, owner, created).map_err(|reason| {
            DatapathError::Owner {
                dir: rel.into(),
                reason,
            }
        })?;
        sys::map_update_pod(self.meta.as_fd(), cgid, &m, sys::BPF_ANY)
            .map_err(id_err("writing meta of", cgid))
    }

    fn read_meta(&self, cgid: u64) -> Result<Option<BwMeta>> {
        sys::map_lookup_pod(self.meta.as_fd(), cgid).map_err(id_err("reading meta of", cgid))
    }

    /// Removes the limit of cgroup id `cgid`. Sockets that are still open get their
    /// pacing and window clamp lifted first (`grace`), since a detached program can no
    /// longer touch them. Returns false when nothing was limited.
    pub fn unlimit(&self, cgid: u64, grace: Duration) -> Result<bool> {
        Ok(self.unlimit_many(&[cgid], grace)?[0])
    }

    /// [`Datapath::unlimit`] for many cgroups with one grace period for all, and
    /// the lock released while waiting it out. Returns, per id, whether it was limited.
    pub fn unlimit_many(&self, ids: &[u64], grace: Duration) -> Result<Vec<bool>> {
        if !grace.is_zero() {
            let mut lifted = false;
            {
                let _lock = self.lock()?;
                for &cgid in ids {
                    if let Some(mut st) = self.read_state(cgid)? {
                        st.dir[abi::DIR_INGRESS].rate = 0;
                        st.dir[abi::DIR_EGRESS].rate = 0;
                        st.clamp_budget = 0;
                        let _ = sys::map_update_pod(self.state.as_fd(), cgid, &st, sys::BPF_EXIST);
                        lifted = true;
                    }
                }
            }
            if lifted {
                std::thread::sleep(grace);
            }
        }
        let _lock = self.lock()?;
        ids.iter().map(|&cgid| self.remove_locked(cgid)).collect()
    }

    /// Detaches and forgets one limit; the caller holds the lock.
    fn remove_locked(&self, cgid: u64) -> Result<bool> {
        let links = links::links_dir(&self.dir, cgid);
        let had_meta = self.read_meta(cgid)?.is_some();
        if !links.exists() && !had_meta {
            return Ok(false);
        }
        links::detach_all(&links).map_err(io_err("unpinning", &links))?;
        self.set_destinations(cgid, &[], None)?;
        sys::map_delete(self.meta.as_fd(), &cgid.to_ne_bytes())
            .map_err(id_err("deleting meta of", cgid))?;
        Ok(true)
    }

    /// Every limited cgroup with its counters.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let mut ids = sys::map_keys_u64(self.meta.as_fd()).map_err(io_err("listing", &self.dir))?;
        // Links without meta can only come from a crash mid-limit; show them too so
        // reconcile (and the operator) can see and remove them.
        if let Ok(rd) = std::fs::read_dir(self.dir.join("links")) {
            for e in rd.flatten() {
                if let Some(id) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok())
                    && !ids.contains(&id)
                {
                    ids.push(id);
                }
            }
        }
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| self.entry(id).transpose())
            .collect()
    }

    /// Who owns each limit (the meta map only): what removal by pod or container
    /// needs, without the per-limit link checks `list` does.
    pub fn owners(&self) -> Result<Vec<(u64, Owner)>> {
        let ids = sys::map_keys_u64(self.meta.as_fd()).map_err(io_err("listing", &self.dir))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(m) = self.read_meta(id)? {
                out.push((id, codec::owner_of(&m)));
            }
        }
        Ok(out)
    }

    /// One limited cgroup, or None.
    pub fn entry(&self, cgid: u64) -> Result<Option<Entry>> {
        let meta = self.read_meta(cgid)?;
        let links = links::links_dir(&self.dir, cgid);
        if meta.is_none() && !links.exists() {
            return Ok(None);
        }
        let st = self.read_state(cgid)?.unwrap_or_default();
        // Enforced exactly when all three links are attached to the live cgroup
        // and its state is configured; a limit cut short by a crash (links without
        // meta, or meta without configured state) is shown as not attached, and
        // reconcile removes it.
        let attached = meta.is_some() && st.cgid == cgid && links::all_alive(&links, cgid);
        let m = meta.unwrap_or_default();
        Ok(Some(codec::entry_of(cgid, &m, &st, attached)))
    }

    /// Removes the datapath itself (programs and maps) once nothing is limited, for
    /// uninstalling. Refuses while any limit exists.
    pub fn purge(self) -> Result<()> {
        let _lock = self.lock()?;
        let left = self.list()?;
        if !left.is_empty() {
            return Err(DatapathError::Io {
                what: format!(
                    "{} limit(s) still set; not removing the datapath at",
                    left.len()
                ),
                path: self.dir.clone(),
                err: io::Error::from(io::ErrorKind::ResourceBusy),
            });
        }
        for scope in self.senders_scopes() {
            self.detach_senders(scope)?;
        }
        let dir = self.dir.clone();
        drop(self);
        remove_tree(&dir).map_err(io_err("removing", &dir))?;
        if let Some(root) = dir.parent() {
            // Only succeeds when no other ABI version is pinned there.
            let _ = std::fs::remove_dir(root);
        }
        Ok(())
    }

    /// Removes limits whose cgroup no longer exists (its links are defunct) and any
    /// half-made entry. Returns the cgroup ids removed.
    pub fn reconcile(&self) -> Result<Vec<u64>> {
        // Under the lock throughout: a limit another process is making right now
        // looks half-made until it is done, and must not be taken for a leftover.
        let _lock = self.lock()?;
        let mut removed = Vec::new();
        for e in self.list()? {
            if !e.attached {
                self.remove_locked(e.cgroup_id)?;
                removed.push(e.cgroup_id);
            }
        }
        Ok(removed)
    }
}

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
