//! The ways to deploy nri-bandwidth, checked so they cannot rot: every example in
//! examples/ parses and names flags, paths, keys and capabilities the binaries
//! really have; the hooks.d JSON selects exactly the bandwidth keys; `make install`
//! stages a tree that `systemd-analyze verify` accepts; the unit's capability set
//! is enough for the limiter (and one less is not); the DaemonSet's image runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use nri_bandwidth_core::annotations;
use nri_bandwidth_core::datapath::DEFAULT_PIN_ROOT;
use nri_bandwidth_core::rate::{ByteSize, Rate};
use nri_bandwidth_tests::e2e::workspace;
use nri_bandwidth_tests::workspace_bin;

const DEFAULT_SOCKET: &str = "/var/run/nri/nri.sock";

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The unit's capability bounding set, without the CAP_ prefix.
fn unit_capabilities() -> BTreeSet<String> {
    let unit = read(&workspace().join("systemd/nri-bandwidth.service"));
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet=");
    line.split_whitespace()
        .map(|c| c.strip_prefix("CAP_").expect("CAP_ names").to_string())
        .collect()
}

fn workspace_version() -> String {
    let cargo: toml::Value = toml::from_str(&read(&workspace().join("Cargo.toml"))).unwrap();
    cargo["workspace"]["package"]["version"]
        .as_str()
        .unwrap()
        .to_string()
}

