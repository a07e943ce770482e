//! The datagrams of the share exchange, as JSON (small, and readable in a packet
//! capture): a sending node's demand toward addresses on the receiving node, and
//! the receiving node's answer with the share of each. Everything that arrives is
//! checked before use; a datagram that fails a check is dropped whole with an
//! error naming what was expected.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The version of the exchange; a datagram of another version is refused.
/// 2: answers name the node that gives them (and every datagram is sealed).
pub const VERSION: u32 = 2;
/// The largest datagram sent or accepted (well inside one UDP datagram).
pub const MAX_DATAGRAM: usize = 16 * 1024;
/// Addresses in one datagram; a node with more sends several.
pub const MAX_ENTRIES: usize = 200;
/// A node name is a DNS subdomain.
pub const MAX_NODE_NAME: usize = 253;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Message {
    Demand(Demand),
    Shares(Shares),
}

/// From a sending node: its sockets toward addresses on the receiving node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demand {
    pub v: u32,
    pub node: String,
    pub seq: u64,
    pub sockets: Vec<DemandEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemandEntry {
    pub ip: IpAddr,
    pub sockets: u32,
}

/// From the receiving node: each address's share for the node that asked.
/// `node` names the answering node: a sending node takes shares of a pod only
/// from the pod's own node, by name, since a node with several addresses may
/// answer from another one than the pod's `hostIP`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shares {
    pub v: u32,
    pub node: String,
    pub seq: u64,
    pub shares: Vec<ShareEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareEntry {
    pub ip: IpAddr,
    /// Bytes/s (IP bytes); None when the address has no ingress limit there.
    pub rate: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("datagram of {0} bytes: expected at most {MAX_DATAGRAM}")]
    TooLarge(usize),
    #[error("not a share-exchange message: {0}")]
    Malformed(String),
    #[error("share-exchange version {0}: expected {VERSION}")]
    Version(u32),
    #[error("{0} addresses in one datagram: expected at most {MAX_ENTRIES}")]
    TooMany(usize),
    #[error("node name {0:?}: expected a DNS subdomain of 1 to {MAX_NODE_NAME} characters")]
    BadNode(String),
}

/// Parses and checks one datagram.
pub fn decode(buf: &[u8]) -> Result<Message, WireError> {
    if buf.len() > MAX_DATAGRAM {
        return Err(WireError::TooLarge(buf.len()));
    }
    let m: Message =
        serde_json::from_slice(buf).map_err(|e| WireError::Malformed(e.to_string()))?;
    let (v, node, n) = match &m {
        Message::Demand(d) => (d.v, &d.node, d.sockets.len()),
        Message::Shares(s) => (s.v, &s.node, s.shares.len()),
    };
    if !node_name_ok(node) {
        let shown: String = node.chars().take(64).collect();
        return Err(WireError::BadNode(shown));
    }
    if v != VERSION {
        return Err(WireError::Version(v));
    }
    if n > MAX_ENTRIES {
        return Err(WireError::TooMany(n));
    }
    Ok(m)
}

fn node_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NODE_NAME
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// A message as bytes.
pub fn encode(m: &Message) -> Vec<u8> {
    serde_json::to_vec(m).expect("share-exchange messages always serialize")
}

/// `node`'s answer (`seq` of the demand it answers; 0: unasked) as a datagram;
/// at most [`MAX_ENTRIES`] entries, as in the demand answered.
pub fn shares(node: &str, seq: u64, shares: Vec<ShareEntry>) -> Vec<u8> {
    encode(&Message::Shares(Shares {
        v: VERSION,
        node: node.to_string(),
        seq,
        shares,
    }))
}

