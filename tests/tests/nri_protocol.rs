//! The plugin side of NRI against the tests library's fake runtime over a socket pair:
//! the multiplexer, ttrpc on both logical connections, registration, Configure,
//! chunked Synchronize, dedicated event RPCs and StateChange, strict refusals, and
//! UNIMPLEMENTED for methods we do not serve. No root needed (the limiter is a fake);
//! the real containerd runs in the e2e suite.

use std::sync::Arc;
use std::time::Duration;

use nri_bandwidth_core::policy::Config;
use nri_bandwidth_core::store::fake::FakeStore;
use nri_bandwidth_tests::fake_runtime::{FakeRuntime, ctx, pod};
use nri_plugin::metrics::Metrics;
use nri_plugin::nri::connection::{self, Identity};
use nri_plugin::nri::proto::nri::*;
use nri_plugin::nri::service::PluginService;
use nri_plugin::plugin::BandwidthPlugin;

/// The plugin in-process with a fake limiter, and the runtime talking to it.
struct Harness {
    runtime: FakeRuntime,
    limits: Arc<BandwidthPlugin<FakeStore>>,
}

async fn start(strict: bool) -> Harness {
    let (plugin_end, runtime_end) = tokio::net::UnixStream::pair().unwrap();
    let limits = Arc::new(BandwidthPlugin::new(FakeStore::new(), Default::default()));
    let handler = limits.clone();
    let base = Config {
        strict,
        metrics_address: None,
    };
    let service = Arc::new(PluginService::new(
        handler as Arc<dyn nri_plugin::nri::Handler>,
        Arc::new(Metrics::default()),
        base,
    ));
    let id = Identity {
        name: "bandwidth".into(),
        idx: "50".into(),
    };
    tokio::spawn(async move { connection::serve(plugin_end, service, &id).await });

    Harness {
        runtime: FakeRuntime::start(runtime_end).await.unwrap(),
        limits,
    }
}

#[tokio::test]
async fn registers_configures_and_subscribes_only_to_what_it_needs() {
    let h = start(false).await;
    let mut req = ConfigureRequest::new();
    req.runtime_name = "containerd".into();
    req.runtime_version = "v2.1.4".into();
    let resp = h.runtime.client.configure(ctx(), &req).await.unwrap();
    assert_eq!(resp.events, 0x1 | 0x4 | 0x8 | 0x10 | 0x20 | 0x400);
    h.runtime.wait_registered(Duration::from_secs(1)).await;
    assert_eq!(
        h.runtime.registered.plugins(),
        vec![("bandwidth".to_string(), "50".to_string())]
    );
}

#[tokio::test]
async fn synchronize_in_chunks_larger_than_a_frame_then_events() {
    let h = start(false).await;
    // 200 pods with long annotations: well over 4096 bytes per message.
    let big = "x".repeat(300);
    let pods: Vec<PodSandbox> = (0..200)
        .map(|i| {
            pod(
                &format!("p{i}"),
                &[("kubernetes.io/egress-bandwidth", "10M"), ("note", &big)],
            )
        })
        .collect();
    let mut first = SynchronizeRequest::new();
    first.pods = pods[..100].to_vec();
    first.more = true;
    assert!(
        h.runtime
            .client
            .synchronize(ctx(), &first)
            .await
            .unwrap()
            .more,
        "a more=true chunk must be answered more=true"
    );
    assert!(h.limits.store().limits().is_empty());
    let mut last = SynchronizeRequest::new();
    last.pods = pods[100..].to_vec();
    assert!(
        !h.runtime
            .client
            .synchronize(ctx(), &last)
            .await
            .unwrap()
            .more
    );
    assert_eq!(h.limits.store().limits().len(), 200);

    // A dedicated RPC (NRI v0.12+) and the StateChange form (older runtimes).
    let mut run = RunPodSandboxRequest::new();
    run.pod = Some(pod("new", &[("kubernetes.io/ingress-bandwidth", "5M")])).into();
    h.runtime.client.run_pod_sandbox(ctx(), &run).await.unwrap();
    let mut ev = StateChangeEvent::new();
    ev.event = Event::RUN_POD_SANDBOX.into();
    ev.pod = Some(pod("old", &[("kubernetes.io/ingress-bandwidth", "6M")])).into();
    h.runtime.client.state_change(ctx(), &ev).await.unwrap();
    let s = h.limits.store();
    let ingress = |p: &str| s.get(p).unwrap().0.ingress.unwrap().bits_per_sec();
    assert_eq!(ingress("/kubepods/podnew"), 5_000_000);
    assert_eq!(ingress("/kubepods/podold"), 6_000_000);
}

#[tokio::test]
async fn strict_mode_refuses_a_pod_with_a_clear_message() {
    let h = start(true).await;
    let mut run = RunPodSandboxRequest::new();
    run.pod = Some(pod("bad", &[("kubernetes.io/ingress-bandwidth", "10Mbps")])).into();
    let err = h
        .runtime
        .client
        .run_pod_sandbox(ctx(), &run)
        .await
        .unwrap_err();
    let ttrpc::Error::RpcStatus(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(status.code(), ttrpc::Code::FAILED_PRECONDITION);
    assert!(
        status.message().contains("default/bad") && status.message().contains("10Mbps"),
        "{}",
        status.message()
    );

    // Fail open without strict: same pod starts, unlimited.
    let h = start(false).await;
    h.runtime.client.run_pod_sandbox(ctx(), &run).await.unwrap();
    assert!(h.limits.store().limits().is_empty());
}

#[tokio::test]
async fn methods_we_do_not_serve_answer_unimplemented() {
    // A v0.12 runtime falls back to StateChange only on UNIMPLEMENTED; NOT_FOUND
    // (the generated default) would fail every pod.
    let h = start(false).await;
    for method in [
        "UpdateContainer",
        "PostStartContainer",
        "StopPodSandbox",
        "UpdatePodSandbox",
    ] {
        let err = h.runtime.call_by_name(method).await.unwrap_err();
        let ttrpc::Error::RpcStatus(status) = err else {
            panic!("{method}: {err:?}")
        };
        assert_eq!(status.code(), ttrpc::Code::UNIMPLEMENTED, "{method}");
    }
}

#[tokio::test]
async fn every_method_we_declare_is_implemented() {
    // The generated default answers NOT_FOUND, which fails pods on v0.12 runtimes:
    // a declared method that was not implemented must not slip through.
    let h = start(false).await;
    for method in [
        "Configure",
        "Synchronize",
        "Shutdown",
        "RunPodSandbox",
        "CreateContainer",
        "PostCreateContainer",
        "StartContainer",
        "RemoveContainer",
        "RemovePodSandbox",
        "StateChange",
    ] {
        if let Err(e) = h.runtime.call_by_name(method).await {
            panic!("{method} with an empty request failed: {e:?}");
        }
    }
}
