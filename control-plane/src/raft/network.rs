//! The Raft client side: openraft's messages to a peer over the Raft peer
//! protocol (`meridian_proto::raft_wire`), on connections kept between
//! calls and between clients. openraft makes one call at a time per
//! client, so the task that makes it writes the request and reads the
//! reply itself: no connection task, no channel between them.

use super::durability::Durability;
use super::peer_io::{read_frame, write_frame};
use super::{NodeId, TypeConfig};
use crate::grpc_client;
use meridian_identity::tls::ClientStream;
use meridian_proto::raft_wire::{self, FrameError, Kind};
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
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::io::BufStream;

/// A connection to a peer, its preface sent.
type Conn = BufStream<ClientStream>;

/// Connections kept per peer between clients, at most.
const IDLE_PER_PEER: usize = 4;

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

pub struct Network {
    /// What of this node's log is on disk: followers are told of no commit
    /// beyond it.
    durability: Arc<Durability>,
    idle: Arc<IdleConns>,
}

impl Network {
    /// The clients of a node whose log's durability is `durability`.
    pub fn new(durability: Arc<Durability>) -> Self {
        Network {
            durability,
            idle: Default::default(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            conn: self.idle.take(target, &node.addr),
            addr: node.addr.clone(),
            durability: self.durability.clone(),
            idle: self.idle.clone(),
        }
    }
}

/// Connections to the peers that clients left: openraft makes a new client
/// for every leadership check (each round of heartbeats that linearizable
/// reads wait for, a client per peer) and every vote, and each would
/// otherwise open a connection of its own (over TLS, with a handshake) and
/// close it after one call. Only connections after a whole exchange are
/// kept (`PeerClient::conn`).
#[derive(Default)]
struct IdleConns(Mutex<HashMap<(NodeId, String), Vec<Conn>>>);

impl IdleConns {
    fn take(&self, target: NodeId, addr: &str) -> Option<Conn> {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        idle.get_mut(&(target, addr.to_string()))?.pop()
    }

    fn keep(&self, target: NodeId, addr: String, conn: Conn) {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let kept = idle.entry((target, addr)).or_default();
        if kept.len() < IDLE_PER_PEER {
            kept.push(conn);
        }
    }
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    durability: Arc<Durability>,
    /// The connection between calls; dropped after a call that failed or
    /// was dropped (where its request and reply stand is unknown then).
    conn: Option<Conn>,
    /// Where the connection goes when this client ends.
    idle: Arc<IdleConns>,
}

impl Drop for PeerClient {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.idle
                .keep(self.target, std::mem::take(&mut self.addr), conn);
        }
    }
}

/// The header of a snapshot chunk; the data travels as raw bytes after it.
#[derive(Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub vote: openraft::Vote<NodeId>,
    pub meta: openraft::SnapshotMeta<NodeId, BasicNode>,
    pub offset: u64,
    pub done: bool,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

/// Why a call got no reply from openraft on the peer.
enum CallFailed {
    /// No connection, or it broke or timed out: the peer may be down.
    Unreachable(std::io::Error),
    /// The peer answered, but not with openraft's result: why.
    Refused(String),
}

impl CallFailed {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        match self {
            CallFailed::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallFailed::Refused(why) => {
                RPCError::Network(NetworkError::new(&std::io::Error::other(why)))
            }
        }
    }
}

