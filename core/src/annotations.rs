//! Which annotations ask for which limit, and in what order they win. The same
//! rules serve the NRI daemon (pod annotations) and the OCI hook (container
//! annotations).
//!
//! | key | limits | wins over |
//! |---|---|---|
//! | `nri-bandwidth.io/ingress-bandwidth`, `nri-bandwidth.io/egress-bandwidth` | the pod (one budget for all its containers) | `kubernetes.io/*-bandwidth` |
//! | `kubernetes.io/ingress-bandwidth`, `kubernetes.io/egress-bandwidth` | the pod | — |
//! | `nri-bandwidth.io/burst` | the pod's bucket size (bytes) | — |
//! | `ingress-bandwidth.nri-bandwidth.io/<container>`, `egress-bandwidth.nri-bandwidth.io/<container>` | that container alone, inside the pod's budget | — |
//! | `burst.nri-bandwidth.io/<container>` | that container's bucket | `nri-bandwidth.io/burst` |
//!
//! A front end that sees one container alone (the OCI hook) combines both levels on
//! that container ([`merged`]): per direction the tighter rate wins, and the
//! container's burst wins over the pod's.
//!
//! Container-scoped keys follow the Kubernetes convention for container settings
//! carried by pod annotations (the container's name is the key's name part, as in
//! `container.apparmor.security.beta.kubernetes.io/<container>`). Our own pod keys
//! exist so a cluster that still chains the CNI bandwidth plugin (which containerd
//! feeds from the `kubernetes.io` keys) can move pods over without limiting twice.
//!
//! Values are Kubernetes quantities in bits per second (rates) or bytes (burst).
//! A malformed value leaves that level (pod or container) unlimited and is reported
//! with the key, the value and what was expected; callers decide between failing
//! open (default) and failing the workload (strict).

use std::collections::HashMap;
use std::fmt;

use crate::model::Limit;
use crate::rate::{ByteSize, Rate};

pub const K8S_INGRESS: &str = "kubernetes.io/ingress-bandwidth";
pub const K8S_EGRESS: &str = "kubernetes.io/egress-bandwidth";
pub const POD_INGRESS: &str = "nri-bandwidth.io/ingress-bandwidth";
pub const POD_EGRESS: &str = "nri-bandwidth.io/egress-bandwidth";
pub const POD_BURST: &str = "nri-bandwidth.io/burst";
pub const CONTAINER_INGRESS_PREFIX: &str = "ingress-bandwidth.nri-bandwidth.io/";
pub const CONTAINER_EGRESS_PREFIX: &str = "egress-bandwidth.nri-bandwidth.io/";
pub const CONTAINER_BURST_PREFIX: &str = "burst.nri-bandwidth.io/";

/// Every key that can ask for a limit (for the OCI hook's `when.annotations` match
/// and for documentation checks).
pub const ALL_POD_KEYS: [&str; 5] = [K8S_INGRESS, K8S_EGRESS, POD_INGRESS, POD_EGRESS, POD_BURST];

/// A value that could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadAnnotation {
    pub key: String,
    pub value: String,
    pub error: String,
}

impl fmt::Display for BadAnnotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "annotation {}={}: {}",
            crate::text::escaped(&self.key),
            crate::text::quoted(&self.value),
            self.error
        )
    }
}

/// What the annotations ask for at one level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requested {
    /// None when no key asks for a limit at this level, or a value was malformed.
    pub limit: Option<Limit>,
    /// Malformed values; non-empty means the level is left unlimited.
    pub bad: Vec<BadAnnotation>,
}

/// The value of the first of `keys` present, parsed; a parse error is recorded in
/// `bad` (naming key and value) and reads as absent.
fn first<T, E: std::fmt::Display>(
    ann: &HashMap<String, String>,
    keys: &[&str],
    parse: impl Fn(&str) -> Result<T, E>,
    bad: &mut Vec<BadAnnotation>,
) -> Option<T> {
    let (key, value) = keys.iter().find_map(|k| ann.get(*k).map(|v| (*k, v)))?;
    parse(value)
        .map_err(|e| {
            bad.push(BadAnnotation {
                key: key.into(),
                value: value.clone(),
                error: e.to_string(),
            })
        })
        .ok()
}

