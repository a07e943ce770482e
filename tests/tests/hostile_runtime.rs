//! The real `nri-bandwidth` daemon against a runtime that attacks it or misbehaves,
//! over a real socket (privileged: real cgroups, a private pin root). Each attack
//! from the hostile-input issue is played here and must leave nothing outside the
//! workload limited, lose nothing, and crash nothing.
//!
//! The daemon's cgroup root is a private cgroup made by the test, with its own
//! `system.slice` and `init.scope`: an attack that got through would limit only
//! that subtree, never this machine.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_core::datapath::Datapath;
use nri_bandwidth_tests::fake_runtime::{FakeRuntime, ctx, pod};
use nri_bandwidth_tests::{PinRoot, privileged, workspace_bin};
use nri_plugin::nri::proto::nri::*;
use tokio::net::UnixListener;

const INGRESS: &str = "kubernetes.io/ingress-bandwidth";

/// The private cgroup tree: pods, and the node's services as a node has them.
const SUBTREE: [&str; 5] = ["podu1", "podS", "podw", "system.slice", "init.scope"];

/// The daemon under attack, its socket, pins and cgroups; all removed on drop.
struct Target {
    child: Child,
    listener: UnixListener,
    dir: PathBuf,
    pins: PinRoot,
    cgfs: CgroupFs,
}

