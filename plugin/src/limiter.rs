//! The limiter: loads the datapath once per host, attaches it to cgroups, sets and
//! updates limits in place, detaches, and reads counters — all through pinned
//! objects, so any process (daemon, hook, bwctl) can pick up where another left off.
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

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aya::EbpfLoader;
use aya::programs::{CgroupSkb, SockOps};
use serde::Serialize;

use crate::bpf_sys::{self, AttachType};
use crate::bpffs;
use crate::bucket;
use crate::datapath_abi::{self as abi, BwMeta, BwState};
use crate::rate::{ByteSize, Rate};

#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    #[error("not running as root: {what} needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN")]
    NotRoot { what: String },
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

type Result<T> = std::result::Result<T, LimiterError>;

fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> LimiterError + use<> {
    let what = what.to_string();
    let path = path.to_path_buf();
    move |err| LimiterError::Io { what, path, err }
}

/// What to enforce on one cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    pub ingress: Option<Rate>,
    pub egress: Option<Rate>,
    pub burst: Option<ByteSize>,
    /// `abi::F_*` switches for experiments and the benchmark's ablations.
    pub flags: u32,
}

/// Who set a limit, for `list` and for reconciling with the runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub source: Source,
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub container: String,
    pub container_id: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[default]
    Manual,
    Annotation,
    Hook,
}

impl Source {
    fn to_raw(self) -> u32 {
        match self {
            Source::Manual => abi::SOURCE_MANUAL,
            Source::Annotation => abi::SOURCE_ANNOTATION,
            Source::Hook => abi::SOURCE_HOOK,
        }
    }
    fn from_raw(v: u32) -> Self {
        match v {
            abi::SOURCE_ANNOTATION => Source::Annotation,
            abi::SOURCE_HOOK => Source::Hook,
            _ => Source::Manual,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Manual => "manual",
            Source::Annotation => "annotation",
            Source::Hook => "hook",
        })
    }
}

/// Counters of one direction, as the kernel keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DirCounters {
    pub packets: u64,
    pub bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    pub marked_packets: u64,
}

/// One limited cgroup as `list` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub cgroup_id: u64,
    pub path: String,
    pub owner: Owner,
    pub ingress_bps: Option<u64>,
    pub egress_bps: Option<u64>,
    pub burst_bytes: Option<u64>,
    pub created_unix: u64,
    pub ingress: DirCounters,
    pub egress: DirCounters,
    pub acks_gated: u64,
    pub pacing_sets: u64,
    pub clamp_sets: u64,
    /// False when the cgroup is gone (its links are defunct) or a link is missing.
    pub attached: bool,
}

const PROGS: [(&str, &str, AttachType); 3] = [
    ("bw_ingress", "ingress", AttachType::CgroupInetIngress),
    ("bw_egress", "egress", AttachType::CgroupInetEgress),
    ("bw_sockops", "sockops", AttachType::CgroupSockOps),
];

/// The loaded datapath, opened from its pins.
pub struct Datapath {
    dir: PathBuf,
    progs: Vec<OwnedFd>,
    state: OwnedFd,
    meta: OwnedFd,
    root: PathBuf,
}

/// The pin directory for this build's datapath ABI below a pin root.
pub fn abi_dir(root: &Path) -> PathBuf {
    root.join(format!("v{}", abi::ABI_VERSION))
}

/// Limits pinned by a build with another datapath layout stay enforced but are
/// invisible to this one; say so once, when this build loads its own.
fn warn_other_abis(root: &Path) {
    let ours = abi_dir(root);
    let Ok(dir) = std::fs::read_dir(root) else {
        return;
    };
    for e in dir.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if p != ours && name.starts_with('v') && name[1..].parse::<u32>().is_ok() {
            log::warn!(
                "{} holds limits of another nri-bandwidth version (datapath ABI {name}); they stay enforced \
                 until removed with that version's `bwctl unlimit --all --purge` or `rm -r {}`",
                p.display(),
                p.display()
            );
        }
    }
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LimiterError::NotRoot { what: what.into() });
    }
    Ok(())
}

