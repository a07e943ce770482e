//! Faults (privileged): the process setting a limit killed at every bpf(2) call it
//! makes, a cgroup removed while it is being limited, the pin root removed under a
//! user of it, and the cost of removing thousands of limits. After each, the state
//! is consistent: what `list` calls attached is exactly what the kernel enforces,
//! and nothing half-made is left once reconciled.

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nri_bandwidth_core::datapath::{Datapath, remove_tree};
use nri_bandwidth_core::model::{Limit, Owner};
use nri_bandwidth_core::rate::Rate;
use nri_bandwidth_tests::fixture::{Fixture, attached};
use nri_bandwidth_tests::{privileged, workspace_bin};

static SERIAL: Mutex<()> = Mutex::new(());

/// The privileged switch, the serial lock and a fresh fixture; None when off.
fn setup(tag: &str) -> Option<(std::sync::MutexGuard<'static, ()>, Fixture)> {
    if !privileged() {
        return None;
    }
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    Some((g, Fixture::new(tag)))
}

fn bwctl(fx: &Fixture, args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("bwctl"))
        .args(args)
        .env("NRI_BANDWIDTH_PIN_ROOT", &fx.root)
        .output()
        .unwrap()
}

/// `bwctl limit` of `rel` at 10M both ways.
fn limit_args(rel: &str) -> Vec<String> {
    [
        "limit",
        "--cgroup",
        rel,
        "--ingress",
        "10M",
        "--egress",
        "10M",
    ]
    .map(String::from)
    .to_vec()
}

fn limit() -> Limit {
    Limit {
        ingress: Some(Rate::parse("10M").unwrap()),
        egress: Some(Rate::parse("10M").unwrap()),
        ..Limit::default()
    }
}

/// Kills `bwctl limit` at its n-th bpf(2) call, for every n until it completes,
/// starting each time from a node without a datapath (so loading is covered too).
/// After each kill a restart (`bwctl reconcile`) must succeed, and then every
/// listed limit is attached in the kernel and every attachment is listed.
#[test]
fn killed_at_every_bpf_call_of_limit_the_state_stays_consistent() {
    let Some((_g, fx)) = setup("kill-every") else {
        return;
    };
    assert!(
        Command::new("strace").arg("-V").output().is_ok(),
        "strace is needed (make deps installs it)"
    );
    let cg = fx.cgroup("pod");
    let mut completed = false;
    let mut kills = 0;
    for n in 1..400 {
        let _ = bwctl(&fx, &["unlimit", "--all", "--purge"]);
        let _ = remove_tree(&fx.root);
        let out = Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=bpf", "-e"])
            .arg(format!("inject=bpf:signal=KILL:when={n}"))
            .arg(workspace_bin("bwctl"))
            .args(limit_args(&cg.rel))
            .env("NRI_BANDWIDTH_PIN_ROOT", &fx.root)
            .output()
            .unwrap();
        if out.status.success() {
            completed = true;
        } else {
            kills += 1;
        }
        // The restart: a reconcile from a fresh process must work.
        let r = bwctl(&fx, &["reconcile"]);
        assert!(
            r.status.success() || String::from_utf8_lossy(&r.stderr).contains("not loaded"),
            "call {n}: reconcile failed: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let listed = match Datapath::open_existing(&fx.root) {
            Ok(Some(dp)) => dp.list().unwrap(),
            Ok(None) => Vec::new(),
            Err(e) => panic!("call {n}: the pins cannot be opened after a kill: {e}"),
        };
        assert!(listed.iter().all(|e| e.attached), "call {n}: {listed:?}");
        let want = if listed.is_empty() {
            [0, 0, 0]
        } else {
            [1, 1, 1]
        };
        assert_eq!(
            attached(&cg.dir),
            want,
            "call {n}: kernel vs list {listed:?}"
        );
        if completed {
            assert_eq!(listed.len(), 1, "the uninterrupted limit is listed");
            break;
        }
        // And the next limit works, whatever the kill left.
        let args = limit_args(&cg.rel);
        let again = bwctl(&fx, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            again.status.success(),
            "call {n}: limiting after the kill failed: {}",
            String::from_utf8_lossy(&again.stderr)
        );
        assert_eq!(attached(&cg.dir), [1, 1, 1], "call {n}");
    }
    assert!(completed, "limit never completed");
    eprintln!("killed bwctl limit at each of its first {kills} bpf calls");
    assert!(
        kills > 10,
        "only {kills} bpf calls: is the injection working?"
    );
    let _ = bwctl(&fx, &["unlimit", "--all", "--purge"]);
}

