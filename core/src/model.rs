//! The domain: what a limit is, who set it, and what `list` reports about it.
//! Pure data, shared by every front end; how it is stored in the kernel is
//! `datapath::codec`'s business.

use serde::Serialize;

use crate::rate::{ByteSize, Rate};

/// What to enforce on one cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    pub ingress: Option<Rate>,
    pub egress: Option<Rate>,
    pub burst: Option<ByteSize>,
    /// `datapath::abi::F_*` switches for experiments and the benchmark's ablations.
    pub flags: u32,
}

impl Limit {
    /// True when neither direction is limited (such a limit cannot be set).
    pub fn is_empty(&self) -> bool {
        self.ingress.is_none() && self.egress.is_none()
    }

    /// `ingress 10M egress -` for log lines.
    pub fn describe(&self) -> String {
        let show = |r: Option<Rate>| r.map_or("-".to_string(), |r| r.to_string());
        format!(
            "ingress {} egress {}",
            show(self.ingress),
            show(self.egress)
        )
    }
}

/// Who set a limit, for `list` and for reconciling with the runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub source: Source,
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub container: String,
    pub container_id: String,
}

impl Owner {
    /// `pod ns/name` or `container ns/name/container`, for messages.
    pub fn describe(&self) -> String {
        use crate::text::escaped;
        let pod = format!(
            "{}/{}",
            escaped(&self.pod_namespace),
            escaped(&self.pod_name)
        );
        if self.container.is_empty() {
            format!("pod {pod}")
        } else {
            format!("container {pod}/{}", escaped(&self.container))
        }
    }
}

/// Which front end set a limit; each removes only its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[default]
    Manual,
    Annotation,
    Hook,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Manual => "manual",
            Source::Annotation => "annotation",
            Source::Hook => "hook",
        })
    }
}

/// Counters of one direction, as the kernel keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DirCounters {
    pub packets: u64,
    pub bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    pub marked_packets: u64,
}

/// One limited cgroup as `list` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub cgroup_id: u64,
    pub path: String,
    pub owner: Owner,
    pub ingress_bps: Option<u64>,
    pub egress_bps: Option<u64>,
    pub burst_bytes: Option<u64>,
    pub created_unix: u64,
    pub ingress: DirCounters,
    pub egress: DirCounters,
    pub acks_gated: u64,
    pub pacing_sets: u64,
    pub clamp_sets: u64,
    /// False when the cgroup is gone (its links are defunct) or a link is missing.
    pub attached: bool,
}
