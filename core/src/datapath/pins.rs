//! The bpffs pin root: where programs, maps and links live so that limits outlive
//! every process of ours. Defined in one place; mounted when the node lacks it.
//! Also the lock our processes share on it, and the per-ABI directory below it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::datapath::abi;

/// Default pin root. Everything nri-bandwidth pins lives below it.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/nri-bandwidth";

const BPF_FS_MAGIC: u32 = 0xcafe_4a11;

/// Whether `path` is on a bpf filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own; c is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as u32 == BPF_FS_MAGIC
    }
}

/// Where bpffs belongs; the only place we ever mount it.
pub const BPFFS_MOUNT: &str = "/sys/fs/bpf";

/// Makes sure `pin_root` exists on bpffs. Its parent must be a bpf filesystem;
/// only when the parent is [`BPFFS_MOUNT`] itself and nothing is mounted there (some
/// nodes, this project's CI among them, boot without it) is one mounted. Anything
/// else is refused: mounting over another directory would hide what is there
/// (`/tmp`, or `/sys/fs` with the cgroup mount below it).
pub fn ensure(pin_root: &Path) -> io::Result<PathBuf> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    let parent = pin_root
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            invalid(format!(
                "pin root {}: expected a directory on bpffs such as {BPFFS_MOUNT}/nri-bandwidth",
                pin_root.display()
            ))
        })?;
    if !is_bpffs(parent) {
        if parent != Path::new(BPFFS_MOUNT) {
            return Err(invalid(format!(
                "pin root {}: its parent {} is not a bpf filesystem; expected a directory directly on bpffs such as {BPFFS_MOUNT}/nri-bandwidth (or mount bpffs at {} first)",
                pin_root.display(),
                parent.display(),
                parent.display()
            )));
        }
        std::fs::create_dir_all(parent)?;
        mount_bpffs(parent)?;
        log::info!("mounted bpffs at {}", parent.display());
    }
    match std::fs::create_dir(pin_root) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    if !is_bpffs(pin_root) {
        return Err(invalid(format!(
            "pin root {} is not on a bpf filesystem",
            pin_root.display()
        )));
    }
    Ok(pin_root.to_path_buf())
}

fn mount_bpffs(at: &Path) -> io::Result<()> {
    let target = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
    let r = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("mounting bpffs at {}: {e}", at.display()),
        ));
    }
    Ok(())
}

/// The pin directory for this build's datapath ABI below a pin root.
pub fn abi_dir(root: &Path) -> PathBuf {
    root.join(format!("v{}", abi::ABI_VERSION))
}

/// Limits pinned by a build with another datapath layout stay enforced but are
/// invisible to this one; say so once, when this build loads its own.
pub fn warn_other_abis(root: &Path) {
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

/// Serialises loading and limit changes between our processes (daemon, hook,
/// bwctl) with an flock on the pin root directory itself, so there is no lock file
/// to leave behind. Released when the returned file is dropped.
/// Waits at most `wait` (forever with None): an NRI handler must answer within the
/// runtime's deadline even while `bwctl` holds the lock for a long removal.
pub fn lock(root: &Path, wait: Option<std::time::Duration>) -> io::Result<File> {
    let f = File::open(root)?;
    let Some(wait) = wait else {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(f);
    };
    let deadline = std::time::Instant::now() + wait;
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(e);
        }
        if std::time::Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "another process (bwctl, the hook, a second daemon) has held the lock for over {} ms",
                    wait.as_millis()
                ),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
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
}
