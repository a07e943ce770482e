//! The bpffs pin root: where programs, maps and links live so that limits outlive
//! every process of ours. Defined in one place; mounted when the node lacks it.

use std::io;
use std::path::{Path, PathBuf};

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
