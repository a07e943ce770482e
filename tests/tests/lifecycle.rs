//! Attaching, updating in place, detaching, surviving the death of whoever set a
//! limit, cleaning up after removed cgroups, and leaving nothing behind — checked
//! against what the kernel reports. Privileged: root and NRI_BANDWIDTH_PRIVILEGED=1.

use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nri_bandwidth_core::cgroup::Cgroup;
use nri_bandwidth_core::datapath::Datapath;
use nri_bandwidth_core::datapath::sys as bpf_sys;
use nri_bandwidth_core::model::{Limit, Owner, Source};
use nri_bandwidth_core::rate::Rate;
use nri_bandwidth_tests::fixture::{Fixture, attached, our_kernel_objects};
use nri_bandwidth_tests::privileged;

/// Tests here count kernel objects, so they must not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

/// Every test's start: the privileged switch, the serial lock, a fresh fixture.
/// `None` when privileged tests are off.
fn setup(tag: &str) -> Option<(MutexGuard<'static, ()>, Fixture)> {
    if !privileged() {
        return None;
    }
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    Some((g, Fixture::new(tag)))
}

fn rate(s: &str) -> Option<Rate> {
    Some(Rate::parse(s).unwrap())
}

#[test]
fn limit_update_unlimit_round_trip() {
    let Some((_g, fx)) = setup("rt") else {
        return;
    };
    let cg = fx.cgroup("pod");
    let (dir, rel) = (cg.dir.clone(), cg.rel.clone());
    let dp = Datapath::open(&fx.root).unwrap();

    let owner = Owner {
        source: Source::Annotation,
        pod_namespace: "ns".into(),
        pod_name: "p".into(),
        ..Owner::default()
    };
    dp.limit(
        &cg,
        &Limit {
            ingress: rate("10M"),
            egress: rate("20M"),
            ..Limit::default()
        },
        &owner,
    )
    .unwrap();
    let id = cg.id;
    assert_eq!(id, fx.cgfs.id(&dir).unwrap());
    assert_eq!(attached(&dir), [1, 1, 1], "one program per hook");
    let e = dp.entry(id).unwrap().expect("listed");
    assert_eq!(
        (e.ingress_bps, e.egress_bps, e.path.as_str()),
        (Some(10_000_000), Some(20_000_000), rel.as_str())
    );
    assert_eq!(e.owner, owner);
    assert!(e.attached);

    // Update in place: the same links stay attached.
    let link = dp.pin_dir().join(format!("links/{id}/ingress"));
    let before = bpf_sys::link_info(bpf_sys::obj_get(&link).unwrap().as_fd()).unwrap();
    dp.limit(
        &cg,
        &Limit {
            ingress: rate("50M"),
            egress: None,
            ..Limit::default()
        },
        &owner,
    )
    .unwrap();
    let after = bpf_sys::link_info(bpf_sys::obj_get(&link).unwrap().as_fd()).unwrap();
    assert_eq!(before.id, after.id, "an update must not re-attach");
    assert_eq!(attached(&dir), [1, 1, 1]);
    let e = dp.entry(id).unwrap().unwrap();
    assert_eq!((e.ingress_bps, e.egress_bps), (Some(50_000_000), None));

    assert!(dp.unlimit(id, Duration::ZERO).unwrap());
    assert_eq!(attached(&dir), [0, 0, 0], "unlimit must detach everything");
    assert!(dp.entry(id).unwrap().is_none());
    assert!(!dp.pin_dir().join(format!("links/{id}")).exists());
    assert!(
        !dp.unlimit(id, Duration::ZERO).unwrap(),
        "a second unlimit has nothing to do"
    );

    // Bad requests change nothing.
    assert!(
        dp.limit(&cg, &Limit::default(), &owner).is_err(),
        "a limit without rates is refused"
    );
    let gone = fx.parent.join("does-not-exist");
    assert!(
        dp.limit(
            &Cgroup {
                dir: gone,
                rel: "/x".into(),
                id: cg.id + 1_000_000,
            },
            &Limit {
                ingress: rate("1M"),
                ..Limit::default()
            },
            &owner
        )
        .is_err()
    );
    assert!(dp.list().unwrap().is_empty());
}

