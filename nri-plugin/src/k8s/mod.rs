//! The daemon's optional side on the Kubernetes API: a watch of the pods on its
//! own node, so a changed annotation changes a running pod's limit in place
//! ([`watch`]), and Events on the pod for what was applied or refused
//! ([`events`]). NRI stays the authority for which pods exist; without API access
//! the daemon works from NRI alone and says once why the watch is off.

pub mod events;
pub mod watch;

use std::path::Path;

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