fn rate(
    ann: &HashMap<String, String>,
    keys: &[&str],
    bad: &mut Vec<BadAnnotation>,
) -> Option<Rate> {
    first(ann, keys, Rate::parse, bad)
}

fn burst(
    ann: &HashMap<String, String>,
    keys: &[&str],
    bad: &mut Vec<BadAnnotation>,
) -> Option<ByteSize> {
    first(ann, keys, ByteSize::parse, bad)
}

fn assemble(
    ingress: Option<Rate>,
    egress: Option<Rate>,
    burst: Option<ByteSize>,
    bad: Vec<BadAnnotation>,
) -> Requested {
    let limit = (bad.is_empty() && (ingress.is_some() || egress.is_some())).then_some(Limit {
        ingress,
        egress,
        burst,
        flags: 0,
    });
    Requested { limit, bad }
}

/// The pod-level limit its annotations ask for.
pub fn pod(ann: &HashMap<String, String>) -> Requested {
    let mut bad = Vec::new();
    let ingress = rate(ann, &[POD_INGRESS, K8S_INGRESS], &mut bad);
    let egress = rate(ann, &[POD_EGRESS, K8S_EGRESS], &mut bad);
    let b = burst(ann, &[POD_BURST], &mut bad);
    assemble(ingress, egress, b, bad)
}

/// The limit of container `name` that its pod's annotations ask for.
pub fn container(pod_ann: &HashMap<String, String>, name: &str) -> Requested {
    if name.is_empty() {
        return Requested::default();
    }
    let mut bad = Vec::new();
    let key = |p: &str| format!("{p}{name}");
    let (ik, ek, bk) = (
        key(CONTAINER_INGRESS_PREFIX),
        key(CONTAINER_EGRESS_PREFIX),
        key(CONTAINER_BURST_PREFIX),
    );
    let ingress = rate(pod_ann, &[&ik], &mut bad);
    let egress = rate(pod_ann, &[&ek], &mut bad);
    // The pod's burst only matters to a container that asks for a limit.
    let asks = pod_ann.contains_key(&ik) || pod_ann.contains_key(&ek);
    let b = if asks {
        burst(pod_ann, &[&bk, POD_BURST], &mut bad)
    } else {
        None
    };
    assemble(ingress, egress, b, bad)
}

/// The limit of a container seen alone, as the OCI hook sees one: the pod-level
/// keys and the container's own keys combined. Per direction the tighter rate
/// wins; the container's burst wins over the pod's. Any malformed value leaves the
/// container unlimited (reported in `bad`).
pub fn merged(ann: &HashMap<String, String>, container_name: &str) -> Requested {
    let pod = pod(ann);
    let own = container(ann, container_name);
    let mut bad = pod.bad;
    bad.extend(own.bad);
    if !bad.is_empty() {
        return Requested { limit: None, bad };
    }
    let limit = match (pod.limit, own.limit) {
        (None, None) => None,
        (Some(l), None) | (None, Some(l)) => Some(l),
        (Some(p), Some(c)) => {
            let tighter = |a: Option<Rate>, b: Option<Rate>| match (a, b) {
                (Some(a), Some(b)) => Some(std::cmp::min_by_key(a, b, |r| r.bits_per_sec())),
                (a, b) => a.or(b),
            };
            Some(Limit {
                ingress: tighter(p.ingress, c.ingress),
                egress: tighter(p.egress, c.egress),
                burst: c.burst.or(p.burst),
                flags: 0,
            })
        }
    };
    Requested { limit, bad }
}