/// A cgroup removed at any moment around its limit: never an error other than a
/// clear one, and after reconcile nothing of it is left.
#[test]
fn a_cgroup_removed_while_being_limited_leaves_nothing_after_reconcile() {
    let Some((_g, fx)) = setup("rmdir-race") else {
        return;
    };
    let dp = Datapath::open(&fx.root).unwrap();
    for i in 0..100u64 {
        let cg = fx.cgroup(&format!("c{i}"));
        let dir = cg.dir.clone();
        let delay = Duration::from_micros((i * 37) % 400);
        let rm = std::thread::spawn(move || {
            std::thread::sleep(delay);
            std::fs::remove_dir(&dir)
        });
        if let Err(e) = dp.limit(&cg, &limit(), &Owner::default()) {
            let m = e.to_string();
            assert!(m.contains(&cg.rel) || m.contains("cgroup"), "{m}");
        }
        let _ = rm.join().unwrap();
        let _ = std::fs::remove_dir(&cg.dir);
    }
    // The kernel releases a removed cgroup's programs from a workqueue, later: until
    // then its links still report it. Reconcile (as each daemon connection runs it)
    // until they are gone.
    let t = Instant::now();
    loop {
        dp.reconcile().unwrap();
        let left = dp.list().unwrap();
        if left.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} limits of removed cgroups left: {:?}",
            left.len(),
            left.iter()
                .map(|e| (&e.path, e.attached))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let links = std::fs::read_dir(dp.pin_dir().join("links"))
        .unwrap()
        .count();
    assert_eq!(links, 0);
}

/// The pin root removed under a process that uses it: it sees the change and
/// loads anew instead of writing to maps nothing reads.
#[test]
fn the_pin_root_removed_under_a_user_is_seen() {
    let Some((_g, fx)) = setup("rm-pins") else {
        return;
    };
    let dp = Datapath::open(&fx.root).unwrap();
    let cg = fx.cgroup("pod");
    dp.limit(&cg, &limit(), &Owner::default()).unwrap();
    assert!(dp.is_current());
    remove_tree(&fx.root).unwrap();
    assert!(!dp.is_current(), "a removed pin root must be noticed");
    // Unpinned, the links are gone with the last reference to them.
    let t = Instant::now();
    while attached(&cg.dir) != [0, 0, 0] && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(attached(&cg.dir), [0, 0, 0]);
    let dp = Datapath::open(&fx.root).unwrap();
    dp.limit(&cg, &limit(), &Owner::default()).unwrap();
    assert_eq!(attached(&cg.dir), [1, 1, 1]);
    assert!(dp.unlimit(cg.id, Duration::ZERO).unwrap());
}

/// `bwctl unlimit --all` of 2,000 limits: one grace period for all (it took 401 s
/// with 200 ms per cgroup, one after another).
#[test]
fn removing_two_thousand_limits_waits_one_grace_period() {
    let Some((_g, fx)) = setup("2000") else {
        return;
    };
    let dp = Datapath::open(&fx.root).unwrap();
    for i in 0..2000 {
        dp.limit(&fx.cgroup(&format!("c{i}")), &limit(), &Owner::default())
            .unwrap();
    }
    let t = Instant::now();
    let out = bwctl(&fx, &["unlimit", "--all"]);
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("bwctl unlimit --all of 2000 limits: {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(dp.list().unwrap().is_empty());
}
