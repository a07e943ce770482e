//! End to end against real CRI-O (built from its Go module, conmon and runc from
//! Debian), driven through CRI with crictl, NRI switched on by the repository's
//! own drop-in (examples/crio-nri.conf): pods get the limits their annotations
//! ask for, measured with real traffic between the host and the pod IP on the
//! CNI bridge. Needs root, NRI_BANDWIDTH_PRIVILEGED=1 and NRI_BANDWIDTH_E2E=1
//! (`make e2e`).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nri_bandwidth_core::datapath as limiter;
use nri_bandwidth_tests::crio::{self, Crio};
use nri_bandwidth_tests::e2e::{
    Cri, HIGH, PluginProc, assert_no_links, enabled, limits_outlive_a_killed_daemon, near,
    pinned_entries,
};
use nri_bandwidth_tests::podman::install_repo_hook;
use nri_bandwidth_tests::{PinRoot, test_pin_root};

/// One runtime at a time: two would share two cores and distort the rates.
static SERIAL: Mutex<()> = Mutex::new(());

struct Env {
    crio: Crio,
    plugin: PluginProc,
    pins: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.plugin.kill9();
        let _ = limiter::remove_tree(&self.pins);
    }
}

fn env(tag: &str, octet: u8) -> Option<(std::sync::MutexGuard<'static, ()>, Env)> {
    if !enabled() || !crio::available() {
        return None;
    }
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let crio = Crio::start(tag, octet);
    let pins = test_pin_root(&format!("crio{tag}"));
    let plugin = PluginProc::start(&crio.nri_socket(), &pins, &crio.dir.join("plugin.log"), &[]);
    Some((g, Env { crio, plugin, pins }))
}

fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pod_and_container_limits_under_crio_and_removal_leaves_no_pins() {
    let Some((_g, e)) = env("a", 81) else {
        return;
    };
    let pod = e.crio.run_pod(
        "web",
        "uid-ca1",
        &[
            ("kubernetes.io/ingress-bandwidth", "20M"),
            ("kubernetes.io/egress-bandwidth", "10M"),
            ("egress-bandwidth.nri-bandwidth.io/slow", "4M"),
        ],
    );
    assert!(
        e.plugin.log_text().contains("registered as"),
        "{}",
        e.plugin.log_text()
    );
    assert_eq!(
        pinned_entries(&e.pins).len(),
        1,
        "the pod limit at RunPodSandbox"
    );
    e.crio.run_container(&pod, "uid-ca1", "fast", 5201);
    // CRI-O makes the container's cgroup before PostCreateContainer: the limit
    // is there before the container is started.
    let slow = e.crio.create_container(&pod, "uid-ca1", "slow", 5202);
    let list = pinned_entries(&e.pins);
    let c = list
        .iter()
        .find(|x| x.owner.container == "slow")
        .unwrap_or_else(|| {
            panic!(
                "no container limit after create: {list:?}\n{}",
                e.plugin.log_text()
            )
        });
    assert_eq!(c.egress_bps, Some(4_000_000));
    assert!(c.path.ends_with(&format!("crio-{slow}")), "{}", c.path);
    assert!(
        e.crio
            .crictl()
            .args(["start", &slow])
            .output()
            .unwrap()
            .status
            .success()
    );

    let ip = e.crio.pod_ip(&pod);
    near("pod ingress", e.crio.measure(&ip, 5201, "R", 3), 20e6);
    near("pod egress", e.crio.measure(&ip, 5201, "S", 3), 10e6);
    let got = e.crio.measure(&ip, 5202, "S", 3);
    near("container egress (own key)", got, 4e6);
    assert!(got < HIGH * 4e6);

    e.crio.remove_pod(&pod);
    wait_until(
        "pins of the removed pod gone",
        Duration::from_secs(5),
        || pinned_entries(&e.pins).is_empty(),
    );
    assert_no_links(&e.pins);
}

#[test]
fn limits_outlive_a_killed_daemon_and_restarts_of_either_side_resync() {
    let Some((_g, mut e)) = env("b", 82) else {
        return;
    };
    let (_, ip) = limits_outlive_a_killed_daemon(&e.crio, &mut e.plugin, &e.pins);

    // CRI-O restarts (SIGKILL; conmon keeps the containers): the daemon
    // reconnects, resynchronizes, and limits what comes next.
    let syncs = e.plugin.log_text().matches("synchronize:").count();
    e.crio.restart();
    e.plugin.wait_log("synchronize:", syncs);
    assert_eq!(pinned_entries(&e.pins).len(), 2, "resync keeps both limits");
    let c = e.crio.run_pod(
        "after",
        "uid-cb4",
        &[("kubernetes.io/egress-bandwidth", "8M")],
    );
    e.crio.run_container(&c, "uid-cb4", "app", 5201);
    let ipc = e.crio.pod_ip(&c);
    near(
        "egress of a pod made after CRI-O restarted",
        e.crio.measure(&ipc, 5201, "S", 3),
        8e6,
    );
    near(
        "egress of a pod made before, after both restarts",
        e.crio.measure(&ip, 5201, "S", 3),
        10e6,
    );
}