/// Whether any key could ask for a limit (quick filter before parsing).
pub fn mentions_bandwidth(ann: &HashMap<String, String>) -> bool {
    ann.keys().any(|k| {
        ALL_POD_KEYS.contains(&k.as_str())
            || k.starts_with(CONTAINER_INGRESS_PREFIX)
            || k.starts_with(CONTAINER_EGRESS_PREFIX)
    })
}

/// Whether `key` is one this project reads, at any level (burst keys included).
pub fn is_bandwidth_key(key: &str) -> bool {
    ALL_POD_KEYS.contains(&key)
        || key.starts_with(CONTAINER_INGRESS_PREFIX)
        || key.starts_with(CONTAINER_EGRESS_PREFIX)
        || key.starts_with(CONTAINER_BURST_PREFIX)
}

/// The keys of `ann` this project reads, sorted: what decides every limit of a pod.
pub fn bandwidth_keys(ann: &HashMap<String, String>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = ann
        .iter()
        .filter(|(k, _)| is_bandwidth_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// (ingress bit/s, egress bit/s, burst bytes)
    type Want = (Option<u64>, Option<u64>, Option<u64>);
    type Pairs<'a> = &'a [(&'a str, &'a str)];

    fn bps(l: &Option<Limit>) -> Want {
        match l {
            None => (None, None, None),
            Some(l) => (
                l.ingress.map(|r| r.bits_per_sec()),
                l.egress.map(|r| r.bits_per_sec()),
                l.burst.map(|b| b.bytes()),
            ),
        }
    }

    /// The README's precedence table, row by row.
    #[test]
    fn pod_precedence_table() {
        let rows: &[(Pairs, Want)] = &[
            (&[], (None, None, None)),
            (&[(K8S_INGRESS, "10M")], (Some(10_000_000), None, None)),
            (&[(K8S_EGRESS, "1Gi")], (None, Some(1 << 30), None)),
            (
                &[(K8S_INGRESS, "10M"), (K8S_EGRESS, "20M")],
                (Some(10_000_000), Some(20_000_000), None),
            ),
            (
                &[(K8S_INGRESS, "10M"), (POD_INGRESS, "30M")],
                (Some(30_000_000), None, None),
            ),
            (
                &[(K8S_EGRESS, "10M"), (POD_EGRESS, "5M")],
                (None, Some(5_000_000), None),
            ),
            (
                &[(K8S_INGRESS, "10M"), (POD_BURST, "1Mi")],
                (Some(10_000_000), None, Some(1 << 20)),
            ),
            (&[(POD_BURST, "1Mi")], (None, None, None)),
            (
                &[("example.com/ingress-bandwidth", "10M")],
                (None, None, None),
            ),
        ];
        for (a, want) in rows {
            let r = pod(&ann(a));
            assert!(r.bad.is_empty(), "{a:?}: {:?}", r.bad);
            assert_eq!(bps(&r.limit), *want, "{a:?}");
        }
    }

    #[test]
    fn container_precedence_table() {
        let rows: &[(Pairs, &str, Want)] = &[
            (
                &[("ingress-bandwidth.nri-bandwidth.io/web", "5M")],
                "web",
                (Some(5_000_000), None, None),
            ),
            (
                &[("ingress-bandwidth.nri-bandwidth.io/web", "5M")],
                "db",
                (None, None, None),
            ),
            (
                &[("egress-bandwidth.nri-bandwidth.io/db", "2M")],
                "db",
                (None, Some(2_000_000), None),
            ),
            // Pod keys never limit a container on their own.
            (&[(K8S_INGRESS, "10M")], "web", (None, None, None)),
            // A container's burst falls back to the pod's.
            (
                &[
                    ("egress-bandwidth.nri-bandwidth.io/web", "2M"),
                    (POD_BURST, "1Mi"),
                ],
                "web",
                (None, Some(2_000_000), Some(1 << 20)),
            ),
            (
                &[
                    ("egress-bandwidth.nri-bandwidth.io/web", "2M"),
                    (POD_BURST, "1Mi"),
                    ("burst.nri-bandwidth.io/web", "2Mi"),
                ],
                "web",
                (None, Some(2_000_000), Some(2 << 20)),
            ),
        ];
        for (a, name, want) in rows {
            let r = container(&ann(a), name);
            assert!(r.bad.is_empty());
            assert_eq!(bps(&r.limit), *want, "{a:?} for {name}");
        }
    }

    #[test]
    fn a_malformed_value_leaves_the_level_unlimited_and_names_key_value_and_expectation() {
        let r = pod(&ann(&[(K8S_INGRESS, "10Mbps"), (K8S_EGRESS, "20M")]));
        assert_eq!(r.limit, None, "fail open: the whole pod runs unlimited");
        assert_eq!(r.bad.len(), 1);
        let msg = r.bad[0].to_string();
        assert!(
            msg.contains(K8S_INGRESS) && msg.contains("10Mbps") && msg.contains("bits per second"),
            "{msg}"
        );

        let r = pod(&ann(&[(K8S_INGRESS, "10m")]));
        assert!(r.bad[0].to_string().contains("unreasonably small"));
        let r = container(
            &ann(&[
                ("ingress-bandwidth.nri-bandwidth.io/web", "fast"),
                (POD_BURST, "x"),
            ]),
            "web",
        );
        assert_eq!((r.limit, r.bad.len()), (None, 2));
        // A malformed pod key hidden behind a winning one is never read.
        let r = pod(&ann(&[(K8S_INGRESS, "bad"), (POD_INGRESS, "10M")]));
        assert!(r.bad.is_empty() && r.limit.is_some());
    }

    #[test]
    fn mentions() {
        assert!(mentions_bandwidth(&ann(&[(K8S_EGRESS, "1M")])));
        assert!(mentions_bandwidth(&ann(&[(
            "ingress-bandwidth.nri-bandwidth.io/x",
            "1M"
        )])));
        assert!(!mentions_bandwidth(&ann(&[(
            "io.kubernetes.cri.container-name",
            "x"
        )])));
    }

    /// The hook's view of one container: both levels merged on it.
    #[test]
    fn merged_table() {
        let rows: &[(Pairs, &str, Want)] = &[
            // Only pod keys: they limit the container.
            (
                &[(K8S_INGRESS, "10M")],
                "web",
                (Some(10_000_000), None, None),
            ),
            // The container's key is tighter on ingress; the pod's egress still
            // applies; the container's burst wins.
            (
                &[
                    (K8S_INGRESS, "20M"),
                    (K8S_EGRESS, "8M"),
                    ("ingress-bandwidth.nri-bandwidth.io/web", "5M"),
                    ("burst.nri-bandwidth.io/web", "256Ki"),
                    (POD_BURST, "1Mi"),
                ],
                "web",
                (Some(5_000_000), Some(8_000_000), Some(256 << 10)),
            ),
            // The pod's rate is tighter than the container's.
            (
                &[
                    (K8S_INGRESS, "2M"),
                    ("ingress-bandwidth.nri-bandwidth.io/web", "5M"),
                ],
                "web",
                (Some(2_000_000), None, None),
            ),
            // Another container's keys do not apply; nor do any without a name.
            (
                &[
                    ("ingress-bandwidth.nri-bandwidth.io/db", "5M"),
                    (K8S_EGRESS, "1M"),
                ],
                "web",
                (None, Some(1_000_000), None),
            ),
            (
                &[("ingress-bandwidth.nri-bandwidth.io/db", "5M")],
                "",
                (None, None, None),
            ),
        ];
        for (pairs, name, want) in rows {
            let r = merged(&ann(pairs), name);
            assert!(r.bad.is_empty(), "{pairs:?}");
            assert_eq!(bps(&r.limit), *want, "{pairs:?} as {name:?}");
        }
        let r = merged(&ann(&[(K8S_INGRESS, "10M"), (K8S_EGRESS, "lots")]), "web");
        assert_eq!(
            (r.limit, r.bad.len()),
            (None, 1),
            "one bad value: unlimited"
        );
    }
}
