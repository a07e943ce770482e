//! nri-bandwidth-hook: the OCI runtime hook flavour of nri-bandwidth, for podman and
//! CRI-O hooks.d setups that run without the NRI daemon. The limits are the same
//! pinned eBPF datapath the daemon uses; the hook only decides and exits.

pub mod crio_pod;
pub mod hook_action;
pub mod journal;
pub mod oci_state;
