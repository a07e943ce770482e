//! Properties of what the hook reads from outside: the OCI state on stdin and the
//! bundle's config.json. Any bytes give a clear error or a state; any
//! `cgroupsPath` gives an error or a cgroup a limit may land on.

use std::fs;
use std::path::PathBuf;

use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_core::policy::Policy;
use nri_bandwidth_hook::hook_action::{container_cgroup, plan_create};
use nri_bandwidth_hook::oci_state::State;
use proptest::prelude::*;

const VALID: &str = r#"{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":0,"bundle":"/b","annotations":{"kubernetes.io/ingress-bandwidth":"10M"}}"#;

proptest! {
    #[test]
    fn any_bytes_are_a_state_or_a_clear_error(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Err(e) = State::parse(&bytes) {
            let m = e.to_string();
            prop_assert!(m.contains("OCI state") || m.contains("expected"), "{m}");
        }
    }

    #[test]
    fn a_valid_state_cut_or_flipped_anywhere_never_panics(cut in 0..VALID.len(), flip in 0..VALID.len(), b in any::<u8>()) {
        let _ = State::parse(&VALID.as_bytes()[..cut]);
        let mut v = VALID.as_bytes().to_vec();
        v[flip] = b;
        if let Ok(s) = State::parse(&v) {
            let _ = plan_create(&s, Policy::default());
            let _ = plan_create(&s, Policy { strict: true });
        }
    }

    /// `cgroupsPath` from config.json is the runtime's word: it must resolve below
    /// the mount, never to the root or a node service, or be refused.
    #[test]
    fn a_cgroups_path_never_resolves_to_the_root_or_the_services(
        path in prop_oneof![
            Just("/".to_string()), Just(".".to_string()), Just("-.slice:cri-containerd:x".to_string()),
            Just("/system.slice".to_string()), Just("/pods/p1/../../init.scope".to_string()),
            "(/?(pods|p1|c1|\\.\\.|\\.|system\\.slice|init\\.scope|-\\.slice|)){0,5}",
        ]
    ) {
        let dir = std::env::temp_dir().join(format!("nri-bw-hookprop-{}", std::process::id()));
        let root = dir.join("cg");
        for d in ["pods/p1/c1", "system.slice", "init.scope"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let bundle = dir.join("bundle");
        fs::create_dir_all(&bundle).unwrap();
        let cfg = serde_json::json!({"linux": {"cgroupsPath": path}});
        fs::write(bundle.join("config.json"), cfg.to_string()).unwrap();
        let state = State::parse(
            serde_json::json!({"ociVersion":"1.0.2","id":"c1","status":"creating","bundle": bundle}).to_string().as_bytes(),
        ).unwrap();
        let cgfs = CgroupFs::new_unchecked(&root);
        let canon: PathBuf = fs::canonicalize(&root).unwrap();
        if let Ok(cg) = container_cgroup(&cgfs, &state) {
            prop_assert!(cg.dir != canon && cg.dir.starts_with(&canon), "{path:?}");
            prop_assert!(!canon.join("system.slice").starts_with(&cg.dir), "{path:?}");
            prop_assert!(!canon.join("init.scope").starts_with(&cg.dir), "{path:?}");
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
