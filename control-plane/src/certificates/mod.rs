//! Certificate issuance: a node holding the CA key signs CSRs for callers
//! with a bootstrap token (first certificate) or with their current
//! certificate (renewal, same identity, while the token it was enrolled
//! with is not revoked). The CA key never leaves the node.

mod renewal;
pub mod tokens;

use crate::authz::{caller_of, refused, Caller, Refusal};
use crate::metrics::Metrics;
use crate::node::Node;
use meridian_identity::enrolment::Enrolment;
use meridian_identity::spiffe::{Identity, SpiffeId};
use meridian_identity::{ca, ca_dir::CaDir, tls::Credentials};
use meridian_model::spec::TokenRole;
use meridian_proto::v1::{certificates_server::Certificates, IssueRequest, IssueResponse};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// The CA of a node started with `--ca-dir`, whose key must be readable by
/// its owner only; re-read at every issue, so a rotated CA takes effect
/// without a restart.
pub fn open_ca(dir: PathBuf) -> anyhow::Result<CaDir> {
    let ca = CaDir::new(dir);
    ca.check_key_is_private()
        .map_err(|e| anyhow::anyhow!("--ca-dir: {e}"))?;
    Ok(ca)
}

/// The trust domain certificates are issued in: this node's own, or with
/// `--insecure` the CA directory's.
fn trust_domain(ca: Option<&CaDir>, credentials: Option<&Arc<Credentials>>) -> String {
    credentials
        .and_then(|c| c.id())
        .map(|id| id.trust_domain)
        .or_else(|| ca.and_then(|ca| ca.trust_domain().ok()))
        .unwrap_or_else(|| "meridian.local".into())
}

pub struct CertificatesService {
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    ca: Option<CaDir>,
    /// This node's credentials: their bundle is what clients are told to trust.
    credentials: Option<Arc<Credentials>>,
    trust_domain: String,
    lifetime: Duration,
}

impl CertificatesService {
    pub fn new(
        node: Arc<Node>,
        metrics: Arc<Metrics>,
        ca: Option<CaDir>,
        credentials: Option<Arc<Credentials>>,
        lifetime: Duration,
    ) -> Self {
        CertificatesService {
            node,
            metrics,
            trust_domain: trust_domain(ca.as_ref(), credentials.as_ref()),
            ca,
            credentials,
            lifetime,
        }
    }
}

/// The identity a token of `role` grants, given the requested `name`.
fn granted(
    trust_domain: &str,
    role: TokenRole,
    cluster: Option<String>,
    name: String,
) -> Result<SpiffeId, Status> {
    let needs_name = |what: &str| {
        if name.is_empty() {
            Err(Status::invalid_argument(format!(
                "name: a {what} token needs the name to put in the certificate"
            )))
        } else {
            Ok(name.clone())
        }
    };
    let cluster = cluster.unwrap_or_default();
    let identity = match role {
        TokenRole::Proxy => Identity::Proxy {
            cluster,
            id: needs_name("proxy")?,
        },
        TokenRole::Agent => Identity::Agent { cluster },
        TokenRole::Admin => Identity::Admin {
            name: needs_name("admin")?,
        },
        TokenRole::Viewer => Identity::Viewer {
            name: needs_name("viewer")?,
        },
    };
    SpiffeId::new(trust_domain, identity)
        .map_err(|e| Status::invalid_argument(format!("name: {e}")))
}

const ISSUE_METHOD: &str = "/meridian.v1.Certificates/Issue";

#[tonic::async_trait]
impl Certificates for CertificatesService {
    async fn issue(
        &self,
        request: Request<IssueRequest>,
    ) -> Result<Response<IssueResponse>, Status> {
        let caller = caller_of(&request);
        let peer = request.extensions().get::<meridian_identity::tls::Peer>();
        let remote = peer.and_then(|p| p.remote);
        let enrolment = peer.and_then(|p| p.enrolment.clone());
        let result = self
            .issue_certificate(caller, enrolment, request.into_inner())
            .await;
        // Refused tokens and identities are logged and counted like every refusal.
        result.map(Response::new).map_err(|status| {
            let refusal = match status.code() {
                tonic::Code::Unauthenticated => Refusal::Unauthenticated(status.message().into()),
                tonic::Code::PermissionDenied => Refusal::PermissionDenied(status.message().into()),
                _ => return status,
            };
            refused(&self.metrics, ISSUE_METHOD, remote, &refusal)
        })
    }
}

