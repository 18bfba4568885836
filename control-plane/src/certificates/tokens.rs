//! Bootstrap tokens in the replicated state: created by admins, redeemed
//! once per certificate with a compare-and-set write, revoked by admins.
//! A presented token is checked against this replica's copy before any
//! quorum is asked, so a forged one costs no Raft round trip.

use crate::admin::node_error;
use crate::node::{Consistency, Node};
use meridian_identity::token;
use meridian_model::spec::{BootstrapTokenSpec, TokenRole};
use meridian_model::{Command, Kind, Metadata, Op, Resource, ResourceKey, Spec, StateView};
use std::time::Duration;
use tonic::Status;

/// How long a token this replica does not hold yet waits for it: one
/// created through another node a moment ago arrives with the next
/// heartbeat (200 ms). Waiting asks nothing of other nodes.
const CATCH_UP: Duration = Duration::from_secs(1);

const NOT_KNOWN: &str = "the token is not known";

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

/// This replica's copy of the token `id`, as applied so far.
fn local(node: &Node, id: &str) -> Result<Option<(Resource, BootstrapTokenSpec)>, Status> {
    let Some(resource) = node.state.view().get(&token_key(id)?) else {
        return Ok(None);
    };
    match &resource.spec {
        Spec::BootstrapToken(spec) => {
            let spec = spec.clone();
            Ok(Some((resource, spec)))
        }
        _ => Err(Status::internal("a token key holds another kind")),
    }
}

/// A linearizable read of the token `id` and its spec.
async fn read(node: &Node, id: &str) -> Result<(Resource, BootstrapTokenSpec), Status> {
    node.read_barrier(Consistency::Linearizable)
        .await
        .map_err(node_error)?;
    local(node, id)?.ok_or_else(|| Status::not_found(format!("token '{id}' not found")))
}

/// This replica's copy of the token `id`, waiting up to [`CATCH_UP`] for
/// this replica to apply more entries if it does not hold it yet.
async fn local_or_caught_up(
    node: &Node,
    id: &str,
) -> Result<Option<(Resource, BootstrapTokenSpec)>, Status> {
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    let mut metrics = node.raft.metrics();
    loop {
        let seen = node.applied_index();
        if let Some(found) = local(node, id)? {
            return Ok(Some(found));
        }
        let applied_more =
            metrics.wait_for(|m| m.last_applied.map(|l| l.index).unwrap_or(0) > seen);
        match tokio::time::timeout_at(deadline, applied_more).await {
            Ok(Ok(_)) => {}
            // Out of time, or Raft stopped.
            Ok(Err(_)) | Err(_) => return Ok(None),
        }
    }
}

/// Whether the token stored as `stored` (None: unknown) admits a secret
/// hashing to `presented_sha256` at `now`; the refusal to answer if not.
/// The hash is compared first, so a wrong secret learns nothing of the
/// token's state.
fn admit(
    stored: Option<&BootstrapTokenSpec>,
    presented_sha256: &str,
    now: u64,
) -> Result<(), &'static str> {
    let spec = stored.ok_or(NOT_KNOWN)?;
    if !token::same_hash(presented_sha256, &spec.secret_sha256) {
        return Err(NOT_KNOWN);
    }
    spec.refusal(now).map_or(Ok(()), Err)
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
///
/// This replica's copy decides first: an unknown id, a wrong secret, or a
/// token already revoked, expired or used up here is refused without asking
/// a quorum (a token's secret never changes, and revoked, expired and used
/// up never revert). Only a token valid here is read again linearizably,
/// and [`Redemption::redeem`] then counts the use with a compare-and-set.
pub async fn check(node: &Node, presented: &str) -> Result<Redemption, Status> {
    let (id, hash) = token::parse(presented).map_err(Status::unauthenticated)?;
    let stored = local_or_caught_up(node, &id).await?;
    admit(
        stored.as_ref().map(|(_, spec)| spec),
        &hash,
        crate::unix_now(),
    )
    .map_err(Status::unauthenticated)?;
    let (resource, spec) = read(node, &id).await.map_err(|e| match e.code() {
        tonic::Code::NotFound => Status::unauthenticated(NOT_KNOWN),
        _ => e,
    })?;
    admit(Some(&spec), &hash, crate::unix_now()).map_err(Status::unauthenticated)?;
    Ok(Redemption { id, resource, spec })
}

/// The token the certificate chain `enrolment` was started with, read
/// linearizably so that a revocation committed anywhere is seen; None if
/// it no longer exists. Only callers with a valid certificate get here.
pub async fn enrolment(node: &Node, id: &str) -> Result<Option<BootstrapTokenSpec>, Status> {
    match read(node, id).await {
        Ok((_, spec)) => Ok(Some(spec)),
        Err(e) if e.code() == tonic::Code::NotFound => Ok(None),
        Err(e) => Err(Status::unavailable(format!(
            "cannot confirm that the token {id} this certificate was enrolled with is \
             still valid: {}",
            e.message()
        ))),
    }
}

/// A token that passed [`check`], to be used up by [`Redemption::redeem`].
pub struct Redemption {
    /// The token's id: the enrolment of the certificates it issues.
    pub id: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> BootstrapTokenSpec {
        BootstrapTokenSpec {
            role: TokenRole::Proxy,
            cluster: Some("east".into()),
            name: None,
            max_uses: 1,
            used: 0,
            expires_at: 100,
            revoked: false,
            secret_sha256: token::sha256_hex("secret"),
        }
    }

    #[test]
    fn the_secret_is_checked_before_anything_else() {
        let right = token::sha256_hex("secret");
        let wrong = token::sha256_hex("guess");
        assert_eq!(admit(Some(&stored()), &right, 10), Ok(()));
        assert_eq!(admit(Some(&stored()), &wrong, 10), Err(NOT_KNOWN));
        assert_eq!(admit(None, &right, 10), Err(NOT_KNOWN));
        let revoked = BootstrapTokenSpec {
            revoked: true,
            ..stored()
        };
        assert_eq!(
            admit(Some(&revoked), &wrong, 10),
            Err(NOT_KNOWN),
            "a wrong secret does not learn that the token was revoked"
        );
        assert_eq!(
            admit(Some(&revoked), &right, 10),
            Err("the token has been revoked")
        );
        assert_eq!(
            admit(Some(&stored()), &right, 100),
            Err("the token has expired")
        );
    }
}
