//! The daemon's optional side on the Kubernetes API: a watch of the pods on its
//! own node, so a changed annotation changes a running pod's limit in place
//! ([`watch`]), and Events on the pod for what was applied or refused
//! ([`events`]). NRI stays the authority for which pods exist; without API access
//! the daemon works from NRI alone and says once why the watch is off.

pub mod cluster;
pub mod events;
pub mod watch;

use std::collections::HashSet;
use std::path::Path;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// A client for the API and the node whose pods to watch, or why there is none:
/// `--kubeconfig` when given, else the in-cluster service account.
pub async fn connect(
    kubeconfig: Option<&Path>,
    node: Option<&str>,
) -> Result<(Client, String), String> {
    let node = node
        .filter(|n| !n.is_empty())
        .ok_or("no node name (--node-name, or NODE_NAME from the downward API)")?
        .to_string();
    let config = match kubeconfig {
        Some(p) => {
            let kc = Kubeconfig::read_from(p)
                .map_err(|e| format!("reading kubeconfig {}: {e}", p.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", p.display()))?
        }
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            Config::incluster().map_err(|e| format!("in-cluster configuration: {e}"))?
        }
        None => {
            return Err(
                "no --kubeconfig and not running in a cluster (KUBERNETES_SERVICE_HOST is unset)"
                    .into(),
            );
        }
    };
    let client = Client::try_from(config).map_err(|e| format!("API client: {e}"))?;
    Ok((client, node))
}

/// A pod's annotations as the core reads them.
pub fn annotations(p: &Pod) -> std::collections::HashMap<String, String> {
    p.metadata
        .annotations
        .as_ref()
        .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// What a pod watch tells its user.
pub enum Change {
    Seen(Pod),
    Gone(Pod),
    /// A (re)list finished: these uids are all there is; views of others are stale.
    Listed(HashSet<String>),
}

/// A pod watch as [`Change`]s. The watcher lists again by itself after an expired
/// watch (410 Gone) and after errors (with backoff, logged once per outage as
/// `what`); each list hands every pod over again, so a change made while the
/// daemon was away or the watch was down is applied once it is back.
pub fn changes(
    api: Api<Pod>,
    config: watcher::Config,
    what: &'static str,
) -> impl Stream<Item = Change> + Send {
    let mut listing: Option<HashSet<String>> = None;
    let mut failing = false;
    watcher(api, config)
        .default_backoff()
        .filter_map(move |ev| {
            let out = match ev {
                Ok(watcher::Event::Apply(p)) => Some(Change::Seen(p)),
                Ok(watcher::Event::InitApply(p)) => {
                    if let (Some(l), Some(uid)) = (listing.as_mut(), p.metadata.uid.as_ref()) {
                        l.insert(uid.clone());
                    }
                    Some(Change::Seen(p))
                }
                Ok(watcher::Event::Delete(p)) => Some(Change::Gone(p)),
                Ok(watcher::Event::Init) => {
                    listing = Some(HashSet::new());
                    None
                }
                Ok(watcher::Event::InitDone) => {
                    if failing {
                        log::info!("{what}: listing again succeeded");
                    }
                    failing = false;
                    listing.take().map(Change::Listed)
                }
                Err(e) => {
                    if failing {
                        log::debug!("{what}: {e}");
                    } else {
                        log::warn!("{what}: {e}; retrying with backoff");
                    }
                    failing = true;
                    None
                }
            };
            futures::future::ready(out)
        })
}
