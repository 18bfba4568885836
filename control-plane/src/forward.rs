//! A follower's calls to the leader: forwarded writes, read-index requests and
//! membership changes, over the Raft gRPC service.

use crate::{
    grpc_client,
    node::MembershipChange,
    raft::{ApplyOutcome, NodeId},
};
use meridian_model::Command;
use meridian_proto::v1::{raft_client::RaftClient, ProposeRequest, RaftPayload, ReadIndexRequest};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tonic::transport::Channel;

/// The largest forwarded request or reply (a write may be a bulk apply):
/// what a Raft peer frame carries, since the write is replicated in one.
pub const MAX_FORWARDED: usize = meridian_proto::raft_wire::MAX_BODY;

/// How long one forwarded call may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// The leader's answer: the work's result, or "I am not the leader".
#[derive(Debug, Serialize, Deserialize)]
pub enum LeaderReply<T> {
    Done(T),
    NotLeader,
}

/// What travels back over the wire: the reply, or a failure on the leader.
pub type Wire<T> = Result<LeaderReply<T>, String>;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: crate::grpc_client::ChannelError,
    },
    #[error("{0}")]
    Status(#[from] tonic::Status),
    #[error("malformed reply: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("the leader failed: {0}")]
    Leader(String),
}

/// The leader, as a follower knows it.
#[derive(Debug, Clone)]
pub struct Leader {
    pub id: NodeId,
    pub addr: String,
}

impl Leader {
    /// From openraft's forward-to-leader hint, when it names both.
    pub fn from_hint(id: Option<NodeId>, node: Option<BasicNode>) -> Option<Leader> {
        Some(Leader {
            id: id?,
            addr: node?.addr,
        })
    }
}

fn client(leader: &Leader) -> Result<RaftClient<Channel>, ForwardError> {
    let channel =
        grpc_client::channel(leader.id, &leader.addr).map_err(|source| ForwardError::Connect {
            addr: leader.addr.clone(),
            source,
        })?;
    Ok(RaftClient::new(channel)
        .max_decoding_message_size(MAX_FORWARDED)
        .max_encoding_message_size(MAX_FORWARDED))
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(FORWARD_TIMEOUT);
    request
}

fn unwire<T>(wire: Wire<T>) -> Result<LeaderReply<T>, ForwardError> {
    wire.map_err(ForwardError::Leader)
}

pub async fn propose(
    leader: &Leader,
    command: &Command,
) -> Result<LeaderReply<(u64, ApplyOutcome)>, ForwardError> {
    let command_json = serde_json::to_vec(command)?;
    let reply = client(leader)?
        .propose(request(ProposeRequest { command_json }))
        .await?
        .into_inner();
    unwire(serde_json::from_slice(&reply.result_json)?)
}

pub async fn read_index(leader: &Leader) -> Result<LeaderReply<u64>, ForwardError> {
    match client(leader)?
        .read_index(request(ReadIndexRequest {}))
        .await
    {
        Ok(reply) => Ok(LeaderReply::Done(reply.into_inner().index)),
        Err(status) if status.code() == tonic::Code::FailedPrecondition => {
            Ok(LeaderReply::NotLeader)
        }
        Err(status) => Err(status.into()),
    }
}

pub async fn change_membership(
    leader: &Leader,
    change: &MembershipChange,
) -> Result<LeaderReply<Result<(), String>>, ForwardError> {
    let json = serde_json::to_vec(change)?;
    let reply = client(leader)?
        .change_membership(request(RaftPayload { json }))
        .await?
        .into_inner();
    unwire(serde_json::from_slice(&reply.json)?)
}

/// Tells the leader which clusters' agents stream to this node.
pub async fn agent_heartbeat(leader: &Leader, clusters: &[String]) -> Result<(), ForwardError> {
    let json = serde_json::to_vec(clusters)?;
    client(leader)?
        .agent_heartbeat(request(RaftPayload { json }))
        .await?;
    Ok(())
}
