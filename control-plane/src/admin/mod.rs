//! The admin gRPC API: resources, watch, membership, status, where proxies
//! stand, explanations of routing, and snapshots.

mod convert;
mod proxies;
mod snapshot;
mod watch;

pub use convert::{node_error, state_name};

use crate::certificates::tokens;
use crate::raft::view::DbView;
use crate::{
    metrics::Metrics,
    node::{MembershipChange, Node},
    xds::{mesh::MeshSnapshot, registry::Registry},
};
use convert::{
    consistency, delete_from_pb, explain_error, key_from_pb, list_scope, members, parse_kind,
    put_from_pb, resource_to_pb,
};
use meridian_model::{Command, Kind, Resource, ResourceKey, StateView};
use meridian_proto::v1::{self as pb, admin_server};
use meridian_routes::ServiceId;
use meridian_telemetry::{self as telemetry, Context, KeyValue, SpanKind, TraceContextExt};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Endpoints show whether their cluster is stale, read from the cluster's status.
fn with_cluster_status(view: &DbView, mut resource: Resource) -> Resource {
    if resource.kind() == Kind::Endpoints {
        let cluster = resource.metadata.cluster.clone().unwrap_or_default();
        let stale = ResourceKey::new(Kind::Cluster, None, &cluster, None)
            .ok()
            .and_then(|key| view.get(&key))
            .and_then(|c| c.status)
            .is_some_and(|s| s.stale);
        resource.status = Some(meridian_model::Status {
            stale,
            ..Default::default()
        });
    }
    resource
}

pub struct AdminService {
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    proxies: Arc<Registry>,
    /// The mesh as this node's xDS streams compile it.
    mesh: tokio::sync::watch::Receiver<Arc<MeshSnapshot>>,
    /// `--insecure`: members may only be added on loopback addresses.
    plaintext: bool,
}

impl AdminService {
    pub fn new(
        node: Arc<Node>,
        metrics: Arc<Metrics>,
        proxies: Arc<Registry>,
        mesh: tokio::sync::watch::Receiver<Arc<MeshSnapshot>>,
        plaintext: bool,
    ) -> Self {
        AdminService {
            node,
            metrics,
            plaintext,
            proxies,
            mesh,
        }
    }

    /// This node's proxies, and with `everywhere` every member's: the
    /// proxies and the members that did not answer.
    async fn proxies(&self, everywhere: bool) -> (Vec<pb::Proxy>, Vec<u64>) {
        let local = self.proxies.list(&self.mesh.borrow().clone());
        if !everywhere {
            return (local, Vec::new());
        }
        let peers = convert::members(&self.node.metrics())
            .into_iter()
            .filter(|m| m.node_id != self.node.id);
        proxies::everywhere(local, peers).await
    }

    /// Proposes an operator's change in a span of its own (`admin.METHOD`),
    /// a child of the caller's trace context when it sent one.
    async fn submit(
        &self,
        method: &'static str,
        caller: &Context,
        mut command: Command,
    ) -> Result<pb::ApplyResponse, Status> {
        if command.ops.is_empty() {
            return Err(Status::invalid_argument("nothing to apply"));
        }
        let cx = telemetry::start(
            method,
            SpanKind::Server,
            caller,
            vec![KeyValue::new("meridian.ops", command.ops.len() as i64)],
        );
        command.trace = telemetry::propagation::to_string(&cx);
        let submitted = self.node.submit(command).await.map_err(node_error);
        match &submitted {
            Ok((index, _)) => cx
                .span()
                .set_attribute(KeyValue::new("meridian.raft.index", *index as i64)),
            Err(status) => telemetry::fail(&cx, status.message().to_string()),
        }
        let (index, revisions) = submitted?;
        Ok(pb::ApplyResponse { index, revisions })
    }

