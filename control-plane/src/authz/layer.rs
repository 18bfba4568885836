//! The tower layer in front of every gRPC service: it authorizes each call
//! by its method and the caller's certificate, hands the [`Caller`] to the
//! service, and answers refusals itself (logged and counted).

use super::policy::{authorize, known_service, Caller, Refusal};
use crate::{metrics::Metrics, node::Node};
use meridian_identity::tls::{Peer, PeerIdentity};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// At most this many refusals a second are logged at warn level (a flood
/// of them must not flood the log); all are counted.
const REFUSALS_LOGGED_PER_SECOND: u64 = 20;

/// Whether this refusal may be logged at warn level: a budget per second.
fn within_log_budget() -> bool {
    static SECOND: AtomicU64 = AtomicU64::new(0);
    static LOGGED: AtomicU64 = AtomicU64::new(0);
    let now = crate::unix_now();
    if SECOND.swap(now, Ordering::Relaxed) != now {
        LOGGED.store(0, Ordering::Relaxed);
    }
    LOGGED.fetch_add(1, Ordering::Relaxed) < REFUSALS_LOGGED_PER_SECOND
}

/// Logs and counts a refusal; the status to answer with.
pub fn refused(
    metrics: &Metrics,
    method: &str,
    remote: Option<std::net::SocketAddr>,
    refusal: &Refusal,
) -> tonic::Status {
    let status = refusal.status();
    let service = known_service(method).unwrap_or("unknown");
    metrics.count_refusal(service, status.code());
    if within_log_budget() {
        tracing::warn!(
            %method,
            ?remote,
            code = ?status.code(),
            reason = status.message(),
            "refused a gRPC call"
        );
    } else {
        tracing::debug!(%method, ?remote, reason = status.message(), "refused a gRPC call");
    }
    status
}

/// Who made `request`, as the layer let it through; unauthenticated if the
/// layer did not see it (fail closed).
pub fn caller_of<T>(request: &tonic::Request<T>) -> Caller {
    found(request.extensions().get::<Caller>())
}

/// As [`caller_of`], for a service that takes the HTTP request itself.
pub fn caller_in(extensions: &http::Extensions) -> Caller {
    found(extensions.get::<Caller>())
}

fn found(caller: Option<&Caller>) -> Caller {
    caller
        .cloned()
        .unwrap_or_else(|| Caller::Unauthenticated("the call was not authorized".into()))
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
}

/// Whether node `id` is a voter or learner, in the membership `node` has
/// applied. A node that knows no membership yet (just started to join)
/// accepts any node of the mesh: it has nothing to protect, and learns the
/// membership from the leader.
pub fn is_member(node: &Node, id: u64) -> bool {
    let metrics = node.metrics();
    let membership = metrics.membership_config.membership();
    let mut nodes = membership.nodes().peekable();
    nodes.peek().is_none() || nodes.any(|(n, _)| *n == id)
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
        match authorize(&path, &identity, |n| is_member(&self.layer.node, n)) {
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
