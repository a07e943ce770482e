//! The three programs of a limit and their pinned cgroup links: one directory per
//! limited cgroup, `links/<cgroup id>/{ingress,egress,sockops}`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::datapath::sys::{self, AttachType};
use crate::datapath::{DatapathError, abi, io_err};

/// One program of the datapath: its name in the object, its pin, how it attaches.
pub struct Prog {
    pub name: &'static str,
    /// Short name: `prog_<short>` is the program's pin, `<short>` its link's.
    pub short: &'static str,
    pub pin: &'static str,
    pub attach: AttachType,
    pub sockops: bool,
}

pub const PROGS: [Prog; 3] = [
    Prog {
        name: abi::PROG_INGRESS,
        short: "ingress",
        pin: "prog_ingress",
        attach: AttachType::CgroupInetIngress,
        sockops: false,
    },
    Prog {
        name: abi::PROG_EGRESS,
        short: "egress",
        pin: "prog_egress",
        attach: AttachType::CgroupInetEgress,
        sockops: false,
    },
    Prog {
        name: abi::PROG_SOCKOPS,
        short: "sockops",
        pin: "prog_sockops",
        attach: AttachType::CgroupSockOps,
        sockops: true,
    },
];

/// The link directory of one cgroup id below an ABI pin directory.
pub fn links_dir(abi_dir: &Path, cgid: u64) -> PathBuf {
    abi_dir.join("links").join(cgid.to_string())
}

/// Attaches every program not yet linked to the cgroup open as `cgroup` (at
/// `dir`) and pins its link; records each pin it created in `created`, so the
/// caller can roll back.
pub fn attach_missing(
    progs: &[OwnedFd],
    cgroup: BorrowedFd<'_>,
    dir: &Path,
    links: &Path,
    created: &mut Vec<PathBuf>,
) -> Result<(), DatapathError> {
    for (p, prog) in PROGS.iter().zip(progs) {
        let pin = links.join(p.short);
        if pin.exists() {
            continue;
        }
        let link = sys::link_create(prog.as_fd(), cgroup, p.attach)
            .map_err(|e| attach_error(e, dir, p.short))?;
        sys::obj_pin(link.as_fd(), &pin).map_err(io_err("pinning link", &pin))?;
        created.push(pin);
    }
    Ok(())
}

fn attach_error(e: io::Error, cgroup: &Path, what: &str) -> DatapathError {
    match e.raw_os_error() {
        Some(libc::EBADF) => DatapathError::Io {
            what: format!("attaching {what} program: not a cgroup v2 directory:"),
            path: cgroup.into(),
            err: e,
        },
        // Only these say for sure that the kernel has no cgroup links.
        Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => DatapathError::MissingKernelFeature {
            what: format!("cgroup bpf_link for {what} (Linux >= 5.7)"),
            detail: e.to_string(),
        },
        // EINVAL also comes from a kernel that has links but refuses this attach.
        Some(libc::EINVAL) => DatapathError::Io {
            what: format!(
                "attaching {what} program (the kernel refused it: is this a cgroup v2 directory, and does the kernel have cgroup bpf_link, Linux >= 5.7?) to"
            ),
            path: cgroup.into(),
            err: e,
        },
        _ => DatapathError::Io {
            what: format!("attaching {what} program to"),
            path: cgroup.into(),
            err: e,
        },
    }
}

/// Detaches and unpins every link of one cgroup and removes its directory.
pub fn detach_all(links: &Path) -> io::Result<()> {
    if !links.exists() {
        return Ok(());
    }
    for p in &PROGS {
        unpin_link(&links.join(p.short))?;
    }
    std::fs::remove_dir(links)
}

/// Detaches the link pinned at `pin` and removes the pin. Releasing the last
/// reference frees a link from a workqueue, later; an explicit detach takes the
/// program off the cgroup now, so it is gone when this returns.
pub fn unpin_link(pin: &Path) -> io::Result<()> {
    if let Ok(fd) = sys::obj_get(pin) {
        let _ = sys::link_detach(fd.as_fd());
    }
    match std::fs::remove_file(pin) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// All three links pinned and still attached to the live cgroup `cgid`.
pub fn all_alive(links: &Path, cgid: u64) -> bool {
    PROGS.iter().all(|p| {
        sys::obj_get(&links.join(p.short))
            .and_then(|fd| sys::link_info(fd.as_fd()))
            .is_ok_and(|i| i.cgroup_id == cgid)
    })
}
