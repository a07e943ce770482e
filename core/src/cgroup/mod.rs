//! Finding the cgroup v2 directory of a workload.
//!
//! Our eBPF programs (`cgroup_skb`, `sock_ops`) attach to a cgroup **v2** directory, and
//! the datapath identifies a workload by the id of that cgroup. Runtimes and users name
//! that directory in several ways, and this module turns each of them into one canonical
//! absolute directory under the cgroup v2 mount:
//!
//! * a cgroupfs path relative to the mount (`/kubepods/burstable/pod<uid>/<id>`, with or
//!   without the leading `/`) — the kubelet/containerd `cgroupfs` driver and OCI
//!   `cgroupsPath`;
//! * an absolute path already under the mount (`/sys/fs/cgroup/kubepods/...`);
//! * a systemd spec `slice:prefix:name` — the `systemd` cgroup driver's OCI `cgroupsPath`;
//! * a bare systemd slice name (`kubepods-besteffort.slice`);
//! * a pid, through `/proc/<pid>/cgroup`.
//!
//! Both pure v2 hosts (mount at `/sys/fs/cgroup`) and hybrid hosts (v1 controllers plus
//! the v2 hierarchy at `/sys/fs/cgroup/unified`) work: the mount is found in
//! `/proc/self/mountinfo`, never assumed.
//!
//! Every resolution canonicalizes (`..` and symlinks) and rejects whatever ends up outside
//! the mount: annotation values and hook input are untrusted, and attaching a program or
//! writing `cgroup.procs` must never reach an arbitrary directory of the host.
//!
//! The mount root is a parameter of [`CgroupFs`] so that everything here is tested on a
//! temporary directory, without root.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::text::quoted;

mod landing;
mod spec;

pub use landing::check_runtime_spec;

pub use spec::{expand_slice, find_v2_mount, systemd_spec_path, v2_mount_from_mountinfo};
pub(crate) use spec::{is_systemd_spec, unified_path_from_proc_cgroup};

/// `f_type` that `statfs(2)` reports for a cgroup v2 filesystem (`CGROUP2_SUPER_MAGIC`
/// in `<linux/magic.h>`).
pub const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;

/// Where the cgroup v2 hierarchy is mounted on a pure v2 ("unified") host.
pub const PURE_V2_MOUNT: &str = "/sys/fs/cgroup";

/// Where systemd mounts the cgroup v2 hierarchy on a hybrid host (v1 controllers at
/// `/sys/fs/cgroup/<controller>`, v2 without controllers at `unified`).
pub const HYBRID_V2_MOUNT: &str = "/sys/fs/cgroup/unified";

/// The mount table read by [`find_v2_mount`].
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The file every cgroup v2 directory has and the one to write a pid into to move it.
const CGROUP_PROCS: &str = "cgroup.procs";

/// Parent slice systemd (and runc) use when a `slice:prefix:name` spec leaves the slice
/// empty, for a non-rootless container.
const DEFAULT_SYSTEMD_SLICE: &str = "system.slice";

/// Why a cgroup could not be found or used. Every variant names what it was given, so
/// the message alone is enough to tell the user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No `cgroup2` filesystem in the mount table.
    #[error(
        "no cgroup v2 (cgroup2) filesystem is mounted (looked in {}); \
         nri-bandwidth needs a pure cgroup v2 or hybrid host",
        .mountinfo.display()
    )]
    NoV2Mount { mountinfo: PathBuf },

    /// The spec is well formed but names nothing on disk.
    #[error("cgroup {} does not exist under {}", quoted(.spec), .root.display())]
    NotFound { spec: String, root: PathBuf },

    /// The spec resolves (through `..` or a symlink) outside the cgroup v2 mount.
    #[error("cgroup {} resolves outside the cgroup v2 mount {}", quoted(.spec), .root.display())]
    OutsideMount { spec: String, root: PathBuf },

    /// The spec resolves to something that is not a directory (e.g. a control file).
    #[error("cgroup {} resolves to {}, which is not a directory", quoted(.spec), .path.display())]
    NotADirectory { spec: String, path: PathBuf },

    /// The path is not on a cgroup v2 filesystem.
    #[error("{} is not on a cgroup v2 (cgroup2) filesystem", .path.display())]
    NotCgroupV2 { path: PathBuf },

    /// The spec is malformed (bad systemd slice name, empty, ...).
    #[error("invalid cgroup {}: {reason}", quoted(.spec))]
    InvalidSpec { spec: String, reason: String },

    /// `/proc/<pid>/cgroup` is missing or has no usable cgroup v2 line.
    #[error("cannot find the cgroup v2 directory of pid {pid}: {detail}")]
    BadProcCgroup { pid: u32, detail: String },

    /// The cgroup exists but a limit must never land there (the root, the node's own
    /// services, the process asking, another pod).
    #[error("refusing cgroup {}: {reason}", quoted(.spec))]
    Refused { spec: String, reason: String },

    /// Any other I/O failure, with the path it happened on.
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.into();
    move |source| CgroupError::Io { path, source }
}

