//! The Raft server side: peers' openraft messages over the Raft peer
//! protocol (`meridian_proto::raft_wire`, a connection of its own beside
//! gRPC on the node's port), and followers' leader-only requests over gRPC.

use super::network::SnapshotHeader;
use super::peer_io::{read_frame, read_preface, write_frame};
use crate::{
    authz::{authorize, is_member, refused},
    federation::liveness::Liveness,
    forward::{LeaderReply, Wire},
    metrics::Metrics,
    node::{Attempt, Node, NodeError},
};
use meridian_identity::tls::Conn;
use meridian_proto::raft_wire::{self, Kind};
use meridian_proto::v1::{
    raft_server, ProposeRequest, ProposeResponse, RaftPayload, ReadIndexRequest, ReadIndexResponse,
};
use openraft::raft::InstallSnapshotRequest;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::BufStream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

/// How long a new peer connection may take to send its preface.
const PREFACE_WAIT: Duration = Duration::from_secs(10);

/// How long a refused peer is given to close its end.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What a peer connection is refused under, before any request.
const CONNECT: &str = "/meridian.v1.Raft/Connect";

/// Serves the Raft peer connections `incoming` hands over, each in a task
/// of its own: a request, then its reply, until the peer closes.
pub fn serve_peers(mut incoming: mpsc::Receiver<Conn>, node: Arc<Node>, metrics: Arc<Metrics>) {
    tokio::spawn(async move {
        while let Some(conn) = incoming.recv().await {
            tokio::spawn(serve_peer(conn, node.clone(), metrics.clone()));
        }
    });
}

async fn serve_peer(conn: Conn, node: Arc<Node>, metrics: Arc<Metrics>) {
    let peer = conn.peer.clone();
    let mut io = BufStream::new(conn);
    let allowed = |method: &str| {
        authorize(method, &peer.identity_now(), |n| is_member(&node, n))
            .map_err(|refusal| refused(&metrics, method, peer.remote, &refusal))
    };
    // Refused at once rather than held open for requests it may not make.
    if let Err(status) = allowed(CONNECT) {
        return refuse_and_close(&mut io, status.message()).await;
    }
    match tokio::time::timeout(PREFACE_WAIT, read_preface(&mut io)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return tracing::debug!(remote = ?peer.remote, error = %e, "a Raft peer connection without its preface")
        }
        Err(_) => {
            return tracing::debug!(remote = ?peer.remote, "a Raft peer connection sent no preface in time")
        }
    }
    loop {
        let (kind, body) = match read_frame(&mut io).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(e) => {
                return tracing::debug!(remote = ?peer.remote, error = %e, "a Raft peer connection failed")
            }
        };
        // Asked again for every request: membership and certificates change.
        if let Err(status) = allowed(kind.method()) {
            return refuse_and_close(&mut io, status.message()).await;
        }
        let reply = answer(&node, kind, &body)
            .await
            .and_then(|json| raft_wire::frame(Kind::Reply, &[&json]).map_err(|e| e.to_string()));
        let written = match reply {
            Ok(frame) => write_frame(&mut io, &frame).await,
            Err(why) => refuse(&mut io, &why).await,
        };
        if written.is_err() {
            return;
        }
    }
}

async fn refuse<W: tokio::io::AsyncWrite + Unpin>(io: &mut W, why: &str) -> std::io::Result<()> {
    let frame =
        raft_wire::frame(Kind::Refused, &[why.as_bytes()]).map_err(std::io::Error::other)?;
    write_frame(io, &frame).await
}

/// Refuses the connection: says why, then closes it once the peer has
/// (for a while at most), so that what it sent meanwhile, unread, does not
/// reset the connection before it reads the reason.
async fn refuse_and_close<S>(io: &mut S, why: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if refuse(io, why).await.is_err() || io.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let drained = async {
        let mut left = 1 << 20;
        while left > 0 {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left -= n.min(left),
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, drained).await;
}

/// openraft's result for a peer's request, as JSON; or why it was not served.
async fn answer(node: &Node, kind: Kind, body: &[u8]) -> Result<Vec<u8>, String> {
    match kind {
        Kind::AppendEntries => json(&node.raft.append_entries(parse(body)?).await),
        Kind::Vote => json(&node.raft.vote(parse(body)?).await),
        Kind::InstallSnapshot => {
            let (header, data) = raft_wire::split_snapshot(body).map_err(|e| e.to_string())?;
            let header: SnapshotHeader = parse(header)?;
            let rpc = InstallSnapshotRequest {
                vote: header.vote,
                meta: header.meta,
                offset: header.offset,
                data: data.to_vec(),
                done: header.done,
            };
            json(&node.raft.install_snapshot(rpc).await)
        }
        Kind::Reply | Kind::Refused => Err(format!("a {kind:?} frame is not a request")),
    }
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| format!("encoding a raft reply: {e}"))
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("malformed raft message: {e}"))
}

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
    parse(bytes).map_err(Status::invalid_argument)
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    json(value)
        .map(|json| Response::new(RaftPayload { json }))
        .map_err(Status::internal)
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
        let result_json = json(&wire).map_err(Status::internal)?;
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
