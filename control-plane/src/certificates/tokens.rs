//! Bootstrap tokens in the replicated state: created by admins, redeemed
//! once per certificate with a compare-and-set write, revoked by admins.

use crate::admin::node_error;
use crate::node::{Consistency, Node};
use meridian_identity::token;
use meridian_model::spec::{BootstrapTokenSpec, TokenRole};
use meridian_model::{Command, Kind, Metadata, Op, Resource, ResourceKey, Spec, StateView};
use tonic::Status;

fn token_key(id: &str) -> Result<ResourceKey, Status> {
    ResourceKey::new(Kind::BootstrapToken, None, id, None)
        .map_err(|_| Status::not_found(format!("token '{id}' not found")))
}

async fn write(node: &Node, resource: Resource, expected_revision: u64) -> Result<u64, Status> {
    let command = Command::new(vec![Op::Put {
        resource: Box::new(resource),
        expected_revision: Some(expected_revision),
    }]);
    let (index, _) = node.submit(command).await.map_err(node_error)?;
    Ok(index)
}

/// A linearizable read of the token `id` and its spec.
async fn read(node: &Node, id: &str) -> Result<(Resource, BootstrapTokenSpec), Status> {
    node.read_barrier(Consistency::Linearizable)
        .await
        .map_err(node_error)?;
    let resource = node
        .state
        .view()
        .get(&token_key(id)?)
        .ok_or_else(|| Status::not_found(format!("token '{id}' not found")))?;
    match &resource.spec {
        Spec::BootstrapToken(spec) => {
            let spec = spec.clone();
            Ok((resource, spec))
        }
        _ => Err(Status::internal("a token key holds another kind")),
    }
}

fn with_spec(resource: &Resource, spec: BootstrapTokenSpec) -> Resource {
    Resource {
        metadata: resource.metadata.clone(),
        spec: Spec::BootstrapToken(spec),
        status: None,
    }
}

/// Creates a token; returns what to hand the user, its id and expiry.
pub async fn create(
    node: &Node,
    request: &meridian_proto::v1::CreateTokenRequest,
) -> Result<(String, String, u64), Status> {
    let role = request.role.as_str();
    let cluster = Some(request.cluster.clone()).filter(|c| !c.is_empty());
    let name = Some(request.name.clone()).filter(|n| !n.is_empty());
    let (ttl_seconds, max_uses) = (request.ttl_seconds, request.max_uses.max(1));
    let role: TokenRole = role.parse().map_err(Status::invalid_argument)?;
    if ttl_seconds == 0 {
        return Err(Status::invalid_argument("ttl must be positive"));
    }
    if let Some(cluster) = &cluster {
        let key = ResourceKey::new(Kind::Cluster, None, cluster, None)
            .map_err(|e| Status::invalid_argument(format!("cluster: {e}")))?;
        if node.state.view().get(&key).is_none() {
            return Err(Status::failed_precondition(format!(
                "unknown cluster '{cluster}': register it (kind: Cluster) first"
            )));
        }
    }
    let new = token::generate().map_err(Status::internal)?;
    let expires_at = crate::unix_now().saturating_add(ttl_seconds);
    let spec = BootstrapTokenSpec {
        role,
        cluster,
        name,
        max_uses,
        used: 0,
        expires_at,
        revoked: false,
        secret_sha256: new.secret_sha256,
    };
    spec.validate()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let resource = Resource {
        metadata: Metadata {
            name: new.id.clone(),
            ..Default::default()
        },
        spec: Spec::BootstrapToken(spec),
        status: None,
    };
    write(node, resource, 0).await?;
    Ok((new.token, new.id, expires_at))
}

/// Marks the token revoked; it can no longer be redeemed.
pub async fn revoke(node: &Node, id: &str) -> Result<u64, Status> {
    let (resource, spec) = read(node, id).await?;
    let revoked = BootstrapTokenSpec {
        revoked: true,
        ..spec
    };
    write(node, with_spec(&resource, revoked), resource.revision()).await
}

/// Checks a presented token and what it allows, without using it up.
pub async fn check(node: &Node, presented: &str) -> Result<Redemption, Status> {
    let (id, hash) = token::parse(presented).map_err(Status::unauthenticated)?;
    let (resource, spec) = read(node, &id)
        .await
        .map_err(|_| Status::unauthenticated("the token is not known"))?;
    if !token::same_hash(&hash, &spec.secret_sha256) {
        return Err(Status::unauthenticated("the token is not known"));
    }
    if let Some(reason) = spec.refusal(crate::unix_now()) {
        return Err(Status::unauthenticated(reason));
    }
    Ok(Redemption { resource, spec })
}

/// A token that passed [`check`], to be used up by [`Redemption::redeem`].
pub struct Redemption {
    resource: Resource,
    pub spec: BootstrapTokenSpec,
}

impl Redemption {
    /// Counts one use; fails if the token changed meanwhile (a concurrent
    /// use, a revocation), so a single-use token yields one certificate.
    pub async fn redeem(self, node: &Node) -> Result<(), Status> {
        let used = BootstrapTokenSpec {
            used: self.spec.used + 1,
            ..self.spec
        };
        write(
            node,
            with_spec(&self.resource, used),
            self.resource.revision(),
        )
        .await
        .map(drop)
        .map_err(|e| match e.code() {
            tonic::Code::Aborted => Status::unauthenticated(
                "the token was used or revoked concurrently; it cannot be used again",
            ),
            _ => e,
        })
    }
}
