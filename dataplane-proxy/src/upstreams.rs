//! The clients requests leave the proxy by: plaintext or service-to-service
//! mutual TLS, HTTP/1.1 or HTTP/2, each connecting within its cluster's
//! `connect_timeout`. HTTP/1.1 goes through the proxy's own client
//! (`crate::h1`) on this worker's pools of idle connections, one for
//! plaintext and one for mutual TLS; HTTP/2 through hyper's, one
//! multiplexing client per distinct setting, made on first use and kept.

use crate::coalesce::Gathered;
use crate::forward::{BodyError, ProxyBody, TryError, TryRequest, Upstream};
use crate::h1;
use crate::mesh_client::{MeshConnector, MeshTls};
use http_body_util::BodyExt;
use hyper::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Builder, Client, ResponseFuture};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::{sync::Mutex, time::Duration};

/// The connect timeout of a client with no cluster (the application behind
/// an inbound listener, on this host).
const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A builder of HTTP/2 clients.
pub fn http2_only() -> Builder {
    let mut builder = Client::builder(hyper_util::rt::TokioExecutor::new());
    builder.http2_only(true);
    builder
}

#[derive(Clone)]
pub enum UpstreamClient {
    Http1(h1::Client),
    // Behind an `Arc`: hyper-util's client is a few hundred bytes, and a
    // request's future carries its cluster's client across every await.
    Http2(Arc<Client<Gathered<HttpConnector>, ProxyBody>>),
    Http2Mesh(Arc<Client<MeshConnector, ProxyBody>>),
}

impl UpstreamClient {
    pub fn request(&self, request: TryRequest) -> Try {
        let http2 = match self {
            UpstreamClient::Http1(client) => return Try::Http1(Box::pin(client.send(request))),
            UpstreamClient::Http2(client) => http2_request(request).map(|r| client.request(r)),
            UpstreamClient::Http2Mesh(client) => http2_request(request).map(|r| client.request(r)),
        };
        match http2 {
            Ok(future) => Try::Http2(future),
            Err(e) => Try::Unsent(Some(e)),
        }
    }
}

/// `request` as hyper's HTTP/2 client takes it: a head of its own (the
/// shared one copied only while another try may still need it), its URI
/// naming the host (HTTP/2's `:authority`).
fn http2_request(request: TryRequest) -> Result<Request<ProxyBody>, TryError> {
    let TryRequest {
        head,
        authority,
        body,
        ..
    } = request;
    let mut head = Arc::try_unwrap(head).unwrap_or_else(|shared| (*shared).clone());
    let mut uri = std::mem::take(&mut head.uri).into_parts();
    uri.scheme = Some(hyper::http::uri::Scheme::HTTP);
    uri.authority = Some(authority);
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(hyper::http::uri::PathAndQuery::from_static("/"));
    }
    head.uri = hyper::Uri::from_parts(uri).map_err(|e| TryError::Failed(e.into()))?;
    Ok(Request::from_parts(head, body))
}

/// A try through the cluster's client, its failure told apart as
/// forwarding needs it (no connection, the client's own body, or the
/// connection failing after it was made).
impl tower::Service<TryRequest> for UpstreamClient {
    type Response = Response<ProxyBody>;
    type Error = TryError;
    type Future = Try;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), TryError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: TryRequest) -> Try {
        self.request(request)
    }
}

type Http1Try = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, TryError>> + Send>>;

/// One try's response.
pub enum Try {
    Http1(Http1Try),
    Http2(ResponseFuture),
    /// Failed before it was sent.
    Unsent(Option<TryError>),
}

impl Future for Try {
    type Output = Result<Response<ProxyBody>, TryError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Try::Http1(send) => send.as_mut().poll(cx),
            Try::Http2(future) => Pin::new(future).poll(cx).map(|result| match result {
                Ok(response) => Ok(response.map(|body| body.map_err(BodyError::from).boxed())),
                Err(e) if client_body_failed(&e) => Err(TryError::ClientBody(e.into())),
                Err(e) if e.is_connect() => Err(TryError::Connect(e.into())),
                Err(e) => Err(TryError::Failed(e.into())),
            }),
            Try::Unsent(error) => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| TryError::Failed("polled again".into())))),
        }
    }
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

/// What tells two clients apart.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Settings {
    mesh_tls: bool,
    http2: bool,
    connect_timeout: Duration,
}

/// One worker's upstream clients and idle connections.
pub struct Upstreams {
    /// Service-to-service mTLS, when the proxy has a mesh certificate.
    mesh: Option<MeshTls>,
    /// Idle HTTP/1.1 connections: plaintext, and mutual TLS.
    idle_plain: Arc<h1::IdleConnections>,
    idle_mesh: Arc<h1::IdleConnections>,
    clients: Mutex<foldhash::HashMap<Settings, UpstreamClient>>,
}

impl Upstreams {
    pub fn new(mesh: Option<MeshTls>) -> Self {
        Upstreams {
            mesh,
            idle_plain: Arc::default(),
            idle_mesh: Arc::default(),
            clients: Mutex::new(foldhash::HashMap::default()),
        }
    }

    /// The plaintext client for the application behind an inbound listener.
    pub fn local(&self, http2: bool) -> UpstreamClient {
        let settings = Settings {
            mesh_tls: false,
            http2,
            connect_timeout: LOCAL_CONNECT_TIMEOUT,
        };
        // Only mutual TLS can be refused; this is plaintext.
        self.client(settings).unwrap_or_else(|| {
            UpstreamClient::Http1(h1::Client::new(
                self.idle_plain.clone(),
                h1::Connector::Plain,
                LOCAL_CONNECT_TIMEOUT,
            ))
        })
    }

