//! What the plugin tells a pod's owner: a limit applied, changed or lifted, a value
//! it cannot use, a limit it could not set. With API access the daemon publishes
//! them as Kubernetes Events on the pod (`kube::events`); without, the log lines
//! that accompany them are all there is.

use nri_bandwidth_core::model::Owner;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

/// Event reasons (CamelCase, as Kubernetes shows them).
pub const LIMITED: &str = "BandwidthLimited";
pub const CHANGED: &str = "BandwidthChanged";
pub const UNLIMITED: &str = "BandwidthUnlimited";
pub const INVALID: &str = "InvalidBandwidth";
pub const FAILED: &str = "BandwidthLimitFailed";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub severity: Severity,
    pub reason: &'static str,
    pub message: String,
}

impl Notice {
    pub fn about(owner: &Owner, severity: Severity, reason: &'static str, message: String) -> Self {
        Notice {
            namespace: owner.pod_namespace.clone(),
            pod: owner.pod_name.clone(),
            uid: owner.pod_uid.clone(),
            severity,
            reason,
            message,
        }
    }
}

/// Where notices go; must not block (handlers answer the runtime within 2 s).
pub trait NoticeSink: Send + Sync {
    fn notice(&self, n: Notice);
}
