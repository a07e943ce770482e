//! Properties of what the daemon takes from a runtime: any bytes on the socket
//! (the multiplexer's framing), and every event it serves with any field contents.
//! Nothing panics, and no limit lands on the root, through `..`, or outside the
//! pod it belongs to. The same attacks over a real socket are in
//! tests/tests/hostile_runtime.rs.

use std::collections::HashMap;

use nri_bandwidth_core::policy::Policy;
use nri_bandwidth_core::store::fake::FakeStore;
use nri_plugin::nri::mux::Mux;
use nri_plugin::nri::proto::nri::{
    Container, ContainerState, LinuxContainer, LinuxPodSandbox, PodSandbox,
};
use nri_plugin::nri::{Event, Handler};
use nri_plugin::plugin::BandwidthPlugin;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random bytes, and random frames with plausible headers, end the mux with
    /// an error or EOF; connections see whole frames only.
    #[test]
    fn any_bytes_on_the_socket_end_cleanly(
        raw in proptest::collection::vec(any::<u8>(), 0..2000),
        frames in proptest::collection::vec((0u32..4, 0u32..6000, proptest::collection::vec(any::<u8>(), 0..64)), 0..8),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            for input in [raw, frames.iter().flat_map(|(id, len, body)| {
                let mut f = id.to_be_bytes().to_vec();
                f.extend(len.to_be_bytes());
                f.extend(body);
                f
            }).collect::<Vec<u8>>()] {
                let (trunk, mut peer) = tokio::io::duplex(1 << 16);
                let mut mux = Mux::new(trunk, &[1, 2]);
                let mut c1 = mux.take(1).unwrap();
                let _c2 = mux.take(2).unwrap();
                let _ = peer.write_all(&input).await;
                drop(peer);
                let r = tokio::time::timeout(std::time::Duration::from_secs(5), &mut mux.done).await;
                assert!(r.is_ok(), "the mux must end when the trunk ends");
                let mut rest = Vec::new();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), c1.read_to_end(&mut rest)).await;
            }
        });
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("/".into()),
        Just(".".into()),
        Just("..".into()),
        Just("/kubepods/podu1".into()),
        Just("/kubepods/podu1/ctr".into()),
        Just("/kubepods/podu1/../podS".into()),
        Just("/kubepods/podw/ctr1/../../podS".into()),
        Just("-.slice".into()),
        Just("-.slice:cri-containerd:abc".into()),
        Just("//sandbox".into()),
        Just("kubepods-burstable-podu1.slice".into()),
        "\\PC{0,40}",
        any::<String>(),
    ]
}

fn pod() -> impl Strategy<Value = PodSandbox> {
    (
        text(),
        text(),
        text(),
        text(),
        proptest::collection::vec((text(), text()), 0..4),
        any::<bool>(),
    )
        .prop_map(|(uid, parent, path, name, mut ann, bandwidth)| {
            if bandwidth {
                ann.push(("kubernetes.io/ingress-bandwidth".into(), "10M".into()));
                ann.push(("ingress-bandwidth.nri-bandwidth.io/web".into(), "5M".into()));
            }
            let mut p = PodSandbox::new();
            p.id = format!("sb-{uid}");
            p.uid = uid;
            p.name = name;
            p.namespace = "ns".into();
            p.annotations = ann.into_iter().collect::<HashMap<_, _>>();
            let mut l = LinuxPodSandbox::new();
            l.cgroup_parent = parent;
            l.cgroups_path = path;
            p.linux = Some(l).into();
            p
        })
}

fn container() -> impl Strategy<Value = Container> {
    (text(), text(), prop_oneof![Just("web".to_string()), text()]).prop_map(|(id, path, name)| {
        let mut c = Container::new();
        c.id = id;
        c.name = name;
        c.state = ContainerState::CONTAINER_RUNNING.into();
        let mut l = LinuxContainer::new();
        l.cgroups_path = path;
        c.linux = Some(l).into();
        c
    })
}

proptest! {
    #[test]
    fn every_event_with_any_content_limits_only_plain_paths(
        pods in proptest::collection::vec(pod(), 1..4),
        containers in proptest::collection::vec(container(), 0..4),
        strict in any::<bool>(),
    ) {
        let h = BandwidthPlugin::new(FakeStore::new(), Policy { strict });
        for p in &pods {
            let _ = Event::RunPodSandbox(p.clone()).dispatch(&h);
            for c in &containers {
                for ev in [
                    Event::CreateContainer(p.clone(), c.clone()),
                    Event::PostCreateContainer(p.clone(), c.clone()),
                    Event::StartContainer(p.clone(), c.clone()),
                ] {
                    let _ = ev.dispatch(&h);
                }
            }
        }
        h.synchronize(&pods, &containers);
        for (path, _, _) in h.store().limits() {
            prop_assert!(!path.trim_matches('/').is_empty(), "root limited: {path:?}");
            prop_assert!(!path.split(['/', ':']).any(|p| p == ".." || p == "."), "{path:?}");
        }
        for p in &pods {
            let _ = Event::RemovePodSandbox(p.clone()).dispatch(&h);
        }
        for c in &containers {
            let _ = Event::RemoveContainer(pods[0].clone(), c.clone()).dispatch(&h);
        }
    }
}
