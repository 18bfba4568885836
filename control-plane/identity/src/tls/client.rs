//! The client side: gRPC channels over TLS 1.3 with this workload's
//! certificate, to servers whose certificates name an expected identity.

use super::credentials::Credentials;
use super::io::Io;
use super::server::CurrentLeaf;
use super::verify::{verify_peer, Signatures, Usage};
use crate::spiffe::{Identity, SpiffeId};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Which server identities a client accepts.
pub type ServerCheck = fn(&SpiffeId) -> bool;

/// Servers that are control-plane nodes.
pub fn control_plane_node(id: &SpiffeId) -> bool {
    matches!(id.identity, Identity::Node(_))
}

/// Servers that are mesh proxies (terminating service-to-service mTLS).
pub fn mesh_proxy(id: &SpiffeId) -> bool {
    matches!(id.identity, Identity::Proxy { .. })
}

/// Which server a client accepts: any that passes a check, or exactly one.
#[derive(Debug, Clone)]
enum Accept {
    Matching(ServerCheck),
    Exactly(Identity),
}

/// Checks the server's chain against the bundle in force, and its SPIFFE ID
/// (not its DNS name: mesh identities are SPIFFE IDs).
#[derive(Debug)]
struct ServerIdentity {
    credentials: Arc<Credentials>,
    accept: Accept,
}

impl ServerCertVerifier for ServerIdentity {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let loaded = self.credentials.current();
        let domain = loaded.leaf.as_ref().map(|l| l.id.trust_domain.as_str());
        let mut chain = vec![end_entity.clone()];
        chain.extend(intermediates.iter().cloned());
        let id = verify_peer(&loaded.bundle, domain, &chain, now, Usage::Server)
            .map_err(|reason| rustls::Error::General(format!("server certificate: {reason}")))?;
        let accepted = match &self.accept {
            Accept::Matching(check) => check(&id),
            Accept::Exactly(expected) => id.identity == *expected,
        };
        if !accepted {
            return Err(rustls::Error::General(format!(
                "server certificate: {id} is not the server expected here"
            )));
        }
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Signatures(&self.credentials.provider).tls12()
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Signatures(&self.credentials.provider).tls13(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Signatures(&self.credentials.provider).schemes()
    }
}

impl ResolvesClientCert for CurrentLeaf {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.current().leaf.as_ref().map(|l| l.certified.clone())
    }
    fn has_certs(&self) -> bool {
        self.0.current().leaf.is_some()
    }
}

/// TLS 1.3 only, offering `alpn`, presenting the credentials' current
/// certificate (none while bootstrapping).
pub fn client_config(
    credentials: &Arc<Credentials>,
    accept: ServerCheck,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, rustls::Error> {
    config(credentials, Accept::Matching(accept), alpn)
}

fn config(
    credentials: &Arc<Credentials>,
    accept: Accept,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut config = ClientConfig::builder_with_provider(credentials.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerIdentity {
            credentials: credentials.clone(),
            accept,
        }))
        .with_client_cert_resolver(Arc::new(CurrentLeaf(credentials.clone())));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Full handshakes only, so the server always sees the current certificate.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// How connections to the control plane are made: plaintext (`--insecure`)
/// or mutual TLS. Cheap to clone; one per process.
#[derive(Clone)]
pub struct Dialer {
    tls: Option<(Arc<Credentials>, Arc<ClientConfig>)>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.tls.is_some() {
            "Dialer(mutual TLS)"
        } else {
            "Dialer(plaintext)"
        })
    }
}

type ClientIo = TokioIo<Io<TlsStream<TcpStream>>>;

/// A connection of a dialer: plaintext, or TLS with the server checked.
pub type ClientStream = Io<TlsStream<TcpStream>>;

async fn dial(tls: Option<Arc<ClientConfig>>, uri: Uri) -> std::io::Result<ClientIo> {
    let host = uri.host().unwrap_or("localhost").to_string();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    Ok(TokioIo::new(secure(tls, &host, tcp).await?))
}

/// `tcp` as it is, or with a TLS handshake over it when `tls` is set.
async fn secure(
    tls: Option<Arc<ClientConfig>>,
    host: &str,
    tcp: TcpStream,
) -> std::io::Result<ClientStream> {
    tcp.set_nodelay(true)?;
    let Some(config) = tls else {
        return Ok(Io::Plain(tcp));
    };
    // Names are not checked (the server's SPIFFE ID is); any valid name will do.
    let name = ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::try_from("meridian").expect("a valid DNS name"));
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    Ok(Io::Tls(Box::new(stream)))
}

impl Dialer {
    pub fn insecure() -> Dialer {
        Dialer { tls: None }
    }

    pub fn tls(
        credentials: &Arc<Credentials>,
        accept: ServerCheck,
    ) -> Result<Dialer, rustls::Error> {
        Ok(Dialer {
            tls: Some((
                credentials.clone(),
                client_config(credentials, accept, super::GRPC_ALPN)?,
            )),
        })
    }

