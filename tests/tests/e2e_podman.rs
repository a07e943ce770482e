//! The OCI hook end to end with real podman (Debian's 4.3, runc): the repository's
//! hooks.d JSON decides when the hook runs, the hook limits the container's cgroup,
//! traffic into and out of the container's network namespace is measured from the
//! host over podman's own bridge.
//!
//! Runs with `NRI_BANDWIDTH_PRIVILEGED=1 NRI_BANDWIDTH_E2E=1` as root (`make e2e`).

use std::sync::{Mutex, MutexGuard};

use nri_bandwidth_tests::e2e;
use nri_bandwidth_tests::podman::Podman;

const SECS: u32 = 5;

/// One container workload at a time: concurrent bulk transfers on two cores
/// would measure the CPU, not the limiter.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn json_list(p: &Podman) -> Vec<serde_json::Value> {
    serde_json::from_str(&p.bwctl(&["list", "--json"])).unwrap()
}

#[test]
fn annotated_container_is_limited_both_ways_and_released_on_removal() {
    if !e2e::enabled() {
        return;
    }
    let _serial = serial();
    let p = Podman::new("limit", &[]);
    let id = p.serve(
        "limited",
        &[
            ("kubernetes.io/ingress-bandwidth", "20M"),
            ("kubernetes.io/egress-bandwidth", "10M"),
        ],
    );
    // createRuntime ran the hook (poststop has not happened yet).
    assert_eq!(p.hook_calls().len(), 1, "calls: {:?}", p.hook_calls());

    let list = json_list(&p);
    assert_eq!(list.len(), 1, "{list:?}");
    let e = &list[0];
    assert_eq!(e["owner"]["source"], "hook");
    assert_eq!(
        e["owner"]["container_id"],
        id.as_str(),
        "the full id is kept"
    );
    assert_eq!(e["ingress_bps"], 20_000_000);
    assert_eq!(e["egress_bps"], 10_000_000);
    let pid = p.inspect("limited", "{{.State.Pid}}");
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cg.contains(e["path"].as_str().unwrap()),
        "limit on {} but the container is in {cg}",
        e["path"]
    );

    let ip = p.ip("limited");
    let ingress = e2e::measure(&ip, 5201, "R", SECS) / 20e6;
    let egress = e2e::measure(&ip, 5201, "S", SECS) / 10e6;
    eprintln!("podman hook: ingress {ingress:.3}, egress {egress:.3} of the limit");
    assert!(
        (0.80..=1.05).contains(&ingress),
        "ingress {ingress:.3} of 20M"
    );
    assert!((0.80..=1.05).contains(&egress), "egress {egress:.3} of 10M");

    p.remove("limited");
    let calls = p.hook_calls();
    assert_eq!(calls.len(), 2, "createRuntime + poststop: {calls:?}");
    assert!(json_list(&p).is_empty(), "poststop removed the limit");
    assert!(
        p.pinned_links().is_empty(),
        "left pinned: {:?}",
        p.pinned_links()
    );
    let journal = p.journal_messages().join("\n");
    assert!(journal.contains("limited cgroup"), "{journal}");
    assert!(journal.contains("removed 1 bandwidth limit"), "{journal}");
}

#[test]
fn container_without_annotations_never_runs_the_hook() {
    if !e2e::enabled() {
        return;
    }
    let _serial = serial();
    let p = Podman::new("plain", &[]);
    p.serve("plain", &[("example.com/unrelated", "10M")]);
    let ip = p.ip("plain");
    let rate = e2e::measure(&ip, 5201, "R", 2);
    p.remove("plain");
    assert!(p.hook_calls().is_empty(), "hook ran: {:?}", p.hook_calls());
    assert!(!p.pins.0.exists(), "nothing was even loaded");
    // Unlimited on a veth bridge is far beyond any limit used here.
    assert!(
        rate > 100e6,
        "unannotated container got only {rate:.0} bit/s"
    );
}

#[test]
fn malformed_annotation_runs_unlimited_with_a_message_and_strict_refuses() {
    if !e2e::enabled() {
        return;
    }
    let _serial = serial();
    let bad = [("kubernetes.io/ingress-bandwidth", "10 furlongs")];

    let p = Podman::new("bad", &[]);
    p.serve("bad", &bad);
    let state = p.inspect("bad", "{{.State.Status}}");
    assert_eq!(state, "running");
    assert!(json_list(&p).is_empty(), "nothing limited");
    let stderr = p.hook_stderr();
    let journal = p.journal_messages().join("\n");
    for text in [&stderr, &journal] {
        assert!(
            text.contains("kubernetes.io/ingress-bandwidth")
                && text.contains("10 furlongs")
                && text.contains("expected")
                && text.contains("without a bandwidth limit"),
            "message does not name key, value and expectation: {text}"
        );
    }
    let rate = e2e::measure(&p.ip("bad"), 5201, "R", 2);
    assert!(rate > 100e6, "fail-open container got only {rate:.0} bit/s");
    p.remove("bad");
    drop(p);

    let p = Podman::new("strict", &["--strict"]);
    let out = p.try_serve("refused", &bad);
    assert!(!out.status.success(), "strict hook let the container start");
    let stderr = p.hook_stderr();
    assert!(
        stderr.contains("10 furlongs") && stderr.contains("strict"),
        "{stderr}"
    );
    assert!(p.pinned_links().is_empty());
}

#[test]
fn malformed_state_is_refused_before_touching_anything() {
    // No podman needed, but root: only then could the hook have created pins.
    if !nri_bandwidth_tests::privileged() {
        return;
    }
    let pins = nri_bandwidth_tests::PinRoot::new("hook-bad-state");
    let full = r#"{"ociVersion":"1.0.2","id":"x","status":"creating","pid":1,"bundle":"/b","annotations":{"kubernetes.io/ingress-bandwidth":"1M"}}"#;
    for input in ["", "{", &full[..full.len() / 2], "not json"] {
        let mut child =
            std::process::Command::new(nri_bandwidth_tests::workspace_bin("nri-bandwidth-hook"))
                .arg("--pin-root")
                .arg(&pins.0)
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{input:?}: {err}");
        assert!(
            err.contains("OCI state") && err.contains("expected"),
            "{err}"
        );
        assert!(!pins.0.exists(), "{input:?} touched the pin root");
    }
}