/// `node`'s demand as datagrams of at most [`MAX_ENTRIES`] addresses each.
pub fn demands(node: &str, seq: u64, entries: &[DemandEntry]) -> Vec<Vec<u8>> {
    entries
        .chunks(MAX_ENTRIES)
        .map(|c| {
            encode(&Message::Demand(Demand {
                v: VERSION,
                node: node.to_string(),
                seq,
                sockets: c.to_vec(),
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_full_datagram_of_the_longest_addresses_fits() {
        let e: Vec<DemandEntry> = (0..MAX_ENTRIES)
            .map(|i| DemandEntry {
                ip: format!("fd00:ffff:ffff:ffff:ffff:ffff:ffff:{i:x}")
                    .parse()
                    .unwrap(),
                sockets: u32::MAX,
            })
            .collect();
        let name = "n".repeat(MAX_NODE_NAME);
        let out = demands(&name, u64::MAX, &e);
        assert_eq!(out.len(), 1);
        assert!(out[0].len() <= MAX_DATAGRAM, "{} bytes", out[0].len());
        let back = decode(&out[0]).unwrap();
        assert!(matches!(back, Message::Demand(d) if d.sockets == e));
        // One more address goes into a second datagram.
        let mut more = e.clone();
        more.push(e[0].clone());
        assert_eq!(demands("n", 1, &more).len(), 2);
    }

    #[test]
    fn bad_datagrams_name_what_was_expected() {
        let too_big = vec![b' '; MAX_DATAGRAM + 1];
        assert_eq!(decode(&too_big), Err(WireError::TooLarge(MAX_DATAGRAM + 1)));
        let trunc = br#"{"kind":"demand","v":1,"node":"a","seq":1,"sockets":[{"ip":"10.0"#;
        let e = decode(trunc).unwrap_err();
        assert!(matches!(e, WireError::Malformed(_)), "{e}");
        let v1 = br#"{"kind":"shares","v":1,"seq":1,"shares":[]}"#;
        assert!(
            matches!(decode(v1), Err(WireError::Malformed(_))),
            "no node"
        );
        let v1 = br#"{"kind":"shares","v":1,"node":"a","seq":1,"shares":[]}"#;
        assert_eq!(decode(v1), Err(WireError::Version(1)));
        let node = br#"{"kind":"demand","v":2,"node":"A/../x","seq":1,"sockets":[]}"#;
        assert!(
            decode(node)
                .unwrap_err()
                .to_string()
                .contains("DNS subdomain")
        );
        let node = br#"{"kind":"shares","v":2,"node":"","seq":1,"shares":[]}"#;
        assert!(matches!(decode(node), Err(WireError::BadNode(_))));
        let ip = br#"{"kind":"demand","v":2,"node":"a","seq":1,"sockets":[{"ip":"10.0.0.300","sockets":1}]}"#;
        assert!(matches!(decode(ip), Err(WireError::Malformed(_))));
        let neg =
            br#"{"kind":"shares","v":2,"node":"a","seq":1,"shares":[{"ip":"10.0.0.1","rate":-5}]}"#;
        assert!(matches!(decode(neg), Err(WireError::Malformed(_))));
        let many = format!(
            r#"{{"kind":"shares","v":2,"node":"a","seq":1,"shares":[{}]}}"#,
            vec![r#"{"ip":"10.0.0.1","rate":1}"#; MAX_ENTRIES + 1].join(",")
        );
        assert_eq!(
            decode(many.as_bytes()),
            Err(WireError::TooMany(MAX_ENTRIES + 1))
        );
    }

    proptest! {
        /// Any bytes decode to a message or an error; nothing panics.
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&b);
        }

        #[test]
        fn shares_round_trip(seq in any::<u64>(), rates in proptest::collection::vec(proptest::option::of(any::<u64>()), 0..20)) {
            let m = Message::Shares(Shares {
                v: VERSION,
                node: "node-r".into(),
                seq,
                shares: rates.iter().enumerate().map(|(i, r)| ShareEntry {
                    ip: IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]),
                    rate: *r,
                }).collect(),
            });
            prop_assert_eq!(decode(&encode(&m)), Ok(m));
        }
    }
}