fn check_daemonset(path: &Path, doc: &serde_yaml::Value) {
    let spec = &doc["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    let where_ = path.display();

    assert_eq!(
        c["image"].as_str(),
        Some(format!("localhost/nri-bandwidth:{}", workspace_version()).as_str()),
        "{where_}: the image `make image` builds"
    );

    // Every flag exists on the daemon; the socket is the one the runtime examples use.
    let help = ok(Command::new(workspace_bin("nri-bandwidth")).arg("--help"));
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let mut socket = DEFAULT_SOCKET.to_string();
    for a in &args {
        let (flag, value) = a.split_once('=').unwrap_or((a, ""));
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{where_}: nri-bandwidth has no {flag}"
        );
        match flag {
            "--socket" => socket = value.into(),
            "--idx" => assert!(
                value.len() == 2 && value.bytes().all(|b| b.is_ascii_digit()),
                "{where_}: NRI plugin index {value:?} must be two digits"
            ),
            _ => {}
        }
    }
    assert_eq!(socket, DEFAULT_SOCKET);

    // The pod watch learns its node from the downward API.
    let node_env = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .unwrap_or_else(|| panic!("{where_}: no NODE_NAME"));
    assert_eq!(
        node_env["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("spec.nodeName"),
        "{where_}"
    );

    // Each host path is mounted at the same path, so the binary's defaults hold.
    let volumes = spec["volumes"].as_sequence().unwrap();
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let mounted = |host: &str| -> bool {
        volumes.iter().any(|v| {
            v["hostPath"]["path"].as_str() == Some(host)
                && mounts
                    .iter()
                    .any(|m| m["name"] == v["name"] && m["mountPath"].as_str() == Some(host))
        })
    };
    let pin_parent = Path::new(DEFAULT_PIN_ROOT).parent().unwrap();
    assert!(mounted(pin_parent.to_str().unwrap()), "{where_}: bpffs");
    assert!(mounted("/sys/fs/cgroup"), "{where_}: cgroupfs");
    assert!(
        mounted(Path::new(&socket).parent().unwrap().to_str().unwrap()),
        "{where_}: the NRI socket's directory"
    );

    // Minimal privileges: not privileged, and exactly the unit's capabilities,
    // which tests below prove sufficient.
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"].as_bool(), Some(false), "{where_}");
    let added: BTreeSet<String> = sc["capabilities"]["add"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(added, unit_capabilities(), "{where_}: capabilities");
    assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"));
}

/// Every document of a YAML stream.
fn yaml_docs(path: &Path, text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| {
            serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

/// The role grants what the pod watch and Events need and nothing more, and is
/// bound to the account the DaemonSet runs as.
fn check_rbac(path: &Path, docs: &[serde_yaml::Value]) {
    let where_ = path.display();
    let of = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("{where_}: no {kind}"))
    };
    let (sa, role, binding) = (
        of("ServiceAccount"),
        of("ClusterRole"),
        of("ClusterRoleBinding"),
    );
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_sequence().unwrap() {
        for group in rule["apiGroups"].as_sequence().unwrap() {
            for res in rule["resources"].as_sequence().unwrap() {
                for verb in rule["verbs"].as_sequence().unwrap() {
                    granted.insert(format!(
                        "{}/{}:{}",
                        group.as_str().unwrap(),
                        res.as_str().unwrap(),
                        verb.as_str().unwrap()
                    ));
                }
            }
        }
    }
    let want: BTreeSet<String> = [
        "/pods:get",
        "/pods:list",
        "/pods:watch",
        "events.k8s.io/events:create",
        "events.k8s.io/events:patch",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        granted, want,
        "{where_}: exactly the watch's and Events' rights"
    );
    assert_eq!(
        binding["roleRef"]["name"], role["metadata"]["name"],
        "{where_}"
    );
    let subject = &binding["subjects"][0];
    assert_eq!(subject["name"], sa["metadata"]["name"], "{where_}");
    assert_eq!(
        subject["namespace"], sa["metadata"]["namespace"],
        "{where_}"
    );
    let ds = yaml_docs(path, &read(&path.with_file_name("daemonset.yaml")));
    let ds_spec = &ds[0]["spec"]["template"]["spec"];
    assert_eq!(
        ds_spec["serviceAccountName"], sa["metadata"]["name"],
        "{where_}"
    );
    assert_eq!(
        ds[0]["metadata"]["namespace"], sa["metadata"]["namespace"],
        "{where_}"
    );
}

/// Every bandwidth annotation parses, asks for something, and a container key
/// names a container of the pod.
fn check_pod(path: &Path, doc: &serde_yaml::Value) {
    let where_ = path.display();
    let ann: std::collections::HashMap<String, String> =
        serde_yaml::from_value(doc["metadata"]["annotations"].clone()).unwrap();
    assert!(
        annotations::mentions_bandwidth(&ann),
        "{where_}: no bandwidth key"
    );
    let names: Vec<&str> = doc["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for (k, v) in &ann {
        let container_key = [
            annotations::CONTAINER_INGRESS_PREFIX,
            annotations::CONTAINER_EGRESS_PREFIX,
            annotations::CONTAINER_BURST_PREFIX,
        ]
        .iter()
        .find_map(|p| k.strip_prefix(p));
        if let Some(name) = container_key {
            assert!(names.contains(&name), "{where_}: {k} names no container");
        } else {
            assert!(
                annotations::ALL_POD_KEYS.contains(&k.as_str()),
                "{where_}: {k} is not a key nri-bandwidth reads"
            );
        }
        let parsed = if k.contains("burst") {
            ByteSize::parse(v).map(|_| ())
        } else {
            Rate::parse(v).map(|_| ())
        };
        parsed.unwrap_or_else(|e| panic!("{where_}: {k}={v}: {e}"));
    }
    let pod = annotations::pod(&ann);
    let any_container = names
        .iter()
        .any(|n| annotations::container(&ann, n).limit.is_some());
    assert!(pod.bad.is_empty());
    assert!(
        pod.limit.is_some() || any_container,
        "{where_}: asks for no limit"
    );
}

fn check_runtime_toml(path: &Path, doc: &toml::Value) {
    let where_ = path.display();
    if let Some(crio) = doc.get("crio") {
        let nri = &crio["nri"];
        assert_eq!(nri["enable_nri"].as_bool(), Some(true), "{where_}");
        assert_eq!(nri["nri_listen"].as_str(), Some(DEFAULT_SOCKET), "{where_}");
        return;
    }
    let nri = &doc["plugins"]["io.containerd.nri.v1.nri"];
    assert_eq!(nri["disable"].as_bool(), Some(false), "{where_}");
    assert_eq!(
        nri["disable_connections"].as_bool(),
        Some(false),
        "{where_}"
    );
    assert_eq!(
        nri["socket_path"].as_str(),
        Some(DEFAULT_SOCKET),
        "{where_}"
    );
    // containerd 1.7 reads config version 2, 2.x version 3.
    let want = if path.to_string_lossy().contains("1.7") {
        2
    } else {
        3
    };
    assert_eq!(doc["version"].as_integer(), Some(want), "{where_}");
}

/// `make install` into a fresh DESTDIR from the binaries the tests use.
fn staged_install(tag: &str) -> PathBuf {
    let dest = std::env::temp_dir().join(format!("nri-bw-install-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dest);
    let build_dir = workspace_bin("bwctl").parent().unwrap().to_path_buf();
    ok(Command::new("make")
        .current_dir(workspace())
        .args(["-s", "install"])
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("BUILD_DIR={}", build_dir.display())));
    dest
}

#[test]
fn examples_parse_and_match_the_binaries() {
    let dir = workspace().join("examples");
    let mut seen = BTreeSet::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = read(&path);
        match path.extension().and_then(|x| x.to_str()) {
            Some("yaml") => {
                let docs = yaml_docs(&path, &text);
                if docs.iter().any(|d| d["kind"] == "ClusterRole") {
                    check_rbac(&path, &docs);
                } else {
                    for doc in &docs {
                        match doc["kind"].as_str() {
                            Some("DaemonSet") => check_daemonset(&path, doc),
                            Some("Pod") => check_pod(&path, doc),
                            other => panic!("{}: no check for kind {other:?}", path.display()),
                        }
                    }
                }
            }
            // CRI-O drop-ins are TOML named .conf.
            Some("toml") | Some("conf") => {
                let doc: toml::Value =
                    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                check_runtime_toml(&path, &doc);
            }
            Some("md") => {}
            _ => panic!(
                "{}: an example kind this test does not check",
                path.display()
            ),
        }
        assert!(
            text.contains("Verify"),
            "{}: every example says how to verify it",
            path.display()
        );
        seen.insert(name);
    }
    for want in [
        "daemonset.yaml",
        "rbac.yaml",
        "pod-bandwidth.yaml",
        "container-bandwidth.yaml",
        "burst.yaml",
        "containerd-1.7.toml",
        "containerd-2.x.toml",
        "crio-nri.conf",
        "podman.md",
    ] {
        assert!(seen.contains(want), "examples/{want} is missing");
    }
}

#[test]
fn examples_name_only_installed_paths() {
    // Absolute paths in the podman example and the unit exist after `make install`.
    let dest = staged_install("paths");
    let re = regex::Regex::new(
        r"(/usr/(local/)?(bin|share)/[A-Za-z0-9_./-]+|/etc/nri-bandwidth/[a-z.-]+)",
    )
    .unwrap();
    for file in ["examples/podman.md", "systemd/nri-bandwidth.service"] {
        let text = read(&workspace().join(file));
        for m in re.find_iter(&text) {
            let p = m.as_str().trim_end_matches(['.', '`']);
            assert!(
                dest.join(p.trim_start_matches('/')).exists(),
                "{file} names {p}, which make install does not create"
            );
        }
    }
    std::fs::remove_dir_all(&dest).unwrap();
}

#[test]
fn hooks_json_runs_only_for_bandwidth_annotations() {
    let spec: serde_json::Value =
        serde_json::from_str(&read(&workspace().join("hooks/nri-bandwidth-hook.json"))).unwrap();
    assert_eq!(spec["version"], "1.0.0");
    let path = spec["hook"]["path"].as_str().unwrap();
    assert_eq!(
        path, "/usr/local/bin/nri-bandwidth-hook",
        "make install's default"
    );
    assert!(workspace_bin("nri-bandwidth-hook").is_file());
    let stages: Vec<&str> = spec["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(stages, ["createRuntime", "poststop"]);
    let when = spec["when"]["annotations"].as_object().unwrap();
    assert_eq!(when.len(), 1, "several patterns would all have to match");
    let (key_re, value_re) = when.iter().next().unwrap();
    let key_re = regex::Regex::new(key_re).unwrap();
    let value_re = regex::Regex::new(value_re.as_str().unwrap()).unwrap();
    assert!(value_re.is_match("10M"));
    for k in [
        annotations::K8S_INGRESS,
        annotations::K8S_EGRESS,
        annotations::POD_INGRESS,
        annotations::POD_EGRESS,
        "ingress-bandwidth.nri-bandwidth.io/web",
        "egress-bandwidth.nri-bandwidth.io/web",
    ] {
        assert!(key_re.is_match(k), "{k} does not run the hook");
        let mut m = std::collections::HashMap::new();
        m.insert(k.to_string(), "1M".to_string());
        assert!(annotations::mentions_bandwidth(&m), "{k}");
    }
    for k in [
        "kubernetes.io/ingress-bandwidthX",
        "xkubernetes.io/ingress-bandwidth",
        "example.com/egress-bandwidth",
        "io.container.manager",
        // A burst alone asks for no limit.
        annotations::POD_BURST,
    ] {
        assert!(!key_re.is_match(k), "{k} runs the hook");
    }
}

#[test]
fn make_install_stages_a_tree_systemd_accepts() {
    let dest = staged_install("tree");
    for (p, mode) in [
        ("usr/local/bin/nri-bandwidth", 0o755),
        ("usr/local/bin/bwctl", 0o755),
        ("usr/local/bin/nri-bandwidth-hook", 0o755),
        ("usr/local/lib/systemd/system/nri-bandwidth.service", 0o644),
        (
            "usr/share/containers/oci/hooks.d/nri-bandwidth-hook.json",
            0o644,
        ),
        ("etc/nri-bandwidth/nri-bandwidth.conf", 0o644),
        ("usr/local/share/doc/nri-bandwidth/README.md", 0o644),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(dest.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(m.permissions().mode() & 0o777, mode, "{p}");
    }
    // The installed settings file is one the daemon accepts.
    nri_bandwidth_core::policy::Config::from_file(
        &dest.join("etc/nri-bandwidth/nri-bandwidth.conf"),
    )
    .unwrap();
    // An operator's settings survive a reinstall.
    let conf = dest.join("etc/nri-bandwidth/nri-bandwidth.conf");
    std::fs::write(&conf, "strict = true\n").unwrap();
    let build_dir = workspace_bin("bwctl").parent().unwrap().to_path_buf();
    ok(Command::new("make")
        .current_dir(workspace())
        .args(["-s", "install"])
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("BUILD_DIR={}", build_dir.display())));
    assert_eq!(read(&conf), "strict = true\n");

    // `systemd-analyze verify` resolves ExecStart= and dependencies inside the
    // root, so give it the host's own units next to ours.
    let host_units = Path::new("/usr/lib/systemd/system");
    let root_units = dest.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&root_units).unwrap();
    ok(Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", host_units.display()))
        .arg(&root_units));
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", dest.display()))
        .arg("/usr/local/lib/systemd/system/nri-bandwidth.service")
        .output()
        .expect("systemd-analyze (Debian package systemd) is installed");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Unknown or misspelt keys are only warnings: any output is a failure here.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "verify: {said}"
    );

    // The PREFIX is followed into the unit and the hook's JSON.
    let dest2 = std::env::temp_dir().join(format!("nri-bw-install-usr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dest2);
    ok(Command::new("make")
        .current_dir(workspace())
        .args(["-s", "install", "PREFIX=/usr"])
        .arg(format!("DESTDIR={}", dest2.display()))
        .arg(format!("BUILD_DIR={}", build_dir.display())));
    let unit = read(&dest2.join("usr/lib/systemd/system/nri-bandwidth.service"));
    assert!(unit.contains("ExecStart=/usr/bin/nri-bandwidth "), "{unit}");
    let hook = read(&dest2.join("usr/share/containers/oci/hooks.d/nri-bandwidth-hook.json"));
    assert!(hook.contains("\"/usr/bin/nri-bandwidth-hook\""), "{hook}");
    assert!(dest2.join("usr/bin/nri-bandwidth-hook").is_file());
    std::fs::remove_dir_all(&dest).unwrap();
    std::fs::remove_dir_all(&dest2).unwrap();
}

/// The limiter under exactly the unit's (and the DaemonSet's) capabilities: load,
/// attach, update, list, remove on a fresh pin root. Without CAP_PERFMON the
/// verifier refuses the programs, so the set is also minimal in that respect.
#[test]
fn unit_capability_set_is_enough_for_the_limiter() {
    if !nri_bandwidth_tests::privileged() {
        return;
    }
    let caps = unit_capabilities();
    let cgfs = nri_bandwidth_core::cgroup::CgroupFs::detect().unwrap();
    let rel = format!("nri-bw-caps-{}", std::process::id());
    let dir = cgfs.create(&rel).unwrap();
    let pins = nri_bandwidth_tests::PinRoot::new("caps");
    // A node has bpffs at /sys/fs/bpf from boot (systemd mounts it; the unit's
    // set cannot): as root, as at boot, when this machine has none yet.
    nri_bandwidth_core::datapath::pins::ensure(&pins.0).unwrap();
    let _ = nri_bandwidth_core::datapath::remove_tree(&pins.0);
    let bwctl = |set: &BTreeSet<String>, args: &[&str]| {
        let bounding = std::iter::once("-all".to_string())
            .chain(set.iter().map(|c| format!("+{}", c.to_lowercase())))
            .collect::<Vec<_>>()
            .join(",");
        Command::new("setpriv")
            .arg(format!("--bounding-set={bounding}"))
            .arg(workspace_bin("bwctl"))
            .arg("--pin-root")
            .arg(&pins.0)
            .args(args)
            .output()
            .unwrap()
    };
    let cg = format!("/{rel}");
    let mut results = Vec::new();
    for args in [
        &["limit", "--cgroup", &cg, "--ingress", "10M"][..],
        &[
            "limit",
            "--cgroup",
            &cg,
            "--ingress",
            "20M",
            "--egress",
            "5M",
        ][..],
        &["list"][..],
        &["unlimit", "--cgroup", &cg][..],
    ] {
        results.push(bwctl(&caps, args));
    }
    let mut fewer = caps.clone();
    fewer.remove("PERFMON");
    let _ = nri_bandwidth_core::datapath::remove_tree(&pins.0);
    let without = bwctl(&fewer, &["limit", "--cgroup", &cg, "--ingress", "10M"]);
    let _ = nri_bandwidth_core::datapath::remove_tree(&pins.0);
    cgfs.remove(&dir).unwrap();
    for r in &results {
        assert!(
            r.status.success(),
            "with {caps:?}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
    assert!(String::from_utf8_lossy(&results[2].stdout).contains("20.00 Mbit/s"));
    assert!(
        !without.status.success(),
        "bwctl worked without CAP_PERFMON: the unit could drop it"
    );
}

/// The DaemonSet's image, built by the same script `make image` uses, carries
/// every shared library its binaries need: they run in it.
#[test]
fn daemonset_image_runs_its_binaries() {
    if !nri_bandwidth_tests::e2e::enabled() {
        return;
    }
    let p = nri_bandwidth_tests::podman::Podman::new("image", &[]);
    let tar = p.dir.join("image.tar");
    let name = format!("localhost/nri-bandwidth:{}", workspace_version());
    let mut script = Command::new(workspace().join("packaging/oci-image.sh"));
    script
        .arg(&name)
        .arg(&tar)
        .arg("/usr/local/bin/nri-bandwidth");
    for b in ["nri-bandwidth", "bwctl", "nri-bandwidth-hook"] {
        script.arg(format!("{}:/usr/local/bin/{b}", workspace_bin(b).display()));
    }
    ok(&mut script);
    ok(p.cmd().arg("load").arg("-i").arg(&tar));
    // The image's own entrypoint (None), then each binary, run with --version.
    let run = |entrypoint: Option<&str>| {
        let mut c = p.cmd();
        c.args(["run", "--rm", "--network=none"]).args([
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
        ]);
        if let Some(e) = entrypoint {
            c.arg(format!("--entrypoint=/usr/local/bin/{e}"));
        }
        ok(c.arg(&name).arg("--version"))
    };
    let out = run(None);
    assert!(out.starts_with("nri-bandwidth "), "{out}");
    for b in ["bwctl", "nri-bandwidth-hook"] {
        let out = run(Some(b));
        assert!(out.starts_with(&format!("{b} ")), "{out}");
    }
}
