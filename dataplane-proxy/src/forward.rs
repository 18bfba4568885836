//! One request through the proxy: route by authority and path, choose a
//! cluster by weight and a host by the cluster's policy, forward with the
//! route's timeout, and retry what the route's retry policy names (by
//! default connect failures and resets) on idempotent requests, on a host
//! not tried yet and then on the next priority.

use crate::{
    cluster::ClusterState,
    config::{ClusterConfig, HashOn, Route},
    metrics::Metrics,
    request_span::RequestSpan,
    route_table::Target,
    runtime::Runtime,
};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, Limited};
use hyper::{
    body::Body, http::request::Parts, http::uri::Authority, Request, Response, StatusCode,
};
use meridian_balance::{hash64, HostId, Outcome};
use meridian_telemetry::SpanKind;
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};
use tower::{Service, ServiceExt};

pub type ProxyBody = BoxBody<Bytes, BodyError>;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a body passing through the proxy failed (the client's, or an
/// upstream's). A type of its own, not a boxed trait object, so futures
/// holding bodies stay `Send` for any lifetime, as the server requires.
#[derive(Debug)]
pub struct BodyError(pub BoxError);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl From<hyper::Error> for BodyError {
    fn from(e: hyper::Error) -> Self {
        BodyError(e.into())
    }
}

impl From<h2::Error> for BodyError {
    fn from(e: h2::Error) -> Self {
        BodyError(e.into())
    }
}

/// One try of a request: its head (shared by the tries of a request that
/// may be retried, so a retry copies nothing), the host's authority it
/// goes to, its body, and the whole body again when a connection that
/// turns out closed may be given it a second time.
pub struct TryRequest {
    pub head: Arc<Parts>,
    pub authority: Authority,
    pub body: ProxyBody,
    pub replay: Option<Bytes>,
}

impl TryRequest {
    /// `request` to `authority`, sent once.
    pub fn new(request: Request<ProxyBody>, authority: Authority) -> Self {
        let (head, body) = request.into_parts();
        TryRequest {
            head: Arc::new(head),
            authority,
            body,
            replay: None,
        }
    }
}

/// How a try failed, as forwarding tells failures apart.
#[derive(Debug)]
pub enum TryError {
    /// No connection could be made: another host is tried at no cost.
    Connect(BoxError),
    /// The client's own request body was malformed: its fault, not the host's.
    ClientBody(BoxError),
    /// The connection failed once made (reset, closed before a response).
    Failed(BoxError),
}

impl std::fmt::Display for TryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TryError::Connect(e) => write!(f, "connecting: {e}"),
            TryError::ClientBody(e) => write!(f, "the request body: {e}"),
            TryError::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// Where a request's tries go: one service per cluster, which answers a
/// request or says how the try failed. The proxy's pooled clients
/// (`Upstreams`); in tests, upstreams that answer as they are told.
pub trait Upstream {
    type Service: tower::Service<TryRequest, Response = Response<ProxyBody>, Error = TryError>;

    /// The service for `cluster`; an error says why there is none.
    fn for_cluster(&self, cluster: &ClusterConfig) -> Result<Self::Service, &'static str>;
}

/// Requests larger than this are refused (they are buffered so they can be retried).
pub const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// The asterisk form (`OPTIONS * HTTP/1.1`) names no resource to forward:
/// joined to a host's address it made one no connection can be made to,
/// and the hosts tried were reported unreachable, and ejected. Refused with
/// 400 before routing, on every listener.
pub fn refuse_asterisk(uri: &hyper::Uri) -> Option<Response<ProxyBody>> {
    (uri == "*").then(|| {
        local_response(
            StatusCode::BAD_REQUEST,
            "the request target * cannot be forwarded",
        )
    })
}

/// A body of `bytes`, whole; an empty one allocates nothing.
pub fn whole_body(bytes: Bytes) -> ProxyBody {
    if bytes.is_empty() {
        Empty::new().map_err(|never| match never {}).boxed()
    } else {
        Full::new(bytes).map_err(|never| match never {}).boxed()
    }
}

pub fn local_response(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(whole_body(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "x-meridian-proxy",
        hyper::header::HeaderValue::from_static("local"),
    );
    response
}

/// The request's path and query, `/` when it has none.
pub fn path_and_query(uri: &hyper::Uri) -> &str {
    uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
}

fn idempotent(method: &hyper::Method) -> bool {
    matches!(
        *method,
        hyper::Method::GET
            | hyper::Method::HEAD
            | hyper::Method::OPTIONS
            | hyper::Method::PUT
            | hyper::Method::DELETE
    )
}

// `handle` and `forward` return `async move` blocks rather than being
// `async fn`s: an `async fn` keeps each argument twice in its future
// (rust-lang/rust#62958), and the request's future is copied whole into its
// box on every request. Nor is there a future for `handle` around the one
// for `forward` (which finishes the span), each holding the request. Large
// values (each try's request) are scoped so they do not stay in it twice
// either. The head comes in behind its `Arc` (the one its tries share):
// a future keeps what it captured for its whole life, and a head of 224
// bytes carried so made the request's future too large for the
// allocator's per-thread cache (1 KiB), about 500 instructions more per
// request to allocate and free it.
pub fn handle<'a, U, B>(
    runtime: Option<Arc<Runtime>>,
    upstreams: &'a U,
    metrics: &'a Metrics,
    port: u16,
    peer: SocketAddr,
    head: Arc<Parts>,
    body: B,
) -> impl Future<Output = Response<ProxyBody>> + 'a
where
    U: Upstream,
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BodyError> + Into<BoxError>,
{
    let span = RequestSpan::start(
        SpanKind::Client,
        &head.headers,
        &head.method,
        head.uri.path(),
        peer,
    );
    forward(runtime, upstreams, metrics, port, peer, head, body, span)
}

#[allow(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
#[allow(
    clippy::too_many_arguments,
    reason = "handle's, and the span it started"
)]
fn forward<'a, U, B>(
    runtime: Option<Arc<Runtime>>,
    upstreams: &'a U,
    metrics: &'a Metrics,
    port: u16,
    peer: SocketAddr,
    head: Arc<Parts>,
    body: B,
    span: RequestSpan,
) -> impl Future<Output = Response<ProxyBody>> + 'a
where
    U: Upstream,
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BodyError> + Into<BoxError>,
{
    async move {
        let response = 'forward: {
            let Some(runtime) = runtime else {
                break 'forward local_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no configuration yet",
                );
            };
            let (route, cluster) = match choose(&runtime, port, &head, metrics, &span) {
                Ok(chosen) => chosen,
                Err(refused) => break 'forward *refused,
            };
            let name = cluster.name.as_str();
            let hash = route.hash.as_ref().map(|h| match h {
                HashOn::SourceIp => hash64(peer.ip().to_string().as_bytes()),
                HashOn::Header(header) => hash64(
                    head.headers
                        .get(header.as_str())
                        .map(|v| v.as_bytes())
                        .unwrap_or_default(),
                ),
            });
            tracing::debug!(cluster = name, %peer, "request");
            let breaker = &cluster.breaker;
            let Some(_admitted) = breaker.admit() else {
                metrics.count(name, "", "overflow");
                let mut response = local_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "circuit breaker open: too many requests",
                );
                response.headers_mut().insert(
                    "x-meridian-overloaded",
                    hyper::header::HeaderValue::from_static("true"),
                );
                break 'forward response;
            };
            // Only a request that may be sent twice is retried: an idempotent
            // method, or one that carries an Idempotency-Key; never a gRPC stream.
            let grpc = head
                .headers
                .get(hyper::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            let replayable =
                (idempotent(&head.method) || head.headers.contains_key("idempotency-key")) && !grpc;
            let retry = route.retry.as_ref().filter(|_| replayable);
            let mut head = Head::new(head, cluster.config.http2, retry.is_some(), &span);
            // A body is buffered only when a retry may have to send it again;
            // otherwise (and always for gRPC) it streams through, trailers and all.
            let mut streamed = None;
            let buffered = if retry.is_some() {
                if body.is_end_stream() {
                    // Nothing to gather (a GET, say): no buffer, nothing to replay.
                    drop(body);
                    Bytes::new()
                } else {
                    match Limited::new(body, MAX_REQUEST_BODY).collect().await {
                        Ok(collected) => collected.to_bytes(),
                        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                            break 'forward local_response(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "request body too large",
                            )
                        }
                        Err(_) => {
                            // A malformed body (a bad chunk): the client's fault, as when it streams.
                            metrics.count(name, "", "bad_request");
                            break 'forward local_response(
                                StatusCode::BAD_REQUEST,
                                "malformed request body",
                            );
                        }
                    }
                }
            } else {
                streamed = Some(body);
                Bytes::new()
            };
            let per_try = retry
                .and_then(|r| r.per_try_timeout)
                .or(route.timeout)
                .unwrap_or(DEFAULT_TIMEOUT);
            let mut client = match upstreams.for_cluster(&cluster.config) {
                Ok(client) => client,
                Err(reason) => {
                    metrics.count(name, "", "no_mesh_identity");
                    break 'forward local_response(StatusCode::SERVICE_UNAVAILABLE, reason);
                }
            };
            let started = std::time::Instant::now();
            // The hosts this request failed on: a retry goes elsewhere, and to the
            // next priority once the current one has none left.
            let mut failed: Vec<HostId> = Vec::new();
            // Retries the route's `attempts` bound: after a response it retries or
            // a per-try timeout. A connection that fails without a response (refused,
            // reset, closed before the head: what a dying endpoint does, and cheap
            // to try past) moves on to a host not tried yet without using one up, as
            // nginx's proxy_next_upstream does: each host at most once per request,
            // within the route's timeout and the retry budget.
            let mut retried = 0;
            let attempts = retry.map_or(0, |r| r.attempts);
            let mut _retry: Option<crate::breaker::InFlight<'_>> = None;
            let mut outcome = None;
            // The route's timeout bounds the whole request, retries included; each
            // try is also bounded by the retry policy's per-try timeout.
            let deadline = started + route.timeout.unwrap_or(DEFAULT_TIMEOUT);
            loop {
                let remaining = deadline.saturating_duration_since(std::time::Instant::now());
                if remaining.is_zero() {
                    metrics.count(name, "", "timeout");
                    break 'forward local_response(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the route's timeout ran out",
                    );
                }
                let per_try = per_try.min(remaining);
                if !failed.is_empty() {
                    metrics.retried(name);
                    // The retry budget: retries may be at most a fifth of the cluster's requests in flight.
                    match breaker.admit_retry() {
                        Some(guard) => _retry = Some(guard),
                        None => {
                            metrics.count(name, "", "retry_budget_exhausted");
                            break;
                        }
                    }
                }
                let Some(host) = cluster.pick_host(crate::random::three(), hash, &failed) else {
                    if failed.is_empty() {
                        metrics.count(name, "", "no_healthy_upstream");
                    }
                    break;
                };
                let locality = host.locality;
                // A connection to the cluster, waiting as a pending request if all are busy.
                let Ok(_connection) = breaker.connection(per_try).await else {
                    metrics.count(name, locality, "overflow");
                    break 'forward local_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "circuit breaker open: connection and pending request limits reached",
                    );
                };
                let body: ProxyBody = match streamed.take() {
                    Some(incoming) => incoming.map_err(Into::into).boxed(),
                    None => whole_body(buffered.clone()),
                };
                let call = {
                    let (Some(authority), Some(head)) = (host.authority, head.for_try()) else {
                        break 'forward local_response(
                            StatusCode::BAD_REQUEST,
                            "the request cannot be forwarded",
                        );
                    };
                    // May be sent again: the HTTP/1.1 client resends it on a new
                    // connection when a pooled one turns out closed (a request
                    // without a body and its framing is resent without this).
                    let replay = (retry.is_some()
                        && crate::h1::replay_needed(&head.method, buffered.len()))
                    .then(|| buffered.clone());
                    let upstream = TryRequest {
                        head,
                        authority: authority.clone(),
                        body,
                        replay,
                    };
                    span.set("meridian.endpoint", || host.address.to_string());
                    span.set("meridian.locality", || locality.to_string());
                    span.set("meridian.retries", || failed.len() as i64);
                    tracing::debug!(cluster = name, host = host.address, "forwarding");
                    let client = &mut client;
                    async move { client.ready().await?.call(upstream).await }
                };
                let result = tokio::time::timeout(per_try, call).await;
                let report = |outcome| {
                    if cluster.report(host.address, outcome) {
                        host.metrics.ejected();
                    }
                };
                // What the try's end says of the host, whether to try again, and
                // whether that uses up one of the route's retries.
                let (reported, retryable, uses_a_retry) = match result {
                    Ok(Ok(response)) => {
                        let status = response.status().as_u16();
                        host.metrics.observe(started.elapsed().as_secs_f64());
                        if !(retry.is_some_and(|r| r.on_status(status)) && retried < attempts) {
                            report(Outcome::Status(status));
                            host.metrics.answered(response.status().is_server_error());
                            break 'forward response;
                        }
                        metrics.count(name, locality, "retry_5xx");
                        (Outcome::Status(status), true, true)
                    }
                    Ok(Err(TryError::ClientBody(e))) => {
                        // The client's own body was malformed (a bad chunk, say): its
                        // fault, not the upstream's; nothing to retry or eject.
                        tracing::debug!(cluster = name, %peer, error = %e, "the request body is malformed");
                        metrics.count(name, locality, "bad_request");
                        break 'forward local_response(
                            StatusCode::BAD_REQUEST,
                            "malformed request body",
                        );
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(cluster = name, host = host.address, error = %e, "upstream request failed");
                        metrics.count(name, locality, "upstream_error");
                        outcome = Some(Box::new(local_response(
                            StatusCode::BAD_GATEWAY,
                            &format!("upstream {} failed", host.address),
                        )));
                        if matches!(e, TryError::Connect(_)) {
                            let retryable = retry.is_some_and(|r| r.on_connect_failure);
                            (Outcome::Unreachable, retryable, false)
                        } else {
                            (Outcome::Failed, retry.is_some_and(|r| r.on_reset), false)
                        }
                    }
                    Err(_) => {
                        metrics.count(name, locality, "timeout");
                        outcome = Some(Box::new(local_response(
                            StatusCode::GATEWAY_TIMEOUT,
                            &format!("upstream {} timed out", host.address),
                        )));
                        (Outcome::Failed, retry.is_some_and(|r| r.on_reset), true)
                    }
                };
                report(reported);
                if !retryable || (uses_a_retry && retried >= attempts) {
                    break;
                }
                if uses_a_retry {
                    retried += 1;
                }
                failed.push(host.id);
            }
            outcome.map_or_else(
                || local_response(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
                |response| *response,
            )
        };
        span.finish(response.status());
        response
    }
}

