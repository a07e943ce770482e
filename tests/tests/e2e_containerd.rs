//! End to end against real containerd 2.x (built from its Go module), driven
//! through CRI with crictl, with our plugin as a separate process: pods get the
//! limits their annotations ask for, measured with real traffic between the host
//! and the pod IP on the CNI bridge. Needs root, NRI_BANDWIDTH_PRIVILEGED=1 and
//! NRI_BANDWIDTH_E2E=1 (`make e2e`).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use nri_bandwidth_core::datapath as limiter;
use nri_bandwidth_tests::e2e::{
    Containerd, Cri, Flavor, HIGH, PluginProc, assert_no_links, enabled,
    limits_outlive_a_killed_daemon, near, pinned_entries, scrape,
};
use nri_bandwidth_tests::{PinRoot, test_pin_root};

/// One containerd at a time: they would share two cores and distort the rates.
static SERIAL: Mutex<()> = Mutex::new(());

struct Env {
    ctd: Containerd,
    plugin: PluginProc,
    pins: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.plugin.kill9();
        let _ = limiter::remove_tree(&self.pins);
    }
}

fn env(tag: &str, octet: u8, extra: &[&str]) -> Option<(std::sync::MutexGuard<'static, ()>, Env)> {
    if !enabled() {
        return None;
    }
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ctd = Containerd::start(tag, octet);
    let pins = test_pin_root(&format!("e2e{tag}"));
    let plugin = PluginProc::start(&ctd.nri_socket(), &pins, &ctd.dir.join("plugin.log"), extra);
    Some((g, Env { ctd, plugin, pins }))
}

