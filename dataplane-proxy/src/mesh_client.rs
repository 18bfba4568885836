//! Originating service-to-service mutual TLS: upstream connections to the
//! proxies in front of a service's endpoints, presenting this proxy's mesh
//! certificate and accepting only mesh proxies' certificates.

use crate::forward::ProxyBody;
use hyper_util::client::legacy::{
    connect::{Connected, Connection},
    Client,
};
use hyper_util::rt::TokioIo;
use meridian_identity::tls::{client_config, mesh_proxy, Credentials};
use rustls::pki_types::ServerName;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A TLS connection to an upstream proxy, as hyper's pool wants it.
pub struct MeshConn(TokioIo<TlsStream<TcpStream>>);

impl Connection for MeshConn {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.0.inner().get_ref().1.alpn_protocol() == Some(b"h2") {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for MeshConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for MeshConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[derive(Clone)]
pub struct MeshConnector {
    tls: tokio_rustls::TlsConnector,
}

impl tower::Service<hyper::Uri> for MeshConnector {
    type Response = MeshConn;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = std::io::Result<MeshConn>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_string();
            let port = uri.port_u16().unwrap_or(80);
            let tcp = tokio::time::timeout(
                Duration::from_secs(2),
                TcpStream::connect((host.as_str(), port)),
            )
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
            tcp.set_nodelay(true)?;
            // The server's SPIFFE ID is verified, not its name.
            let name = ServerName::try_from(host.clone())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let stream = tls.connect(name, tcp).await?;
            Ok(MeshConn(TokioIo::new(stream)))
        })
    }
}

/// Pooled mTLS clients, HTTP/1.1 and HTTP/2, presenting the proxy's current
/// certificate (renewals apply to new connections).
pub struct MeshClients {
    pub http1: Client<MeshConnector, ProxyBody>,
    pub http2: Client<MeshConnector, ProxyBody>,
}

impl MeshClients {
    pub fn new(credentials: &Arc<Credentials>) -> Result<Self, rustls::Error> {
        let connector = |alpn: &[&[u8]]| -> Result<MeshConnector, rustls::Error> {
            Ok(MeshConnector {
                tls: tokio_rustls::TlsConnector::from(client_config(
                    credentials,
                    mesh_proxy,
                    alpn,
                )?),
            })
        };
        let executor = hyper_util::rt::TokioExecutor::new();
        Ok(MeshClients {
            http1: Client::builder(executor.clone())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(connector(&[b"http/1.1"])?),
            http2: Client::builder(executor)
                .http2_only(true)
                .build(connector(&[b"h2"])?),
        })
    }
}
