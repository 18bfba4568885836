//! The federation API: agents stream their cluster's endpoint sets here. Each
//! batch becomes one Raft entry; a full snapshot also removes what the
//! cluster no longer has. Liveness of agents drives the clusters' `stale` mark.

pub mod liveness;

use crate::authz::{caller_of, may_stream_endpoints, refused, Caller};
use crate::metrics::Metrics;
use crate::node::{Node, NodeError};
use liveness::Liveness;
use meridian_model::{Command, Kind, Manifest, Op, Resource, ResourceKey, StateView, Status};
use meridian_proto::v1::{
    federation_server::Federation, sync_request::Message, Batch, Hello, SyncRequest, SyncResponse,
};
use std::{collections::BTreeSet, pin::Pin, sync::Arc};
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

/// The agent's stream, after its hello.
struct Session {
    node: Arc<Node>,
    cluster: String,
    agent_id: String,
    source_error: Option<String>,
}

impl Session {
    fn status(&self) -> Status {
        Status {
            stale: false,
            agent: Some(self.agent_id.clone()),
            source_error: self.source_error.clone(),
        }
    }

    /// The command a batch becomes.
    fn command(&self, batch: Batch) -> Result<Command, RpcStatus> {
        let mut ops = Vec::new();
        let mut kept = BTreeSet::new();
        for set in batch.upserts {
            let manifest = Manifest {
                kind: Kind::Endpoints.to_string(),
                metadata: serde_json::json!({"name": set.name, "namespace": set.namespace, "cluster": self.cluster}),
                spec: serde_json::from_str(&set.spec_json).map_err(|e| {
                    RpcStatus::invalid_argument(format!(
                        "{}/{}: malformed spec: {e}",
                        set.namespace, set.name
                    ))
                })?,
                status: serde_json::Value::Null,
            };
            let resource = Resource::from_manifest(manifest).map_err(|e| {
                RpcStatus::invalid_argument(format!("{}/{}: {e}", set.namespace, set.name))
            })?;
            kept.insert(resource.key());
            ops.push(Op::Put {
                resource: Box::new(resource),
                expected_revision: None,
            });
        }
        let mut removals: Vec<ResourceKey> = batch
            .removals
            .iter()
            .map(|n| endpoints_key(&self.cluster, &n.namespace, &n.name))
            .collect::<Result<_, _>>()?;
        if batch.full_snapshot {
            let stale_sets = self
                .node
                .state
                .view()
                .list(Kind::Endpoints)
                .into_iter()
                .map(|r| r.key())
                .filter(|k| k.cluster == self.cluster && !kept.contains(k));
            removals.extend(stale_sets);
        }
        ops.extend(removals.into_iter().map(|key| Op::Delete {
            key,
            expected_revision: None,
            ignore_missing: true,
        }));
        ops.push(Op::SetStatus {
            cluster: self.cluster.clone(),
            status: self.status(),
        });
        Ok(Command { ops })
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
    tracing::info!(cluster = %hello.cluster, agent = %hello.agent_id, "agent connected");
    let mut session = Session {
        node,
        cluster: hello.cluster,
        agent_id: hello.agent_id,
        source_error: None,
    };
    while let Some(request) = requests.message().await? {
        match request.message {
            Some(Message::Batch(batch)) => {
                let seq = batch.seq;
                let command = session.command(batch)?;
                let (index, _) = session.node.write(command).await.map_err(node_error)?;
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
                session.source_error = Some(status.error).filter(|e| !e.is_empty());
                let command = Command {
                    ops: vec![Op::SetStatus {
                        cluster: session.cluster.clone(),
                        status: session.status(),
                    }],
                };
                session.node.write(command).await.map_err(node_error)?;
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
