//! The federation API: agents stream their cluster's endpoint sets here. Each
//! stream is an agent session, begun by a Raft entry of its own; each batch
//! becomes one Raft entry, fenced by the session and its number, and a full
//! snapshot also removes what the cluster no longer has, decided when the
//! entry is applied. Liveness of agents drives the clusters' `stale` mark.

mod batch;
pub mod liveness;
mod pacing;

use crate::authz::{caller_of, is_member, may_stream_endpoints, node_is_member, refused, Caller};
use crate::metrics::Metrics;
use crate::node::{Node, NodeError};
use batch::{endpoint_sets, truncated, MAX_REASON_LEN};
use liveness::Liveness;
use meridian_model::{Command, Kind, Op, ResourceKey, StateView, Status};
use meridian_proto::v1::{
    federation_server::Federation, sync_request::Message, Batch, Hello, SyncRequest, SyncResponse,
};
use meridian_telemetry::{self as telemetry, KeyValue, SpanKind};
use pacing::{StatusPacer, STATUS_INTERVAL};
use std::{pin::Pin, sync::Arc};
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status as RpcStatus, Streaming};

#[derive(Clone)]
pub struct FederationService {
    node: Arc<Node>,
    liveness: Arc<Liveness>,
    metrics: Arc<Metrics>,
}

impl FederationService {
    pub fn new(node: Arc<Node>, liveness: Arc<Liveness>, metrics: Arc<Metrics>) -> Self {
        FederationService {
            node,
            liveness,
            metrics,
        }
    }
}

const SYNC_METHOD: &str = "/meridian.v1.Federation/Sync";

fn endpoints_key(cluster: &str, namespace: &str, name: &str) -> Result<ResourceKey, RpcStatus> {
    ResourceKey::new(Kind::Endpoints, Some(namespace), name, Some(cluster))
        .map_err(|e| RpcStatus::invalid_argument(e.to_string()))
}

fn node_error(e: NodeError) -> RpcStatus {
    match e {
        NodeError::Rejected(r) => RpcStatus::failed_precondition(r.message),
        NodeError::Unavailable(m) => RpcStatus::unavailable(m),
        NodeError::InvalidMembership(m) => RpcStatus::internal(m),
    }
}

/// The longest agent id a hello may carry; it is kept in replicated state.
const MAX_AGENT_ID_LEN: usize = 128;
/// How much of a source's error text is kept in replicated state.
const MAX_SOURCE_ERROR_LEN: usize = 512;

/// The agent's stream, after its hello.
struct Session {
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    cluster: String,
    agent_id: String,
    /// The session this stream is: the log index of the entry that began it.
    session: u64,
    source_error: Option<String>,
    /// Endpoints the last batch left out, and why the first was.
    invalid: (u32, Option<String>),
}

impl Session {
    /// The op that records what this session knows of its cluster.
    fn set_status(&self) -> Op {
        Op::SetStatus {
            cluster: self.cluster.clone(),
            status: Status {
                stale: false,
                agent: Some(self.agent_id.clone()),
                source_error: self.source_error.clone(),
                invalid_endpoints: self.invalid.0,
                invalid_endpoint_reason: self.invalid.1.clone(),
                ..Status::default()
            },
        }
    }

    /// Writes the session's status (its source error) on its own.
    async fn write_status(&self) -> Result<(), RpcStatus> {
        let command = Command::new(vec![self.fence(None), self.set_status()]);
        self.node.write(command).await.map_err(node_error)?;
        Ok(())
    }

    /// The op that makes the rest of a command apply only while this
    /// session is the cluster's current one (and, for a batch, in order).
    fn fence(&self, seq: Option<u64>) -> Op {
        Op::AgentFence {
            cluster: self.cluster.clone(),
            session: self.session,
            seq,
        }
    }

    /// The command a batch becomes.
    fn command(&mut self, batch: Batch) -> Result<Command, RpcStatus> {
        let sets = endpoint_sets(&self.cluster, batch.upserts);
        if !sets.left_out.is_empty() {
            tracing::warn!(cluster = %self.cluster, left_out = sets.left_out.len(), first = %sets.left_out[0], "invalid endpoints left out of a batch");
            self.metrics
                .count_invalid_endpoints(&self.cluster, sets.left_out.len());
        }
        self.invalid = (
            u32::try_from(sets.left_out.len()).unwrap_or(u32::MAX),
            sets.left_out.first().map(|r| truncated(r, MAX_REASON_LEN)),
        );
        let mut ops = vec![self.fence(Some(batch.seq))];
        ops.extend(sets.resources.into_iter().map(|resource| Op::Put {
            resource: Box::new(resource),
            expected_revision: None,
        }));
        for removed in &batch.removals {
            ops.push(Op::Delete {
                key: endpoints_key(&self.cluster, &removed.namespace, &removed.name)?,
                expected_revision: None,
                ignore_missing: true,
            });
        }
        if batch.full_snapshot {
            // Decided when applied: this node's copy may not hold yet what
            // an earlier batch, acknowledged by another node, created.
            ops.push(Op::PruneEndpoints {
                cluster: self.cluster.clone(),
                keep: sets.named,
            });
        }
        ops.push(self.set_status());
        Ok(Command::new(ops))
    }
}

/// Resolves at `deadline`, or never without one.
async fn until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