    /// Closes the connections idle for `h1::IDLE_TIMEOUT`, every so often,
    /// while these upstreams exist. Runs on the worker's runtime.
    pub fn reap_idle(&self) -> impl Future<Output = ()> + Send + 'static {
        let pools: [Weak<h1::IdleConnections>; 2] = [
            Arc::downgrade(&self.idle_plain),
            Arc::downgrade(&self.idle_mesh),
        ];
        async move {
            let mut every = tokio::time::interval(h1::IDLE_TIMEOUT / 4);
            loop {
                every.tick().await;
                let now = std::time::Instant::now();
                for pool in &pools {
                    let Some(pool) = pool.upgrade() else { return };
                    pool.reap(now);
                }
            }
        }
    }

    /// The client with `settings`, made on first use; `None` for mTLS
    /// without a mesh certificate.
    fn client(&self, settings: Settings) -> Option<UpstreamClient> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&settings) {
            return Some(client.clone());
        }
        let timeout = settings.connect_timeout;
        let client = match (settings.mesh_tls, settings.http2, &self.mesh) {
            (false, false, _) => UpstreamClient::Http1(h1::Client::new(
                self.idle_plain.clone(),
                h1::Connector::Plain,
                timeout,
            )),
            (false, true, _) => UpstreamClient::Http2(Arc::new(plain_http2(timeout))),
            (true, false, Some(mesh)) => UpstreamClient::Http1(h1::Client::new(
                self.idle_mesh.clone(),
                mesh.http1(),
                timeout,
            )),
            (true, true, Some(mesh)) => {
                UpstreamClient::Http2Mesh(Arc::new(mesh.http2_client(timeout)))
            }
            (true, _, None) => return None,
        };
        clients.insert(settings, client.clone());
        Some(client)
    }
}

impl Upstream for Upstreams {
    type Service = UpstreamClient;

    /// The client for a cluster: mTLS where its transport settings say so,
    /// connecting within its `connect_timeout`.
    fn for_cluster(
        &self,
        cluster: &crate::config::ClusterConfig,
    ) -> Result<UpstreamClient, &'static str> {
        let settings = Settings {
            mesh_tls: cluster.mesh_tls.is_some(),
            http2: cluster.http2,
            connect_timeout: cluster.connect_timeout,
        };
        self.client(settings)
            .ok_or("the service requires mutual TLS and this proxy has no mesh certificate")
    }
}

fn plain_http2(connect_timeout: Duration) -> Client<Gathered<HttpConnector>, ProxyBody> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    http2_only().build(Gathered(connector))
}

/// For tests: how many clients exist.
#[cfg(test)]
fn clients(upstreams: &Upstreams) -> usize {
    upstreams
        .clients
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(connect_timeout: Duration, http2: bool) -> crate::config::ClusterConfig {
        crate::config::ClusterConfig {
            connect_timeout,
            http2,
            ..crate::config::test_cluster(None)
        }
    }

    #[tokio::test]
    async fn clusters_share_a_client_only_with_the_same_settings() {
        let upstreams = Upstreams::new(None);
        let fast = cluster(Duration::from_millis(250), false);
        assert!(upstreams.for_cluster(&fast).is_ok());
        assert!(upstreams.for_cluster(&fast).is_ok());
        assert_eq!(clients(&upstreams), 1);
        assert!(upstreams
            .for_cluster(&cluster(Duration::from_secs(5), false))
            .is_ok());
        assert!(upstreams
            .for_cluster(&cluster(Duration::from_millis(250), true))
            .is_ok());
        assert_eq!(clients(&upstreams), 3);
    }

    #[test]
    fn an_http2_request_names_its_host_and_copies_a_head_only_while_shared() {
        let request = |head: Arc<hyper::http::request::Parts>| TryRequest {
            head,
            authority: "10.0.0.7:8080".parse().expect("authority"),
            body: crate::forward::whole_body(bytes::Bytes::new()),
            replay: None,
        };
        // Where a header's value lies: in the map's own storage, which a
        // move keeps and a copy does not.
        let value_at = |headers: &hyper::HeaderMap| {
            std::ptr::from_ref(headers.get("x-a").expect("x-a")) as usize
        };
        let (mut parts, ()) = Request::get("http://web.shop/cart?x=1")
            .body(())
            .expect("request")
            .into_parts();
        parts.headers.insert("x-a", "1".parse().expect("value"));
        let head = Arc::new(parts);
        let shared_at = value_at(&head.headers);
        let copied = http2_request(request(head.clone())).expect("request");
        assert_eq!(copied.uri(), "http://10.0.0.7:8080/cart?x=1");
        assert_eq!(copied.headers()["x-a"], "1");
        assert_ne!(value_at(copied.headers()), shared_at, "a copy");
        assert_eq!(
            head.uri, "http://web.shop/cart?x=1",
            "the shared head left whole"
        );
        let moved = http2_request(request(head)).expect("request");
        assert_eq!(moved.uri(), "http://10.0.0.7:8080/cart?x=1");
        assert_eq!(
            value_at(moved.headers()),
            shared_at,
            "the last try's head moved"
        );
        let (parts, ()) = Request::get("/").body(()).expect("request").into_parts();
        let bare = http2_request(request(Arc::new(parts))).expect("request");
        assert_eq!(bare.uri(), "http://10.0.0.7:8080/");
    }
}
