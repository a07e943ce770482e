//! A synthetic NRI runtime for scale: launches the real `nri-bandwidth` binary the
//! way containerd launches plugins (a connected socket as fd `NRI_PLUGIN_SOCKET`),
//! registers it, then drives N pods through RunPodSandbox and RemovePodSandbox,
//! each on a real cgroup with a real limit attached and pinned. Reports the
//! runtime-side latency of every call (what the runtime waits) and the plugin's
//! resident memory with N pods limited, as JSON lines on stdout.
//!
//! usage: nri-synth [PODS...]   (default: 10 100 1000; needs root)

use std::os::fd::IntoRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nri_bandwidth_core::cgroup::CgroupFs;
use nri_bandwidth_testkit::quantile;
use nri_bandwidth_tests::fake_runtime::{FakeRuntime, ctx};
use nri_plugin::nri::proto::nri::*;
use serde::Serialize;

#[derive(Serialize)]
struct Row {
    pods: usize,
    /// RunPodSandbox as the runtime waits for it (attach + pin included), ms.
    run_p50_ms: f64,
    run_p99_ms: f64,
    remove_p50_ms: f64,
    remove_p99_ms: f64,
    /// The plugin's resident set with all pods limited, and its peak, KiB.
    rss_kib: u64,
    rss_peak_kib: u64,
    /// RSS before the first pod, KiB.
    rss_idle_kib: u64,
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Pod `i` of the run, on its own cgroup, limited by the annotation.
fn pod(i: usize, cgroup: &str) -> PodSandbox {
    let mut p = nri_bandwidth_tests::fake_runtime::pod(
        &format!("synth-uid-{i}"),
        &[("kubernetes.io/egress-bandwidth", "50M")],
    );
    p.id = format!("synth-sb-{i}");
    p.name = format!("synth-{i}");
    p.namespace = "bench".into();
    p.linux.mut_or_insert_default().cgroup_parent = cgroup.into();
    p
}

async fn one(n: usize, cgfs: &CgroupFs) -> anyhow::Result<Row> {
    let pins = nri_bandwidth_tests::test_pin_root(&format!("synth{n}"));
    let base = format!("/nri-bandwidth-test/synth-{}-{n}", std::process::id());
    let (plugin_end, runtime_end) = std::os::unix::net::UnixStream::pair()?;
    let plugin_fd = plugin_end.into_raw_fd();
    let log = std::env::temp_dir().join(format!("nri-synth-{n}.log"));
    let mut cmd = Command::new(nri_bandwidth_tests::workspace_bin("nri-bandwidth"));
    cmd.arg("--pin-root")
        .arg(&pins)
        .arg("--log-file")
        .arg(&log)
        .env("NRI_PLUGIN_SOCKET", "3")
        .env("NRI_PLUGIN_NAME", "bandwidth")
        .env("NRI_PLUGIN_IDX", "50")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: dup2 is async-signal-safe; fd 3 becomes the plugin's socket without
    // CLOEXEC, as a runtime hands it over.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(plugin_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    // SAFETY: our copy of the plugin's end is no longer needed here.
    unsafe { libc::close(plugin_fd) };
    let pid = child.id();

    runtime_end.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(runtime_end)?;
    let runtime = FakeRuntime::start(stream).await?;
    anyhow::ensure!(
        runtime.wait_registered(Duration::from_secs(10)).await,
        "the plugin did not register (log: {})",
        log.display()
    );
    let client = &runtime.client;
    let mut cfg = ConfigureRequest::new();
    cfg.runtime_name = "nri-synth".into();
    cfg.runtime_version = "v2.4.2".into();
    client.configure(ctx(), &cfg).await?;
    client
        .synchronize(ctx(), &SynchronizeRequest::new())
        .await?;
    let rss_idle_kib = status_kib(pid, "VmRSS:");

    let mut dirs = Vec::new();
    let (mut run, mut remove) = (Vec::new(), Vec::new());
    let mut outcome = Ok(());
    for i in 0..n {
        let rel = format!("{base}/pod{i}");
        match cgfs.create(&rel) {
            Ok(d) => dirs.push(d),
            Err(e) => {
                outcome = Err(anyhow::anyhow!("creating {rel}: {e}"));
                break;
            }
        }
        let mut req = RunPodSandboxRequest::new();
        req.pod = Some(pod(i, &rel)).into();
        let t = Instant::now();
        if let Err(e) = client.run_pod_sandbox(ctx(), &req).await {
            outcome = Err(anyhow::anyhow!("RunPodSandbox {i}: {e}"));
            break;
        }
        run.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let rss_kib = status_kib(pid, "VmRSS:");
    let rss_peak_kib = status_kib(pid, "VmHWM:");
    if outcome.is_ok() {
        for (i, _) in dirs.iter().enumerate() {
            let mut req = RemovePodSandboxRequest::new();
            req.pod = Some(pod(i, &format!("{base}/pod{i}"))).into();
            let t = Instant::now();
            if let Err(e) = client.remove_pod_sandbox(ctx(), &req).await {
                outcome = Err(anyhow::anyhow!("RemovePodSandbox {i}: {e}"));
                break;
            }
            remove.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    for d in dirs.iter().rev() {
        let _ = cgfs.remove(d);
    }
    if let Ok(d) = cgfs.resolve(&base) {
        nri_bandwidth_testkit::testbed::remove_test_cgroup(&d);
    }
    let _ = nri_bandwidth_core::datapath::remove_tree(&pins);
    let _ = std::fs::remove_file(&log);
    outcome?;
    Ok(Row {
        pods: n,
        run_p50_ms: quantile(&run, 0.5),
        run_p99_ms: quantile(&run, 0.99),
        remove_p50_ms: quantile(&remove, 0.5),
        remove_p99_ms: quantile(&remove, 0.99),
        rss_kib,
        rss_peak_kib,
        rss_idle_kib,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("pod counts must be numbers: {e}"))?;
    let counts = if counts.is_empty() {
        vec![10, 100, 1000]
    } else {
        counts
    };
    let cgfs = CgroupFs::detect()?;
    for n in counts {
        eprintln!("nri-synth: {n} pods");
        let row = one(n, &cgfs).await?;
        println!("{}", serde_json::to_string(&row)?);
    }
    Ok(())
}
