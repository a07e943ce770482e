//! Sender-side ingress across nodes: each node's senders are paced toward a
//! limited pod on another node at that node's share of the pod's ingress limit.
//!
//! - [`table`]: the receiving node's view: which nodes send to each of its limited
//!   addresses, with how many sockets, and the share of the limit each gets;
//! - [`wire`]: the two datagrams nodes exchange (a sending node's demand, the
//!   receiving node's shares), with the checks on what arrives;
//! - [`seal`]: the HMAC and time stamp every datagram carries, so only the
//!   cluster's daemons take part;
//! - [`agent`]: the loop that does both sides over one UDP socket and keeps the
//!   senders' map (`map_dst`) in step.
//!
//! The receiving node decides: it alone sees its own senders and every node that
//! asks. A node that gets no answer paces at the pod's whole limit, and the
//! receiver's ACK gate stays the backstop for any excess.

pub mod agent;
pub mod seal;
pub mod table;
pub mod wire;