/// The route and cluster for `request` on the listener on `port`, named on
/// its span; the response that refuses it when there is none (boxed: it is
/// the rare case).
fn choose<'r>(
    runtime: &'r Runtime,
    port: u16,
    head: &Parts,
    metrics: &Metrics,
    span: &RequestSpan,
) -> Result<(&'r Route, &'r Arc<ClusterState>), Box<Response<ProxyBody>>> {
    if let Some(refused) = refuse_asterisk(&head.uri) {
        return Err(Box::new(refused));
    }
    let authority = head
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            head.headers
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or_default();
    let path = head.uri.path();
    let Some(route) = runtime
        .routes(port)
        .and_then(|table| table.route(authority, path))
    else {
        // Counted without the authority: labels come from the configuration,
        // never from a request's Host header.
        metrics.count("", "", "no_route");
        return Err(Box::new(local_response(
            StatusCode::NOT_FOUND,
            &format!("no route for {authority}{path}"),
        )));
    };
    let cluster = match route.pick(crate::random::next()) {
        Some(Target::Cluster(cluster)) => cluster,
        Some(Target::Unknown(name)) => {
            return Err(Box::new(local_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("unknown cluster {name}"),
            )))
        }
        None => {
            return Err(Box::new(local_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "the route has no weighted cluster",
            )))
        }
    };
    span.set("server.address", || authority.to_string());
    span.set("meridian.route", || route.config.prefix.clone());
    span.set("meridian.cluster", || cluster.name.clone());
    Ok((&route.config, cluster))
}

