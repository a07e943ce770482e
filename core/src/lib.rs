//! nri-bandwidth's core: per-pod and per-container network bandwidth limits
//! enforced by eBPF programs attached to the workload's cgroup v2 directory.
//!
//! Every front end (the NRI daemon, the OCI hook, `bwctl`) is a thin adapter over
//! this crate: the model ([`model`]), which annotations ask for what
//! ([`annotations`], [`rate`]), what to do when that goes wrong ([`policy`]), where
//! a workload's cgroup is ([`cgroup`]), and the one interface to the limits on the
//! node ([`store`]) over the pinned kernel state ([`datapath`]).
//!
//! The kernel holds the truth: programs, maps and links are pinned under one bpffs
//! directory, so limits outlive every process of ours.

pub mod annotations;
pub mod cgroup;
pub mod datapath;
pub mod model;
pub mod policy;
pub mod rate;
pub mod shares;
pub mod stats;
pub mod store;
pub mod text;
