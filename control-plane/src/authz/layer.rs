//! The tower layer in front of every gRPC service: it authorizes each call
//! by its method and the caller's certificate, hands the [`Caller`] to the
//! service, and answers refusals itself (logged and counted).

use super::policy::{authorize, Caller, Refusal};
use crate::{metrics::Metrics, node::Node};
use meridian_identity::tls::{Peer, PeerIdentity};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Logs and counts a refusal; the status to answer with.
pub fn refused(
    metrics: &Metrics,
    method: &str,
    remote: Option<std::net::SocketAddr>,
    refusal: &Refusal,
) -> tonic::Status {
    let status = refusal.status();
    tracing::warn!(
        %method,
        ?remote,
        code = ?status.code(),
        reason = status.message(),
        "refused a gRPC call"
    );
    metrics.count_refusal(method, status.code());
    status
}

#[derive(Clone)]
pub struct AuthzLayer {
    node: Arc<Node>,
    metrics: Arc<Metrics>,
}

impl AuthzLayer {
    pub fn new(node: Arc<Node>, metrics: Arc<Metrics>) -> Self {
        AuthzLayer { node, metrics }
    }

    /// Whether node `id` is a voter or learner. A node that knows no
    /// membership yet (just started to join) accepts any node of the mesh:
    /// it has nothing to protect, and learns the membership from the leader.
    fn is_member(&self, id: u64) -> bool {
        let metrics = self.node.metrics();
        let membership = metrics.membership_config.membership();
        let mut nodes = membership.nodes().peekable();
        nodes.peek().is_none() || nodes.any(|(n, _)| *n == id)
    }
}

impl<S> tower::Layer<S> for AuthzLayer {
    type Service = Authz<S>;
    fn layer(&self, inner: S) -> Authz<S> {
        Authz {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authz<S> {
    inner: S,
    layer: AuthzLayer,
}

type Response = http::Response<tonic::body::Body>;

impl<S, B> tower::Service<http::Request<B>> for Authz<S>
where
    S: tower::Service<http::Request<B>, Response = Response>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let peer = request.extensions().get::<Peer>().cloned();
        let identity = peer
            .as_ref()
            .map(Peer::identity_now)
            .unwrap_or_else(|| PeerIdentity::Unverified("the connection is not identified".into()));
        let path = request.uri().path().to_string();
        match authorize(&path, &identity, |n| self.layer.is_member(n)) {
            Ok(caller) => {
                request.extensions_mut().insert::<Caller>(caller);
                Box::pin(self.inner.call(request))
            }
            Err(refusal) => {
                let remote = peer.and_then(|p| p.remote);
                let status = refused(&self.layer.metrics, &path, remote, &refusal);
                Box::pin(futures::future::ready(Ok(status.into_http())))
            }
        }
    }
}