impl Target {
    fn start(tag: &str) -> Target {
        let dir = std::env::temp_dir().join(format!("nri-bw-hostile-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("nri.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let pins = PinRoot::new(&format!("hostile-{tag}"));
        let host = CgroupFs::detect().unwrap();
        let base = format!("/nri-bandwidth-test/hostile-{tag}-{}", std::process::id());
        let root = host.create(&base).unwrap();
        let cgfs = CgroupFs::new(&root);
        for p in SUBTREE {
            cgfs.create(p).unwrap();
        }
        let child = Command::new(workspace_bin("nri-bandwidth"))
            .arg("--socket")
            .arg(&sock)
            .arg("--pin-root")
            .arg(&pins.0)
            .arg("--cgroup-root")
            .arg(cgfs.root())
            .arg("--log-file")
            .arg(dir.join("daemon.log"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Target {
            child,
            listener,
            dir,
            pins,
            cgfs,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Accepts the daemon's next connection and plays a well-behaved runtime up
    /// to and including an empty Synchronize.
    async fn connect(&self) -> FakeRuntime {
        let (stream, _) = tokio::time::timeout(Duration::from_secs(20), self.listener.accept())
            .await
            .expect("the daemon connects")
            .unwrap();
        let rt = FakeRuntime::start(stream).await.unwrap();
        assert!(rt.wait_registered(Duration::from_secs(10)).await);
        let mut cfg = ConfigureRequest::new();
        cfg.runtime_name = "containerd".into();
        cfg.runtime_version = "v2.4.2".into();
        rt.client.configure(ctx(), &cfg).await.unwrap();
        rt.client
            .synchronize(ctx(), &SynchronizeRequest::new())
            .await
            .unwrap();
        rt
    }

    /// Every cgroup path limited now (none when no datapath was loaded).
    fn limited(&self) -> Vec<String> {
        match Datapath::open_existing(&self.pins.0).unwrap() {
            Some(dp) => dp.list().unwrap().into_iter().map(|e| e.path).collect(),
            None => Vec::new(),
        }
    }

    /// A cgroup as the daemon names it: relative to its private root.
    fn cg(&self, p: &str) -> String {
        format!("/{p}")
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(Some(dp)) = Datapath::open_existing(&self.pins.0) {
            for e in dp.list().unwrap_or_default() {
                let _ = dp.unlimit(e.cgroup_id, Duration::ZERO);
            }
        }
        for p in SUBTREE.iter().rev() {
            let _ = fs::remove_dir(self.cgfs.root().join(p));
        }
        let _ = fs::remove_dir(self.cgfs.root());
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The privileged switch, a target daemon and a runtime it registered with.
async fn connected(tag: &str) -> Option<(Target, FakeRuntime)> {
    if !privileged() {
        return None;
    }
    let t = Target::start(tag);
    let rt = t.connect().await;
    Some((t, rt))
}

fn run_req(p: PodSandbox) -> RunPodSandboxRequest {
    let mut r = RunPodSandboxRequest::new();
    r.pod = Some(p).into();
    r
}

fn with_parent(uid: &str, parent: &str, path: &str, ann: &[(&str, &str)]) -> PodSandbox {
    let mut p = pod(uid, ann);
    let l = p.linux.mut_or_insert_default();
    l.cgroup_parent = parent.into();
    l.cgroups_path = path.into();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_cgroup_paths_never_limit_the_root_an_ancestor_or_another_pod() {
    let Some((t, rt)) = connected("paths").await else {
        return;
    };
    let root = t.cgfs.root().display().to_string();
    let escape = format!("{}/../podS", t.cg("podu1"));
    let cases: Vec<(&str, String, String)> = vec![
        ("root", "/".into(), String::new()),
        ("dot", ".".into(), String::new()),
        ("up", "kubepods/..".into(), String::new()),
        ("slice", "-.slice".into(), String::new()),
        ("mount", root.clone(), String::new()),
        ("empty", String::new(), "//sandbox".into()),
        ("sysd", String::new(), "-.slice:cri-containerd:abc".into()),
        ("sibling", escape, String::new()),
        ("services", "/system.slice".into(), String::new()),
        ("init", "/init.scope".into(), String::new()),
    ];
    for (uid, parent, path) in &cases {
        let p = with_parent(uid, parent, path, &[(INGRESS, "10M")]);
        rt.client
            .run_pod_sandbox(ctx(), &run_req(p))
            .await
            .unwrap_or_else(|e| panic!("{uid}: fail open must not refuse the pod: {e}"));
    }
    assert!(t.limited().is_empty(), "limited: {:?}", t.limited());

    // Containers: only strictly below their own pod.
    let w = with_parent(
        "podw",
        &t.cg("podw"),
        "",
        &[("ingress-bandwidth.nri-bandwidth.io/web", "5M")],
    );
    for path in [
        format!("{}/ctr1/../../podS", t.cg("podw")),
        t.cg("podS"),
        t.cg("podw"),
    ] {
        let mut c = Container::new();
        c.id = "c".repeat(64);
        c.name = "web".into();
        c.pod_sandbox_id = w.id.clone();
        c.linux.mut_or_insert_default().cgroups_path = path.clone();
        let mut req = StartContainerRequest::new();
        req.pod = Some(w.clone()).into();
        req.container = Some(c).into();
        rt.client.start_container(ctx(), &req).await.unwrap();
        assert!(t.limited().is_empty(), "{path}: {:?}", t.limited());
    }
    let log = t.log();
    assert!(
        log.contains("cgroup v2 root") && log.contains("plain path"),
        "{log}"
    );

    // The one legitimate pod is limited, on its own cgroup.
    let ok = with_parent("podu1", &t.cg("podu1"), "", &[(INGRESS, "10M")]);
    rt.client
        .run_pod_sandbox(ctx(), &run_req(ok))
        .await
        .unwrap();
    assert_eq!(t.limited(), vec![t.cg("podu1")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_too_long_to_store_whole_are_refused_and_never_match_another_pod() {
    let Some((t, rt)) = connected("ids").await else {
        return;
    };
    let a63 = "A".repeat(63);
    let p = with_parent(&a63, &t.cg("podu1"), "", &[(INGRESS, "10M")]);
    rt.client.run_pod_sandbox(ctx(), &run_req(p)).await.unwrap();
    let long = with_parent(&format!("{a63}B"), &t.cg("podS"), "", &[(INGRESS, "10M")]);
    rt.client
        .run_pod_sandbox(ctx(), &run_req(long.clone()))
        .await
        .unwrap();
    assert_eq!(
        t.limited(),
        vec![t.cg("podu1")],
        "the 64-byte uid is refused"
    );
    let mut rm = RemovePodSandboxRequest::new();
    rm.pod = Some(long).into();
    rt.client.remove_pod_sandbox(ctx(), &rm).await.unwrap();
    assert_eq!(
        t.limited(),
        vec![t.cg("podu1")],
        "A×63+B must not remove A×63"
    );
    assert!(t.log().contains("64 bytes"), "{}", t.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronize_cut_by_a_dropped_connection_is_never_applied() {
    let Some((t, rt)) = connected("sync").await else {
        return;
    };
    let mut first = SynchronizeRequest::new();
    first.pods = vec![with_parent(
        "podu1",
        &t.cg("podu1"),
        "",
        &[(INGRESS, "10M")],
    )];
    first.more = true;
    assert!(rt.client.synchronize(ctx(), &first).await.unwrap().more);
    drop(rt);
    // The daemon reconnects; the new runtime's list is complete and empty.
    let rt = t.connect().await;
    assert!(
        t.limited().is_empty(),
        "half a list applied: {:?}",
        t.limited()
    );

    // A list that never ends is dropped at the bound, memory returned.
    let mut big = with_parent("big", &t.cg("podS"), "", &[]);
    big.annotations.insert("pad".into(), "x".repeat(1 << 20));
    let mut refused = None;
    for _ in 0..80 {
        let mut chunk = SynchronizeRequest::new();
        chunk.pods = vec![big.clone(); 2];
        chunk.more = true;
        if let Err(e) = rt.client.synchronize(ctx(), &chunk).await {
            refused = Some(e.to_string());
            break;
        }
    }
    let e = refused.expect("an endless Synchronize was never refused");
    assert!(
        e.contains("64 MiB") || e.contains("RESOURCE_EXHAUSTED"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_never_makes_a_handler_miss_the_runtime_deadline() {
    let Some((t, rt)) = connected("lock").await else {
        return;
    };
    // Load the datapath first (one limit), then hold the pin-root lock as a long
    // bwctl removal would.
    let a = with_parent("podu1", &t.cg("podu1"), "", &[(INGRESS, "10M")]);
    rt.client.run_pod_sandbox(ctx(), &run_req(a)).await.unwrap();
    let held = fs::File::open(&t.pins.0).unwrap();
    // SAFETY: flock on an fd we own.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    let b = with_parent("podS", &t.cg("podS"), "", &[(INGRESS, "10M")]);
    let start = Instant::now();
    rt.client.run_pod_sandbox(ctx(), &run_req(b)).await.unwrap();
    let took = start.elapsed();
    drop(held);
    assert!(
        took < Duration::from_millis(1800),
        "answered after {took:?}"
    );
    assert_eq!(t.limited(), vec![t.cg("podu1")], "failed open, unlimited");
    assert!(t.log().contains("held the lock"), "{}", t.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_log_lines_and_huge_values_are_escaped_and_cut() {
    let Some((t, rt)) = connected("text").await else {
        return;
    };
    let forged = "10M\nERROR forged line\u{1b}[31m";
    let huge = "9".repeat(1 << 20) + "x";
    for (uid, v) in [("podu1", forged), ("podS", huge.as_str())] {
        let p = with_parent(uid, &t.cg(uid), "", &[(INGRESS, v)]);
        rt.client.run_pod_sandbox(ctx(), &run_req(p)).await.unwrap();
    }
    let log = t.log();
    assert!(!log.lines().any(|l| l.starts_with("ERROR forged")), "{log}");
    assert!(!log.contains('\u{1b}'), "a raw escape reached the log");
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2048, "a {longest}-byte log line");
    assert!(t.limited().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_drops_every_connection_gets_backoff_not_a_flood() {
    if !privileged() {
        return;
    }
    let t = Target::start("drop");
    let start = Instant::now();
    let mut accepts = 0;
    while start.elapsed() < Duration::from_secs(6) {
        match tokio::time::timeout(Duration::from_millis(500), t.listener.accept()).await {
            Ok(Ok((s, _))) => {
                accepts += 1;
                drop(s);
            }
            _ => continue,
        }
    }
    // 250 ms doubling to 5 s: at most 6 connections in 6 s (0.25 s reset: 24).
    assert!((2..=6).contains(&accepts), "{accepts} connections in 6 s");
    let errors = t.log().matches("ERROR").count();
    assert!(errors <= 2, "{errors} ERROR lines:\n{}", t.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_purged_under_the_daemon_are_opened_again() {
    let Some((t, rt)) = connected("purge").await else {
        return;
    };
    let a = with_parent("podu1", &t.cg("podu1"), "", &[(INGRESS, "10M")]);
    rt.client
        .run_pod_sandbox(ctx(), &run_req(a.clone()))
        .await
        .unwrap();
    let out = Command::new(workspace_bin("bwctl"))
        .args(["unlimit", "--all", "--purge", "--pin-root"])
        .arg(&t.pins.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t.limited().is_empty());
    let b = with_parent("podS", &t.cg("podS"), "", &[(INGRESS, "10M")]);
    rt.client.run_pod_sandbox(ctx(), &run_req(b)).await.unwrap();
    assert_eq!(
        t.limited(),
        vec![t.cg("podS")],
        "the new limit is in the new pins"
    );
}
