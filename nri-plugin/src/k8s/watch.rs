//! The pod watch: every pod on this node (`spec.nodeName` field selector), its
//! bandwidth annotations handed to the plugin as they change. The watcher lists
//! again by itself after an expired watch (410 Gone) and after errors (with
//! backoff); each list hands every pod over again, so a change made while the
//! daemon was away or the watch was down is applied once it is back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use nri_bandwidth_core::store::Store;

use crate::plugin::BandwidthPlugin;

/// The field selector of this node's pods.
pub fn node_selector(node: &str) -> String {
    format!("spec.nodeName={node}")
}

fn annotations(p: &Pod) -> HashMap<String, String> {
    p.metadata
        .annotations
        .as_ref()
        .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// Runs until the process ends.
pub async fn run<S: Store>(client: Client, node: String, plugin: Arc<BandwidthPlugin<S>>) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&node_selector(&node));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut failing = false;
    // The uids of a (re)list in progress: views of pods not in it are stale.
    let mut listing: Option<HashSet<String>> = None;
    log::info!("pod watch on: pods of node {node}");
    while let Some(ev) = events.next().await {
        let (pod, gone) = match ev {
            Ok(watcher::Event::Apply(p)) => (p, false),
            Ok(watcher::Event::InitApply(p)) => {
                if let (Some(l), Some(uid)) = (listing.as_mut(), p.metadata.uid.as_ref()) {
                    l.insert(uid.clone());
                }
                (p, false)
            }
            Ok(watcher::Event::Delete(p)) => (p, true),
            Ok(watcher::Event::Init) => {
                listing = Some(HashSet::new());
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(uids) = listing.take() {
                    plugin.pods_relisted(&uids);
                }
                if failing {
                    log::info!("pod watch: listing again succeeded");
                }
                failing = false;
                continue;
            }
            Err(e) => {
                if failing {
                    log::debug!("pod watch: {e}");
                } else {
                    log::warn!("pod watch: {e}; retrying with backoff");
                }
                failing = true;
                continue;
            }
        };
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        let ann = annotations(&pod);
        log::debug!(
            "pod watch: {}/{} ({uid}) {}, {} bandwidth key(s)",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or(""),
            if gone { "deleted" } else { "seen" },
            nri_bandwidth_core::annotations::bandwidth_keys(&ann).len()
        );
        let p = plugin.clone();
        // The plugin may wait on the pin-root lock: off the async workers.
        let done = tokio::task::spawn_blocking(move || {
            if gone {
                p.pod_deleted(&uid);
            } else {
                p.annotations_changed(&uid, &ann);
            }
        })
        .await;
        if let Err(e) = done {
            log::error!("pod watch: applying a change failed: {e}");
        }
    }
}