    fn count<T>(&self, method: &str, result: Result<T, Status>) -> Result<T, Status> {
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        self.metrics.count_admin_request(method, code);
        if let Err(status) = &result {
            tracing::debug!(method, code = ?status.code(), message = status.message(), "admin request refused");
        }
        result
    }

    fn membership_response(&self) -> pb::MembershipResponse {
        pb::MembershipResponse {
            members: members(&self.node.metrics()),
        }
    }

    async fn membership(
        &self,
        method: &str,
        change: MembershipChange,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let result = self
            .node
            .change_membership(change)
            .await
            .map_err(node_error);
        self.count(
            method,
            result.map(|()| Response::new(self.membership_response())),
        )
    }
}

#[tonic::async_trait]
impl admin_server::Admin for AdminService {
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let caller = telemetry::propagation::extract_grpc(request.metadata());
        let request = request.into_inner();
        let result = async {
            let many = request.puts.len() + request.deletes.len() > 1;
            let mut ops = Vec::new();
            for (i, put) in request.puts.into_iter().enumerate() {
                let context = if many {
                    format!("puts[{i}]")
                } else {
                    String::new()
                };
                ops.push(put_from_pb(&context, put)?);
            }
            for delete in request.deletes {
                ops.push(delete_from_pb(delete)?);
            }
            self.submit("admin.Apply", &caller, Command::new(ops)).await
        }
        .await;
        self.count("Apply", result.map(Response::new))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let caller = telemetry::propagation::extract_grpc(request.metadata());
        let result = async {
            let op = put_from_pb("", request.into_inner())?;
            self.submit("admin.Put", &caller, Command::new(vec![op]))
                .await
        }
        .await;
        self.count("Put", result.map(Response::new))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let caller = telemetry::propagation::extract_grpc(request.metadata());
        let result = async {
            let op = delete_from_pb(request.into_inner())?;
            self.submit("admin.Delete", &caller, Command::new(vec![op]))
                .await
        }
        .await;
        self.count("Delete", result.map(Response::new))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::Resource>, Status> {
        let request = request.into_inner();
        let result = async {
            let key = key_from_pb(request.key)?;
            let consistency = consistency(request.consistency)?;
            self.node
                .read_barrier(consistency)
                .await
                .map_err(node_error)?;
            let view = self.node.state.view();
            let resource = view
                .get(&key)
                .ok_or_else(|| Status::not_found(format!("{key} not found")))?;
            Ok(resource_to_pb(&with_cluster_status(&view, resource)))
        }
        .await;
        self.count("Get", result.map(Response::new))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let request = request.into_inner();
        let result = async {
            let (kinds, namespace) = list_scope(&request.kind, &request.namespace)?;
            let consistency = consistency(request.consistency)?;
            let revision = self
                .node
                .read_barrier(consistency)
                .await
                .map_err(node_error)?;
            let view = self.node.state.view();
            let items = kinds
                .into_iter()
                .flat_map(|kind| view.list_prefix(&ResourceKey::prefix(kind, namespace.as_deref())))
                .map(|r| resource_to_pb(&with_cluster_status(&view, r)))
                .collect();
            Ok(pb::ListResponse { items, revision })
        }
        .await;
        self.count("List", result.map(Response::new))
    }

