//! Originating service-to-service mutual TLS: upstream connections to the
//! proxies in front of a service's endpoints, presenting this proxy's mesh
//! certificate and accepting only mesh proxies' certificates.

use crate::coalesce::Coalesce;
use crate::forward::ProxyBody;
use crate::turn_writes::TurnWrites;
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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A TLS connection to an upstream proxy, as hyper's pool wants it (its
/// writes gathered, as every HTTP/2 connection's).
pub struct MeshConn(TokioIo<Coalesce<TlsStream<TurnWrites>>>);

impl Connection for MeshConn {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.0.inner().get_ref().get_ref().1.alpn_protocol() == Some(b"h2") {
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
    // Forwarded, or h2 would write each frame's head and its payload in
    // two writes rather than one.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
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
    /// The cluster's `connect_timeout`: TCP connect and TLS handshake.
    connect_timeout: Duration,
}

impl tower::Service<hyper::Uri> for MeshConnector {
    type Response = MeshConn;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = std::io::Result<MeshConn>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let (tls, connect_timeout) = (self.tls.clone(), self.connect_timeout);
        let connect = async move {
            let host = uri.host().unwrap_or_default();
            let port = uri.port_u16().unwrap_or(80);
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let tls = handshake(&tls, host, TurnWrites::new(tcp)).await?;
            Ok(MeshConn(TokioIo::new(Coalesce::gathering(tls))))
        };
        Box::pin(async move {
            tokio::time::timeout(connect_timeout, connect)
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })?
        })
    }
}

/// The TLS handshake with the upstream proxy at `host` over `tcp`.
pub async fn handshake<T: AsyncRead + AsyncWrite + Unpin>(
    tls: &tokio_rustls::TlsConnector,
    host: &str,
    tcp: T,
) -> std::io::Result<TlsStream<T>> {
    // The server's SPIFFE ID is verified, not its name.
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    tls.connect(name, tcp).await
}

/// This proxy's mesh TLS for upstream connections, HTTP/1.1 and HTTP/2 by
/// ALPN, presenting its current certificate (renewals apply to new
/// connections).
#[derive(Clone)]
pub struct MeshTls {
    http1: tokio_rustls::TlsConnector,
    http2: tokio_rustls::TlsConnector,
}

impl MeshTls {
    pub fn new(credentials: &Arc<Credentials>) -> Result<Self, rustls::Error> {
        let tls = |alpn: &[&[u8]]| -> Result<tokio_rustls::TlsConnector, rustls::Error> {
            Ok(tokio_rustls::TlsConnector::from(client_config(
                credentials,
                mesh_proxy,
                alpn,
            )?))
        };
        Ok(MeshTls {
            http1: tls(&[b"http/1.1"])?,
            http2: tls(&[b"h2"])?,
        })
    }

    /// How HTTP/1.1 connections to mesh proxies are made.
    pub fn http1(&self) -> crate::h1::Connector {
        crate::h1::Connector::Mesh(self.http1.clone())
    }

    /// A pooled HTTP/2 client whose connections take at most `connect_timeout`.
    pub fn http2_client(&self, connect_timeout: Duration) -> Client<MeshConnector, ProxyBody> {
        let connector = MeshConnector {
            tls: self.http2.clone(),
            connect_timeout,
        };
        crate::upstreams::http2_only().build(connector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_identity::{
        ca,
        spiffe::{Identity, SpiffeId},
        tls::server_config,
    };
    use tokio::io::AsyncReadExt;

    /// Mesh credentials for proxy `id`, from `authority`.
    fn proxy_credentials(authority: &ca::Issued, id: &str) -> Arc<Credentials> {
        let signer = ca::Signer {
            cert_pem: &authority.cert_pem,
            key_pem: &authority.key_pem,
        };
        let spiffe = SpiffeId::new(
            "mesh.test",
            Identity::Proxy {
                cluster: "c1".into(),
                id: id.into(),
            },
        )
        .expect("a SPIFFE ID");
        let leaf = ca::issue(&signer, &spiffe, &[], Duration::from_secs(3600)).expect("issued");
        Credentials::from_pem(&authority.cert_pem, Some((&leaf.cert_pem, &leaf.key_pem)))
            .expect("credentials")
    }

    /// hyper and h2 write a head and its payload with one `writev` only
    /// when the connection says it takes vectored writes.
    #[tokio::test]
    async fn a_mesh_connection_takes_a_vectored_write_whole() {
        let authority = ca::create_ca("mesh.test", Duration::from_secs(3600)).expect("a CA");
        let upstream = proxy_credentials(&authority, "upstream");
        let acceptor = tokio_rustls::TlsAcceptor::from(
            server_config(&upstream, &[b"http/1.1"]).expect("server TLS"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let received = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut stream = acceptor.accept(tcp).await.expect("handshake");
            let mut bytes = vec![0u8; 1009];
            stream.read_exact(&mut bytes).await.expect("read");
            bytes
        });
        let mut connector = MeshConnector {
            tls: MeshTls::new(&proxy_credentials(&authority, "client"))
                .expect("client TLS")
                .http1,
            connect_timeout: Duration::from_secs(5),
        };
        let uri: hyper::Uri = format!("http://localhost:{}", addr.port())
            .parse()
            .expect("uri");
        let mut conn = tower::Service::call(&mut connector, uri)
            .await
            .expect("connected");
        assert!(hyper::rt::Write::is_write_vectored(&conn));
        let (head, payload) = ([1u8; 9], [2u8; 1000]);
        let slices = [
            std::io::IoSlice::new(&head),
            std::io::IoSlice::new(&payload),
        ];
        let written = std::future::poll_fn(|cx| {
            hyper::rt::Write::poll_write_vectored(Pin::new(&mut conn), cx, &slices)
        })
        .await
        .expect("written");
        assert_eq!(written, 1009, "both slices in one write");
        // Gathered (see `Coalesce`): the first flush lets h2 go on writing;
        // the next, with nothing new before it (h2's next turn), writes.
        for _ in 0..2 {
            std::future::poll_fn(|cx| hyper::rt::Write::poll_flush(Pin::new(&mut conn), cx))
                .await
                .expect("flushed");
        }
        let bytes = received.await.expect("the server");
        assert_eq!(&bytes[..9], &head);
        assert_eq!(&bytes[9..], &payload);
    }
}
