//! The NRI plugin daemon `nri-bandwidth`: the NRI stub ([`nri`]: connection,
//! registration, events), the bandwidth plugin on the core's store and policy
//! ([`plugin`]), its Prometheus endpoint ([`metrics`]), and the optional pod
//! watch and Events on the Kubernetes API ([`k8s`], [`notices`]).

pub mod k8s;
mod known;
pub mod metrics;
pub mod notices;
pub mod nri;
pub mod plugin;
