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

/// Makes sure `pin_root` can be created on bpffs: if its parent (normally
/// /sys/fs/bpf) is not a bpf filesystem, mounts one there, as some nodes (this
/// project's CI among them) boot without it. Then creates `pin_root`.
pub fn ensure(pin_root: &Path) -> io::Result<PathBuf> {
    let parent = pin_root
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pin root has no parent"))?;
    if !is_bpffs(parent) {
        std::fs::create_dir_all(parent)?;
        mount_bpffs(parent)?;
        log::info!("mounted bpffs at {}", parent.display());
    }
    std::fs::create_dir_all(pin_root)?;
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
pub fn lock(root: &Path) -> io::Result<File> {
    let f = File::open(root)?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
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