impl CertificatesService {
    /// A renewal: the caller's valid certificate speaks for the new one,
    /// which keeps its identity and enrolment, while the token of that
    /// enrolment is on record and not revoked.
    async fn renewal(
        &self,
        id: &SpiffeId,
        enrolment: Option<Enrolment>,
    ) -> Result<Enrolment, Status> {
        let enrolment = renewal::enrolment_of(id, enrolment.as_ref())
            .map_err(Status::permission_denied)?
            .clone();
        let token = tokens::enrolment(&self.node, enrolment.token_id()).await?;
        match renewal::refusal(id, &enrolment, token.as_ref()) {
            Some(reason) => Err(Status::permission_denied(reason)),
            None => Ok(enrolment),
        }
    }

    async fn issue_certificate(
        &self,
        caller: Caller,
        enrolment: Option<Enrolment>,
        request: IssueRequest,
    ) -> Result<IssueResponse, Status> {
        let Some(ca_dir) = &self.ca else {
            return Err(Status::failed_precondition(
                "this node holds no CA (start it with --ca-dir) and cannot issue certificates",
            ));
        };
        let (redemption, id, enrolment) = if request.token.is_empty() {
            match caller {
                Caller::Verified(id) => {
                    let enrolment = self.renewal(&id, enrolment).await?;
                    (None, id, enrolment)
                }
                Caller::Unauthenticated(reason) => {
                    return Err(Status::unauthenticated(format!(
                        "no bootstrap token, and no valid client certificate to renew: {reason}"
                    )))
                }
                Caller::Anyone => {
                    return Err(Status::unauthenticated(
                        "no bootstrap token, and no client certificate to renew",
                    ))
                }
            }
        } else {
            let redemption = tokens::check(&self.node, &request.token).await?;
            if let Some(bound) = &redemption.spec.name {
                if *bound != request.name {
                    return Err(Status::permission_denied(format!(
                        "the token is for the name '{bound}' only"
                    )));
                }
            }
            let id = granted(
                &self.trust_domain,
                redemption.spec.role,
                redemption.spec.cluster.clone(),
                request.name,
            )?;
            let enrolment = Enrolment::new(&redemption.id).map_err(Status::internal)?;
            (Some(redemption), id, enrolment)
        };
        let ca = ca_dir.read().map_err(|e| {
            tracing::error!(error = %e, "reading the CA");
            Status::internal("this node cannot read its CA")
        })?;
        let cert_pem = ca::sign_csr(
            &ca.signer(),
            &request.csr_pem,
            &id,
            Some(&enrolment),
            self.lifetime,
        )
        .map_err(|e| match e {
            ca::CaError::Invalid(reason) => Status::invalid_argument(reason),
            other => {
                tracing::error!(error = %other, "signing with the CA");
                Status::internal("this node's CA cannot sign")
            }
        })?;
        if let Some(redemption) = redemption {
            redemption.redeem(&self.node).await?;
        }
        let trust_bundle_pem = match &self.credentials {
            Some(credentials) => credentials.current().bundle.pem.clone(),
            None => ca.cert,
        };
        tracing::info!(%id, %enrolment, renewal = request.token.is_empty(), "issued a certificate");
        Ok(IssueResponse {
            cert_pem,
            trust_bundle_pem,
            spiffe_id: id.to_string(),
            not_after_unix_seconds: crate::unix_now() + self.lifetime.as_secs(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_ca_key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let key = dir.path().join("ca.key");
        std::fs::write(&key, "key").expect("write");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let refused = open_ca(dir.path().to_path_buf()).expect_err("0644");
        assert!(refused.to_string().contains("chmod 600"), "{refused}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(open_ca(dir.path().to_path_buf()).is_ok());
        assert!(open_ca(dir.path().join("missing")).is_err());
    }

    #[test]
    fn tokens_grant_the_identity_of_their_role() {
        let proxy = granted(
            "mesh.test",
            TokenRole::Proxy,
            Some("east".into()),
            "web-1".into(),
        )
        .expect("proxy");
        assert_eq!(
            proxy.to_string(),
            "spiffe://mesh.test/cluster/east/proxy/web-1"
        );
        let agent = granted(
            "mesh.test",
            TokenRole::Agent,
            Some("east".into()),
            String::new(),
        )
        .expect("agent");
        assert_eq!(agent.to_string(), "spiffe://mesh.test/cluster/east/agent");
        assert!(granted("mesh.test", TokenRole::Admin, None, String::new()).is_err());
        assert!(granted("mesh.test", TokenRole::Viewer, None, "Not Valid".into()).is_err());
    }
}
