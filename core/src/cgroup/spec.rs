//! The names runtimes and systemd give cgroups, and the tables that say where the
//! v2 hierarchy is: `/proc/self/mountinfo`, systemd slice and `slice:prefix:name`
//! specs, and `/proc/<pid>/cgroup`. Pure parsing; [`super::CgroupFs`] turns the
//! results into directories.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::{
    CgroupError, DEFAULT_SYSTEMD_SLICE, HYBRID_V2_MOUNT, MOUNTINFO, PURE_V2_MOUNT, invalid, io_err,
};

// ---------------------------------------------------------------------------------------
// Finding the mount
// ---------------------------------------------------------------------------------------

/// Finds the cgroup v2 mount point of this host from `/proc/self/mountinfo`.
///
/// Reading the mount table (rather than assuming `/sys/fs/cgroup`) is what makes hybrid
/// hosts work, where `/sys/fs/cgroup` is a tmpfs of v1 hierarchies.
pub fn find_v2_mount() -> Result<PathBuf, CgroupError> {
    let mountinfo = fs::read_to_string(MOUNTINFO).map_err(io_err(MOUNTINFO))?;
    v2_mount_from_mountinfo(&mountinfo).ok_or_else(|| CgroupError::NoV2Mount {
        mountinfo: PathBuf::from(MOUNTINFO),
    })
}

/// One line of `/proc/<pid>/mountinfo`, the fields we need.
pub(crate) struct MountEntry<'a> {
    /// Field 4: the directory of the filesystem that is mounted here (`/` unless this is a
    /// bind mount of a subtree).
    root: &'a str,
    /// Field 5, still octal-escaped.
    mount_point: &'a str,
    /// First field after the `-` separator.
    fstype: &'a str,
}

/// Parses one mountinfo line (see proc(5)):
/// `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
/// The optional fields are variable in number, so the filesystem type is found after the
/// `-` separator, never at a fixed index.
pub(crate) fn parse_mountinfo_line(line: &str) -> Option<MountEntry<'_>> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let sep = 6 + fields.get(6..)?.iter().position(|f| *f == "-")?;
    Some(MountEntry {
        root: fields[3],
        mount_point: fields[4],
        fstype: fields.get(sep + 1)?,
    })
}

/// Undoes the kernel's octal escaping of mountinfo paths (space, tab, newline and
/// backslash are written as `\040`, `\011`, `\012`, `\134`). Works on bytes, so a
/// non-UTF-8 escaped name comes back exact.
pub(crate) fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Returns the mount point of the `cgroup2` filesystem described by a mountinfo text.
///
/// When several cgroup2 mounts exist (containers, test setups), mounts of the whole
/// hierarchy (root field `/`) win over bind mounts of a subtree, because the paths that
/// runtimes and `/proc/<pid>/cgroup` give are relative to the hierarchy's root. Among
/// those, `/sys/fs/cgroup` (pure v2) is preferred, then `/sys/fs/cgroup/unified`
/// (hybrid), then the first one listed.
pub fn v2_mount_from_mountinfo(mountinfo: &str) -> Option<PathBuf> {
    let mounts: Vec<MountEntry<'_>> = mountinfo
        .lines()
        .filter_map(parse_mountinfo_line)
        .filter(|m| m.fstype == "cgroup2")
        .collect();
    let whole: Vec<&MountEntry<'_>> = mounts.iter().filter(|m| m.root == "/").collect();
    let candidates: Vec<PathBuf> = if whole.is_empty() {
        mounts
            .iter()
            .map(|m| unescape_mountinfo(m.mount_point))
            .collect()
    } else {
        whole
            .iter()
            .map(|m| unescape_mountinfo(m.mount_point))
            .collect()
    };
    [PURE_V2_MOUNT, HYBRID_V2_MOUNT]
        .iter()
        .find_map(|want| candidates.iter().find(|p| p.as_path() == Path::new(want)))
        .or_else(|| candidates.first())
        .cloned()
}

// ---------------------------------------------------------------------------------------
// systemd names
// ---------------------------------------------------------------------------------------

