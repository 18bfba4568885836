//! The Raft client side: openraft's messages to a peer over gRPC, one lazily
//! connected channel per peer.

use super::{NodeId, TypeConfig};
use crate::grpc_client;
use meridian_proto::v1::{raft_client::RaftClient, RaftPayload, SnapshotChunk};
use openraft::{
    error::{
        InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
        Unreachable,
    },
    network::RPCOption,
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
    BasicNode, RaftNetwork, RaftNetworkFactory,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tonic::transport::Channel;

/// Raft messages may be large (entry batches, snapshot chunks).
pub const MAX_RAFT_MESSAGE: usize = 64 * 1024 * 1024;

/// The size past which an AppendEntries of several entries is not sent and
/// openraft is asked for fewer entries a message. openraft gives each
/// AppendEntries its heartbeat interval (200 ms) to be sent, decoded,
/// appended and answered, and sends the same entries again when it runs
/// out: a follower behind by dozens of large entries (bulk applies) was
/// sent all of them at once, too slowly every time, and never caught up.
const MAX_APPEND_BYTES: usize = 256 * 1024;

/// How many of `entries` to send at once when together their message takes
/// `bytes`: `None` when it goes as it is (small enough, or a single entry).
fn fewer_entries(entries: usize, bytes: usize) -> Option<u64> {
    if entries <= 1 || bytes <= MAX_APPEND_BYTES {
        return None;
    }
    let fit = entries as u128 * MAX_APPEND_BYTES as u128 / bytes as u128;
    Some((fit as u64).clamp(1, entries as u64 - 1))
}

pub struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            client: None,
        }
    }
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    client: Option<RaftClient<Channel>>,
}

/// The header of a snapshot chunk; the data travels as raw bytes beside it.
#[derive(Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub vote: openraft::Vote<NodeId>,
    pub meta: openraft::SnapshotMeta<NodeId, BasicNode>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerClient {
    fn client(&mut self) -> Result<RaftClient<Channel>, Unreachable> {
        if self.client.is_none() {
            let channel =
                grpc_client::channel(self.target, &self.addr).map_err(|e| Unreachable::new(&e))?;
            self.client = Some(
                RaftClient::new(channel)
                    .max_decoding_message_size(MAX_RAFT_MESSAGE)
                    .max_encoding_message_size(MAX_RAFT_MESSAGE),
            );
        }
        self.client
            .clone()
            .ok_or_else(|| Unreachable::new(&std::io::Error::other("no client")))
    }

    fn decode<T: DeserializeOwned, E: DeserializeOwned + std::error::Error>(
        &self,
        reply: RaftPayload,
    ) -> RpcResult<T, E> {
        let result: Result<T, RaftError<NodeId, E>> = serde_json::from_slice(&reply.json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn encode<T: Serialize>(value: &T) -> Result<RaftPayload, NetworkError> {
        let json = serde_json::to_vec(value).map_err(|e| NetworkError::new(&e))?;
        Ok(RaftPayload { json })
    }
}

fn status_error<E: std::error::Error>(
    status: tonic::Status,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
            RPCError::Unreachable(Unreachable::new(&status))
        }
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

fn with_timeout(option: &RPCOption, request: RaftPayload) -> tonic::Request<RaftPayload> {
    let mut request = tonic::Request::new(request);
    request.set_timeout(option.hard_ttl());
    request
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let payload = Self::encode(&rpc).map_err(RPCError::Network)?;
        if let Some(fewer) = fewer_entries(rpc.entries.len(), payload.json.len()) {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fewer),
            ));
        }
        let mut client = self.client().map_err(RPCError::Unreachable)?;
        let reply = client
            .append_entries(with_timeout(&option, payload))
            .await
            .map_err(status_error)?;
        self.decode(reply.into_inner())
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let header = SnapshotHeader {
            vote: rpc.vote,
            meta: rpc.meta,
        };
        let header_json =
            serde_json::to_vec(&header).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let chunk = SnapshotChunk {
            header_json,
            offset: rpc.offset,
            data: rpc.data,
            done: rpc.done,
        };
        let mut client = self.client().map_err(RPCError::Unreachable)?;
        let mut request = tonic::Request::new(chunk);
        request.set_timeout(option.hard_ttl());
        let reply = client
            .install_snapshot(request)
            .await
            .map_err(status_error)?;
        self.decode(reply.into_inner())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        let payload = Self::encode(&rpc).map_err(RPCError::Network)?;
        let mut client = self.client().map_err(RPCError::Unreachable)?;
        let reply = client
            .vote(with_timeout(&option, payload))
            .await
            .map_err(status_error)?;
        self.decode(reply.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_message_of_several_entries_asks_for_fewer() {
        // Small, or a single entry however large: sent as it is.
        assert_eq!(fewer_entries(64, 200_000), None);
        assert_eq!(fewer_entries(1, 50 * MAX_APPEND_BYTES), None);
        // Sixty-four entries of about the limit each: one at a time.
        assert_eq!(fewer_entries(64, 64 * MAX_APPEND_BYTES), Some(1));
        // Ten entries in twice the size: five.
        assert_eq!(fewer_entries(10, 2 * MAX_APPEND_BYTES), Some(5));
        // Just over: one fewer at least.
        assert_eq!(fewer_entries(4, MAX_APPEND_BYTES + 1), Some(3));
    }
}
