//! The cluster watch, for sender-side ingress across nodes: every pod of the
//! cluster with an ingress limit on another node, its addresses and its node's
//! share-exchange address, kept in the agent's [`Directory`]. Pods of this node
//! are NRI's (their addresses come with the sandbox); host-network pods share
//! their node's address, so pacing toward it would pace everything else too, and
//! pods that finished have given their addresses back: both are left out.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::{Api, Client};
use nri_bandwidth_core::annotations;
use nri_bandwidth_core::shares::agent::{Directory, RemotePod};

use super::Change;

/// The addresses of `p` to pace toward, with its limit and node, if it is a
/// limited pod of another node (`own`) whose node exchanges shares on `port`.
pub fn remote_entries(p: &Pod, own: &str, port: u16) -> Vec<(IpAddr, RemotePod)> {
    let (Some(spec), Some(status)) = (p.spec.as_ref(), p.status.as_ref()) else {
        return Vec::new();
    };
    let Some(node_name) = spec.node_name.as_deref().filter(|n| *n != own) else {
        return Vec::new();
    };
    let finished = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
    if spec.host_network == Some(true) || finished {
        return Vec::new();
    }
    let Some(rate) = annotations::pod(&super::annotations(p))
        .limit
        .and_then(|l| l.ingress)
        .map(|r| r.bytes_per_sec())
    else {
        return Vec::new();
    };
    let Some(host) = status.host_ip.as_deref().and_then(|h| h.parse().ok()) else {
        return Vec::new();
    };
    let node = SocketAddr::new(host, port);
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|a| a.ip.parse().ok())
        .collect();
    if ips.is_empty()
        && let Some(ip) = status.pod_ip.as_deref().and_then(|i| i.parse().ok())
    {
        ips.push(ip);
    }
    let node_name: std::sync::Arc<str> = node_name.into();
    ips.into_iter()
        .filter(|ip| *ip != host)
        .map(|ip| {
            let node_name = node_name.clone();
            (
                ip,
                RemotePod {
                    rate,
                    node,
                    node_name,
                },
            )
        })
        .collect()
}

/// The directory's remote pods by pod uid, so a changed or deleted pod takes
/// exactly its own addresses along (an address reused by a newer pod stays).
#[derive(Default)]
pub struct Tracker {
    by_uid: HashMap<String, Vec<IpAddr>>,
    owner: HashMap<IpAddr, String>,
}

impl Tracker {
    /// `uid` now has `entries` (none: it is gone or no longer limited).
    pub fn set(&mut self, dir: &mut Directory, uid: &str, entries: Vec<(IpAddr, RemotePod)>) {
        if let Some(old) = self.by_uid.remove(uid) {
            for ip in old {
                if self.owner.get(&ip).is_some_and(|o| o == uid) {
                    self.owner.remove(&ip);
                    dir.remote.remove(&ip);
                }
            }
        }
        if entries.is_empty() {
            return;
        }
        let ips = entries.iter().map(|(ip, _)| *ip).collect();
        for (ip, pod) in entries {
            self.owner.insert(ip, uid.to_string());
            dir.remote.insert(ip, pod);
        }
        self.by_uid.insert(uid.to_string(), ips);
    }

    /// After a full list: pods not in it are gone.
    pub fn keep_only(&mut self, dir: &mut Directory, listed: &HashSet<String>) {
        let gone: Vec<String> = self
            .by_uid
            .keys()
            .filter(|u| !listed.contains(*u))
            .cloned()
            .collect();
        for uid in gone {
            self.set(dir, &uid, Vec::new());
        }
        dir.ready = true;
    }
}