#[test]
fn the_daemon_also_runs_when_launched_by_crio() {
    if !enabled() || !crio::available() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut crio = Crio::start("c", 83);
    let pins = PinRoot::new("crioc");
    let log = crio.dir.join("launched.log");
    // CRI-O replaces the environment, so settings go on the command line.
    crio.install_plugin(
        "10-bandwidth",
        &format!(
            "#!/bin/sh\nexec {} --pin-root {} --log-file {}\n",
            nri_bandwidth_tests::workspace_bin("nri-bandwidth").display(),
            pins.0.display(),
            log.display()
        ),
    );
    crio.restart();
    let pod = crio.run_pod(
        "launched",
        "uid-cc1",
        &[("kubernetes.io/ingress-bandwidth", "12M")],
    );
    crio.run_container(&pod, "uid-cc1", "app", 5201);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("registered as 10-bandwidth"), "{text}");
    let list = pinned_entries(&pins.0);
    assert_eq!(list.len(), 1, "{text}");
    assert_eq!(list[0].ingress_bps, Some(12_000_000));
    let ip = crio.pod_ip(&pod);
    near(
        "ingress, daemon launched by CRI-O",
        crio.measure(&ip, 5201, "R", 3),
        12e6,
    );
    crio.remove_pod(&pod);
    wait_until("pins gone", Duration::from_secs(5), || {
        pinned_entries(&pins.0).is_empty()
    });
    drop(crio);
}

/// The OCI hook through CRI-O's `hooks_dir`, with the repository's hooks.d JSON
/// and no daemon. CRI-O copies the pod's annotations into every container's OCI
/// annotations (its own CRI annotations are kept apart, as JSON): the hook puts
/// the pod's keys on the pod's cgroup once, a container's own keys on the
/// container, and the pod's limit goes with the last container.
#[test]
fn the_oci_hook_through_crio_hooks_dir() {
    if !enabled() || !crio::available() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut crio = Crio::start("d", 84);
    let pins = PinRoot::new("criod");
    let journal = crio.dir.join("journal.sock");
    let _journal = std::os::unix::net::UnixDatagram::bind(&journal).unwrap();
    install_repo_hook(&crio.dir, &crio.hooks_dir(), &pins.0, &[], &journal);
    crio.restart();
    let hook_log = || std::fs::read_to_string(crio.dir.join("hook-stderr")).unwrap_or_default();

    // A: the keys on the pod, as a kubelet sends them.
    let a = crio.run_pod(
        "pod-keys",
        "uid-cd1",
        &[
            ("kubernetes.io/egress-bandwidth", "10M"),
            ("egress-bandwidth.nri-bandwidth.io/slow", "3M"),
        ],
    );
    let fast = crio.run_container(&a, "uid-cd1", "fast", 5201);
    let slow = crio.run_container(&a, "uid-cd1", "slow", 5202);
    let ann = &crio.spec(&fast)["annotations"];
    assert_eq!(
        ann["kubernetes.io/egress-bandwidth"], "10M",
        "CRI-O copies the pod's annotations into the container's: {ann}"
    );
    assert_eq!(ann["io.kubernetes.cri-o.Annotations"], "null", "{ann}");
    let list = pinned_entries(&pins.0);
    let pod_limit = list
        .iter()
        .find(|x| x.owner.container_id == a)
        .unwrap_or_else(|| panic!("no pod limit: {list:?}\n{}", hook_log()));
    assert_eq!(pod_limit.egress_bps, Some(10_000_000));
    assert!(
        pod_limit.path.ends_with("/poduid-cd1"),
        "{}",
        pod_limit.path
    );
    let slow_limit = list
        .iter()
        .find(|x| x.owner.container_id == slow)
        .unwrap_or_else(|| panic!("no limit on slow: {list:?}"));
    assert_eq!(slow_limit.egress_bps, Some(3_000_000));
    assert_eq!(
        list.len(),
        2,
        "one pod limit, one container limit: {list:?}"
    );

    let ip = crio.pod_ip(&a);
    near("pod egress (hook)", crio.measure(&ip, 5201, "S", 3), 10e6);
    near(
        "container egress, own key (hook)",
        crio.measure(&ip, 5202, "S", 3),
        3e6,
    );
    let c = &crio;
    let (x, y) = std::thread::scope(|s| {
        let x = s.spawn(|| c.measure(&ip, 5201, "S", 3));
        let y = s.spawn(|| c.measure(&ip, 5202, "S", 3));
        (x.join().unwrap(), y.join().unwrap())
    });
    near("both containers together: one pod budget", x + y, 10e6);

    // B: the key on the container's own CRI config limits that container.
    let b = crio.run_pod("ctr-keys", "uid-cd2", &[]);
    let b_app = crio.create_annotated_container(
        &b,
        "uid-cd2",
        "app",
        5201,
        &[("kubernetes.io/egress-bandwidth", "6M")],
    );
    assert!(
        crio.crictl()
            .args(["start", &b_app])
            .output()
            .unwrap()
            .status
            .success()
    );
    let own = pinned_entries(&pins.0)
        .into_iter()
        .find(|x| x.owner.container_id == b_app)
        .unwrap_or_else(|| panic!("no limit on the annotated container:\n{}", hook_log()));
    assert!(own.path.ends_with(&format!("crio-{b_app}")), "{}", own.path);
    let ipb = crio.pod_ip(&b);
    near(
        "container egress, key on the container (hook)",
        crio.measure(&ipb, 5201, "S", 3),
        6e6,
    );

    // poststop: slow's limit goes with it, the pod's stays while fast runs,
    // then goes with fast.
    for args in [["stop", slow.as_str()], ["rm", slow.as_str()]] {
        assert!(crio.crictl().args(args).output().unwrap().status.success());
    }
    let owners: Vec<String> = pinned_entries(&pins.0)
        .into_iter()
        .map(|x| x.owner.container_id)
        .collect();
    assert!(!owners.contains(&slow), "{owners:?}\n{}", hook_log());
    assert!(
        owners.contains(&a),
        "pod limit gone with a container left: {owners:?}"
    );
    crio.remove_pod(&a);
    crio.remove_pod(&b);
    wait_until("every hook limit gone", Duration::from_secs(5), || {
        pinned_entries(&pins.0).is_empty()
    });
    let log = hook_log();
    assert!(log.contains("its last container"), "{log}");
    assert_no_links(&pins.0);
}
