//! The server side: accepting plaintext or TLS 1.3 connections for tonic,
//! each tagged with who the peer proved to be.
//!
//! A client certificate is requested but its chain is checked only after the
//! handshake, so that a refused peer gets a gRPC UNAUTHENTICATED with the
//! reason rather than a bare TLS alert. The handshake still proves that the
//! peer holds the certificate's key, and no request is served before
//! [`crate::authz`]'s layer has looked at the verdict.

use super::credentials::Credentials;
use super::io::Io;
use super::verify::{verify_peer, Signatures, Usage};
use crate::enrolment::Enrolment;
use crate::spiffe::SpiffeId;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// How long a client may take over the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is at the other end of a connection.
#[derive(Debug, Clone)]
pub enum PeerIdentity {
    /// `--insecure`: no TLS, nobody is authenticated and everything is allowed.
    Plaintext,
    /// A certificate that chains to the trust bundle, naming this ID.
    Verified(SpiffeId),
    /// TLS without a valid certificate, and why.
    Unverified(String),
}

/// The connection info tonic attaches to every request.
#[derive(Debug, Clone)]
pub struct Peer {
    pub remote: Option<SocketAddr>,
    pub identity: PeerIdentity,
    /// When the verified certificate expires: connections outlive it.
    pub expires: Option<std::time::SystemTime>,
    /// The bootstrap token the verified certificate's chain was enrolled
    /// with, if it was: what a renewal is checked against.
    pub enrolment: Option<Enrolment>,
}

impl Peer {
    /// Who the peer is now: a certificate that expired since the handshake
    /// no longer counts.
    pub fn identity_now(&self) -> PeerIdentity {
        match (&self.identity, self.expires) {
            (PeerIdentity::Verified(_), Some(expires))
                if expires <= std::time::SystemTime::now() =>
            {
                PeerIdentity::Unverified(
                    "the certificate has expired since the connection was made".into(),
                )
            }
            (identity, _) => identity.clone(),
        }
    }
}

pub struct Conn {
    io: Io<TlsStream<TcpStream>>,
    pub peer: Peer,
}

impl Conn {
    /// The protocol ALPN settled on, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match &self.io {
            Io::Tls(stream) => stream.get_ref().1.alpn_protocol(),
            Io::Plain(_) => None,
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    // Forwarded, or h2 would write each frame's head and its payload in
    // two system calls (and two TCP segments) rather than one `writev`.
    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Asks for a client certificate; the handshake checks only that the client
/// holds its key (see the module doc).
#[derive(Debug)]
struct DeferredClientAuth {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for DeferredClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Signatures(&self.provider).tls12()
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Signatures(&self.provider).tls13(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Signatures(&self.provider).schemes()
    }
}

/// Presents whatever certificate is in force at the time of the handshake.
#[derive(Debug)]
pub(crate) struct CurrentLeaf(pub(crate) Arc<Credentials>);

impl ResolvesServerCert for CurrentLeaf {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.current().leaf.as_ref().map(|l| l.certified.clone())
    }
}

/// ALPN for gRPC: HTTP/2 only.
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];

/// TLS 1.3 only, offering `alpn`, with the credentials' current certificate.
pub fn server_config(
    credentials: &Arc<Credentials>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = credentials.provider.clone();
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(DeferredClientAuth { provider }))
        .with_cert_resolver(Arc::new(CurrentLeaf(credentials.clone())));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // A resumed session would carry the certificate of its first handshake,
    // which may have expired since (or been renewed): every handshake is full.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// What the peer of a finished handshake proved, until when, and its enrolment.
fn identify(
    credentials: &Credentials,
    stream: &TlsStream<TcpStream>,
) -> (
    PeerIdentity,
    Option<std::time::SystemTime>,
    Option<Enrolment>,
) {
    let loaded = credentials.current();
    let own_domain = loaded.leaf.as_ref().map(|l| l.id.trust_domain.as_str());
    let chain = stream.get_ref().1.peer_certificates().unwrap_or(&[]);
    match verify_peer(
        &loaded.bundle,
        own_domain,
        chain,
        UnixTime::now(),
        Usage::Client,
    ) {
        Ok(id) => {
            let facts = chain.first().and_then(|leaf| crate::x509::facts(leaf).ok());
            let (expires, enrolment) = match facts {
                Some(facts) => (Some(facts.not_after), facts.enrolment),
                None => (None, None),
            };
            (PeerIdentity::Verified(id), expires, enrolment)
        }
        Err(reason) => (PeerIdentity::Unverified(reason), None, None),
    }
}

/// A protocol served on the gRPC port beside gRPC: over TLS a connection
/// whose ALPN is `alpn`, in plaintext one whose first byte is
/// `first_byte` (never an HTTP/2 client's `P`).
#[derive(Debug, Clone, Copy)]
pub struct Beside {
    pub alpn: &'static [u8],
    pub first_byte: u8,
}

/// Accepted connections for `tonic::transport::Server::serve_with_incoming`:
/// plaintext when `tls` is None, else TLS with the peer identified.
/// Handshakes run concurrently; a failed one closes only its connection.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<Credentials>>,
    alpn: &[&[u8]],
) -> Result<tokio_stream::wrappers::ReceiverStream<std::io::Result<Conn>>, rustls::Error> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    accept(listener, tls, alpn, tx, None)?;
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// As [`incoming`], with the connections of the protocol `beside` gRPC
/// handed out apart (identified the same way).
pub fn incoming_beside(
    listener: TcpListener,
    tls: Option<Arc<Credentials>>,
    alpn: &[&[u8]],
    beside: Beside,
) -> Result<
    (
        tokio_stream::wrappers::ReceiverStream<std::io::Result<Conn>>,
        tokio::sync::mpsc::Receiver<Conn>,
    ),
    rustls::Error,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let (beside_tx, beside_rx) = tokio::sync::mpsc::channel(16);
    let mut offered = alpn.to_vec();
    offered.push(beside.alpn);
    accept(listener, tls, &offered, tx, Some((beside, beside_tx)))?;
    Ok((tokio_stream::wrappers::ReceiverStream::new(rx), beside_rx))
}

