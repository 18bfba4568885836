//! Certificate issuance: a node holding the CA key signs CSRs for callers
//! with a bootstrap token (first certificate) or with their current
//! certificate (renewal, same identity). The CA key never leaves the node.

pub mod tokens;

use crate::authz::Caller;
use crate::node::Node;
use meridian_identity::spiffe::{Identity, SpiffeId};
use meridian_identity::{ca, tls::Credentials};
use meridian_model::spec::TokenRole;
use meridian_proto::v1::{certificates_server::Certificates, IssueRequest, IssueResponse};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Where a node's CA lives: `ca.pem` and `ca.key`, re-read on every issue so
/// that a rotated CA takes effect without a restart.
#[derive(Debug, Clone)]
pub struct CaDir(pub PathBuf);

impl CaDir {
    fn read(&self) -> Result<(String, String), Status> {
        let read = |name: &str| {
            std::fs::read_to_string(self.0.join(name)).map_err(|e| {
                tracing::error!(path = %self.0.join(name).display(), error = %e, "reading the CA");
                Status::internal("this node cannot read its CA")
            })
        };
        Ok((read("ca.pem")?, read("ca.key")?))
    }
}

pub struct CertificatesService {
    node: Arc<Node>,
    ca: Option<CaDir>,
    /// This node's credentials: their bundle is what clients are told to trust.
    credentials: Option<Arc<Credentials>>,
    trust_domain: String,
    lifetime: Duration,
}

impl CertificatesService {
    pub fn new(
        node: Arc<Node>,
        ca: Option<CaDir>,
        credentials: Option<Arc<Credentials>>,
        trust_domain: String,
        lifetime: Duration,
    ) -> Self {
        CertificatesService {
            node,
            ca,
            credentials,
            trust_domain,
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

#[tonic::async_trait]
impl Certificates for CertificatesService {
    async fn issue(
        &self,
        request: Request<IssueRequest>,
    ) -> Result<Response<IssueResponse>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let request = request.into_inner();
        let Some(ca_dir) = &self.ca else {
            return Err(Status::failed_precondition(
                "this node holds no CA (start it with --ca-dir) and cannot issue certificates",
            ));
        };
        let (redemption, id) = if request.token.is_empty() {
            // Renewal: the caller's valid certificate speaks for the new one.
            match caller {
                Some(Caller::Verified(id)) => (None, id),
                Some(Caller::Unauthenticated(reason)) => {
                    return Err(Status::unauthenticated(format!(
                        "no bootstrap token, and no valid client certificate to renew: {reason}"
                    )))
                }
                _ => {
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
            (Some(redemption), id)
        };
        let (ca_cert, ca_key) = ca_dir.read()?;
        let signer = ca::Signer {
            cert_pem: &ca_cert,
            key_pem: &ca_key,
        };
        let cert_pem =
            ca::sign_csr(&signer, &request.csr_pem, &id, self.lifetime).map_err(|e| match e {
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
            None => ca_cert,
        };
        let not_after = std::time::SystemTime::now() + self.lifetime;
        tracing::info!(%id, renewal = request.token.is_empty(), "issued a certificate");
        Ok(Response::new(IssueResponse {
            cert_pem,
            trust_bundle_pem,
            spiffe_id: id.to_string(),
            not_after_unix_seconds: not_after
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }))
    }
}
