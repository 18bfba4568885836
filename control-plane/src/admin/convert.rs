//! Conversions at the admin API boundary: wire messages to model types, and
//! every error to the one `tonic::Status` a user can act on.

#[cfg(test)]
mod decoders_no_panic;

use crate::explain::ExplainError;
use crate::node::{Consistency, NodeError};
use crate::raft::NodeId;
use meridian_model::{
    check_label, Kind, Manifest, ModelError, Op, RejectionCode, Resource, ResourceKey,
};
use meridian_proto::v1 as pb;
use openraft::{BasicNode, RaftMetrics};
use tonic::Status;

pub fn node_error(e: NodeError) -> Status {
    match e {
        NodeError::Rejected(r) => match r.code {
            RejectionCode::InvalidArgument => Status::invalid_argument(r.message),
            RejectionCode::FailedPrecondition => Status::failed_precondition(r.message),
            RejectionCode::Aborted => Status::aborted(r.message),
            RejectionCode::NotFound => Status::not_found(r.message),
        },
        NodeError::Unavailable(message) => Status::unavailable(message),
        NodeError::InvalidMembership(message) => Status::failed_precondition(message),
    }
}

/// An explanation that cannot be given, as the caller should read it.
pub fn explain_error(e: ExplainError) -> Status {
    match e {
        ExplainError::UnknownService(_) | ExplainError::UnknownCluster(_) => {
            Status::not_found(e.to_string())
        }
        ExplainError::NotReachable { .. } => Status::failed_precondition(e.to_string()),
        ExplainError::Undecodable { .. } => Status::internal(e.to_string()),
    }
}

pub fn model_error(context: &str, e: ModelError) -> Status {
    if context.is_empty() {
        Status::invalid_argument(e.to_string())
    } else {
        Status::invalid_argument(format!("{context}: {e}"))
    }
}

pub fn parse_kind(text: &str) -> Result<Kind, Status> {
    text.parse().map_err(|e| model_error("", e))
}

/// What a List asks for: the kinds (every kind when none is named) and the
/// namespace, if any. The namespace becomes a storage prefix, so it must be
/// a valid name: `shop/checkout` would list the service checkout of shop.
pub fn list_scope(kind: &str, namespace: &str) -> Result<(Vec<Kind>, Option<String>), Status> {
    let kinds = if kind.is_empty() {
        Kind::ALL.to_vec()
    } else {
        vec![parse_kind(kind)?]
    };
    if namespace.is_empty() {
        return Ok((kinds, None));
    }
    check_label("namespace", namespace).map_err(|e| model_error("", e))?;
    Ok((kinds, Some(namespace.to_string())))
}

pub fn key_from_pb(key: Option<pb::ResourceKey>) -> Result<ResourceKey, Status> {
    let key = key.ok_or_else(|| Status::invalid_argument("key: is missing"))?;
    let kind = parse_kind(&key.kind)?;
    ResourceKey::new(kind, Some(&key.namespace), &key.name, Some(&key.cluster))
        .map_err(|e| model_error("key", e))
}

pub fn key_to_pb(key: &ResourceKey) -> pb::ResourceKey {
    pb::ResourceKey {
        kind: key.kind.to_string(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        cluster: key.cluster.clone(),
    }
}

pub fn put_from_pb(context: &str, put: pb::PutRequest) -> Result<Op, Status> {
    let manifest: Manifest = serde_json::from_str(&put.manifest_json)
        .map_err(|e| Status::invalid_argument(format!("{context}: malformed manifest: {e}")))?;
    let resource = Resource::from_manifest(manifest).map_err(|e| model_error(context, e))?;
    Ok(Op::Put {
        resource: Box::new(resource),
        expected_revision: put.expected_revision,
    })
}

pub fn delete_from_pb(delete: pb::DeleteRequest) -> Result<Op, Status> {
    Ok(Op::Delete {
        key: key_from_pb(delete.key)?,
        expected_revision: delete.expected_revision,
        ignore_missing: false,
    })
}

pub fn resource_to_pb(resource: &Resource) -> pb::Resource {
    pb::Resource {
        manifest_json: serde_json::to_string(resource).unwrap_or_default(),
        revision: resource.revision(),
    }
}

pub fn consistency(value: i32) -> Result<Consistency, Status> {
    match pb::Consistency::try_from(value) {
        Ok(pb::Consistency::Linearizable) => Ok(Consistency::Linearizable),
        Ok(pb::Consistency::Stale) => Ok(Consistency::Stale),
        Err(_) => Err(Status::invalid_argument(format!(
            "consistency: unknown value {value}"
        ))),
    }
}

pub fn members(metrics: &RaftMetrics<NodeId, BasicNode>) -> Vec<pb::Member> {
    let membership = metrics.membership_config.membership();
    membership
        .nodes()
        .map(|(id, node)| pb::Member {
            node_id: *id,
            addr: node.addr.clone(),
            role: if membership.voter_ids().any(|v| v == *id) {
                "voter"
            } else {
                "learner"
            }
            .to_string(),
            leader: metrics.current_leader == Some(*id),
        })
        .collect()
}

pub fn state_name(state: openraft::ServerState) -> &'static str {
    match state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Follower => "follower",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Learner => "learner",
        openraft::ServerState::Shutdown => "shutdown",
    }
}