/// Expands a systemd slice name into its path below the cgroup root, the way systemd
/// lays slices out and runc's `ExpandSlice` computes it: each `-` is a level, so
/// `a-b-c.slice` lives at `/a.slice/a-b.slice/a-b-c.slice`; `-.slice` is the root (`/`).
///
/// Like runc, rejects names that do not end in `.slice`, contain `/`, or have an empty
/// component (`a--b.slice`, `-a.slice`, `a-.slice`, `.slice`).
pub fn expand_slice(slice: &str) -> Result<String, CgroupError> {
    let Some(name) = slice.strip_suffix(".slice") else {
        return Err(invalid(
            slice,
            "a systemd slice name must end in \".slice\"",
        ));
    };
    if slice.contains('/') {
        return Err(invalid(slice, "a systemd slice name cannot contain '/'"));
    }
    if name == "-" {
        return Ok("/".to_owned());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for component in name.split('-') {
        if component.is_empty() {
            return Err(invalid(
                slice,
                "a systemd slice name cannot have an empty '-'-separated component",
            ));
        }
        path.push('/');
        path.push_str(&prefix);
        path.push_str(component);
        path.push_str(".slice");
        prefix.push_str(component);
        prefix.push('-');
    }
    Ok(path)
}

/// True when `spec` is meant as a systemd `slice:prefix:name` rather than a path: three
/// `:`-separated parts whose first is empty or a slice name. Checking the first part
/// keeps a (strange but legal) cgroupfs directory name with colons a path.
pub(crate) fn is_systemd_spec(spec: &str) -> bool {
    let mut parts = spec.split(':');
    let slice = parts.next().unwrap_or_default();
    parts.count() == 2 && (slice.is_empty() || slice.ends_with(".slice"))
}

/// Turns a systemd cgroup driver spec `slice:prefix:name` into its path below the cgroup
/// root, with the convention of runc (libcontainer/cgroups/systemd) that containerd and
/// CRI-O use: the parent is `slice` expanded by [`expand_slice`] (`system.slice` when
/// empty), and the unit is `prefix-name.scope`, or `name` as is when it already ends in
/// `.slice`.
///
/// `kubepods-burstable-pod1234.slice:cri-containerd:abcdef` →
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abcdef.scope`.
///
/// Stricter than runc in one place: an empty name, or a prefix or name containing `/`,
/// is rejected (runc would build `prefix-.scope` or a path with extra levels).
pub fn systemd_spec_path(spec: &str) -> Result<String, CgroupError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Err(invalid(
            spec,
            "a systemd cgroup must be \"slice:prefix:name\"",
        ));
    };
    let parent = expand_slice(if slice.is_empty() {
        DEFAULT_SYSTEMD_SLICE
    } else {
        slice
    })
    .map_err(|e| match e {
        CgroupError::InvalidSpec { reason, .. } => {
            invalid(spec, format!("slice {slice:?}: {reason}"))
        }
        other => other,
    })?;
    if name.is_empty() {
        return Err(invalid(
            spec,
            "the name part (after the second ':') is empty",
        ));
    }
    if prefix.contains('/') || name.contains('/') {
        return Err(invalid(spec, "prefix and name cannot contain '/'"));
    }
    let unit = if name.ends_with(".slice") {
        name.to_owned()
    } else {
        format!("{prefix}-{name}.scope")
    };
    Ok(if parent == "/" {
        format!("/{unit}")
    } else {
        format!("{parent}/{unit}")
    })
}

// ---------------------------------------------------------------------------------------
// /proc/<pid>/cgroup
// ---------------------------------------------------------------------------------------

/// Picks the cgroup v2 path out of a `/proc/<pid>/cgroup` text: the `0::/path` line
/// (hierarchy 0, no controllers = the unified hierarchy). On hybrid hosts the file also
/// has one line per v1 hierarchy, which are ignored.
pub(crate) fn unified_path_from_proc_cgroup(content: &str) -> Result<&str, String> {
    for line in content.lines() {
        let Some(path) = line.strip_prefix("0::") else {
            continue;
        };
        if path.ends_with(" (deleted)") {
            return Err(format!(
                "its cgroup v2 directory {path:?} has been removed (the process is exiting?)"
            ));
        }
        if !path.starts_with('/') {
            return Err(format!("unexpected cgroup v2 line {line:?}"));
        }
        return Ok(path);
    }
    Err("no cgroup v2 line (\"0::/...\"): is cgroup v2 mounted on this host?".to_owned())
}