/// Runs until the process ends.
pub async fn run(client: Client, own: String, port: u16, dir: Arc<Mutex<Directory>>) {
    let api: Api<Pod> = Api::all(client);
    let mut changes = super::changes(api, watcher::Config::default(), "cluster watch").boxed();
    let mut tracker = Tracker::default();
    log::info!("cluster watch on: limited pods of other nodes, for this node's senders");
    while let Some(c) = changes.next().await {
        let (uid, entries) = match c {
            Change::Listed(uids) => {
                let mut d = dir.lock().unwrap_or_else(|e| e.into_inner());
                tracker.keep_only(&mut d, &uids);
                log::info!(
                    "cluster watch: {} address(es) of limited pods on other nodes",
                    d.remote.len()
                );
                continue;
            }
            Change::Seen(p) => (p.metadata.uid.clone(), remote_entries(&p, &own, port)),
            Change::Gone(p) => (p.metadata.uid.clone(), Vec::new()),
        };
        if let Some(uid) = uid {
            let mut d = dir.lock().unwrap_or_else(|e| e.into_inner());
            tracker.set(&mut d, &uid, entries);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodIP, PodSpec, PodStatus};
    use kube::api::ObjectMeta;

    fn pod(node: &str, ips: &[&str], ann: Option<(&str, &str)>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some("u1".into()),
                annotations: ann.map(|(k, v)| [(k.to_string(), v.to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                host_ip: Some("192.168.5.2".into()),
                pod_ips: Some(ips.iter().map(|i| PodIP { ip: i.to_string() }).collect()),
                phase: Some("Running".into()),
                ..PodStatus::default()
            }),
        }
    }

    const ING: (&str, &str) = ("kubernetes.io/ingress-bandwidth", "8M");

    #[test]
    fn a_limited_pod_of_another_node_is_paced_toward_at_its_node() {
        let e = remote_entries(&pod("b", &["10.2.0.5", "fd00:2::5"], Some(ING)), "a", 9106);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0, "10.2.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(e[0].1.rate, 1_000_000);
        assert_eq!(e[0].1.node, "192.168.5.2:9106".parse().unwrap());
        assert_eq!(&*e[0].1.node_name, "b");
    }

    #[test]
    fn own_unlimited_host_network_finished_and_malformed_pods_are_left_out() {
        assert!(remote_entries(&pod("a", &["10.2.0.5"], Some(ING)), "a", 1).is_empty());
        assert!(remote_entries(&pod("b", &["10.2.0.5"], None), "a", 1).is_empty());
        let bad = ("kubernetes.io/ingress-bandwidth", "fast");
        assert!(remote_entries(&pod("b", &["10.2.0.5"], Some(bad)), "a", 1).is_empty());
        let mut hn = pod("b", &["192.168.5.2"], Some(ING));
        hn.spec.as_mut().unwrap().host_network = Some(true);
        assert!(remote_entries(&hn, "a", 1).is_empty());
        let mut done = pod("b", &["10.2.0.5"], Some(ING));
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(remote_entries(&done, "a", 1).is_empty());
        // Not scheduled yet, or no address yet.
        let mut pending = pod("b", &[], Some(ING));
        pending.spec.as_mut().unwrap().node_name = None;
        assert!(remote_entries(&pending, "a", 1).is_empty());
        assert!(remote_entries(&pod("b", &[], Some(ING)), "a", 1).is_empty());
    }

    #[test]
    fn a_reused_address_stays_with_the_newer_pod() {
        let mut dir = Directory::default();
        let mut t = Tracker::default();
        let rp = |rate| RemotePod {
            rate,
            node: "192.168.5.2:1".parse().unwrap(),
            node_name: "b".into(),
        };
        let ip: IpAddr = "10.2.0.5".parse().unwrap();
        t.set(&mut dir, "old", vec![(ip, rp(1))]);
        t.set(&mut dir, "new", vec![(ip, rp(2))]);
        t.set(&mut dir, "old", Vec::new()); // the old pod's deletion comes late
        assert_eq!(dir.remote[&ip].rate, 2);
        assert!(!dir.ready);
        t.keep_only(&mut dir, &HashSet::new());
        assert!(dir.remote.is_empty());
        assert!(dir.ready);
    }
}