    type WatchStream = watch::WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        let result = (|| {
            let kind = if request.kind.is_empty() {
                None
            } else {
                Some(parse_kind(&request.kind)?)
            };
            watch::start(
                self.node.state.events(),
                self.node.state.view(),
                kind,
                request.from_revision,
            )
        })();
        self.count("Watch", result.map(Response::new))
    }

    async fn list_members(
        &self,
        _request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let members = members(&self.node.metrics());
        self.count(
            "ListMembers",
            Ok(Response::new(pb::ListMembersResponse { members })),
        )
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let request = request.into_inner();
        if let Err(e) = crate::server::config::check_member_addr(&request.addr, self.plaintext) {
            return self.count("AddLearner", Err(Status::invalid_argument(e.to_string())));
        }
        let change = MembershipChange::AddLearner {
            node_id: request.node_id,
            addr: request.addr,
        };
        self.membership("AddLearner", change).await
    }

    async fn promote_member(
        &self,
        request: Request<pb::PromoteMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let change = MembershipChange::Promote {
            node_id: request.into_inner().node_id,
        };
        self.membership("PromoteMember", change).await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let change = MembershipChange::Remove {
            node_id: request.into_inner().node_id,
        };
        self.membership("RemoveMember", change).await
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let metrics = self.node.metrics();
        let bootstrapped = match self.node.state.bootstrapped() {
            Ok(nodes) => nodes.into_iter().collect(),
            Err(e) => {
                let e = Status::internal(format!("reading the state machine: {e}"));
                return self.count("Status", Err(e));
            }
        };
        let status = pb::StatusResponse {
            node_id: self.node.id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            commit_index: self.node.committed_index(),
            applied_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            snapshot_index: metrics.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: metrics.purged.map(|l| l.index).unwrap_or(0),
            state: state_name(metrics.state).to_string(),
            members: members(&metrics),
            bootstrapped,
        };
        self.count("Status", Ok(Response::new(status)))
    }

    async fn list_proxies(
        &self,
        request: Request<pb::ListProxiesRequest>,
    ) -> Result<Response<pb::ListProxiesResponse>, Status> {
        let (proxies, unreachable_nodes) = self.proxies(!request.into_inner().local_only).await;
        let response = pb::ListProxiesResponse {
            proxies,
            unreachable_nodes,
        };
        self.count("ListProxies", Ok(Response::new(response)))
    }

    async fn propagation(
        &self,
        request: Request<pb::PropagationRequest>,
    ) -> Result<Response<pb::PropagationResponse>, Status> {
        let revision = request.into_inner().revision;
        let committed = self.node.committed_index();
        let result = match revision {
            0 => Err(Status::invalid_argument(
                "give the revision to look for (the one `meridian apply` printed)",
            )),
            r if r > committed => Err(Status::invalid_argument(format!(
                "revision {r} is not committed yet (the newest this node knows of is {committed})"
            ))),
            _ => {
                let (proxies, unreachable) = self.proxies(true).await;
                let mut response = proxies::propagation(proxies, revision);
                response.unreachable_nodes = unreachable;
                Ok(response)
            }
        };
        self.count("Propagation", result.map(Response::new))
    }

    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let request = request.into_inner();
        let result = if request.service.is_empty() || request.cluster.is_empty() {
            Err(Status::invalid_argument(
                "explain needs a service and the cluster of the proxy asking",
            ))
        } else {
            let snapshot = self.mesh.borrow().clone();
            let service = ServiceId::parse(&request.service, "default");
            crate::explain::explain(&snapshot.state, &service, &request.cluster, &request.zone)
                .map(|explained| pb::ExplainResponse {
                    revision: snapshot.revision,
                    node_id: self.node.id,
                    ..explained
                })
                .map_err(explain_error)
        };
        self.count("Explain", result.map(Response::new))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let request = request.into_inner();
        let result = tokens::create(&self.node, &request)
            .await
            .map(|(token, id, expires_at)| {
                tracing::info!(%id, role = %request.role, "created a bootstrap token");
                Response::new(pb::CreateTokenResponse {
                    token,
                    id,
                    expires_at_unix_seconds: expires_at,
                })
            });
        self.count("CreateToken", result)
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let id = request.into_inner().id;
        let result = tokens::revoke(&self.node, &id).await.map(|revision| {
            tracing::info!(%id, "revoked a bootstrap token");
            Response::new(pb::RevokeTokenResponse { revision })
        });
        self.count("RevokeToken", result)
    }

    type SnapshotStream = snapshot::SnapshotStream;

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let result = snapshot::stream(&self.node).await;
        self.count("Snapshot", result.map(Response::new))
    }
}
