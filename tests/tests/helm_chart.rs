//! The Helm chart (charts/nri-bandwidth) rendered by the real helm, built from its
//! module with the other peers: with default values it is exactly the plain
//! manifests in examples/ (same objects, same fields), and each value changes what
//! it says and nothing else. Runs with the end-to-end switch (it needs the peers).

use std::collections::BTreeMap;
use std::process::Command;

use nri_bandwidth_tests::e2e::{self, peers, workspace};

fn helm(args: &[&str]) -> String {
    let bin = peers().join("bin/helm");
    assert!(
        bin.exists(),
        "{} is missing: run tests/e2e/build-peers.sh (make test does)",
        bin.display()
    );
    let out = Command::new(&bin)
        .args(args)
        .current_dir(workspace())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The objects of a YAML stream by (kind, name).
fn objects(text: &str) -> BTreeMap<(String, String), serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| <serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .map(|v| {
            let key = (
                v["kind"].as_str().unwrap().to_string(),
                v["metadata"]["name"].as_str().unwrap().to_string(),
            );
            (key, v)
        })
        .collect()
}

fn render(set: &[&str]) -> BTreeMap<(String, String), serde_yaml::Value> {
    let mut args = vec![
        "template",
        "nri-bandwidth",
        "charts/nri-bandwidth",
        "--namespace",
        "kube-system",
    ];
    for s in set {
        args.extend(["--set", s]);
    }
    objects(&helm(&args))
}

fn args_of(objs: &BTreeMap<(String, String), serde_yaml::Value>) -> Vec<String> {
    let ds = &objs[&("DaemonSet".to_string(), "nri-bandwidth".to_string())];
    ds["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_chart_renders_the_plain_manifests_and_its_values() {
    if !e2e::enabled() {
        return;
    }
    helm(&["lint", "charts/nri-bandwidth"]);

    let mut plain = String::new();
    for f in ["rbac.yaml", "daemonset.yaml"] {
        plain.push_str(&std::fs::read_to_string(workspace().join("examples").join(f)).unwrap());
        plain.push_str("\n---\n");
    }
    let plain = objects(&plain);
    let chart = render(&[]);
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        plain.keys().collect::<Vec<_>>(),
        "the same objects"
    );
    for (k, v) in &plain {
        assert_eq!(&chart[k], v, "{k:?} differs from examples/");
    }

    let changed = render(&[
        "strict=true",
        "watch=false",
        "metrics.enabled=false",
        "nri.index=60",
        "image.tag=9.9.9",
    ]);
    let args = args_of(&changed);
    assert!(args.contains(&"--strict".to_string()), "{args:?}");
    assert!(args.contains(&"--watch=off".to_string()), "{args:?}");
    assert!(args.contains(&"--idx=60".to_string()), "{args:?}");
    assert!(
        !args.iter().any(|a| a.starts_with("--metrics-address")),
        "{args:?}"
    );
    let ds = &changed[&("DaemonSet".to_string(), "nri-bandwidth".to_string())];
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"].as_str(), Some("localhost/nri-bandwidth:9.9.9"));
    assert!(c["ports"].is_null(), "no metrics port when metrics are off");
    assert_eq!(
        ds["spec"]["template"]["spec"]["automountServiceAccountToken"].as_bool(),
        Some(false),
        "no API token without the watch"
    );
    assert!(
        !changed.keys().any(|(kind, _)| kind == "ClusterRole"),
        "no API rights without the watch"
    );
    assert!(ds["spec"]["template"]["spec"]["hostNetwork"].is_null());

    let senders = render(&["senders.enabled=true", "senders.port=9200"]);
    let args = args_of(&senders);
    assert!(args.contains(&"--sender-scope=/".to_string()), "{args:?}");
    assert!(args.contains(&"--share-port=9200".to_string()), "{args:?}");
    let spec = &senders[&("DaemonSet".to_string(), "nri-bandwidth".to_string())]["spec"]["template"]
        ["spec"];
    assert_eq!(
        spec["hostNetwork"].as_bool(),
        Some(true),
        "the exchange is reached at the node's address"
    );
    assert!(
        args.contains(&"--share-key-file=/etc/nri-bandwidth/share-key/key".to_string()),
        "{args:?}"
    );
    // The key comes from a Secret the chart creates with a random key, mounted
    // optionally (a missing Secret never keeps the daemon from starting).
    let secret = &senders[&("Secret".to_string(), "nri-bandwidth-share-key".to_string())];
    let key = secret["data"]["key"].as_str().expect("a key");
    assert_eq!(key.len(), 64, "48 random characters, base64: {key}");
    let vols = spec["volumes"].as_sequence().unwrap();
    let vol = vols
        .iter()
        .find(|v| v["name"].as_str() == Some("share-key"))
        .expect("the key's volume");
    assert_eq!(
        vol["secret"]["secretName"].as_str(),
        Some("nri-bandwidth-share-key")
    );
    assert_eq!(vol["secret"]["optional"].as_bool(), Some(true));
    let mounts = spec["containers"][0]["volumeMounts"].as_sequence().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["name"].as_str() == Some("share-key")
                && m["mountPath"].as_str() == Some("/etc/nri-bandwidth/share-key"))
    );
    let own = render(&[
        "senders.enabled=true",
        "senders.key.create=false",
        "senders.key.secret=mine",
    ]);
    assert!(
        !own.keys().any(|(kind, _)| kind == "Secret"),
        "no Secret when the operator brings one"
    );
    let spec =
        &own[&("DaemonSet".to_string(), "nri-bandwidth".to_string())]["spec"]["template"]["spec"];
    assert!(
        spec["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"].as_str() == Some("mine"))
    );
    let scoped = render(&["senders.enabled=true", "senders.scope=/kubepods"]);
    let args = args_of(&scoped);
    assert!(
        args.contains(&"--sender-scope=/kubepods".to_string()),
        "{args:?}"
    );
}
