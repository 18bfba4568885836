//! Certificate issuance: a node holding the CA key signs CSRs for callers
//! with a bootstrap token (first certificate) or with their current
//! certificate (renewal, same identity). The CA key never leaves the node.

pub mod tokens;

use crate::authz::{caller_of, refused, Caller, Refusal};
use crate::metrics::Metrics;
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
pub struct CaDir(PathBuf);

impl CaDir {
    /// The CA in `dir`, whose key must be readable by its owner only.
    pub fn open(dir: PathBuf) -> anyhow::Result<CaDir> {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.join("ca.key");
        let mode = std::fs::metadata(&key)
            .map_err(|e| anyhow::anyhow!("--ca-dir: {}: {e}", key.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "--ca-dir: {} is readable by others (mode {:o}); chmod 600 it",
                key.display(),
                mode & 0o777
            );
        }
        Ok(CaDir(dir))
    }

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
    metrics: Arc<Metrics>,
    ca: Option<CaDir>,
    /// This node's credentials: their bundle is what clients are told to trust.
    credentials: Option<Arc<Credentials>>,
    trust_domain: String,
    lifetime: Duration,
}

impl CertificatesService {
    pub fn new(
        (node, metrics): (Arc<Node>, Arc<Metrics>),
        ca: Option<CaDir>,
        credentials: Option<Arc<Credentials>>,
        trust_domain: String,
        lifetime: Duration,
    ) -> Self {
        CertificatesService {
            node,
            metrics,
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

const ISSUE_METHOD: &str = "/meridian.v1.Certificates/Issue";

#[tonic::async_trait]
impl Certificates for CertificatesService {
    async fn issue(
        &self,
        request: Request<IssueRequest>,
    ) -> Result<Response<IssueResponse>, Status> {
        let caller = caller_of(&request);
        let remote = request
            .extensions()
            .get::<meridian_identity::tls::Peer>()
            .and_then(|p| p.remote);
        let result = self.issue_certificate(caller, request.into_inner()).await;
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
    async fn issue_certificate(
        &self,
        caller: Caller,
        request: IssueRequest,
    ) -> Result<IssueResponse, Status> {
        let Some(ca_dir) = &self.ca else {
            return Err(Status::failed_precondition(
                "this node holds no CA (start it with --ca-dir) and cannot issue certificates",
            ));
        };
        let (redemption, id) = if request.token.is_empty() {
            // Renewal: the caller's valid certificate speaks for the new one.
            match caller {
                Caller::Verified(id) => (None, id),
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
        tracing::info!(%id, renewal = request.token.is_empty(), "issued a certificate");
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
        let refused = CaDir::open(dir.path().to_path_buf()).expect_err("0644");
        assert!(refused.to_string().contains("chmod 600"), "{refused}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(CaDir::open(dir.path().to_path_buf()).is_ok());
        assert!(CaDir::open(dir.path().join("missing")).is_err());
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