async fn hello(requests: &mut Streaming<SyncRequest>) -> Result<Hello, RpcStatus> {
    match requests.message().await? {
        Some(SyncRequest {
            message: Some(Message::Hello(hello)),
        }) => Ok(hello),
        _ => Err(RpcStatus::invalid_argument(
            "a federation stream starts with hello",
        )),
    }
}

async fn serve(
    service: FederationService,
    caller: Caller,
    mut requests: Streaming<SyncRequest>,
    tx: mpsc::Sender<Result<SyncResponse, RpcStatus>>,
) -> Result<(), RpcStatus> {
    let FederationService {
        node,
        liveness,
        metrics,
    } = service;
    let hello = hello(&mut requests).await?;
    if hello.agent_id.len() > MAX_AGENT_ID_LEN {
        return Err(RpcStatus::invalid_argument(format!(
            "hello.agent_id is {} bytes; at most {MAX_AGENT_ID_LEN}",
            hello.agent_id.len()
        )));
    }
    may_stream_endpoints(&caller, &hello.cluster)
        .map_err(|refusal| refused(&metrics, SYNC_METHOD, None, &refusal))?;
    let cluster_key = ResourceKey::new(Kind::Cluster, None, &hello.cluster, None)
        .map_err(|e| RpcStatus::invalid_argument(format!("hello.cluster: {e}")))?;
    if node.state.view().get(&cluster_key).is_none() {
        return Err(RpcStatus::failed_precondition(format!(
            "unknown cluster '{}': register it (kind: Cluster) before starting its agent",
            hello.cluster
        )));
    }
    let _connected = liveness.connect(&hello.cluster);
    let start = Command::new(vec![Op::StartAgentSession {
        cluster: hello.cluster.clone(),
        agent: hello.agent_id.clone(),
    }]);
    let (session_id, _) = node.write(start).await.map_err(node_error)?;
    tracing::info!(cluster = %hello.cluster, agent = %hello.agent_id, session = session_id, "agent connected");
    let mut session = Session {
        node,
        metrics,
        cluster: hello.cluster,
        agent_id: hello.agent_id,
        session: session_id,
        source_error: None,
        invalid: (0, None),
    };
    let mut pacer = StatusPacer::new(STATUS_INTERVAL);
    loop {
        let request = tokio::select! {
            request = requests.message() => request?,
            () = until(pacer.due()) => {
                session.write_status().await?;
                pacer.written(std::time::Instant::now());
                continue;
            }
        };
        let Some(request) = request else { break };
        // A node admitted when the stream opened and removed since writes
        // nothing more: its certificate no longer speaks for a node.
        if let Caller::Verified(id) = &caller {
            node_is_member(id, SYNC_METHOD, |n| is_member(&session.node, n))
                .map_err(|refusal| refused(&session.metrics, SYNC_METHOD, None, &refusal))?;
        }
        match request.message {
            Some(Message::Batch(batch)) => {
                let seq = batch.seq;
                // The agent's batch span is the parent (its text is parsed,
                // never stored: the entry carries this node's span).
                let cx = telemetry::start(
                    "federation.commit",
                    SpanKind::Server,
                    &telemetry::propagation::from_string(&batch.trace),
                    vec![
                        KeyValue::new("meridian.cluster", session.cluster.clone()),
                        KeyValue::new("meridian.batch.seq", seq as i64),
                    ],
                );
                let (sets, observed) = (
                    batch.upserts.len() + batch.removals.len(),
                    batch.observed_unix_ms,
                );
                let mut command = session.command(batch)?;
                command.trace = telemetry::propagation::to_string(&cx);
                let written = session.node.write(command).await.map_err(node_error);
                if let Err(status) = &written {
                    telemetry::fail(&cx, status.message().to_string());
                }
                drop(cx);
                let (index, _) = written?;
                session
                    .metrics
                    .pipeline
                    .federation
                    .committed(sets, observed);
                // The batch carried the status too.
                pacer.written(std::time::Instant::now());
                if tx
                    .send(Ok(SyncResponse {
                        acked_seq: seq,
                        index,
                    }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Some(Message::SourceStatus(status)) => {
                let error = Some(status.error)
                    .filter(|e| !e.is_empty())
                    .map(|e| truncated(&e, MAX_SOURCE_ERROR_LEN));
                if error == session.source_error {
                    // Nothing new: not worth a Raft entry.
                    continue;
                }
                if error.is_some() {
                    session
                        .metrics
                        .pipeline
                        .federation
                        .source_error(&session.cluster);
                }
                session.source_error = error;
                if pacer.offer(std::time::Instant::now()) {
                    session.write_status().await?;
                }
            }
            Some(Message::Hello(_)) | None => {
                return Err(RpcStatus::invalid_argument(
                    "expected a batch or a source status",
                ));
            }
        }
    }
    tracing::info!(cluster = %session.cluster, "agent disconnected");
    Ok(())
}

#[tonic::async_trait]
impl Federation for FederationService {
    type SyncStream = Pin<Box<dyn Stream<Item = Result<SyncResponse, RpcStatus>> + Send>>;

    async fn sync(
        &self,
        request: Request<Streaming<SyncRequest>>,
    ) -> Result<Response<Self::SyncStream>, RpcStatus> {
        let (tx, rx) = mpsc::channel(16);
        let service = self.clone();
        let caller = caller_of(&request);
        tokio::spawn(async move {
            if let Err(status) = serve(service, caller, request.into_inner(), tx.clone()).await {
                tracing::warn!(code = ?status.code(), message = status.message(), "federation stream refused");
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