#[test]
fn pod_annotations_limit_both_directions_and_removal_leaves_nothing() {
    let metrics = "127.0.0.1:19171";
    let Some((_g, e)) = env("a", 71, &["--metrics-address", metrics]) else {
        return;
    };
    let pod = e.ctd.run_pod(
        "web",
        "uid-a1",
        &[
            ("kubernetes.io/ingress-bandwidth", "20M"),
            ("kubernetes.io/egress-bandwidth", "10M"),
        ],
    );
    e.ctd.run_container(&pod, "uid-a1", "app", 5201);
    let ip = e.ctd.pod_ip(&pod);
    near("pod ingress", e.ctd.measure(&ip, 5201, "R", 3), 20e6);
    near("pod egress", e.ctd.measure(&ip, 5201, "S", 3), 10e6);
    let list = pinned_entries(&e.pins);
    assert_eq!(list.len(), 1);
    assert_eq!(
        (
            list[0].owner.pod_name.as_str(),
            list[0].owner.pod_namespace.as_str()
        ),
        ("web", "default")
    );
    assert!(list[0].path.ends_with("/poduid-a1"), "{}", list[0].path);
    let m = scrape(metrics);
    let lim = "nri_bandwidth_limit_bits_per_second{direction=\"ingress\",namespace=\"default\",pod=\"web\",container=\"\"";
    assert!(m.contains(lim) && m.contains("} 20000000"), "{m}");
    let bytes = m
        .lines()
        .find(|l| {
            l.starts_with(
                "nri_bandwidth_bytes_total{direction=\"ingress\",namespace=\"default\",pod=\"web\"",
            )
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .expect("ingress byte counter");
    assert!(
        bytes > 3 * 20_000_000 / 8 / 2,
        "the counter saw the transfer: {bytes}"
    );
    assert!(
        m.contains("nri_bandwidth_handler_duration_seconds_count{method=\"RunPodSandbox\"} 1"),
        "{m}"
    );

    e.ctd.remove_pod(&pod);
    e.plugin.wait_log("removed the limit", 0);
    assert!(
        pinned_entries(&e.pins).is_empty(),
        "removing the pod must remove its limit"
    );
    assert_no_links(&e.pins);
}

#[test]
fn containers_share_the_pod_budget_and_a_container_key_limits_only_that_container() {
    let Some((_g, e)) = env("b", 72, &[]) else {
        return;
    };
    let pod = e.ctd.run_pod(
        "shared",
        "uid-b1",
        &[
            ("kubernetes.io/egress-bandwidth", "20M"),
            ("egress-bandwidth.nri-bandwidth.io/slow", "5M"),
        ],
    );
    e.ctd.run_container(&pod, "uid-b1", "fast", 5201);
    e.ctd.run_container(&pod, "uid-b1", "slow", 5202);
    let ip = e.ctd.pod_ip(&pod);
    near(
        "slow container alone",
        e.ctd.measure(&ip, 5202, "S", 3),
        5e6,
    );
    near(
        "fast container alone (pod budget)",
        e.ctd.measure(&ip, 5201, "S", 3),
        20e6,
    );
    // Both at once: the pod's 20M is shared, the slow one still capped at 5M.
    let (ip1, ip2) = (ip.clone(), ip.clone());
    let c1 = &e.ctd;
    let (fast, slow) = std::thread::scope(|s| {
        let a = s.spawn(|| c1.measure(&ip1, 5201, "S", 3));
        let b = s.spawn(|| c1.measure(&ip2, 5202, "S", 3));
        (a.join().unwrap(), b.join().unwrap())
    });
    near("both containers together (pod budget)", fast + slow, 20e6);
    assert!(
        slow < HIGH * 5e6,
        "slow container over its own limit: {slow}"
    );
    assert_eq!(
        pinned_entries(&e.pins).len(),
        2,
        "one pod limit, one container limit"
    );
}

#[test]
fn a_malformed_value_runs_unlimited_with_a_reason_and_strict_mode_fails_the_pod() {
    let Some((_g, mut e)) = env("c", 73, &[]) else {
        return;
    };
    // Our own key: containerd itself refuses pods whose kubernetes.io bandwidth
    // annotations do not parse (it reads them for the CNI bandwidth plugin).
    let pod = e.ctd.run_pod(
        "typo",
        "uid-c1",
        &[("nri-bandwidth.io/ingress-bandwidth", "10Mbps")],
    );
    assert!(!pod.is_empty());
    e.plugin.wait_log("runs without a bandwidth limit", 0);
    let log = e.plugin.log_text();
    assert!(
        log.contains("default/typo")
            && log.contains("nri-bandwidth.io/ingress-bandwidth")
            && log.contains("10Mbps"),
        "{log}"
    );
    assert!(pinned_entries(&e.pins).is_empty());

    // Strict: the same pod is refused with that message.
    std::fs::write(e.ctd.dir.join("strict.conf"), "strict = true\n").unwrap();
    e.plugin = PluginProc::start(
        &e.ctd.nri_socket(),
        &e.pins,
        &e.ctd.dir.join("plugin-strict.log"),
        &["--config", e.ctd.dir.join("strict.conf").to_str().unwrap()],
    );
    let out = e.ctd.try_run_pod(
        "typo2",
        "uid-c2",
        &[("nri-bandwidth.io/ingress-bandwidth", "10Mbps")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "strict mode must fail the pod");
    assert!(
        err.contains("10Mbps") && err.contains("nri-bandwidth"),
        "{err}"
    );
}

#[test]
fn limits_outlive_a_killed_plugin_and_a_restart_reconciles() {
    let Some((_g, mut e)) = env("d", 74, &[]) else {
        return;
    };
    limits_outlive_a_killed_daemon(&e.ctd, &mut e.plugin, &e.pins);
}

#[test]
fn a_containerd_restart_makes_the_plugin_reconnect_and_resync() {
    let Some((_g, mut e)) = env("e", 75, &[]) else {
        return;
    };
    e.ctd.restart();
    e.plugin.wait_log("synchronize:", 1);
    let pod = e.ctd.run_pod(
        "after",
        "uid-e1",
        &[("kubernetes.io/egress-bandwidth", "8M")],
    );
    e.ctd.run_container(&pod, "uid-e1", "app", 5201);
    assert_eq!(pinned_entries(&e.pins).len(), 1);
    let ip = e.ctd.pod_ip(&pod);
    near(
        "egress after containerd restarted",
        e.ctd.measure(&ip, 5201, "S", 3),
        8e6,
    );
}

#[test]
fn the_plugin_also_runs_when_launched_by_containerd() {
    if !enabled() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut ctd = Containerd::start("f", 76);
    let pin_guard = PinRoot::new("e2ef");
    let pins = pin_guard.0.clone();
    let log = ctd.dir.join("launched.log");
    // The runtime replaces the environment, so settings go on the command line.
    let wrapper = ctd.dir.join("nri-plugins/10-bandwidth");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} --pin-root {} --log-file {}\n",
            nri_bandwidth_tests::workspace_bin("nri-bandwidth").display(),
            pins.display(),
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    ctd.restart();
    let pod = ctd.run_pod(
        "launched",
        "uid-f1",
        &[("kubernetes.io/ingress-bandwidth", "12M")],
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("registered as 10-bandwidth"), "{text}");
    let list = pinned_entries(&pins);
    assert_eq!(list.len(), 1, "{text}");
    assert_eq!(list[0].ingress_bps, Some(12_000_000));
    ctd.remove_pod(&pod);
    std::thread::sleep(Duration::from_millis(300));
    assert!(pinned_entries(&pins).is_empty());
    drop(ctd);
}

#[test]
fn containerd_1_7_with_nri_enabled_in_its_config() {
    if !enabled() {
        return;
    }
    if !Flavor::V17.available() {
        eprintln!(
            "skipped: containerd 1.7 not built (CONTAINERD17_VERSION=v1.7.35 tests/e2e/build-peers.sh)"
        );
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ctd = Containerd::start_flavor(Flavor::V17, "g", 77);
    let pin_guard = PinRoot::new("e2eg");
    let pins = pin_guard.0.clone();
    let plugin = PluginProc::start(&ctd.nri_socket(), &pins, &ctd.dir.join("plugin.log"), &[]);
    let pod = ctd.run_pod(
        "old",
        "uid-g1",
        &[
            ("kubernetes.io/egress-bandwidth", "10M"),
            ("egress-bandwidth.nri-bandwidth.io/app", "4M"),
        ],
    );
    ctd.run_container(&pod, "uid-g1", "app", 5201);
    let log = plugin.log_text();
    assert!(
        log.contains("NRI v0.8"),
        "containerd 1.7 speaks NRI v0.8 (StateChange events): {log}"
    );
    let ip = ctd.pod_ip(&pod);
    near(
        "egress of a container under containerd 1.7",
        ctd.measure(&ip, 5201, "S", 3),
        4e6,
    );
    assert_eq!(pinned_entries(&pins).len(), 2);
    ctd.remove_pod(&pod);
    plugin.wait_log("removed the limit", 1);
    assert!(pinned_entries(&pins).is_empty());
    drop(plugin);
    drop(ctd);
}
