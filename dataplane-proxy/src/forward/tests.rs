//! Retries, deadlines and breakers, in process: requests through the
//! forwarding path to upstreams that answer as a test tells them (a
//! status, a hang, a refused connection). Timeouts are short and real
//! (tokio's paused clock needs its test-util feature, a second build of
//! every crate that uses tokio); what is asserted is what happened, and
//! only lower bounds of time, which a timer cannot break.

use super::*;
use crate::config::{test_cluster_of, Limits, ListenerKind, Retry, Route, Snapshot, VirtualHost};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Instant;

const PORT: u16 = 80;

/// What an upstream host does with a request.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    /// Never answers.
    Hang,
    /// No connection.
    Refuse,
    /// Fails the client's own body.
    BadBody,
}

/// Upstream hosts by address, and every request they got, in order.
#[derive(Clone, Default)]
struct Scripted {
    answers: Arc<HashMap<String, Answer>>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    fn new(answers: &[(&str, Answer)]) -> Self {
        Scripted {
            answers: Arc::new(answers.iter().map(|(a, b)| (a.to_string(), *b)).collect()),
            calls: Arc::default(),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("calls").clone()
    }
}

impl tower::Service<TryRequest> for Scripted {
    type Response = Response<ProxyBody>;
    type Error = TryError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, TryError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), TryError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: TryRequest) -> Self::Future {
        let host = request.authority.to_string();
        self.calls.lock().expect("calls").push(host.clone());
        let answer = self.answers.get(&host).copied().unwrap_or(Answer::Refuse);
        Box::pin(async move {
            match answer {
                Answer::Status(status) => {
                    let mut response = Response::new(
                        Full::new(Bytes::from(host))
                            .map_err(|never| match never {})
                            .boxed(),
                    );
                    *response.status_mut() = StatusCode::from_u16(status).expect("status");
                    Ok(response)
                }
                Answer::Hang => std::future::pending().await,
                Answer::Refuse => Err(TryError::Connect("connection refused".into())),
                Answer::BadBody => Err(TryError::ClientBody("invalid chunk size".into())),
            }
        })
    }
}

impl Upstream for Scripted {
    type Service = Scripted;

    fn for_cluster(&self, _: &ClusterConfig) -> Result<Scripted, &'static str> {
        Ok(self.clone())
    }
}

/// web.shop on PORT: one route to cluster `web`, whose hosts are `hosts`.
fn runtime(hosts: &[&str], route: Route, limits: Option<Limits>) -> Arc<Runtime> {
    let cluster = ClusterConfig {
        limits,
        ..test_cluster_of(hosts)
    };
    let snapshot = Snapshot {
        listeners: BTreeMap::from([(PORT, ListenerKind::Http("routes".into()))]),
        routes: BTreeMap::from([(
            "routes".to_string(),
            vec![VirtualHost {
                name: "web".into(),
                domains: vec!["web.shop".into()],
                routes: vec![route],
            }],
        )]),
        clusters: BTreeMap::from([("web".to_string(), cluster)]),
    };
    Arc::new(Runtime::new(snapshot, None, &Metrics::default()))
}

fn route(timeout: Duration, retry: Option<Retry>) -> Route {
    Route {
        prefix: "/".into(),
        clusters: vec![("web".into(), 1)],
        timeout: Some(timeout),
        retry,
        hash: None,
    }
}

fn retry(attempts: u32, per_try: Option<Duration>) -> Retry {
    Retry {
        attempts,
        per_try_timeout: per_try,
        on_5xx: true,
        on_gateway_error: false,
        on_connect_failure: true,
        on_reset: true,
    }
}

