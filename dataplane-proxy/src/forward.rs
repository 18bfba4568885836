//! One request through the proxy: route by authority and path, choose a
//! cluster by weight and a host by the cluster's policy, forward with the
//! route's timeout, and retry what the route's retry policy names (by
//! default connect failures and resets) on idempotent requests, on a host
//! not tried yet and then on the next priority.

use crate::{
    config::HashOn, metrics::Metrics, request_span::RequestSpan, runtime::Runtime,
    upstreams::Upstreams,
};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::{body::Incoming, Request, Response, StatusCode};
use meridian_balance::{hash64, HostId, Outcome};
use meridian_telemetry::SpanKind;
use std::{net::SocketAddr, sync::Arc, time::Duration};

pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

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

pub fn local_response(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from(format!("{message}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
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

pub async fn handle(
    runtime: Option<Arc<Runtime>>,
    upstreams: &Upstreams,
    metrics: &Metrics,
    port: u16,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let span = RequestSpan::start(
        SpanKind::Client,
        request.headers(),
        request.method(),
        request.uri().path(),
        peer,
    );
    let response = forward(runtime, upstreams, metrics, port, peer, request, &span).await;
    span.finish(response.status());
    response
}

async fn forward(
    runtime: Option<Arc<Runtime>>,
    upstreams: &Upstreams,
    metrics: &Metrics,
    port: u16,
    peer: SocketAddr,
    request: Request<Incoming>,
    span: &RequestSpan,
) -> Response<ProxyBody> {
    let Some(runtime) = runtime else {
        return local_response(StatusCode::SERVICE_UNAVAILABLE, "no configuration yet");
    };
    if let Some(refused) = refuse_asterisk(request.uri()) {
        return refused;
    }
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let path = request.uri().path().to_string();
    let Some(route) = runtime.snapshot.route(port, &authority, &path) else {
        // Counted without the authority: labels come from the configuration,
        // never from a request's Host header.
        metrics.count("", "", "no_route");
        return local_response(
            StatusCode::NOT_FOUND,
            &format!("no route for {authority}{path}"),
        );
    };
    let Some(cluster) = runtime.pick_cluster(route).map(str::to_string) else {
        return local_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the route has no weighted cluster",
        );
    };
    span.set("server.address", || authority.clone());
    span.set("meridian.route", || route.prefix.clone());
    span.set("meridian.cluster", || cluster.clone());
    let (Some(cluster_config), Some(breaker)) = (
        runtime.snapshot.clusters.get(&cluster),
        runtime.breaker(&cluster),
    ) else {
        return local_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("unknown cluster {cluster}"),
        );
    };
    let hash = route.hash.as_ref().map(|h| match h {
        HashOn::SourceIp => hash64(peer.ip().to_string().as_bytes()),
        HashOn::Header(name) => hash64(
            request
                .headers()
                .get(name.as_str())
                .map(|v| v.as_bytes())
                .unwrap_or_default(),
        ),
    });
    tracing::debug!(%cluster, %peer, "request");
    let Some(_admitted) = breaker.admit() else {
        metrics.count(&cluster, "", "overflow");
        let mut response = local_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "circuit breaker open: too many requests",
        );
        response.headers_mut().insert(
            "x-meridian-overloaded",
            hyper::header::HeaderValue::from_static("true"),
        );
        return response;
    };
    let (parts, body) = request.into_parts();
    // Only a request that may be sent twice is retried: an idempotent
    // method, or one that carries an Idempotency-Key; never a gRPC stream.
    let grpc = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let replayable =
        (idempotent(&parts.method) || parts.headers.contains_key("idempotency-key")) && !grpc;
    let retry = route.retry.as_ref().filter(|_| replayable);
    // A body is buffered only when a retry may have to send it again;
    // otherwise (and always for gRPC) it streams through, trailers and all.
    let mut streamed = None;
    let buffered = if retry.is_some() {
        match Limited::new(body, MAX_REQUEST_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return local_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
            }
            Err(_) => {
                // A malformed body (a bad chunk): the client's fault, as when it streams.
                metrics.count(&cluster, "", "bad_request");
                return local_response(StatusCode::BAD_REQUEST, "malformed request body");
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
    let client = match upstreams.for_cluster(cluster_config) {
        Ok(client) => client,
        Err(reason) => {
            metrics.count(&cluster, "", "no_mesh_identity");
            return local_response(StatusCode::SERVICE_UNAVAILABLE, reason);
        }
    };
    let path_and_query = path_and_query(&parts.uri);
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
            metrics.count(&cluster, "", "timeout");
            return local_response(StatusCode::GATEWAY_TIMEOUT, "the route's timeout ran out");
        }
        let per_try = per_try.min(remaining);
        if !failed.is_empty() {
            metrics.retried(&cluster);
            // The retry budget: retries may be at most a fifth of the cluster's requests in flight.
            match breaker.admit_retry() {
                Some(guard) => _retry = Some(guard),
                None => {
                    metrics.count(&cluster, "", "retry_budget_exhausted");
                    break;
                }
            }
        }
        let Some((id, host, _in_flight)) = runtime.pick_host(&cluster, hash, &failed) else {
            if failed.is_empty() {
                metrics.count(&cluster, "", "no_healthy_upstream");
            }
            break;
        };
        let locality = runtime.locality(&cluster, &host);
        // A connection to the cluster, waiting as a pending request if all are busy.
        let Ok(_connection) = breaker.connection(per_try).await else {
            metrics.count(&cluster, locality, "overflow");
            return local_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "circuit breaker open: connection and pending request limits reached",
            );
        };
        let mut upstream =
            Request::builder()
                .method(parts.method.clone())
                .version(if cluster_config.http2 {
                    hyper::Version::HTTP_2
                } else {
                    hyper::Version::HTTP_11
                });
        let uri = format!("http://{host}{path_and_query}");
        upstream = upstream.uri(uri);
        for (name, value) in &parts.headers {
            if name != hyper::header::CONNECTION
                && name != "keep-alive"
                && name != "proxy-connection"
            {
                upstream = upstream.header(name, value);
            }
        }
        let body: ProxyBody = match streamed.take() {
            Some(incoming) => incoming.boxed(),
            None => Full::new(buffered.clone())
                .map_err(|never| match never {})
                .boxed(),
        };
        let Ok(mut upstream) = upstream.body(body) else {
            return local_response(StatusCode::BAD_REQUEST, "the request cannot be forwarded");
        };
        span.inject(upstream.headers_mut());
        span.set("meridian.endpoint", || host.to_string());
        span.set("meridian.locality", || locality.to_string());
        span.set("meridian.retries", || failed.len() as i64);
        tracing::debug!(%cluster, %host, "forwarding");
        let result = tokio::time::timeout(per_try, client.request(upstream)).await;
        let report = |outcome| {
            if runtime.report(&cluster, &host, outcome) {
                metrics.ejected(&cluster, locality);
            }
        };
        // What the try's end says of the host, whether to try again, and
        // whether that uses up one of the route's retries.
        let (reported, retryable, uses_a_retry) = match result {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                metrics.observe(&cluster, locality, started.elapsed().as_secs_f64());
                if !(retry.is_some_and(|r| r.on_status(status)) && retried < attempts) {
                    report(Outcome::Status(status));
                    metrics.count(
                        &cluster,
                        locality,
                        if response.status().is_server_error() {
                            "upstream_5xx"
                        } else {
                            "ok"
                        },
                    );
                    let (parts, body) = response.into_parts();
                    return Response::from_parts(parts, body.boxed());
                }
                metrics.count(&cluster, locality, "retry_5xx");
                (Outcome::Status(status), true, true)
            }
            Ok(Err(e)) if client_body_failed(&e) => {
                // The client's own body was malformed (a bad chunk, say): its
                // fault, not the upstream's; nothing to retry or eject.
                tracing::debug!(%cluster, %peer, error = %e, "the request body is malformed");
                metrics.count(&cluster, locality, "bad_request");
                return local_response(StatusCode::BAD_REQUEST, "malformed request body");
            }
            Ok(Err(e)) => {
                tracing::debug!(%cluster, %host, error = %e, "upstream request failed");
                metrics.count(&cluster, locality, "upstream_error");
                outcome = Some(local_response(
                    StatusCode::BAD_GATEWAY,
                    &format!("upstream {host} failed"),
                ));
                if e.is_connect() {
                    let retryable = retry.is_some_and(|r| r.on_connect_failure);
                    (Outcome::Unreachable, retryable, false)
                } else {
                    (Outcome::Failed, retry.is_some_and(|r| r.on_reset), false)
                }
            }
            Err(_) => {
                metrics.count(&cluster, locality, "timeout");
                outcome = Some(local_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!("upstream {host} timed out"),
                ));
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
        failed.push(id);
    }
    outcome
        .unwrap_or_else(|| local_response(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"))
}

/// Whether forwarding failed because the client's request body did (it
/// streams through, so its errors surface as the upstream call's).
fn client_body_failed(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(|e| e.is_user())
        {
            return true;
        }
        source = cause.source();
    }
    false
}