fn invalid(spec: &str, reason: impl Into<String>) -> CgroupError {
    CgroupError::InvalidSpec {
        spec: spec.to_owned(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------
// The cgroup v2 filesystem
// ---------------------------------------------------------------------------------------

/// A cgroup v2 directory resolved once: what the datapath attaches to and records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// The canonical absolute directory under the mount.
    pub dir: PathBuf,
    /// The path relative to the mount with a leading `/`, for display and state.
    pub rel: String,
    /// The cgroup id (see [`CgroupFs::id`]): what the kernel programs see.
    pub id: u64,
}

/// The cgroup v2 hierarchy mounted at `root`, and the one place where specs become
/// directories. All methods confine what they touch to `root`.
#[derive(Debug, Clone)]
pub struct CgroupFs {
    /// The cgroup v2 mount point (canonicalized when it exists at construction).
    root: PathBuf,
    /// Whether [`CgroupFs::is_v2`] requires the filesystem type to be cgroup2; off only
    /// for tests on a temporary directory.
    check_magic: bool,
}

/// `statfs(2)` the path and tell whether it is on a cgroup2 filesystem.
fn is_cgroup2_fs(path: &Path) -> io::Result<bool> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st = MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` points to writable
    // memory of the exact type statfs fills.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs returned 0, so it filled the whole struct (which was zeroed anyway).
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // f_type's integer type differs between targets
    let f_type = st.f_type as u64;
    Ok(f_type == CGROUP2_SUPER_MAGIC)
}

/// Joins `rel` below `root` lexically: `.` is dropped, `..` pops a component, and a `..`
/// that would climb above `root` gives `None`. A leading `/` in `rel` means `root`.
/// (`..` is thus applied before symlinks are followed, like Go's `filepath.Clean` in
/// runc's `securejoin`; both ways the result cannot leave `root`.)
/// This rejects `/kubepods/../../etc` even when nothing of it exists; symlinks are dealt
/// with afterwards by canonicalizing.
fn lexical_join(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&OsStr> = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(p) => parts.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    let mut out = root.to_path_buf();
    out.extend(parts);
    Some(out)
}

impl CgroupFs {
    /// Finds the host's cgroup v2 mount ([`find_v2_mount`]) and checks with `statfs` that
    /// it really is a cgroup2 filesystem.
    pub fn detect() -> Result<Self, CgroupError> {
        let root = find_v2_mount()?;
        match is_cgroup2_fs(&root) {
            Ok(true) => Ok(Self::new(root)),
            Ok(false) => Err(CgroupError::NotCgroupV2 { path: root }),
            Err(source) => Err(CgroupError::Io { path: root, source }),
        }
    }

    /// A cgroup v2 hierarchy mounted at `root`. [`CgroupFs::is_v2`] checks the filesystem
    /// type.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let root = fs::canonicalize(&root).unwrap_or(root);
        Self {
            root,
            check_magic: true,
        }
    }

    /// Like [`CgroupFs::new`] but [`CgroupFs::is_v2`] skips the filesystem type check, so
    /// a plain directory can stand in for the mount in tests.
    pub fn new_unchecked(root: impl Into<PathBuf>) -> Self {
        Self {
            check_magic: false,
            ..Self::new(root)
        }
    }

    /// The cgroup v2 mount point.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn canonical_root(&self) -> Result<PathBuf, CgroupError> {
        fs::canonicalize(&self.root).map_err(io_err(&self.root))
    }

    fn outside(&self, spec: &str) -> CgroupError {
        CgroupError::OutsideMount {
            spec: spec.to_owned(),
            root: self.root.clone(),
        }
    }

    fn not_found(&self, spec: &str) -> CgroupError {
        CgroupError::NotFound {
            spec: spec.to_owned(),
            root: self.root.clone(),
        }
    }

    /// Resolves `rel` (relative to the mount) to an existing directory inside the mount;
    /// `spec` is what the caller gave, for error messages.
    fn confine(&self, spec: &str, rel: &Path) -> Result<PathBuf, CgroupError> {
        let joined = lexical_join(&self.root, rel).ok_or_else(|| self.outside(spec))?;
        let root = self.canonical_root()?;
        let canonical = match fs::canonicalize(&joined) {
            Ok(p) => p,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Err(self.not_found(spec));
            }
            Err(source) => {
                return Err(CgroupError::Io {
                    path: joined,
                    source,
                });
            }
        };
        if !canonical.starts_with(&root) {
            return Err(self.outside(spec));
        }
        if !canonical.is_dir() {
            return Err(CgroupError::NotADirectory {
                spec: spec.to_owned(),
                path: canonical,
            });
        }
        Ok(canonical)
    }

    /// Confines a directory given as a path (what [`CgroupFs::resolve`] returned, or a
    /// path relative to the mount).
    fn confine_dir(&self, dir: &Path) -> Result<PathBuf, CgroupError> {
        let spec = dir.display().to_string();
        match dir.strip_prefix(&self.root) {
            Ok(rel) => self.confine(&spec, rel),
            Err(_) if dir.is_absolute() => {
                // Absolute but not lexically under the mount: only fine if it is a
                // symlink path leading into it.
                let canonical = fs::canonicalize(dir).map_err(|_| self.outside(&spec))?;
                let rel = canonical
                    .strip_prefix(self.canonical_root()?)
                    .map_err(|_| self.outside(&spec))?
                    .to_path_buf();
                self.confine(&spec, &rel)
            }
            Err(_) => self.confine(&spec, dir),
        }
    }

    /// Turns what a runtime or user gives into the absolute, canonical, existing cgroup
    /// directory under the mount.
    ///
    /// Accepts, in this order of recognition:
    /// * `slice:prefix:name` (systemd cgroup driver) — see [`systemd_spec_path`];
    /// * a bare slice name without `/` such as `kubepods-besteffort.slice` — see
    ///   [`expand_slice`];
    /// * an absolute path under the mount (`/sys/fs/cgroup/unified/kubepods/pod1/abc`);
    /// * otherwise a cgroupfs path relative to the mount, with or without leading `/`
    ///   (`/kubepods/burstable/pod<uid>/<id>`).
    ///
    /// Errors: [`CgroupError::OutsideMount`] when `..` or a symlink leads out of the mount
    /// (also for an absolute path elsewhere on the host that exists, like `/etc`),
    /// [`CgroupError::NotFound`] when nothing exists there,
    /// [`CgroupError::InvalidSpec`] for a malformed systemd name.
    pub fn resolve(&self, spec: &str) -> Result<PathBuf, CgroupError> {
        if spec.is_empty() {
            return Err(invalid(spec, "empty cgroup path"));
        }
        let dir = if is_systemd_spec(spec) {
            self.confine(spec, Path::new(&systemd_spec_path(spec)?))
        } else if !spec.contains('/') && spec.ends_with(".slice") {
            self.confine(spec, Path::new(&expand_slice(spec)?))
        } else {
            let path = Path::new(spec);
            match path.strip_prefix(&self.root) {
                Ok(rel) if path.is_absolute() => self.confine(spec, rel),
                _ => match self.confine(spec, path) {
                    // An absolute path that is not under the mount but exists elsewhere
                    // (`/etc`, a v1 hierarchy): say so rather than "does not exist".
                    Err(CgroupError::NotFound { .. }) if path.is_absolute() && path.exists() => {
                        Err(self.outside(spec))
                    }
                    other => other,
                },
            }
        }?;
        log::debug!("cgroup {spec:?} resolved to {}", dir.display());
        Ok(dir)
    }

    /// [`CgroupFs::resolve`] and then [`CgroupFs::cgroup`]: a spec to a [`Cgroup`].
    pub fn lookup(&self, spec: &str) -> Result<Cgroup, CgroupError> {
        let dir = self.resolve(spec)?;
        self.cgroup(dir)
    }

    /// The [`Cgroup`] at `dir`, a directory this `CgroupFs` resolved (canonical,
    /// under the mount): its path relative to the mount and its id, read once.
    pub fn cgroup(&self, dir: PathBuf) -> Result<Cgroup, CgroupError> {
        let rel = self.rel_of(&dir)?;
        let id = fs::metadata(&dir).map_err(io_err(&dir))?.ino();
        Ok(Cgroup { dir, rel, id })
    }

    /// `/`-prefixed path of the canonical `dir` relative to the mount.
    fn rel_of(&self, dir: &Path) -> Result<String, CgroupError> {
        let root = self.canonical_root()?;
        let rel = dir
            .strip_prefix(&root)
            .map_err(|_| self.outside(&dir.display().to_string()))?
            .to_str()
            .ok_or_else(|| invalid(&dir.display().to_string(), "path is not valid UTF-8"))?;
        Ok(format!("/{rel}"))
    }

    /// The cgroup v2 directory of a process, from `/proc/<pid>/cgroup`.
    pub fn of_pid(&self, pid: u32) -> Result<PathBuf, CgroupError> {
        self.of_pid_in(Path::new("/proc"), pid)
    }

    /// [`CgroupFs::of_pid`] with the proc filesystem at `proc_root` (for tests).
    ///
    /// Takes the `0::/path` line and maps the path under the mount. The path is relative
    /// to the cgroup namespace of the reader, so this is right for a daemon in the host's
    /// cgroup namespace; a path leading out of it (`/../..`) is rejected as outside the
    /// mount. A `(deleted)` cgroup is an error: the process is on its way out.
    pub fn of_pid_in(&self, proc_root: &Path, pid: u32) -> Result<PathBuf, CgroupError> {
        let file = proc_root.join(pid.to_string()).join("cgroup");
        let content = fs::read_to_string(&file).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                CgroupError::BadProcCgroup {
                    pid,
                    detail: format!("{} does not exist (no such process?)", file.display()),
                }
            } else {
                CgroupError::Io {
                    path: file.clone(),
                    source: e,
                }
            }
        })?;
        let rel = unified_path_from_proc_cgroup(&content)
            .map_err(|detail| CgroupError::BadProcCgroup { pid, detail })?;
        self.confine(&format!("pid {pid}: {rel}"), Path::new(rel))
    }

    /// The cgroup id of `dir`: the inode number of the directory.
    ///
    /// cgroupfs is a kernfs filesystem whose inode numbers are the kernfs node ids, and a
    /// cgroup's id (what `bpf_skb_cgroup_id()` and `bpf_get_current_cgroup_id()` return
    /// in the kernel) is the id of its kernfs node. So `stat()` gives user space the same
    /// key the datapath sees, without a BPF call. This holds since Linux 5.5 (64-bit
    /// kernfs ids); older kernels put a generation number in the upper 32 bits of the id.
    pub fn id(&self, dir: &Path) -> Result<u64, CgroupError> {
        let dir = self.confine_dir(dir)?;
        let meta = fs::metadata(&dir).map_err(io_err(&dir))?;
        Ok(meta.ino())
    }

    /// The path of `dir` relative to the mount, with a leading `/` (the mount itself is
    /// `/`): independent of where the hierarchy is mounted, for display and state.
    pub fn relative(&self, dir: &Path) -> Result<String, CgroupError> {
        self.rel_of(&self.confine_dir(dir)?)
    }

    /// Creates the cgroup `rel` (relative to the mount, leading `/` optional) and any
    /// missing parents, like `mkdir -p`; returns its canonical path.
    ///
    /// Creates one level at a time and refuses to step through a symlink, so it cannot
    /// create directories outside the mount (`create_dir_all` would follow them).
    pub fn create(&self, rel: &str) -> Result<PathBuf, CgroupError> {
        let path = Path::new(rel);
        let rel_path = match path.strip_prefix(&self.root) {
            Ok(r) if path.is_absolute() => r,
            _ => path,
        };
        let root = self.canonical_root()?;
        let target = lexical_join(&root, rel_path).ok_or_else(|| self.outside(rel))?;
        let mut cur = root.clone();
        for part in target
            .strip_prefix(&root)
            .unwrap_or(Path::new(""))
            .components()
        {
            cur.push(part);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => return Err(self.outside(rel)),
                Ok(_) => {
                    return Err(CgroupError::NotADirectory {
                        spec: rel.to_owned(),
                        path: cur,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&cur) {
                    Ok(()) => {}
                    // Someone else created it meanwhile: fine if it is a real directory.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        let m = fs::symlink_metadata(&cur).map_err(io_err(&cur))?;
                        if !m.is_dir() {
                            return Err(self.outside(rel));
                        }
                    }
                    Err(source) => return Err(CgroupError::Io { path: cur, source }),
                },
                Err(source) => return Err(CgroupError::Io { path: cur, source }),
            }
        }
        Ok(cur)
    }

    /// Removes the (empty, process-less) cgroup `dir` with `rmdir`. Refuses the mount
    /// itself and anything outside it.
    pub fn remove(&self, dir: &Path) -> Result<(), CgroupError> {
        let dir = self.confine_dir(dir)?;
        if dir == self.canonical_root()? {
            return Err(invalid(
                &dir.display().to_string(),
                "refusing to remove the cgroup v2 mount itself",
            ));
        }
        fs::remove_dir(&dir).map_err(io_err(dir))
    }

    /// Moves process `pid` into the cgroup `dir` by writing it to `cgroup.procs` (one
    /// write, as the kernel requires).
    pub fn add_pid(&self, dir: &Path, pid: u32) -> Result<(), CgroupError> {
        let procs = self.confine_dir(dir)?.join(CGROUP_PROCS);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .map_err(io_err(&procs))?;
        file.write_all(pid.to_string().as_bytes())
            .map_err(io_err(procs))
    }

    /// Whether `dir` is a cgroup v2 directory under the mount: it has a `cgroup.procs`
    /// file and (unless built with [`CgroupFs::new_unchecked`]) `statfs` reports the
    /// cgroup2 filesystem — a v1 hierarchy also has `cgroup.procs`.
    pub fn is_v2(&self, dir: &Path) -> bool {
        let Ok(dir) = self.confine_dir(dir) else {
            return false;
        };
        if !dir.join(CGROUP_PROCS).is_file() {
            return false;
        }
        !self.check_magic || is_cgroup2_fs(&dir).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A unique temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "nri-bandwidth-cgroup-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(fs::canonicalize(&path).unwrap())
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A fake mount with a cgroupfs tree and a systemd tree in it.
    fn fake_mount() -> (TempDir, CgroupFs) {
        let tmp = TempDir::new("mount");
        let root = tmp.path().join("cgroup");
        for dir in [
            "kubepods/burstable/pod1/abc",
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abcdef.scope",
            "kubepods.slice/kubepods-besteffort.slice",
            "system.slice/docker-abc.scope",
        ] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        let cg = CgroupFs::new_unchecked(&root);
        (tmp, cg)
    }

    // ---- mountinfo ----

    const HYBRID: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_pure_v2() {
        let text = "\
24 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
        assert_eq!(
            v2_mount_from_mountinfo(text),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn mountinfo_hybrid_like_this_machine() {
        assert_eq!(
            v2_mount_from_mountinfo(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn mountinfo_several_optional_fields() {
        let text = "41 31 0:38 / /sys/fs/cgroup/unified rw shared:9 master:2 propagate_from:3 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            v2_mount_from_mountinfo(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn mountinfo_escaped_mount_point() {
        let text = "50 40 0:45 / /mnt/my\\040cgroup\\011x\\134y rw,relatime - cgroup2 none rw\n";
        assert_eq!(
            v2_mount_from_mountinfo(text),
            Some(PathBuf::from("/mnt/my cgroup\tx\\y"))
        );
    }

    #[test]
    fn mountinfo_without_cgroup2() {
        let v1_only: String = HYBRID
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(v2_mount_from_mountinfo(&v1_only), None);
        assert_eq!(v2_mount_from_mountinfo(""), None);
        // Malformed lines are skipped, not a panic.
        assert_eq!(
            v2_mount_from_mountinfo("garbage\n1 2 3 4 5 6 -\n1 2 3 4 /x 6 - \n"),
            None
        );
    }

    #[test]
    fn mountinfo_preference() {
        let text = "\
60 1 0:50 / /mnt/first rw - cgroup2 cgroup2 rw
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            v2_mount_from_mountinfo(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let text = format!("{text}35 24 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(
            v2_mount_from_mountinfo(&text),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let text = "\
60 1 0:50 / /mnt/first rw - cgroup2 cgroup2 rw
61 1 0:51 / /mnt/second rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            v2_mount_from_mountinfo(text),
            Some(PathBuf::from("/mnt/first"))
        );
        // A bind mount of a subtree loses to a mount of the whole hierarchy.
        let text = "\
35 24 0:30 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw
61 1 0:30 / /mnt/whole rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            v2_mount_from_mountinfo(text),
            Some(PathBuf::from("/mnt/whole"))
        );
    }

    // ---- systemd ----

    #[test]
    fn slice_expansion_table() {
        let ok = [
            ("-.slice", "/"),
            ("system.slice", "/system.slice"),
            ("kubepods.slice", "/kubepods.slice"),
            (
                "kubepods-besteffort.slice",
                "/kubepods.slice/kubepods-besteffort.slice",
            ),
            (
                "kubepods-burstable-pod1234.slice",
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice",
            ),
            (
                "a-b-c-d.slice",
                "/a.slice/a-b.slice/a-b-c.slice/a-b-c-d.slice",
            ),
            ("user-1000.slice", "/user.slice/user-1000.slice"),
        ];
        for (input, want) in ok {
            assert_eq!(expand_slice(input).unwrap(), want, "{input}");
        }
        for bad in [
            "a--b.slice",
            "-a.slice",
            "a-.slice",
            ".slice",
            "",
            "kubepods",
            "kubepods.scope",
            "a/b.slice",
            "kubepods.slice/kubepods-besteffort.slice",
        ] {
            let err = expand_slice(bad).unwrap_err();
            assert!(
                matches!(&err, CgroupError::InvalidSpec { spec, .. } if spec == bad),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn systemd_spec_table() {
        let ok = [
            (
                "kubepods-burstable-pod1234.slice:cri-containerd:abcdef",
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abcdef.scope",
            ),
            ("system.slice:docker:abc", "/system.slice/docker-abc.scope"),
            (":docker:abc", "/system.slice/docker-abc.scope"),
            ("-.slice:crio:x", "/crio-x.scope"),
            (
                "machine.slice:libpod:pod-1.slice",
                "/machine.slice/pod-1.slice",
            ),
            ("system.slice::abc", "/system.slice/-abc.scope"),
        ];
        for (input, want) in ok {
            assert_eq!(systemd_spec_path(input).unwrap(), want, "{input}");
        }
        for bad in [
            "kubepods.slice:cri-containerd:",
            "a--b.slice:cri-containerd:abc",
            "kubepods:cri-containerd:abc",
            "kubepods.slice:pre/fix:abc",
            "kubepods.slice:cri-containerd:a/../../b",
            "a:b",
        ] {
            let err = systemd_spec_path(bad).unwrap_err();
            assert!(
                matches!(&err, CgroupError::InvalidSpec { spec, .. } if spec == bad),
                "{bad}: {err}"
            );
        }
    }

    // ---- resolution ----

    #[test]
    fn resolve_cgroupfs_paths() {
        let (_tmp, cg) = fake_mount();
        let want = cg.root().join("kubepods/burstable/pod1/abc");
        assert_eq!(cg.resolve("/kubepods/burstable/pod1/abc").unwrap(), want);
        assert_eq!(cg.resolve("kubepods/burstable/pod1/abc").unwrap(), want);
        assert_eq!(cg.resolve("/kubepods/burstable/pod1/abc/").unwrap(), want);
        // `.` and `..` are applied lexically first (like Go's filepath.Clean), then the
        // result is canonicalized.
        assert_eq!(
            cg.resolve("/kubepods/./burstable/x/../pod1/abc").unwrap(),
            want
        );
        assert_eq!(
            cg.resolve("/kubepods/burstable/../burstable/pod1/abc")
                .unwrap(),
            want
        );
        let abs = want.to_str().unwrap().to_owned();
        assert_eq!(cg.resolve(&abs).unwrap(), want);
        assert_eq!(cg.resolve("/").unwrap(), cg.root());
        assert_eq!(cg.resolve(cg.root().to_str().unwrap()).unwrap(), cg.root());
    }

    #[test]
    fn resolve_systemd_specs() {
        let (_tmp, cg) = fake_mount();
        assert_eq!(
            cg.resolve("kubepods-burstable-pod1234.slice:cri-containerd:abcdef").unwrap(),
            cg.root().join("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abcdef.scope")
        );
        assert_eq!(
            cg.resolve(":docker:abc").unwrap(),
            cg.root().join("system.slice/docker-abc.scope")
        );
        assert_eq!(
            cg.resolve("kubepods-besteffort.slice").unwrap(),
            cg.root().join("kubepods.slice/kubepods-besteffort.slice")
        );
        assert_eq!(cg.resolve("-.slice").unwrap(), cg.root());
        // The same directory by its path.
        assert_eq!(
            cg.resolve("/kubepods.slice/kubepods-besteffort.slice")
                .unwrap(),
            cg.root().join("kubepods.slice/kubepods-besteffort.slice")
        );
        assert!(matches!(
            cg.resolve("a--b.slice"),
            Err(CgroupError::InvalidSpec { .. })
        ));
        assert!(matches!(
            cg.resolve("kubepods.slice:cri-containerd:missing"),
            Err(CgroupError::NotFound { .. })
        ));
    }

    #[test]
    fn resolve_rejects_dotdot_escape() {
        let (_tmp, cg) = fake_mount();
        for spec in [
            "/kubepods/../../etc",
            "kubepods/../..",
            "../cgroup/kubepods",
            "/..",
        ] {
            let err = cg.resolve(spec).unwrap_err();
            assert!(
                matches!(err, CgroupError::OutsideMount { .. }),
                "{spec}: {err}"
            );
            let msg = err.to_string();
            assert!(msg.contains(spec), "{msg}");
            assert!(msg.contains(cg.root().to_str().unwrap()), "{msg}");
        }
        // Absolute path under the mount that climbs out of it.
        let spec = format!("{}/kubepods/../..", cg.root().display());
        assert!(matches!(
            cg.resolve(&spec),
            Err(CgroupError::OutsideMount { .. })
        ));
    }

    #[test]
    fn resolve_rejects_symlink_escape() {
        let (tmp, cg) = fake_mount();
        let outside = tmp.path().join("outside");
        fs::create_dir_all(outside.join("sub")).unwrap();
        std::os::unix::fs::symlink(&outside, cg.root().join("evil")).unwrap();
        for spec in ["/evil", "evil/sub", "/kubepods/../evil/sub"] {
            let err = cg.resolve(spec).unwrap_err();
            assert!(
                matches!(err, CgroupError::OutsideMount { .. }),
                "{spec}: {err}"
            );
        }
        assert!(matches!(
            cg.id(&cg.root().join("evil")),
            Err(CgroupError::OutsideMount { .. })
        ));
        assert!(matches!(
            cg.create("evil/new"),
            Err(CgroupError::OutsideMount { .. })
        ));
        assert!(!outside.join("new").exists());
        // A symlink that stays inside the mount is fine (resolved to its target).
        std::os::unix::fs::symlink(cg.root().join("kubepods"), cg.root().join("alias")).unwrap();
        assert_eq!(
            cg.resolve("/alias/burstable").unwrap(),
            cg.root().join("kubepods/burstable")
        );
    }

    #[test]
    fn resolve_rejects_nonexistent_and_non_dirs() {
        let (_tmp, cg) = fake_mount();
        let err = cg.resolve("/kubepods/burstable/pod-missing").unwrap_err();
        assert!(matches!(err, CgroupError::NotFound { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("/kubepods/burstable/pod-missing"), "{msg}");
        assert!(msg.contains("does not exist under"), "{msg}");
        assert!(msg.contains(cg.root().to_str().unwrap()), "{msg}");

        fs::write(cg.root().join("kubepods/cgroup.procs"), "").unwrap();
        assert!(matches!(
            cg.resolve("/kubepods/cgroup.procs"),
            Err(CgroupError::NotADirectory { .. })
        ));
        assert!(matches!(
            cg.resolve("/kubepods/cgroup.procs/x"),
            Err(CgroupError::NotFound { .. })
        ));
        assert!(matches!(
            cg.resolve(""),
            Err(CgroupError::InvalidSpec { .. })
        ));
        // An absolute path elsewhere on the host is outside, not "missing".
        let elsewhere = std::env::temp_dir();
        assert!(matches!(
            cg.resolve(elsewhere.to_str().unwrap()),
            Err(CgroupError::OutsideMount { .. })
        ));
    }

    // ---- /proc/<pid>/cgroup ----

    fn fake_proc(tmp: &TempDir, pid: u32, content: &str) -> PathBuf {
        let proc_root = tmp.path().join("proc");
        fs::create_dir_all(proc_root.join(pid.to_string())).unwrap();
        fs::write(proc_root.join(pid.to_string()).join("cgroup"), content).unwrap();
        proc_root
    }

    #[test]
    fn of_pid_v2_only() {
        let (tmp, cg) = fake_mount();
        let proc_root = fake_proc(&tmp, 42, "0::/kubepods/burstable/pod1/abc\n");
        assert_eq!(
            cg.of_pid_in(&proc_root, 42).unwrap(),
            cg.root().join("kubepods/burstable/pod1/abc")
        );
    }

    #[test]
    fn of_pid_hybrid() {
        let (tmp, cg) = fake_mount();
        let content = "\
12:hugetlb:/kubepods/burstable/pod1/abc
11:net_cls,net_prio:/kubepods/burstable/pod1/abc
9:name=systemd:/kubepods/burstable/pod1/abc
8:pids:/kubepods/burstable/pod1/abc
4:memory:/kubepods/burstable/pod1/abc
3:cpuset:/
2:cpu,cpuacct:/kubepods/burstable/pod1/abc
0::/system.slice/docker-abc.scope
";
        let proc_root = fake_proc(&tmp, 7, content);
        assert_eq!(
            cg.of_pid_in(&proc_root, 7).unwrap(),
            cg.root().join("system.slice/docker-abc.scope")
        );
    }

    #[test]
    fn of_pid_errors() {
        let (tmp, cg) = fake_mount();
        let v1_only = "9:name=systemd:/x\n4:memory:/x\n1:cpu:/x\n";
        let proc_root = fake_proc(&tmp, 1, v1_only);
        let err = cg.of_pid_in(&proc_root, 1).unwrap_err();
        assert!(
            matches!(err, CgroupError::BadProcCgroup { pid: 1, .. }),
            "{err}"
        );

        fake_proc(&tmp, 2, "0::/kubepods/burstable/pod1/abc (deleted)\n");
        let err = cg.of_pid_in(&proc_root, 2).unwrap_err();
        assert!(
            matches!(err, CgroupError::BadProcCgroup { pid: 2, .. }),
            "{err}"
        );

        let err = cg.of_pid_in(&proc_root, 3).unwrap_err();
        assert!(
            matches!(err, CgroupError::BadProcCgroup { pid: 3, .. }),
            "{err}"
        );

        fake_proc(&tmp, 4, "0::/../../etc\n");
        let err = cg.of_pid_in(&proc_root, 4).unwrap_err();
        assert!(matches!(err, CgroupError::OutsideMount { .. }), "{err}");

        fake_proc(&tmp, 5, "0::/gone\n");
        let err = cg.of_pid_in(&proc_root, 5).unwrap_err();
        assert!(matches!(err, CgroupError::NotFound { .. }), "{err}");
    }

    // ---- id, relative, create/remove, add_pid, is_v2 ----

    #[test]
    fn id_is_the_directory_inode() {
        let (_tmp, cg) = fake_mount();
        let dir = cg.resolve("/kubepods/burstable/pod1/abc").unwrap();
        let ino = fs::metadata(&dir).unwrap().ino();
        assert_eq!(cg.id(&dir).unwrap(), ino);
        assert_eq!(
            cg.id(Path::new("kubepods/burstable/pod1/abc")).unwrap(),
            ino
        );
        assert_ne!(cg.id(cg.root()).unwrap(), ino);
    }

    #[test]
    fn relative_paths() {
        let (_tmp, cg) = fake_mount();
        let dir = cg.resolve("kubepods/burstable/pod1/abc").unwrap();
        assert_eq!(cg.relative(&dir).unwrap(), "/kubepods/burstable/pod1/abc");
        assert_eq!(cg.relative(cg.root()).unwrap(), "/");
        assert!(matches!(
            cg.relative(&std::env::temp_dir()),
            Err(CgroupError::OutsideMount { .. })
        ));
    }

    #[test]
    fn create_add_pid_remove() {
        let (_tmp, cg) = fake_mount();
        let dir = cg.create("/test/a/b").unwrap();
        assert_eq!(dir, cg.root().join("test/a/b"));
        assert!(dir.is_dir());
        // Idempotent, and accepts the absolute form.
        assert_eq!(cg.create(dir.to_str().unwrap()).unwrap(), dir);
        assert!(matches!(
            cg.create("/test/../../escape"),
            Err(CgroupError::OutsideMount { .. })
        ));

        // On a plain directory cgroup.procs does not exist until a cgroup makes it.
        assert!(!cg.is_v2(&dir));
        assert!(matches!(cg.add_pid(&dir, 123), Err(CgroupError::Io { .. })));
        fs::write(dir.join("cgroup.procs"), "").unwrap();
        assert!(cg.is_v2(&dir));
        cg.add_pid(&dir, 123).unwrap();
        assert_eq!(fs::read_to_string(dir.join("cgroup.procs")).unwrap(), "123");
        // The checked variant looks at the filesystem type too: a temp dir is no cgroup2.
        assert!(!CgroupFs::new(cg.root()).is_v2(&dir));

        fs::remove_file(dir.join("cgroup.procs")).unwrap();
        cg.remove(&dir).unwrap();
        assert!(!dir.exists());
        assert!(cg.remove(cg.root()).is_err());
        assert!(cg.root().is_dir());
        assert!(matches!(
            cg.remove(&std::env::temp_dir()),
            Err(CgroupError::OutsideMount { .. })
        ));
    }

    /// Read-only checks on the host's real hierarchy, when it has one.
    #[test]
    fn host_mount_if_present() {
        let Ok(cg) = CgroupFs::detect() else {
            return;
        };
        assert!(cg.is_v2(cg.root()), "{}", cg.root().display());
        assert_eq!(cg.relative(cg.root()).unwrap(), "/");
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        if own
            .lines()
            .any(|l| l.starts_with("0::/") && !l.starts_with("0::/.."))
        {
            let dir = cg.of_pid(std::process::id()).unwrap();
            assert!(cg.is_v2(&dir), "{}", dir.display());
            assert_eq!(cg.id(&dir).unwrap(), fs::metadata(&dir).unwrap().ino());
        }
    }

    // ---- where a limit may land ----

    #[test]
    fn a_workload_limit_never_lands_on_the_root_the_services_or_another_pod() {
        let (_tmp, cg) = fake_mount();
        fs::create_dir_all(cg.root().join("init.scope")).unwrap();
        fs::create_dir_all(cg.root().join("kubepods/podS")).unwrap();
        let root = cg.root().display().to_string();
        for spec in [
            "/",
            ".",
            "kubepods/..",
            "-.slice",
            root.as_str(),
            "//sandbox",
            "-.slice:cri-containerd:abc",
            "/kubepods/burstable/pod1/abc/../../..",
            "/kubepods/burstable/pod1/../../podS",
            "system.slice",
            "/init.scope",
            "kubepods/..\n",
        ] {
            let e = cg.workload(spec).expect_err(spec).to_string();
            assert!(
                e.contains("refusing")
                    || e.contains("plain path")
                    || e.contains("invalid")
                    || e.contains("does not exist"),
                "{spec:?}: {e}"
            );
        }
        let ok = cg.workload("/kubepods/burstable/pod1").unwrap();
        assert_eq!(ok.rel, "/kubepods/burstable/pod1");
        let ctr = cg.workload("/kubepods/burstable/pod1/abc").unwrap();
        assert!(ctr.is_below(&ok) && !ok.is_below(&ctr) && !ok.is_below(&ok));
        let other = cg.workload("/kubepods/podS").unwrap();
        assert!(!other.is_below(&ok));
        // A service's own cgroup below system.slice may still be limited by hand.
        cg.check_landing(&cg.lookup("system.slice/docker-abc.scope").unwrap())
            .unwrap();
        let e = cg
            .check_landing(&cg.lookup("/").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("cgroup v2 root"), "{e}");
    }
}