/// The connection's own headers, never passed on.
const HOP_BY_HOP: [hyper::header::HeaderName; 3] = [
    hyper::header::CONNECTION,
    hyper::header::HeaderName::from_static("keep-alive"),
    hyper::header::HeaderName::from_static("proxy-connection"),
];

/// The version a request goes upstream in: HTTP/2 to an upstream that
/// speaks it (`http2`), else HTTP/1.1, whatever the client spoke.
pub fn upstream_version(http2: bool) -> hyper::Version {
    if http2 {
        hyper::Version::HTTP_2
    } else {
        hyper::Version::HTTP_11
    }
}

/// The request's head as it goes upstream: hop-by-hop headers removed,
/// the version the cluster speaks. A request that cannot be retried gives
/// its head to its one try; one that may be sent again shares it with each.
struct Head {
    parts: Option<Arc<Parts>>,
    keep: bool,
}

impl Head {
    /// The head as it goes upstream, with `span`'s trace context; `keep`
    /// when a retry may send it again.
    fn new(mut head: Arc<Parts>, http2: bool, keep: bool, span: &RequestSpan) -> Self {
        // The only holder yet: changed where it is, not copied.
        let parts = Arc::make_mut(&mut head);
        span.inject(&mut parts.headers);
        // The HTTP/1.1 client leaves every hop-by-hop header out as it
        // writes the head; hyper's HTTP/2 client is given none.
        if http2 {
            for hop_by_hop in &HOP_BY_HOP {
                parts.headers.remove(hop_by_hop);
            }
        }
        // An HTTP/2 request names its authority in the URI alone: hyper's
        // HTTP/2 client is given the host's address there; the HTTP/1.1
        // client writes it as the Host header when the head has none.
        // What the server side of hyper keeps with a request is not the upstream's.
        parts.extensions = hyper::http::Extensions::new();
        parts.version = upstream_version(http2);
        Head {
            parts: Some(head),
            keep,
        }
    }

    /// The head for the next try; `None` once given away.
    fn for_try(&mut self) -> Option<Arc<Parts>> {
        if self.keep {
            self.parts.clone()
        } else {
            self.parts.take()
        }
    }
}

#[cfg(test)]
mod tests;