fn request(method: &str) -> Request<ProxyBody> {
    Request::builder()
        .method(method)
        .uri("/")
        .header("host", "web.shop")
        .body(
            Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("request")
}

async fn send(runtime: &Arc<Runtime>, upstreams: &Scripted, method: &str) -> Response<ProxyBody> {
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let metrics = Metrics::default();
    let (head, body) = request(method).into_parts();
    handle(
        Some(runtime.clone()),
        upstreams,
        &metrics,
        PORT,
        peer,
        Arc::new(head),
        body,
    )
    .await
}

const A: &str = "10.0.0.1:80";
const B: &str = "10.0.0.2:80";
const C: &str = "10.0.0.3:80";

#[tokio::test]
async fn a_try_past_its_per_try_timeout_goes_to_another_host() {
    let per_try = Duration::from_millis(100);
    // Round robin starts at A, which hangs.
    let runtime = runtime(
        &[A, B],
        route(Duration::from_secs(10), Some(retry(2, Some(per_try)))),
        None,
    );
    let upstreams = Scripted::new(&[(A, Answer::Hang), (B, Answer::Status(200))]);
    let started = Instant::now();
    let response = send(&runtime, &upstreams, "GET").await;
    assert_eq!(response.status(), 200);
    assert_eq!(upstreams.calls(), [A, B]);
    assert!(started.elapsed() >= per_try);
}

#[tokio::test]
async fn the_routes_timeout_bounds_every_try_together() {
    let runtime = runtime(
        &[A, B, C],
        route(
            Duration::from_millis(300),
            Some(retry(5, Some(Duration::from_millis(200)))),
        ),
        None,
    );
    let upstreams = Scripted::new(&[(A, Answer::Hang), (B, Answer::Hang), (C, Answer::Hang)]);
    let started = Instant::now();
    let response = send(&runtime, &upstreams, "GET").await;
    assert_eq!(response.status(), 504);
    // 200 ms on the first host, the 100 ms left on a second; then no more.
    assert_eq!(upstreams.calls().len(), 2, "{:?}", upstreams.calls());
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn refused_connections_move_on_without_using_up_a_retry() {
    let runtime = runtime(
        &[A, B, C],
        route(Duration::from_secs(10), Some(retry(0, None))),
        None,
    );
    let upstreams = Scripted::new(&[
        (A, Answer::Refuse),
        (B, Answer::Refuse),
        (C, Answer::Status(200)),
    ]);
    // No retries allowed, yet refused connections move on, each host at most once.
    let response = send(&runtime, &upstreams, "GET").await;
    assert_eq!(response.status(), 200);
    let calls = upstreams.calls();
    assert_eq!(calls.first().map(String::as_str), Some(A), "{calls:?}");
    assert_eq!(calls.last().map(String::as_str), Some(C), "{calls:?}");
    let distinct: std::collections::BTreeSet<&String> = calls.iter().collect();
    assert_eq!(distinct.len(), calls.len(), "{calls:?}");
}

#[tokio::test]
async fn a_5xx_is_retried_on_idempotent_requests_only() {
    let answers = [(A, Answer::Status(503)), (B, Answer::Status(200))];
    let runtime = runtime(
        &[A, B],
        route(Duration::from_secs(10), Some(retry(1, None))),
        None,
    );
    let upstreams = Scripted::new(&answers);
    assert_eq!(send(&runtime, &upstreams, "GET").await.status(), 200);
    assert_eq!(upstreams.calls(), [A, B]);
    // A POST may not be sent twice: A's 503 is the answer.
    let runtime_again = self::runtime(
        &[A, B],
        route(Duration::from_secs(10), Some(retry(1, None))),
        None,
    );
    let upstreams = Scripted::new(&answers);
    assert_eq!(send(&runtime_again, &upstreams, "POST").await.status(), 503);
    assert_eq!(upstreams.calls(), [A]);
    // Without a retry policy, nothing is retried.
    let no_retry = self::runtime(&[A, B], route(Duration::from_secs(10), None), None);
    let upstreams = Scripted::new(&answers);
    assert_eq!(send(&no_retry, &upstreams, "GET").await.status(), 503);
    assert_eq!(upstreams.calls(), [A]);
}

#[tokio::test]
async fn a_malformed_client_body_is_answered_400_and_not_retried() {
    let runtime = runtime(&[A, B], route(Duration::from_secs(10), None), None);
    let upstreams = Scripted::new(&[(A, Answer::BadBody), (B, Answer::Status(200))]);
    assert_eq!(send(&runtime, &upstreams, "POST").await.status(), 400);
    assert_eq!(upstreams.calls(), [A]);
    assert!(runtime.hosts().iter().all(|h| h.healthy && !h.ejected));
}

#[tokio::test]
async fn the_breaker_refuses_requests_past_max_requests() {
    let limits = Limits {
        max_requests: 1,
        max_connections: 100,
        max_pending_requests: 100,
    };
    let runtime = runtime(&[A], route(Duration::from_secs(10), None), Some(limits));
    let upstreams = Scripted::new(&[(A, Answer::Hang)]);
    let held = tokio::spawn({
        let (runtime, upstreams) = (runtime.clone(), upstreams.clone());
        async move { send(&runtime, &upstreams, "GET").await }
    });
    // Once the first is in flight at A, a second is refused at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstreams.calls().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first request never reached A"
        );
        tokio::task::yield_now().await;
    }
    let refused = send(&runtime, &upstreams, "GET").await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused
            .headers()
            .get("x-meridian-overloaded")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(upstreams.calls(), [A]);
    held.abort();
}

#[test]
fn a_head_is_readied_for_the_protocol_its_cluster_speaks() {
    let head = |http2: bool| {
        let (mut parts, ()) = Request::builder()
            .uri("http://web.shop/cart?x=1")
            .version(hyper::Version::HTTP_2)
            .body(())
            .expect("request")
            .into_parts();
        parts
            .headers
            .insert("connection", "close".parse().expect("value"));
        let span = RequestSpan::start(
            SpanKind::Client,
            &parts.headers,
            &parts.method,
            parts.uri.path(),
            SocketAddr::from(([127, 0, 0, 1], 40000)),
        );
        let mut head = Head::new(Arc::new(parts), http2, false, &span);
        let given = head.for_try().expect("forwarded");
        assert!(head.for_try().is_none(), "given away to its one try");
        given
    };
    // Over HTTP/1.1 the request's authority becomes the Host header and
    // hop-by-hop headers are left out as the client writes the head
    // (`h1`'s tests).
    let http1 = head(false);
    assert_eq!(http1.uri, "http://web.shop/cart?x=1");
    assert_eq!(http1.version, hyper::Version::HTTP_11);
    // hyper's HTTP/2 client is given no hop-by-hop headers. HTTP/2 carries
    // the authority as :authority, from the URI (given the host's address,
    // `upstreams`' tests): a Host header that differs would make the
    // request malformed there.
    let http2 = head(true);
    assert!(http2.headers.get("connection").is_none());
    assert!(http2.headers.get("host").is_none());
    assert_eq!(http2.version, hyper::Version::HTTP_2);
}
