//! The guard against a node that comes back with an empty data dir under an
//! id that has already held the cluster's data (a lost volume, a wiped
//! disk). Such a node has forgotten the votes it cast and the entries it
//! acknowledged; taken back as the same member, it could help elect a
//! leader that lacks committed entries. Modelled on etcd, which refuses to
//! bootstrap a member the cluster says "has already been bootstrapped".
//!
//! Two halves. Every node, once a member, records itself in the replicated
//! state ([`record_self`]). A node whose Raft starts uninitialised asks the
//! peers it knows, before it serves anything, which nodes they record
//! ([`ask_peers`], over the Status RPC), and refuses to start if one of
//! them names it ([`verdict`]). A node that reaches no peer starts as
//! before: that is a first founding, the others not up yet.

use crate::{grpc_client, node::Node, raft::NodeId};
use meridian_model::{Command, Op};
use meridian_proto::v1::{admin_client::AdminClient, StatusRequest};
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

/// How long one peer may take to answer (they are asked all at once).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause between attempts to record this node.
const RECORD_RETRY: Duration = Duration::from_secs(1);

/// What one peer said: the nodes its replica records, or why it did not
/// answer.
#[derive(Debug, Clone)]
pub struct PeerAnswer {
    pub id: NodeId,
    pub addr: String,
    pub recorded: Result<BTreeSet<NodeId>, String>,
}

/// Why this node may start with an empty data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// No peer answered: a first founding with the others not up yet (or
    /// every peer down, which this guard cannot tell apart).
    NoPeerAnswered,
    /// These peers answered and none records this node: it never held the
    /// cluster's data (a founding member starting late, a node to be added).
    NotRecorded { answered: Vec<NodeId> },
}

/// A peer records this node as having held the cluster's data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "node {node} starts with an empty data dir, but node {peer} (at {addr}) records that node \
     {node} has already held this cluster's data: as node {node} again it would have forgotten \
     the votes it cast and the entries it acknowledged, and could cost acknowledged writes. \
     Refusing to start. If its data dir is lost, replace the member: from a healthy node run \
     `meridian members remove {node}`, then start this node with an empty data dir under a new \
     id and without --initial-cluster, and run `meridian members add NEW_ID ADDRESS --voter` \
     (docs/operations.md, \"Replacing a node\"). If its data still exists elsewhere, start it on \
     that data dir. To rebuild a whole cluster from a backup, restore every node with `meridian \
     snapshot restore` (docs/snapshots.md)"
)]
pub struct AlreadyBootstrapped {
    pub node: NodeId,
    pub peer: NodeId,
    pub addr: String,
}

/// The peers an empty node asks: the other members of `--initial-cluster`
/// and every node of `--peer-address`, at the address it dials them.
pub fn peers(
    node: NodeId,
    initial_cluster: Option<&BTreeMap<NodeId, String>>,
    peer_addresses: &BTreeMap<NodeId, String>,
) -> BTreeMap<NodeId, String> {
    let mut peers = initial_cluster.cloned().unwrap_or_default();
    peers.extend(peer_addresses.clone());
    peers.remove(&node);
    peers
}

/// Whether `node`, starting with an empty data dir, may go on, given what
/// its peers answered. One peer that records it is enough to refuse: a
/// peer that has not applied the record yet, or did not answer, proves
/// nothing.
pub fn verdict(node: NodeId, answers: &[PeerAnswer]) -> Result<Admitted, AlreadyBootstrapped> {
    let mut answered = Vec::new();
    for answer in answers {
        let Ok(recorded) = &answer.recorded else {
            continue;
        };
        if recorded.contains(&node) {
            return Err(AlreadyBootstrapped {
                node,
                peer: answer.id,
                addr: answer.addr.clone(),
            });
        }
        answered.push(answer.id);
    }
    Ok(match answered.is_empty() {
        true => Admitted::NoPeerAnswered,
        false => Admitted::NotRecorded { answered },
    })
}

/// Asks every peer at once, each within [`PEER_TIMEOUT`], over the node's
/// own peer channel (mutual TLS as this node, or plaintext with
/// `--insecure`). Status is a read open to member nodes.
pub async fn ask_peers(peers: &BTreeMap<NodeId, String>) -> Vec<PeerAnswer> {
    let asks = peers.iter().map(|(id, addr)| async move {
        let recorded = match tokio::time::timeout(PEER_TIMEOUT, recorded_by(*id, addr)).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {}s", PEER_TIMEOUT.as_secs())),
        };
        PeerAnswer {
            id: *id,
            addr: addr.clone(),
            recorded,
        }
    });
    futures::future::join_all(asks).await
}

async fn recorded_by(id: NodeId, addr: &str) -> Result<BTreeSet<NodeId>, String> {
    let channel = grpc_client::channel(id, addr).map_err(|e| e.to_string())?;
    let status = AdminClient::new(channel)
        .status(StatusRequest {})
        .await
        .map_err(|s| format!("{} ({:?})", s.message(), s.code()))?;
    Ok(status.into_inner().bootstrapped.into_iter().collect())
}

