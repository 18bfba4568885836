//! The Raft server side: peers' openraft messages and followers' leader-only
//! requests, served on the node's gRPC port.

use super::network::SnapshotHeader;
use crate::{
    federation::liveness::Liveness,
    forward::{LeaderReply, Wire},
    node::{Attempt, Node, NodeError},
};
use meridian_proto::v1::{
    raft_server, ProposeRequest, ProposeResponse, RaftPayload, ReadIndexRequest, ReadIndexResponse,
    SnapshotChunk,
};
use openraft::raft::InstallSnapshotRequest;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct RaftService {
    node: Arc<Node>,
    liveness: Arc<Liveness>,
}

impl RaftService {
    pub fn new(node: Arc<Node>, liveness: Arc<Liveness>) -> Self {
        RaftService { node, liveness }
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::invalid_argument(format!("malformed raft message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    serde_json::to_vec(value)
        .map(|json| Response::new(RaftPayload { json }))
        .map_err(|e| Status::internal(format!("encoding a raft reply: {e}")))
}

fn to_wire<T>(result: Result<Attempt<T>, NodeError>) -> Wire<T> {
    match result {
        Ok(Attempt::Done(value)) => Ok(LeaderReply::Done(value)),
        Ok(Attempt::NotLeader(_)) => Ok(LeaderReply::NotLeader),
        Err(e) => Err(e.to_string()),
    }
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(&request.into_inner().json)?;
        encode(&self.node.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(&request.into_inner().json)?;
        encode(&self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<SnapshotChunk>,
    ) -> Result<Response<RaftPayload>, Status> {
        let chunk = request.into_inner();
        let header: SnapshotHeader = decode(&chunk.header_json)?;
        let rpc = InstallSnapshotRequest {
            vote: header.vote,
            meta: header.meta,
            offset: chunk.offset,
            data: chunk.data,
            done: chunk.done,
        };
        encode(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn read_index(
        &self,
        _request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        match self.node.read_index_local().await {
            Ok(Attempt::Done(index)) => Ok(Response::new(ReadIndexResponse { index })),
            Ok(Attempt::NotLeader(_)) => Err(Status::failed_precondition("not the leader")),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposeResponse>, Status> {
        let command = decode(&request.into_inner().command_json)?;
        let wire = to_wire(self.node.propose_local(command).await);
        let index = match &wire {
            Ok(LeaderReply::Done((index, _))) => *index,
            _ => 0,
        };
        let result_json = serde_json::to_vec(&wire)
            .map_err(|e| Status::internal(format!("encoding a raft reply: {e}")))?;
        Ok(Response::new(ProposeResponse { result_json, index }))
    }

    async fn change_membership(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let change = decode(&request.into_inner().json)?;
        let wire: Wire<Result<(), String>> = match self.node.change_membership_local(change).await {
            Ok(Attempt::Done(())) => Ok(LeaderReply::Done(Ok(()))),
            Ok(Attempt::NotLeader(_)) => Ok(LeaderReply::NotLeader),
            Err(NodeError::InvalidMembership(message)) => Ok(LeaderReply::Done(Err(message))),
            Err(e) => Err(e.to_string()),
        };
        encode(&wire)
    }

    async fn agent_heartbeat(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let clusters: Vec<String> = decode(&request.into_inner().json)?;
        self.liveness.seen(&clusters);
        Ok(Response::new(RaftPayload {
            json: b"null".to_vec(),
        }))
    }
}