#[test]
fn two_hundred_cgroups_limited_and_unlimited_leave_no_kernel_object() {
    let Some((_g, fx)) = setup("leak") else {
        return;
    };
    let dp = Datapath::open(&fx.root).unwrap();
    let base = our_kernel_objects();
    let mut made = Vec::new();
    for i in 0..200 {
        let cg = fx.cgroup(&format!("c{i}"));
        let dir = cg.dir.clone();
        dp.limit(
            &cg,
            &Limit {
                ingress: rate("5M"),
                egress: rate("5M"),
                ..Limit::default()
            },
            &Owner::default(),
        )
        .unwrap();
        let id = cg.id;
        made.push((id, dir));
    }
    let during = our_kernel_objects();
    assert_eq!(during.2, base.2 + 600, "three links per cgroup");
    assert_eq!(dp.list().unwrap().len(), 200);
    for (id, dir) in &made {
        assert!(dp.unlimit(*id, Duration::ZERO).unwrap());
        fx.cgfs.remove(dir).unwrap();
    }
    // Link release is synchronous on unpin; give RCU-deferred frees a moment.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(our_kernel_objects(), base, "programs, maps or links leaked");
    assert!(dp.list().unwrap().is_empty());
    let left: Vec<_> = std::fs::read_dir(dp.pin_dir().join("links"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "link pins left: {left:?}");
}

#[test]
fn limit_outlives_a_killed_setter_and_reconcile_cleans_removed_cgroups() {
    let Some((_g, fx)) = setup("kill") else {
        return;
    };
    let cg = fx.cgroup("pod");
    let (dir, rel) = (cg.dir.clone(), cg.rel.clone());
    let mut child = Command::new(env!("CARGO_BIN_EXE_limit-and-hang"))
        .args([fx.root.to_str().unwrap(), &rel, "30M", "40M"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("limited "), "helper said {line:?}");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    assert_eq!(
        attached(&dir),
        [1, 1, 1],
        "the limit must outlive the process that set it"
    );
    let dp = Datapath::open(&fx.root).unwrap();
    let e = &dp.list().unwrap()[0];
    assert_eq!(
        (e.ingress_bps, e.egress_bps, e.attached),
        (Some(30_000_000), Some(40_000_000), true)
    );

    // The cgroup goes away (the runtime removed the pod while nobody watched).
    fx.cgfs.remove(&dir).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let stale = dp.list().unwrap();
    assert!(!stale[0].attached, "a removed cgroup's links are defunct");
    assert_eq!(dp.reconcile().unwrap(), vec![e.cgroup_id]);
    assert!(dp.list().unwrap().is_empty());
}

fn bwctl(args: &[&str], root: &Path) -> (i32, String, String) {
    let out = Command::new(nri_bandwidth_tests::workspace_bin("bwctl"))
        .args(args)
        .env("NRI_BANDWIDTH_PIN_ROOT", root)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn bwctl_contract() {
    let Some((_g, fx)) = setup("cli") else {
        return;
    };
    let rel = fx.cgroup("pod").rel;
    let root = fx.root.as_path();

    let (code, _, err) = bwctl(&["limit", "--cgroup", &rel, "--ingress", "10Mbps"], root);
    assert_eq!(code, 2, "a malformed rate is a usage error");
    assert!(
        err.contains("10Mbps") && err.contains("bits per second"),
        "{err}"
    );
    let (code, _, err) = bwctl(&["limit", "--cgroup", &rel, "--ingress", "10m"], root);
    assert_eq!(code, 2);
    assert!(err.contains("unreasonably small"), "{err}");
    let (code, _, err) = bwctl(
        &["limit", "--cgroup", "/no/such/cgroup", "--ingress", "10M"],
        root,
    );
    assert_eq!(code, 1, "a missing cgroup is a runtime failure");
    assert!(
        err.contains("/no/such/cgroup") && err.contains("does not exist"),
        "{err}"
    );
    let (code, _, err) = bwctl(
        &["limit", "--cgroup", "/../../etc", "--ingress", "10M"],
        root,
    );
    assert_eq!(code, 1);
    assert!(err.contains("outside"), "{err}");

    let (code, out, err) = bwctl(
        &[
            "limit",
            "--cgroup",
            &rel,
            "--ingress",
            "10M",
            "--egress",
            "1.5G",
        ],
        root,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("10M") && out.contains("1500M"), "{out}");
    let (code, out, _) = bwctl(&["list", "--json"], root);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["path"], rel.as_str());
    assert_eq!(v[0]["ingress_bps"], 10_000_000);
    assert_eq!(v[0]["egress_bps"], 1_500_000_000);
    assert_eq!(v[0]["owner"]["source"], "manual");
    let (code, out, _) = bwctl(&["list"], root);
    assert_eq!(code, 0);
    assert!(out.contains(&rel) && out.contains("10.00 Mbit/s"), "{out}");
    let (code, out, _) = bwctl(&["stats", "--json", "--interval", "0.2"], root);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v[0]["ingress_limit_bps"], 10_000_000);

    let (code, _, err) = bwctl(&["unlimit", "--cgroup", &rel], root);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = bwctl(&["unlimit", "--cgroup", &rel], root);
    assert_eq!(code, 1, "unlimiting an unlimited cgroup fails");
    assert!(err.contains("no limit"), "{err}");

    // Not root: a clear message, exit 1, nothing touched.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(nri_bandwidth_tests::workspace_bin("bwctl"))
        .args(["list"])
        .env("NRI_BANDWIDTH_PIN_ROOT", root)
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running as root"));
}

#[test]
fn bwctl_refuses_odd_input_with_a_message_and_never_panics() {
    let Some((_g, fx)) = setup("odd") else {
        return;
    };
    let root = fx.root.as_path();
    for interval in ["inf", "1e400", "0", "-1", "NaN"] {
        let arg = format!("--interval={interval}");
        let (code, _, err) = bwctl(&["stats", &arg], root);
        assert_eq!(code, 2, "--interval {interval}: {err}");
        assert!(
            err.contains("0.1 to 3600") && !err.contains("panicked"),
            "{err}"
        );
    }
    let (code, _, err) = bwctl(&["unlimit", "--cgroup", "/x", "--purge"], root);
    assert_eq!(code, 2, "--purge without --all: {err}");
    // The root and the node's services are refused by hand too.
    for cg in ["/", "/system.slice", "/init.scope"] {
        if !fx.cgfs.root().join(cg.trim_start_matches('/')).is_dir() {
            continue; // no systemd on this node
        }
        let (code, _, err) = bwctl(&["limit", "--cgroup", cg, "--ingress", "1M"], root);
        assert_eq!(code, 1, "{cg}: {err}");
        assert!(err.contains("refusing"), "{cg}: {err}");
    }
    // A pin root whose parent is not bpffs: refused, nothing mounted over it.
    let tmp = std::env::temp_dir().join(format!("nri-bw-notbpf-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let rel = fx.cgroup("pod").rel;
    for pins in [tmp.join("pins"), PathBuf::from("/sys/fs/bpf")] {
        let (code, _, err) = bwctl(&["limit", "--cgroup", &rel, "--ingress", "1M"], &pins);
        assert_eq!(code, 1, "{}: {err}", pins.display());
        assert!(err.contains("not a bpf filesystem"), "{err}");
    }
    assert!(!nri_bandwidth_core::datapath::pins::is_bpffs(&tmp));
    assert!(
        Path::new("/sys/fs/cgroup").exists(),
        "cgroupfs still visible"
    );
    let _ = std::fs::remove_dir_all(&tmp);
    // A reader that goes away: bwctl ends quietly, no panic.
    let (code, _, _) = bwctl(&["limit", "--cgroup", &rel, "--ingress", "1M"], root);
    assert_eq!(code, 0);
    let mut child = Command::new(nri_bandwidth_tests::workspace_bin("bwctl"))
        .args(["stats", "--watch", "--interval", "0.1"])
        .env("NRI_BANDWIDTH_PIN_ROOT", root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kernel memory a map is charged, from its fd's fdinfo.
fn memlock(pin: &Path) -> u64 {
    let fd = bpf_sys::obj_get(pin).unwrap();
    let text = std::fs::read_to_string(format!(
        "/proc/self/fdinfo/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
    .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("memlock in fdinfo")
}

#[test]
fn a_node_without_limits_pays_little_kernel_memory_for_the_meta_map() {
    let Some((_g, fx)) = setup("mem") else {
        return;
    };
    let dp = Datapath::open(&fx.root).unwrap();
    let meta = dp.pin_dir().join("map_meta");
    let idle = memlock(&meta);
    eprintln!("meta map memlock with no limits: {idle} bytes");
    // Preallocated, its 65,536 entries of ~0.8 KiB were ~56 MiB on every node.
    assert!(idle < 4 << 20, "idle meta map charged {idle} bytes");
    let cg = fx.cgroup("one");
    dp.limit(
        &cg,
        &Limit {
            ingress: rate("5M"),
            ..Limit::default()
        },
        &Owner::default(),
    )
    .unwrap();
    assert!(dp.unlimit(cg.id, Duration::ZERO).unwrap());
}
