//! The few bpf(2) commands the limiter needs that aya 0.14 does not expose for
//! objects opened from pins: cgroup-storage maps with a u64 key (shared by every
//! program on a cgroup), link creation and pinning from another process, and object
//! info. Each wrapper owns the unsafe block that fills `union bpf_attr`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

const BPF_MAP_LOOKUP_ELEM: i64 = 1;
const BPF_MAP_UPDATE_ELEM: i64 = 2;
const BPF_MAP_DELETE_ELEM: i64 = 3;
const BPF_MAP_GET_NEXT_KEY: i64 = 4;
const BPF_OBJ_PIN: i64 = 6;
const BPF_OBJ_GET: i64 = 7;
const BPF_OBJ_GET_INFO_BY_FD: i64 = 15;
const BPF_PROG_QUERY: i64 = 16;
const BPF_LINK_CREATE: i64 = 28;
const BPF_LINK_DETACH: i64 = 34;

pub const BPF_ANY: u64 = 0;
pub const BPF_EXIST: u64 = 2;

/// Attach types used by the datapath (enum bpf_attach_type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum AttachType {
    CgroupInetIngress = 0,
    CgroupInetEgress = 1,
    CgroupSockOps = 3,
}

/// `union bpf_attr` is at most 144 bytes on current kernels; unused tail bytes must
/// be zero, which a zeroed array guarantees.
#[repr(C, align(8))]
struct Attr([u8; 144]);

impl Attr {
    fn new() -> Self {
        Attr([0; 144])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn sys_bpf(cmd: i64, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: attr is a valid, zero-padded bpf_attr of the size we pass; pointers
    // stored inside it point to buffers that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>() as u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_from(r: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Opens a pinned program, map or link.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let p = cpath(path)?;
    let mut a = Attr::new();
    a.u64(0, p.as_ptr() as u64);
    sys_bpf(BPF_OBJ_GET, &mut a).map(fd_from)
}

/// Pins a program, map or link fd at `path` (which must be on bpffs).
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let p = cpath(path)?;
    let mut a = Attr::new();
    a.u64(0, p.as_ptr() as u64).u32(8, fd.as_raw_fd() as u32);
    sys_bpf(BPF_OBJ_PIN, &mut a).map(|_| ())
}

/// Creates a cgroup bpf_link. Links are always multi-attach, so other agents' programs
/// (systemd's IP accounting, a CNI's) keep running beside ours.
pub fn link_create(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    at: AttachType,
) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(4, cgroup.as_raw_fd() as u32)
        .u32(8, at as u32);
    sys_bpf(BPF_LINK_CREATE, &mut a).map(fd_from)
}

/// Detaches a link from its target at once (the link object lives on, defunct,
/// until its last reference is gone).
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut a = Attr::new();
    a.u32(0, link.as_raw_fd() as u32);
    sys_bpf(BPF_LINK_DETACH, &mut a).map(|_| ())
}

pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    let mut a = Attr::new();
    a.u32(0, map.as_raw_fd() as u32)
        .u64(8, key.as_ptr() as u64)
        .u64(16, value.as_mut_ptr() as u64);
    match sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut a) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Looks up a plain-old-data value by u64 key (our maps are keyed by cgroup id).
pub fn map_lookup_pod<T: aya::Pod + Default>(
    map: BorrowedFd<'_>,
    key: u64,
) -> io::Result<Option<T>> {
    let mut v = T::default();
    // SAFETY: T is Pod (any bit pattern valid, no padding the kernel could leave
    // uninitialised matters); the kernel writes exactly size_of::<T>() bytes.
    let buf = unsafe {
        std::slice::from_raw_parts_mut((&mut v as *mut T).cast::<u8>(), std::mem::size_of::<T>())
    };
    Ok(map_lookup(map, &key.to_ne_bytes(), buf)?.then_some(v))
}

/// Stores a plain-old-data value under a u64 key.
pub fn map_update_pod<T: aya::Pod>(
    map: BorrowedFd<'_>,
    key: u64,
    value: &T,
    flags: u64,
) -> io::Result<()> {
    // SAFETY: T is Pod: reading its bytes is sound.
    let bytes = unsafe {
        std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
    };
    map_update(map, &key.to_ne_bytes(), bytes, flags)
}

pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
    let mut a = Attr::new();
    a.u32(0, map.as_raw_fd() as u32)
        .u64(8, key.as_ptr() as u64)
        .u64(16, value.as_ptr() as u64)
        .u64(24, flags);
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
}

/// Deletes a key; a missing key is not an error (deletion is idempotent).
pub fn map_delete(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<()> {
    let mut a = Attr::new();
    a.u32(0, map.as_raw_fd() as u32).u64(8, key.as_ptr() as u64);
    match sys_bpf(BPF_MAP_DELETE_ELEM, &mut a) {
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
        _ => Ok(()),
    }
}

/// All u64 keys of a map (the meta map and the cgroup storage are keyed by cgroup id).
pub fn map_keys_u64(map: BorrowedFd<'_>) -> io::Result<Vec<u64>> {
    let mut keys = Vec::new();
    let mut cur: Option<u64> = None;
    loop {
        let mut next = 0u64;
        let mut a = Attr::new();
        a.u32(0, map.as_raw_fd() as u32)
            .u64(8, cur.as_ref().map_or(0, |k| k as *const u64 as u64))
            .u64(16, &mut next as *mut u64 as u64);
        match sys_bpf(BPF_MAP_GET_NEXT_KEY, &mut a) {
            Ok(_) => {
                keys.push(next);
                cur = Some(next);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
            Err(e) => return Err(e),
        }
        if keys.len() > 1 << 20 {
            return Err(io::Error::other("map iteration did not terminate"));
        }
    }
}

/// What the kernel reports about a cgroup link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub id: u32,
    pub prog_id: u32,
    /// 0 once the cgroup was removed (the link is defunct).
    pub cgroup_id: u64,
    pub attach_type: u32,
}

pub fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    let mut info = [0u8; 64];
    let mut a = Attr::new();
    a.u32(0, link.as_raw_fd() as u32)
        .u32(4, info.len() as u32)
        .u64(8, info.as_mut_ptr() as u64);
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    let u32_at = |o: usize| u32::from_ne_bytes(info[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_ne_bytes(info[o..o + 8].try_into().unwrap());
    Ok(LinkInfo {
        id: u32_at(4),
        prog_id: u32_at(8),
        cgroup_id: u64_at(16),
        attach_type: u32_at(24),
    })
}

/// The id of a loaded program (from its fd).
pub fn prog_id(prog: BorrowedFd<'_>) -> io::Result<u32> {
    let mut info = [0u8; 232];
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(4, info.len() as u32)
        .u64(8, info.as_mut_ptr() as u64);
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(u32::from_ne_bytes(info[4..8].try_into().unwrap()))
}

/// Ids of the programs attached directly to a cgroup for one attach type.
pub fn prog_query(cgroup: BorrowedFd<'_>, at: AttachType) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut a = Attr::new();
    a.u32(0, cgroup.as_raw_fd() as u32)
        .u32(4, at as u32)
        .u64(16, ids.as_mut_ptr() as u64)
        .u32(24, ids.len() as u32);
    sys_bpf(BPF_PROG_QUERY, &mut a)?;
    let n = u32::from_ne_bytes(a.0[24..28].try_into().unwrap()) as usize;
    ids.truncate(n.min(64));
    Ok(ids)
}

/// Opens a cgroup directory as the fd that attach calls want.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)?;
    Ok(f.into())
}