impl PeerClient {
    /// Sends `frame` and reads its reply within `ttl`, on the kept
    /// connection or a new one. The connection is taken for the call and
    /// kept again only after a whole exchange: openraft drops a call that
    /// outlives its own timeout (the same `ttl`, started a moment earlier),
    /// and a connection left with a request sent and its reply unread would
    /// hand that reply to the next request, another AppendEntries.
    async fn call(&mut self, frame: &[u8], ttl: Duration) -> Result<Vec<u8>, CallFailed> {
        let kept = self.conn.take();
        let exchanged = tokio::time::timeout(ttl, async {
            // A kept connection the peer may have closed meanwhile (it
            // restarted): the request goes again on a new one. Raft's
            // messages bear repeating: a follower takes an AppendEntries, a
            // vote or a snapshot chunk (written at its offset) twice as once.
            if let Some(conn) = kept {
                if let Ok(exchanged) = exchange(conn, frame).await {
                    return Ok(exchanged);
                }
            }
            exchange(connect(self.target, &self.addr).await?, frame).await
        })
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("timed out")));
        let (conn, (kind, body)) = exchanged.map_err(CallFailed::Unreachable)?;
        if kind == Kind::Reply {
            self.conn = Some(conn);
            return Ok(body);
        }
        Err(CallFailed::Refused(match kind {
            Kind::Refused => String::from_utf8_lossy(&body).into_owned(),
            other => format!("the peer replied with a {other:?} frame"),
        }))
    }

    /// Sends a request of `kind` (its JSON `body`) and decodes the reply.
    async fn request<T: DeserializeOwned, E: DeserializeOwned + std::error::Error>(
        &mut self,
        frame: Result<Vec<u8>, FrameError>,
        option: &RPCOption,
    ) -> RpcResult<T, E> {
        let frame = frame.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = self
            .call(&frame, option.hard_ttl())
            .await
            .map_err(CallFailed::into_rpc)?;
        let result: Result<T, RaftError<NodeId, E>> =
            serde_json::from_slice(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// Sends `frame` on `conn` and reads its reply.
async fn exchange(mut conn: Conn, frame: &[u8]) -> std::io::Result<(Conn, (Kind, Vec<u8>))> {
    write_frame(&mut conn, frame).await?;
    let reply = read_frame(&mut conn)
        .await?
        .ok_or_else(|| std::io::Error::other("the peer closed the connection"))?;
    Ok((conn, reply))
}

/// A new connection to node `target`, its preface sent.
async fn connect(target: NodeId, addr: &str) -> std::io::Result<Conn> {
    let stream = grpc_client::stream(target, addr, raft_wire::ALPN).await?;
    let mut conn = BufStream::new(stream);
    write_frame(&mut conn, raft_wire::PREFACE).await?;
    Ok(conn)
}

fn json<T: Serialize, E: std::error::Error>(
    value: &T,
) -> Result<Vec<u8>, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
    serde_json::to_vec(value).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        rpc.leader_commit = self.durability.ledger().limit_commit(rpc.leader_commit);
        let body = json(&rpc)?;
        if let Some(fewer) = fewer_entries(rpc.entries.len(), body.len()) {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fewer),
            ));
        }
        self.request(raft_wire::frame(Kind::AppendEntries, &[&body]), &option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let header = json(&SnapshotHeader {
            vote: rpc.vote,
            meta: rpc.meta,
            offset: rpc.offset,
            done: rpc.done,
        })?;
        self.request(raft_wire::snapshot_frame(&header, &rpc.data), &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        let body = json(&rpc)?;
        self.request(raft_wire::frame(Kind::Vote, &[&body]), &option)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::peer_io::read_preface;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A peer that answers each request with a reply of the request's
    /// body, the first one on each connection `late`, and closes each
    /// connection after `replies` of them; and how many connections it took.
    async fn echo_peer(late: Duration, replies: usize) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut conn = BufStream::new(stream);
                    if read_preface(&mut conn).await.is_err() {
                        return;
                    }
                    for answered in 0..replies {
                        let Ok(Some((_, body))) = read_frame(&mut conn).await else {
                            return;
                        };
                        if answered == 0 {
                            tokio::time::sleep(late).await;
                        }
                        let Ok(reply) = raft_wire::frame(Kind::Reply, &[&body]) else {
                            return;
                        };
                        if write_frame(&mut conn, &reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn request(body: &[u8]) -> Vec<u8> {
        raft_wire::frame(Kind::AppendEntries, &[body]).expect("framed")
    }

    fn network() -> Network {
        Network::new(Default::default())
    }

    #[tokio::test]
    async fn a_new_client_takes_the_connection_an_ended_one_left() {
        let (addr, accepted) = echo_peer(Duration::ZERO, usize::MAX).await;
        let mut network = network();
        let node = BasicNode::new(&addr);
        for body in [&b"first"[..], b"second", b"third"] {
            let mut client = network.new_client(2, &node).await;
            let reply = client.call(&request(body), Duration::from_secs(5)).await;
            assert_eq!(reply.ok().as_deref(), Some(body));
        }
        assert_eq!(accepted.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_request_on_a_kept_connection_the_peer_closed_goes_on_a_new_one() {
        // A peer that closes every connection after one reply, as one that
        // restarted between two calls.
        let (addr, accepted) = echo_peer(Duration::ZERO, 1).await;
        let mut client = network().new_client(2, &BasicNode::new(&addr)).await;
        for body in [&b"first"[..], b"second"] {
            let reply = client.call(&request(body), Duration::from_secs(5)).await;
            assert_eq!(reply.ok().as_deref(), Some(body));
        }
        assert_eq!(accepted.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_call_dropped_midway_leaves_no_reply_for_the_next() {
        let (addr, _) = echo_peer(Duration::from_millis(300), usize::MAX).await;
        let mut client = network().new_client(2, &BasicNode::new(&addr)).await;
        // openraft's own timeout drops the call before its reply comes.
        let dropped = tokio::time::timeout(
            Duration::from_millis(100),
            client.call(&request(b"first"), Duration::from_secs(5)),
        )
        .await;
        assert!(dropped.is_err(), "answered before the outer timeout");
        let reply = client
            .call(&request(b"second"), Duration::from_secs(5))
            .await
            .ok()
            .expect("a reply");
        assert_eq!(reply, b"second", "the reply to the dropped call");
        // A whole exchange keeps the connection for the next call.
        let reply = client
            .call(&request(b"third"), Duration::from_secs(5))
            .await
            .ok()
            .expect("a reply");
        assert_eq!(reply, b"third");
        assert!(client.conn.is_some());
    }

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