impl Datapath {
    /// Opens the datapath below `root`, loading and pinning it first if this host
    /// does not have it yet (mounting bpffs if needed).
    pub fn open(root: &Path) -> Result<Self> {
        require_root("loading the datapath")?;
        bpffs::ensure(root).map_err(|source| LimiterError::Bpffs {
            path: root.into(),
            err: source,
        })?;
        let dir = abi_dir(root);
        {
            let _lock = lock(root)?;
            if !dir.join("map_meta").exists() {
                warn_other_abis(root);
                load_and_pin(&dir)?;
            }
        }
        Self::from_pins(root, dir)
    }

    /// Opens an already loaded datapath; `Ok(None)` when this host has none (so
    /// read-only commands never load programs).
    pub fn open_existing(root: &Path) -> Result<Option<Self>> {
        require_root("reading the pinned limits")?;
        let dir = abi_dir(root);
        if !dir.join("map_meta").exists() {
            return Ok(None);
        }
        Self::from_pins(root, dir).map(Some)
    }

    /// Opens the pinned objects. The lock is taken per change, not held, so a
    /// long-running daemon and `bwctl` can both work on the same pins.
    fn from_pins(root: &Path, dir: PathBuf) -> Result<Self> {
        let get = |name: &str| {
            let p = dir.join(name);
            bpf_sys::obj_get(&p).map_err(io_err("opening pinned", &p))
        };
        let progs = PROGS
            .iter()
            .map(|(_, short, _)| get(&format!("prog_{short}")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            state: get("map_state")?,
            meta: get("map_meta")?,
            progs,
            dir,
            root: root.to_path_buf(),
        })
    }

    /// The directory holding this ABI's pins.
    pub fn pin_dir(&self) -> &Path {
        &self.dir
    }

    fn links_dir(&self, cgid: u64) -> PathBuf {
        self.dir.join("links").join(cgid.to_string())
    }

    /// Limits the cgroup at `cgroup_dir` (an absolute path on the cgroup v2 mount;
    /// `rel` is how it is shown). Updates the limit in place when one is set already:
    /// links stay, bucket state and counters carry over.
    pub fn limit(&self, cgroup_dir: &Path, rel: &str, limit: &Limit, owner: &Owner) -> Result<u64> {
        if limit.ingress.is_none() && limit.egress.is_none() {
            return Err(LimiterError::NothingToLimit);
        }
        let _lock = lock(&self.root)?;
        let cg = bpf_sys::open_dir(cgroup_dir).map_err(io_err("opening cgroup", cgroup_dir))?;
        let cgid = std::fs::metadata(cgroup_dir)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .map_err(io_err("reading cgroup", cgroup_dir))?;

        let links = self.links_dir(cgid);
        let fresh = !links.exists();
        std::fs::create_dir_all(&links).map_err(io_err("creating", &links))?;
        let mut created = Vec::new();
        let attached = (|| {
            for ((_, short, at), prog) in PROGS.iter().zip(&self.progs) {
                let pin = links.join(short);
                if pin.exists() {
                    continue;
                }
                let link = bpf_sys::link_create(prog.as_fd(), cg.as_fd(), *at)
                    .map_err(|e| attach_error(e, cgroup_dir, short))?;
                bpf_sys::obj_pin(link.as_fd(), &pin).map_err(io_err("pinning link", &pin))?;
                created.push(pin);
            }
            self.write_state(cgid, limit)?;
            self.write_meta(cgid, rel, limit, owner)
        })();
        if let Err(e) = attached {
            // Leave nothing half-made behind: a failed limit pins nothing.
            for p in &created {
                let _ = std::fs::remove_file(p);
            }
            if fresh {
                let _ = std::fs::remove_dir(&links);
                let _ = bpf_sys::map_delete(self.meta.as_fd(), &cgid.to_ne_bytes());
            }
            return Err(e);
        }
        Ok(cgid)
    }

    fn read_state(&self, cgid: u64) -> Result<Option<BwState>> {
        bpf_sys::map_lookup_pod(self.state.as_fd(), cgid).map_err(id_err("reading state of", cgid))
    }