/// The check a node makes before it serves anything when its Raft starts
/// uninitialised (an empty data dir).
pub async fn check(
    node: NodeId,
    peers: &BTreeMap<NodeId, String>,
) -> Result<(), AlreadyBootstrapped> {
    if peers.is_empty() {
        tracing::info!(
            "empty data dir and no peer known (no --initial-cluster or --peer-address): \
             not checked whether this node id has held the cluster's data"
        );
        return Ok(());
    }
    let answers = ask_peers(peers).await;
    for answer in &answers {
        if let Err(error) = &answer.recorded {
            tracing::info!(peer = answer.id, addr = %answer.addr, %error, "a peer did not say which nodes held data");
        }
    }
    match verdict(node, &answers)? {
        Admitted::NoPeerAnswered => tracing::info!(
            "empty data dir and no peer answered (a first founding, or a node not added yet): \
             starting as a new member"
        ),
        Admitted::NotRecorded { answered } => tracing::info!(
            ?answered,
            "empty data dir and no peer records this node as having held data: starting as a new member"
        ),
    }
    Ok(())
}

/// Records this node in the replicated state once its Raft's membership
/// names it, through the leader like any write; retried until it commits,
/// or for as long as the node runs.
pub async fn record_self(node: Arc<Node>) {
    let mut metrics = node.raft.metrics();
    loop {
        let named = metrics
            .wait_for(|m| {
                m.membership_config
                    .membership()
                    .nodes()
                    .any(|(id, _)| *id == node.id)
            })
            .await
            .is_ok();
        if !named {
            return; // Raft has stopped.
        }
        match node.state.bootstrapped() {
            Ok(recorded) if recorded.contains(&node.id) => return,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "reading which nodes hold data failed"),
        }
        let record = Command::new(vec![Op::RecordBootstrapped { node: node.id }]);
        match node.write(record).await {
            Ok((index, _)) => {
                tracing::info!(index, "recorded this node as holding the cluster's data");
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "recording this node as holding data failed; retrying")
            }
        }
        tokio::time::sleep(RECORD_RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: NodeId, recorded: &[NodeId]) -> PeerAnswer {
        PeerAnswer {
            id,
            addr: format!("10.0.0.{id}:7400"),
            recorded: Ok(recorded.iter().copied().collect()),
        }
    }

    fn silent(id: NodeId) -> PeerAnswer {
        PeerAnswer {
            id,
            addr: format!("10.0.0.{id}:7400"),
            recorded: Err("connection refused".into()),
        }
    }

    #[test]
    fn a_first_founding_with_nobody_up_goes_on() {
        assert_eq!(verdict(3, &[]), Ok(Admitted::NoPeerAnswered));
        assert_eq!(
            verdict(3, &[silent(1), silent(2)]),
            Ok(Admitted::NoPeerAnswered)
        );
    }

    #[test]
    fn a_founding_member_starting_late_is_not_recorded_yet() {
        // The others formed the cluster and recorded themselves, not node 3.
        assert_eq!(
            verdict(3, &[answer(1, &[1, 2]), answer(2, &[1, 2])]),
            Ok(Admitted::NotRecorded {
                answered: vec![1, 2]
            })
        );
    }

    #[test]
    fn one_peer_that_records_the_node_refuses_it() {
        // Node 2 lags (or is down): node 1's record is enough.
        let refused = verdict(3, &[answer(1, &[1, 2, 3]), answer(2, &[1, 2])]);
        assert_eq!(
            refused,
            Err(AlreadyBootstrapped {
                node: 3,
                peer: 1,
                addr: "10.0.0.1:7400".into()
            })
        );
        let refused = verdict(3, &[silent(1), answer(2, &[1, 2, 3])]).expect_err("refused");
        let message = refused.to_string();
        for needed in [
            "node 3 starts with an empty data dir",
            "node 2 (at 10.0.0.2:7400)",
            "meridian members remove 3",
            "docs/operations.md",
            "meridian snapshot restore",
        ] {
            assert!(message.contains(needed), "{needed}: {message}");
        }
    }

    #[test]
    fn peers_are_the_other_founders_and_the_peer_addresses() {
        let founders = BTreeMap::from([
            (1, "cp-1:7400".to_string()),
            (2, "cp-2:7400".to_string()),
            (3, "cp-3:7400".to_string()),
        ]);
        let tunnelled = BTreeMap::from([(2, "10.9.0.2:7400".to_string())]);
        assert_eq!(
            peers(3, Some(&founders), &tunnelled),
            BTreeMap::from([(1, "cp-1:7400".into()), (2, "10.9.0.2:7400".into())])
        );
        // A node added later knows only its --peer-address entries, if any.
        assert_eq!(
            peers(4, None, &BTreeMap::from([(1, "cp-1:7400".to_string())])),
            BTreeMap::from([(1, "cp-1:7400".into())])
        );
        assert!(peers(4, None, &BTreeMap::new()).is_empty());
    }
}
