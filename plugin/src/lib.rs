//! nri-bandwidth: per-pod and per-container network bandwidth limits enforced by
//! eBPF programs attached to the workload's cgroup v2 directory.
//!
//! The kernel holds the truth: programs, maps and links are pinned under one bpffs
//! directory, so limits outlive every process of ours. This library is shared by the
//! NRI daemon, the OCI hook and `bwctl`.

pub mod annotations;
pub mod bpf_sys;
pub mod bpffs;
pub mod bucket;
pub mod cgroup;
pub mod datapath_abi;
pub mod limiter;
pub mod metrics;
pub mod nri;
pub mod rate;
pub mod testbed;
pub mod testrun;