    fn write_state(&self, cgid: u64, limit: &Limit) -> Result<()> {
        let mut st = self
            .read_state(cgid)?
            .ok_or_else(|| LimiterError::MissingKernelFeature {
                what: "cgroup storage shared by programs (Linux >= 5.9)".into(),
                detail: format!("no storage for cgroup id {cgid} after attaching"),
            })?;
        let burst = limit.burst.map(|b| b.bytes());
        for (i, rate) in [
            (abi::DIR_INGRESS, limit.ingress),
            (abi::DIR_EGRESS, limit.egress),
        ] {
            let old = st.dir[i];
            st.dir[i] = match rate {
                Some(r) => {
                    let mut d = bucket::dir_config(r.bytes_per_sec(), burst);
                    d.tat = old.tat;
                    d
                }
                None => abi::BwDir::default(),
            };
            let d = &mut st.dir[i];
            d.packets = old.packets;
            d.bytes = old.bytes;
            d.drop_packets = old.drop_packets;
            d.drop_bytes = old.drop_bytes;
            d.mark_packets = old.mark_packets;
        }
        st.clamp_budget = limit
            .ingress
            .map_or(0, |r| bucket::clamp_budget(r.bytes_per_sec()));
        st.flags = limit.flags;
        st.abi = abi::ABI_VERSION;
        // cgid last: a non-zero cgid is what tells the programs the value is configured.
        st.cgid = cgid;
        // A counter bumped between our read and this write is lost; limits change
        // rarely and the alternative (a lock on the per-packet path) costs every packet.
        bpf_sys::map_update_pod(self.state.as_fd(), cgid, &st, bpf_sys::BPF_EXIST)
            .map_err(id_err("writing state of", cgid))
    }

    fn write_meta(&self, cgid: u64, rel: &str, limit: &Limit, owner: &Owner) -> Result<()> {
        let old = self.read_meta(cgid)?;
        let mut m = BwMeta {
            cgid,
            created_ns: old.map_or_else(now_unix_ns, |m| m.created_ns),
            ingress_bps: limit.ingress.map_or(0, |r| r.bits_per_sec()),
            egress_bps: limit.egress.map_or(0, |r| r.bits_per_sec()),
            burst_bytes: limit.burst.map_or(0, |b| b.bytes()),
            source: owner.source.to_raw(),
            ..BwMeta::default()
        };
        abi::put_cstr(&mut m.path, rel);
        abi::put_cstr(&mut m.pod_namespace, &owner.pod_namespace);
        abi::put_cstr(&mut m.pod_name, &owner.pod_name);
        abi::put_cstr(&mut m.pod_uid, &owner.pod_uid);
        abi::put_cstr(&mut m.container, &owner.container);
        abi::put_cstr(&mut m.container_id, &owner.container_id);
        bpf_sys::map_update_pod(self.meta.as_fd(), cgid, &m, bpf_sys::BPF_ANY)
            .map_err(id_err("writing meta of", cgid))
    }

    fn read_meta(&self, cgid: u64) -> Result<Option<BwMeta>> {
        bpf_sys::map_lookup_pod(self.meta.as_fd(), cgid).map_err(id_err("reading meta of", cgid))
    }

