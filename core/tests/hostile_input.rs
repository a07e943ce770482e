//! Properties of everything the core takes from outside: annotation values and
//! keys, rates and sizes, cgroup specs. Random inputs (proptest; PROPTEST_CASES
//! for longer runs) must give a clear error or a value within bounds, never a
//! panic, and a cgroup that resolves is always one a limit may land on.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use nri_bandwidth_core::annotations;
use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_core::rate::{ByteSize, MAX_BITS_PER_SEC, MIN_BITS_PER_SEC, Rate};
use proptest::prelude::*;

/// Text that looks like quantities some of the time.
fn quantity_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,20}(\\.[0-9]{0,5})?([eE][-+]?[0-9]{1,4})?(k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|m|u|n|K|Mb|MB|bps)?",
        "\\PC{0,40}",
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn rates_parse_within_bounds_or_say_what_was_expected(s in quantity_like()) {
        match Rate::parse(&s) {
            Ok(r) => prop_assert!((MIN_BITS_PER_SEC..=MAX_BITS_PER_SEC).contains(&r.bits_per_sec())),
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("invalid"), "{msg}");
                prop_assert!(msg.len() < 600, "a message stays short: {} bytes", msg.len());
                prop_assert!(!msg.contains('\n'), "no raw newline: {msg:?}");
            }
        }
        let _ = ByteSize::parse(&s);
    }

    #[test]
    fn annotations_never_panic_and_bad_values_leave_the_level_unlimited(
        pairs in proptest::collection::vec((
            prop_oneof![
                Just(annotations::K8S_INGRESS.to_string()),
                Just(annotations::K8S_EGRESS.to_string()),
                Just(annotations::POD_INGRESS.to_string()),
                Just(annotations::POD_BURST.to_string()),
                Just("ingress-bandwidth.nri-bandwidth.io/web".to_string()),
                Just("egress-bandwidth.nri-bandwidth.io/web".to_string()),
                Just("burst.nri-bandwidth.io/web".to_string()),
                "\\PC{0,30}",
            ],
            quantity_like(),
        ), 0..8),
        name in prop_oneof![Just("web".to_string()), "\\PC{0,10}"],
    ) {
        let ann: HashMap<String, String> = pairs.into_iter().collect();
        for r in [annotations::pod(&ann), annotations::container(&ann, &name), annotations::merged(&ann, &name)] {
            if !r.bad.is_empty() {
                prop_assert!(r.limit.is_none());
                for b in &r.bad {
                    let m = b.to_string();
                    prop_assert!(m.starts_with("annotation "), "{m}");
                    prop_assert!(!m.contains('\n') && m.len() < 1200, "{m:?}");
                }
            }
            if let Some(l) = r.limit {
                prop_assert!(l.ingress.is_some() || l.egress.is_some());
            }
        }
    }
}

/// A fake cgroup mount: two pods, the node's services, a symlink out.
struct Mount {
    dir: PathBuf,
    cgfs: CgroupFs,
}

impl Mount {
    fn new() -> Mount {
        let dir = std::env::temp_dir().join(format!("nri-bw-prop-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for d in [
            "kubepods/burstable/podu1/ctr1",
            "kubepods/burstable/podS/ctr2",
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podu1.slice/cri-containerd-abc.scope",
            "system.slice/containerd.service",
            "init.scope",
        ] {
            fs::create_dir_all(dir.join("cg").join(d)).unwrap();
        }
        let _ = std::os::unix::fs::symlink("/etc", dir.join("cg/kubepods/out"));
        let cgfs = CgroupFs::new_unchecked(dir.join("cg"));
        Mount { dir, cgfs }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn spec() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just("kubepods"),
        Just("burstable"),
        Just("podu1"),
        Just("podS"),
        Just("ctr1"),
        Just(".."),
        Just("."),
        Just(""),
        Just("system.slice"),
        Just("init.scope"),
        Just("-.slice"),
        Just("kubepods.slice"),
        Just("kubepods-burstable-podu1.slice"),
        Just("out"),
        Just("cri-containerd"),
        Just("abc"),
    ];
    (
        proptest::collection::vec((part, prop_oneof![Just("/"), Just(":")]), 0..7),
        any::<bool>(),
    )
        .prop_map(|(parts, lead)| {
            let mut s = if lead { "/".to_string() } else { String::new() };
            for (p, sep) in parts {
                s.push_str(p);
                s.push_str(sep);
            }
            s.trim_end_matches(['/', ':']).to_string()
        })
}

proptest! {
    /// Whatever a runtime sends, a cgroup that resolves is a real directory below
    /// the mount, not the root, not holding the node's services, and named without
    /// `..`: so it is the one requested.
    #[test]
    fn a_resolved_workload_cgroup_is_the_one_requested_and_never_the_root_or_an_ancestor(s in spec()) {
        let m = Mount::new();
        let root = fs::canonicalize(m.cgfs.root()).unwrap();
        if let Ok(cg) = m.cgfs.workload(&s) {
            prop_assert!(cg.dir.starts_with(&root) && cg.dir != root, "{s:?} -> {}", cg.dir.display());
            prop_assert!(!root.join("system.slice").starts_with(&cg.dir), "{s:?}");
            prop_assert!(!root.join("init.scope").starts_with(&cg.dir), "{s:?}");
            prop_assert!(!s.split(['/', ':']).any(|p| p == ".." || p == "."), "{s:?}");
            prop_assert!(cg.dir.is_dir());
        }
    }
}
