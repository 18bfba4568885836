//! The clients requests leave the proxy by: plaintext or service-to-service
//! mutual TLS, HTTP/1.1 or HTTP/2, each connecting within its cluster's
//! `connect_timeout`. The few distinct settings of the configured clusters
//! each get one pooled client, made on first use and kept.

use crate::forward::{ProxyBody, TryError, Upstream};
use crate::mesh_client::{MeshConnector, MeshTls};
use http_body_util::BodyExt;
use hyper::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Builder, Client, ResponseFuture};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::{collections::HashMap, sync::Mutex, time::Duration};

/// The connect timeout of a client with no cluster (the application behind
/// an inbound listener, on this host).
const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an idle pooled HTTP/1.1 connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// A pool's builder: keep-alive HTTP/1.1, or HTTP/2 only.
pub fn pooled(http2: bool) -> Builder {
    let mut builder = Client::builder(hyper_util::rt::TokioExecutor::new());
    if http2 {
        builder.http2_only(true);
    } else {
        builder.pool_idle_timeout(POOL_IDLE);
    }
    builder
}

#[derive(Clone)]
pub enum UpstreamClient {
    Plain(Client<HttpConnector, ProxyBody>),
    Mesh(Client<MeshConnector, ProxyBody>),
}

impl UpstreamClient {
    pub fn request(&self, request: Request<ProxyBody>) -> ResponseFuture {
        match self {
            UpstreamClient::Plain(client) => client.request(request),
            UpstreamClient::Mesh(client) => client.request(request),
        }
    }
}

/// A try through the pooled client, its failure told apart as forwarding
/// needs it (no connection, the client's own body, or the connection
/// failing after it was made).
impl tower::Service<Request<ProxyBody>> for UpstreamClient {
    type Response = Response<ProxyBody>;
    type Error = TryError;
    type Future = Try;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), TryError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ProxyBody>) -> Try {
        Try(self.request(request))
    }
}

/// The client's response future, mapped (no allocation beyond the client's own).
pub struct Try(ResponseFuture);

impl Future for Try {
    type Output = Result<Response<ProxyBody>, TryError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|result| match result {
            Ok(response) => Ok(response.map(|body| body.boxed())),
            Err(e) if client_body_failed(&e) => Err(TryError::ClientBody(e.into())),
            Err(e) if e.is_connect() => Err(TryError::Connect(e.into())),
            Err(e) => Err(TryError::Failed(e.into())),
        })
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

pub struct Upstreams {
    /// Service-to-service mTLS, when the proxy has a mesh certificate.
    mesh: Option<MeshTls>,
    clients: Mutex<HashMap<Settings, UpstreamClient>>,
}

impl Upstreams {
    pub fn new(mesh: Option<MeshTls>) -> Self {
        Upstreams {
            mesh,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The plaintext client for the application behind an inbound listener.
    pub fn local(&self, http2: bool) -> UpstreamClient {
        let settings = Settings {
            mesh_tls: false,
            http2,
            connect_timeout: LOCAL_CONNECT_TIMEOUT,
        };
        self.client(settings)
            .unwrap_or_else(|| UpstreamClient::Plain(plain(settings)))
    }

    /// The client with `settings`, made on first use; `None` for mTLS
    /// without a mesh certificate.
    fn client(&self, settings: Settings) -> Option<UpstreamClient> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&settings) {
            return Some(client.clone());
        }
        let client = match (settings.mesh_tls, &self.mesh) {
            (false, _) => UpstreamClient::Plain(plain(settings)),
            (true, Some(mesh)) => {
                UpstreamClient::Mesh(mesh.client(settings.http2, settings.connect_timeout))
            }
            (true, None) => return None,
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

fn plain(settings: Settings) -> Client<HttpConnector, ProxyBody> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(settings.connect_timeout));
    pooled(settings.http2).build(connector)
}

/// For tests: how many pooled clients exist.
#[cfg(test)]
fn pools(upstreams: &Upstreams) -> usize {
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
    async fn clusters_share_a_pool_only_with_the_same_settings() {
        let upstreams = Upstreams::new(None);
        let fast = cluster(Duration::from_millis(250), false);
        assert!(upstreams.for_cluster(&fast).is_ok());
        assert!(upstreams.for_cluster(&fast).is_ok());
        assert_eq!(pools(&upstreams), 1);
        assert!(upstreams
            .for_cluster(&cluster(Duration::from_secs(5), false))
            .is_ok());
        assert!(upstreams
            .for_cluster(&cluster(Duration::from_millis(250), true))
            .is_ok());
        assert_eq!(pools(&upstreams), 3);
    }
}