    /// The same dialer, accepting only a server that proves to be `identity`
    /// (plaintext stays plaintext).
    pub fn expecting(&self, identity: Identity) -> Result<Dialer, rustls::Error> {
        let Some((credentials, _)) = &self.tls else {
            return Ok(self.clone());
        };
        Ok(Dialer {
            tls: Some((
                credentials.clone(),
                config(credentials, Accept::Exactly(identity), super::GRPC_ALPN)?,
            )),
        })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        Ok(Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(3))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true))
    }

    fn connector(
        &self,
    ) -> impl tower::Service<
        Uri,
        Response = ClientIo,
        Error = std::io::Error,
        Future = impl std::future::Future<Output = std::io::Result<ClientIo>> + Send,
    > + Send
           + Clone
           + 'static {
        let tls = self.tls.as_ref().map(|(_, config)| config.clone());
        tower::service_fn(move |uri: Uri| dial(tls.clone(), uri))
    }

    /// A connection to `addr` (`HOST:PORT`) for a protocol of its own
    /// (`alpn`, offered over TLS), not gRPC, connected now.
    pub async fn stream(&self, addr: &str, alpn: &[u8]) -> std::io::Result<ClientStream> {
        let tls = self.tls.as_ref().map(|(_, config)| {
            let mut config = ClientConfig::clone(config);
            config.alpn_protocols = vec![alpn.to_vec()];
            Arc::new(config)
        });
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect(addr).await?;
        secure(tls, host, tcp).await
    }

    /// A channel to `addr` (`HOST:PORT`) that connects on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        Ok(Self::endpoint(addr)?.connect_with_connector_lazy(self.connector()))
    }

    /// A channel to `addr`, connected now.
    pub async fn connect(&self, addr: &str) -> Result<Channel, DialError> {
        Ok(Self::endpoint(addr)?
            .connect_with_connector(self.connector())
            .await?)
    }
}

/// The addresses a `--server` list (`HOST:PORT,HOST:PORT`) names, in order.
pub fn server_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

impl Dialer {
    /// A channel to the first of `addrs` that answers, and its position in
    /// the list: how a client goes on working while the node it would have
    /// used is down.
    pub async fn connect_first<'a>(
        &self,
        addrs: impl IntoIterator<Item = &'a str>,
    ) -> Result<(usize, Channel), Unreachable> {
        let mut failures = Vec::new();
        for (i, addr) in addrs.into_iter().enumerate() {
            match self.connect(addr).await {
                Ok(channel) => return Ok((i, channel)),
                Err(e) => failures.push(format!("{addr}: {e}")),
            }
        }
        Err(Unreachable(failures))
    }
}

/// No listed control-plane node could be reached: each one's failure.
#[derive(Debug)]
pub struct Unreachable(pub Vec<String>);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [] => f.write_str("no control-plane node is listed"),
            [one] => write!(f, "cannot reach the control plane at {one}"),
            all => write!(f, "cannot reach any control-plane node: {}", all.join("; ")),
        }
    }
}

impl std::error::Error for Unreachable {}

/// A failed connection, said with its innermost cause (a refused
/// certificate, say), which tonic's own message leaves out.
#[derive(Debug)]
pub struct DialError(tonic::transport::Error);

impl From<tonic::transport::Error> for DialError {
    fn from(error: tonic::transport::Error) -> Self {
        DialError(error)
    }
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut cause: &dyn std::error::Error = &self.0;
        while let Some(next) = cause.source() {
            cause = next;
        }
        write!(f, "{}: {cause}", self.0)
    }
}

impl std::error::Error for DialError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address nothing listens on: a port bound, then let go.
    fn closed_addr() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        addr
    }

    #[test]
    fn server_lists_are_comma_separated() {
        let listed: Vec<&str> = server_list(" a:1, ,b:2,").collect();
        assert_eq!(listed, ["a:1", "b:2"]);
    }

    #[tokio::test]
    async fn connect_first_takes_the_first_that_answers_and_says_why_none_did() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let live_addr = live.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            // Accept and hold connections; HTTP/2 is negotiated lazily.
            let mut held = Vec::new();
            while let Ok((socket, _)) = live.accept().await {
                held.push(socket);
            }
        });
        let dead = closed_addr();
        let dialer = Dialer::insecure();
        let (index, _) = dialer
            .connect_first([dead.as_str(), live_addr.as_str()])
            .await
            .expect("the second answers");
        assert_eq!(index, 1);
        let none = dialer
            .connect_first([dead.as_str(), closed_addr().as_str()])
            .await
            .expect_err("none answers");
        assert_eq!(none.0.len(), 2);
        assert!(
            none.to_string()
                .starts_with("cannot reach any control-plane node"),
            "{none}"
        );
        let empty = dialer.connect_first([]).await.expect_err("none listed");
        assert!(empty.0.is_empty());
    }
}