    /// Removes the limit of cgroup id `cgid`. Sockets that are still open get their
    /// pacing and window clamp lifted first (`grace`), since a detached program can no
    /// longer touch them. Returns false when nothing was limited.
    pub fn unlimit(&self, cgid: u64, grace: Duration) -> Result<bool> {
        let _lock = lock(&self.root)?;
        let links = self.links_dir(cgid);
        let had_meta = self.read_meta(cgid)?.is_some();
        if !links.exists() && !had_meta {
            return Ok(false);
        }
        if !grace.is_zero() {
            if let Some(mut st) = self.read_state(cgid)? {
                st.dir[abi::DIR_INGRESS].rate = 0;
                st.dir[abi::DIR_EGRESS].rate = 0;
                st.clamp_budget = 0;
                let _ = bpf_sys::map_update_pod(self.state.as_fd(), cgid, &st, bpf_sys::BPF_EXIST);
                std::thread::sleep(grace);
            }
        }
        if links.exists() {
            for (_, short, _) in PROGS {
                let p = links.join(short);
                // Releasing the last reference frees a link from a workqueue, later;
                // an explicit detach takes the program off the cgroup now, so the
                // limit is gone when unlimit returns.
                if let Ok(fd) = bpf_sys::obj_get(&p) {
                    let _ = bpf_sys::link_detach(fd.as_fd());
                }
                match std::fs::remove_file(&p) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_err("unpinning", &p)(e));
                    }
                    _ => {}
                }
            }
            std::fs::remove_dir(&links).map_err(io_err("removing", &links))?;
        }
        bpf_sys::map_delete(self.meta.as_fd(), &cgid.to_ne_bytes())
            .map_err(id_err("deleting meta of", cgid))?;
        Ok(true)
    }

    /// Every limited cgroup with its counters.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let mut ids =
            bpf_sys::map_keys_u64(self.meta.as_fd()).map_err(io_err("listing", &self.dir))?;
        // Links without meta can only come from a crash mid-limit; show them too so
        // reconcile (and the operator) can see and remove them.
        if let Ok(rd) = std::fs::read_dir(self.dir.join("links")) {
            for e in rd.flatten() {
                if let Some(id) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
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
        let ids = bpf_sys::map_keys_u64(self.meta.as_fd()).map_err(io_err("listing", &self.dir))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(m) = self.read_meta(id)? {
                out.push((id, owner_of(&m)));
            }
        }
        Ok(out)
    }

    /// One limited cgroup, or None.
    pub fn entry(&self, cgid: u64) -> Result<Option<Entry>> {
        let meta = self.read_meta(cgid)?;
        let links = self.links_dir(cgid);
        if meta.is_none() && !links.exists() {
            return Ok(None);
        }
        let st = self.read_state(cgid)?.unwrap_or_default();
        let m = meta.unwrap_or_default();
        let counters = |d: &abi::BwDir| DirCounters {
            packets: d.packets,
            bytes: d.bytes,
            dropped_packets: d.drop_packets,
            dropped_bytes: d.drop_bytes,
            marked_packets: d.mark_packets,
        };
        let nz = |v: u64| (v != 0).then_some(v);
        Ok(Some(Entry {
            cgroup_id: cgid,
            path: abi::get_cstr(&m.path),
            owner: owner_of(&m),
            ingress_bps: nz(m.ingress_bps),
            egress_bps: nz(m.egress_bps),
            burst_bytes: nz(m.burst_bytes),
            created_unix: m.created_ns / 1_000_000_000,
            ingress: counters(&st.dir[abi::DIR_INGRESS]),
            egress: counters(&st.dir[abi::DIR_EGRESS]),
            acks_gated: st.acks_gated,
            pacing_sets: st.pacing_sets,
            clamp_sets: st.clamp_sets,
            attached: self.links_alive(cgid),
        }))
    }

    /// All three links pinned and still attached to a live cgroup.
    fn links_alive(&self, cgid: u64) -> bool {
        let links = self.links_dir(cgid);
        PROGS.iter().all(|(_, short, _)| {
            bpf_sys::obj_get(&links.join(short))
                .and_then(|fd| bpf_sys::link_info(fd.as_fd()))
                .is_ok_and(|i| i.cgroup_id == cgid)
        })
    }

    /// Removes the datapath itself (programs and maps) once nothing is limited, for
    /// uninstalling. Refuses while any limit exists.
    pub fn purge(self) -> Result<()> {
        let _lock = lock(&self.root)?;
        let left = self.list()?;
        if !left.is_empty() {
            return Err(LimiterError::Io {
                what: format!(
                    "{} limit(s) still set; not removing the datapath at",
                    left.len()
                ),
                path: self.dir.clone(),
                err: io::Error::from(io::ErrorKind::ResourceBusy),
            });
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
        let mut removed = Vec::new();
        for e in self.list()? {
            if !e.attached {
                self.unlimit(e.cgroup_id, Duration::ZERO)?;
                removed.push(e.cgroup_id);
            }
        }
        Ok(removed)
    }
}

fn owner_of(m: &BwMeta) -> Owner {
    Owner {
        source: Source::from_raw(m.source),
        pod_namespace: abi::get_cstr(&m.pod_namespace),
        pod_name: abi::get_cstr(&m.pod_name),
        pod_uid: abi::get_cstr(&m.pod_uid),
        container: abi::get_cstr(&m.container),
        container_id: abi::get_cstr(&m.container_id),
    }
}

fn id_err(what: &str, cgid: u64) -> impl FnOnce(io::Error) -> LimiterError + use<> {
    io_err(&format!("{what} cgroup id"), Path::new(&cgid.to_string()))
}

