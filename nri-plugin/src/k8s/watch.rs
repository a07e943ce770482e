//! The pod watch: every pod on this node (`spec.nodeName` field selector), its
//! bandwidth annotations handed to the plugin as they change ([`super::changes`]
//! lists again after expiry and errors).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::{Api, Client};
use nri_bandwidth_core::store::Store;

use super::Change;
use crate::plugin::BandwidthPlugin;

/// The field selector of this node's pods.
pub fn node_selector(node: &str) -> String {
    format!("spec.nodeName={node}")
}

/// Runs until the process ends.
pub async fn run<S: Store>(client: Client, node: String, plugin: Arc<BandwidthPlugin<S>>) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&node_selector(&node));
    let mut changes = super::changes(api, config, "pod watch").boxed();
    log::info!("pod watch on: pods of node {node}");
    while let Some(c) = changes.next().await {
        let (pod, gone) = match c {
            Change::Seen(p) => (p, false),
            Change::Gone(p) => (p, true),
            Change::Listed(uids) => {
                plugin.pods_relisted(&uids);
                continue;
            }
        };
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        let ann = super::annotations(&pod);
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
