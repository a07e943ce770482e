//! The NRI plugin daemon `nri-bandwidth`: the NRI stub ([`nri`]: connection,
//! registration, events), the bandwidth plugin on the core's store and policy
//! ([`plugin`]), and its Prometheus endpoint ([`metrics`]).

pub mod metrics;
pub mod nri;
pub mod plugin;