type Accepted = tokio::sync::mpsc::Sender<std::io::Result<Conn>>;

/// The accept loop: each connection to `tx`, or to the `beside` protocol's
/// sender when it is one of those.
fn accept(
    listener: TcpListener,
    tls: Option<Arc<Credentials>>,
    alpn: &[&[u8]],
    tx: Accepted,
    beside: Option<(Beside, tokio::sync::mpsc::Sender<Conn>)>,
) -> Result<(), rustls::Error> {
    let acceptor = match &tls {
        Some(credentials) => Some(tokio_rustls::TlsAcceptor::from(server_config(
            credentials,
            alpn,
        )?)),
        None => None,
    };
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a gRPC connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let _ = tcp.set_nodelay(true);
            let (tx, beside) = (tx.clone(), beside.clone());
            let (Some(acceptor), Some(credentials)) = (&acceptor, &tls) else {
                let conn = Conn {
                    io: Io::Plain(tcp),
                    peer: Peer {
                        remote: Some(remote),
                        identity: PeerIdentity::Plaintext,
                        expires: None,
                        enrolment: None,
                    },
                };
                match beside {
                    // Told apart by the first byte, which may take a while to come.
                    Some(beside) => {
                        tokio::spawn(hand_over_plaintext(conn, tx, beside));
                    }
                    None => {
                        if tx.send(Ok(conn)).await.is_err() {
                            return;
                        }
                    }
                }
                continue;
            };
            let (acceptor, credentials) = (acceptor.clone(), credentials.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let (identity, expires, enrolment) = identify(&credentials, &stream);
                        let conn = Conn {
                            io: Io::Tls(Box::new(stream)),
                            peer: Peer {
                                remote: Some(remote),
                                identity,
                                expires,
                                enrolment,
                            },
                        };
                        match beside {
                            Some((beside, side)) if conn.alpn() == Some(beside.alpn) => {
                                let _ = side.send(conn).await;
                            }
                            _ => {
                                let _ = tx.send(Ok(conn)).await;
                            }
                        }
                    }
                    Ok(Err(error)) => tracing::debug!(%remote, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    Ok(())
}

/// Hands a plaintext connection to gRPC or to the protocol beside it, by
/// its first byte; one that sends nothing in time is closed.
async fn hand_over_plaintext(
    conn: Conn,
    grpc: Accepted,
    (beside, side): (Beside, tokio::sync::mpsc::Sender<Conn>),
) {
    let Io::Plain(tcp) = &conn.io else {
        return;
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == beside.first_byte => {
            let _ = side.send(conn).await;
        }
        Ok(Ok(1)) => {
            let _ = grpc.send(Ok(conn)).await;
        }
        // Closed, failed or silent.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSlice;
    use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio_stream::StreamExt;

    /// On one port, a plaintext connection whose first byte is the protocol
    /// beside gRPC's goes apart, an HTTP/2 one to gRPC (whichever comes
    /// first), and one that sends nothing is held back from both.
    #[tokio::test]
    async fn a_plaintext_connection_goes_where_its_first_byte_says() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let beside = Beside {
            alpn: b"side/1",
            first_byte: b'M',
        };
        let (mut grpc, mut side) = incoming_beside(listener, None, &[], beside).expect("plaintext");
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let mut h2 = TcpStream::connect(addr).await.expect("connect");
        let mut other = TcpStream::connect(addr).await.expect("connect");
        other.write_all(b"MERIDIAN").await.expect("written");
        h2.write_all(b"PRI * HTTP/2.0\r\n").await.expect("written");
        let within = |what| tokio::time::timeout(Duration::from_secs(10), what);
        let mut apart = within(side.recv())
            .await
            .expect("in time")
            .expect("a connection apart");
        let mut first = [0u8; 8];
        apart.read_exact(&mut first).await.expect("read");
        assert_eq!(&first, b"MERIDIAN", "nothing was taken from it");
        let mut to_grpc = tokio::time::timeout(Duration::from_secs(10), grpc.next())
            .await
            .expect("in time")
            .expect("a connection")
            .expect("accepted");
        let mut first = [0u8; 3];
        to_grpc.read_exact(&mut first).await.expect("read");
        assert_eq!(&first, b"PRI");
        // The silent one went nowhere.
        let nothing = tokio::time::timeout(Duration::from_millis(200), grpc.next()).await;
        assert!(nothing.is_err(), "a silent connection was handed to gRPC");
        assert!(
            side.try_recv().is_err(),
            "a silent connection was handed apart"
        );
    }

    /// h2 writes a frame's head and its payload with one `writev` only when
    /// the connection says it takes vectored writes; otherwise each goes
    /// out in a system call (and a TCP segment) of its own.
    #[tokio::test]
    async fn an_accepted_connection_takes_a_vectored_write_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut accepted = incoming(listener, None, &[]).expect("plaintext");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let mut conn = accepted
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        assert!(conn.is_write_vectored());
        let (head, payload) = ([1u8; 9], [2u8; 1000]);
        let written = conn
            .write_vectored(&[IoSlice::new(&head), IoSlice::new(&payload)])
            .await
            .expect("written");
        assert_eq!(
            written,
            head.len() + payload.len(),
            "both slices in one write"
        );
        let mut received = vec![0u8; written];
        client.read_exact(&mut received).await.expect("received");
        assert_eq!(&received[..9], &head);
        assert_eq!(&received[9..], &payload);
    }
}
