//! Builders of runtime requests for tests of the plugin and of the daemon over a
//! socket (feature `testing`): one place that knows how a runtime fills a pod and
//! a container.

use crate::nri::proto::nri::{
    Container, ContainerState, LinuxContainer, LinuxPodSandbox, PodSandbox,
};

/// Pod `uid` (also its name) in namespace "default", its cgroup `parent`, with
/// annotations.
pub fn pod(uid: &str, parent: &str, ann: &[(&str, &str)]) -> PodSandbox {
    let mut p = PodSandbox::new();
    p.id = format!("sb-{uid}");
    p.uid = uid.into();
    p.name = uid.into();
    p.namespace = "default".into();
    p.annotations = ann
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut l = LinuxPodSandbox::new();
    l.cgroup_parent = parent.into();
    l.cgroups_path = format!("{parent}/sb-{uid}");
    p.linux = Some(l).into();
    p
}

/// A running container `name` of `pod`, its cgroup below the pod's.
pub fn container(pod: &PodSandbox, name: &str) -> Container {
    let mut c = Container::new();
    c.id = format!("{}-{name}", pod.uid);
    c.name = name.into();
    c.pod_sandbox_id = pod.id.clone();
    c.state = ContainerState::CONTAINER_RUNNING.into();
    let mut l = LinuxContainer::new();
    l.cgroups_path = format!("{}/{}", pod.linux.cgroup_parent, c.id);
    c.linux = Some(l).into();
    c
}
