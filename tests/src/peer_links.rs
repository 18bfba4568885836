//! The network between control-plane nodes, made breakable: one relay per
//! directed link (node i dialling node j), each node told by
//! `--peer-address` to dial its peers through its own relays, while clients
//! still dial every node directly. Partitions, one-way cuts, latency and
//! loss are settings of those relays.

use crate::{
    node::ServerNode,
    relay::{Faults, Mode, Relay},
    ServerOptions,
};
use std::{collections::BTreeMap, path::Path, time::Duration};

pub struct PeerLinks {
    /// (from, to) → the relay `from` dials `to` through.
    links: BTreeMap<(u64, u64), Relay>,
}

impl PeerLinks {
    /// A relay for every ordered pair of `nodes`. Inside a Tokio runtime.
    pub fn new(nodes: &[&ServerNode], seed: u64) -> PeerLinks {
        let mut links = BTreeMap::new();
        for from in nodes {
            for to in nodes.iter().filter(|n| n.id != from.id) {
                let link_seed =
                    seed ^ ((from.id << 32) | to.id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                links.insert((from.id, to.id), Relay::start(&to.grpc, link_seed));
            }
        }
        PeerLinks { links }
    }

    /// The flags that make node `from` dial its peers through its relays.
    pub fn args_for(&self, from: u64) -> Vec<String> {
        let peers: Vec<String> = self
            .links
            .iter()
            .filter(|((f, _), _)| *f == from)
            .map(|((_, to), relay)| format!("{to}={}", relay.addr))
            .collect();
        if peers.is_empty() {
            return Vec::new();
        }
        vec!["--peer-address".into(), peers.join(",")]
    }

    /// The relay `from` dials `to` through.
    pub fn link(&self, from: u64, to: u64) -> &Relay {
        &self.links[&(from, to)]
    }

    /// Sets the mode of the link `from` → `to` only: an asymmetric fault.
    pub fn set_mode(&self, from: u64, to: u64, mode: Mode) {
        self.link(from, to).set_mode(mode);
    }

    /// Cuts (or stalls) every link between `side` and the other nodes, both
    /// ways; links within each side stay as they are.
    pub fn partition(&self, side: &[u64], mode: Mode) {
        for ((from, to), relay) in &self.links {
            if side.contains(from) != side.contains(to) {
                relay.set_mode(mode);
            }
        }
    }

    /// Cuts `node` off from every other node, both ways.
    pub fn isolate(&self, node: u64, mode: Mode) {
        self.partition(&[node], mode);
    }

    /// Adds `latency` and `loss` (per mille of chunks held back a
    /// retransmission) to every link, keeping their modes.
    pub fn degrade(&self, latency: Duration, loss: u32, reset: u32) {
        for relay in self.links.values() {
            relay.set(Faults {
                mode: relay.faults().mode,
                latency,
                loss,
                reset,
            });
        }
    }

    /// Every link open, with no latency or loss.
    pub fn heal(&self) {
        for relay in self.links.values() {
            relay.set(Faults::OPEN);
        }
    }
}

/// Starts `count` founding nodes in `root` that reach each other only
/// through a [`PeerLinks`].
pub fn start_cluster_behind_relays(
    root: &Path,
    count: u64,
    options: ServerOptions,
    seed: u64,
) -> (Vec<ServerNode>, PeerLinks) {
    start_cluster_behind_relays_with(root, count, |_| options.clone(), seed)
}

/// Like [`start_cluster_behind_relays`], with each node's own options (its
/// certificate, say).
pub fn start_cluster_behind_relays_with(
    root: &Path,
    count: u64,
    options: impl Fn(u64) -> ServerOptions,
    seed: u64,
) -> (Vec<ServerNode>, PeerLinks) {
    let nodes: Vec<ServerNode> = (1..=count)
        .map(|id| ServerNode::new(root, id, options(id)))
        .collect();
    let links = PeerLinks::new(&nodes.iter().collect::<Vec<_>>(), seed);
    let members = ServerNode::initial_cluster(&nodes.iter().collect::<Vec<_>>());
    let mut nodes: Vec<ServerNode> = nodes
        .into_iter()
        .map(|n| {
            let args = links.args_for(n.id);
            n.with_initial_cluster(&members).with_args(args)
        })
        .collect();
    for node in &mut nodes {
        node.start();
    }
    (nodes, links)
}