fn attach_error(e: io::Error, cgroup: &Path, what: &str) -> LimiterError {
    match e.raw_os_error() {
        Some(libc::EBADF) => LimiterError::Io {
            what: format!("attaching {what} program: not a cgroup v2 directory:"),
            path: cgroup.into(),
            err: e,
        },
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            LimiterError::MissingKernelFeature {
                what: format!("cgroup bpf_link for {what} (Linux >= 5.7)"),
                detail: e.to_string(),
            }
        }
        _ => LimiterError::Io {
            what: format!("attaching {what} program to"),
            path: cgroup.into(),
            err: e,
        },
    }
}

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Serialises loading and limit changes between our processes (daemon, hook,
/// bwctl) with an flock on the pin root directory itself, so there is no lock file
/// to leave behind.
fn lock(root: &Path) -> Result<File> {
    let f = File::open(root).map_err(io_err("opening", root))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io_err("locking", root)(io::Error::last_os_error()));
    }
    Ok(f)
}

/// Loads the embedded object and pins its programs and the maps user space needs.
/// Pins are written to a temporary directory and renamed into place, so a crash
/// never leaves a half-pinned datapath that would later be mistaken for a whole one.
fn load_and_pin(dir: &Path) -> Result<()> {
    // bpffs refuses names with a dot in them.
    let tmp = dir.with_file_name(format!("v{}_loading", abi::ABI_VERSION));
    let _ = remove_tree(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
    let r = (|| {
        let mut ebpf = EbpfLoader::new()
            .load(abi::BPF_OBJECT)
            .map_err(|e| load_error(format!("{e:#}")))?;
        for (name, short, _) in PROGS {
            let prog = ebpf
                .program_mut(name)
                .ok_or_else(|| load_error(format!("program {name} missing")))?;
            let pin = tmp.join(format!("prog_{short}"));
            // Loading needs the typed program; pinning works on any.
            let loaded = if short == "sockops" {
                let p: &mut SockOps = (&mut *prog)
                    .try_into()
                    .map_err(|e| load_error(format!("{name}: {e}")))?;
                p.load()
            } else {
                let p: &mut CgroupSkb = (&mut *prog)
                    .try_into()
                    .map_err(|e| load_error(format!("{name}: {e}")))?;
                p.load()
            };
            loaded.map_err(|e| load_error(format!("{name}: {}", verifier_detail(&e))))?;
            prog.pin(&pin)
                .map_err(|e| load_error(format!("pinning {name}: {e}")))?;
        }
        for (map, short) in [("bw_state", "map_state"), ("bw_meta", "map_meta")] {
            let m = ebpf
                .map(map)
                .ok_or_else(|| load_error(format!("map {map} missing")))?;
            m.pin(tmp.join(short))
                .map_err(|e| load_error(format!("pinning {map}: {e}")))?;
        }
        std::fs::create_dir_all(tmp.join("links")).map_err(io_err("creating", &tmp))?;
        Ok(())
    })();
    if let Err(e) = r {
        let _ = remove_tree(&tmp);
        return Err(e);
    }
    // bpffs supports rename of directories within the same mount.
    if dir.exists() {
        let _ = remove_tree(dir);
    }
    std::fs::rename(&tmp, dir).map_err(io_err("renaming into place", dir))
}

fn load_error(s: String) -> LimiterError {
    let low = s.to_lowercase();
    if low.contains("invalid argument") && low.contains("map") {
        return LimiterError::MissingKernelFeature {
            what: "a map type the datapath uses".into(),
            detail: s,
        };
    }
    LimiterError::Load(s)
}

fn verifier_detail(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            format!(
                "{io_error}; verifier: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        }
        other => format!("{other}"),
    }
}

/// Removes a pin directory tree (bpffs has no recursive unlink).
pub fn remove_tree(p: &Path) -> io::Result<()> {
    if p.is_dir() {
        for e in std::fs::read_dir(p)? {
            remove_tree(&e?.path())?;
        }
        std::fs::remove_dir(p)
    } else {
        std::fs::remove_file(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_dir_is_versioned() {
        assert_eq!(
            abi_dir(Path::new("/x")),
            PathBuf::from(format!("/x/v{}", abi::ABI_VERSION))
        );
    }

    #[test]
    fn source_round_trips() {
        for s in [Source::Manual, Source::Annotation, Source::Hook] {
            assert_eq!(Source::from_raw(s.to_raw()), s);
        }
    }
}
