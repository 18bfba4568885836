//! Listening where Terraform allows, printing the handshake, and serving
//! until Terraform says to stop (`Shutdown`, `StopProvider`), exits, or
//! sends SIGTERM. SIGINT is Terraform's to handle: a Ctrl-C reaches the
//! whole process group, and Terraform then stops the provider itself.

use super::automtls::AutoMtls;
use super::handshake::{self, Host};
use super::services::{Broker, Controller, Stdio};
use crate::proto::{plugin as gp, tfplugin6 as tf};
use crate::provider::Provider;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;

/// One connection from Terraform, plaintext or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// A listener on 127.0.0.1, within Terraform's port range if it gave one.
pub async fn listen(host: &Host) -> std::io::Result<TcpListener> {
    let Some((lo, hi)) = host.ports else {
        return TcpListener::bind(("127.0.0.1", 0)).await;
    };
    // Start somewhere in the range so that providers started together spread out.
    let span = u32::from(hi - lo) + 1;
    let offset = std::process::id() % span;
    let mut last = std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free port in range");
    for k in 0..span {
        let port = u32::from(lo) + (offset + k) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Accepts connections, finishing each TLS handshake in its own task.
fn incoming(listener: TcpListener, tls: Option<AutoMtls>) -> mpsc::Receiver<std::io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(16);
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.config));
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let tx = tx.clone();
            match &acceptor {
                None => {
                    if tx.send(Ok(Conn::Plain(tcp))).await.is_err() {
                        return;
                    }
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(stream)) => {
                                let _ = tx.send(Ok(Conn::Tls(Box::new(stream)))).await;
                            }
                            // Terraform's gRPC client opens and drops spare connections.
                            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                                tracing::debug!(%peer, "a connection closed before its TLS handshake")
                            }
                            Ok(Err(e)) => {
                                tracing::warn!(%peer, error = %e, "refused a TLS connection")
                            }
                            Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    rx
}

/// Resolves when the plugin should exit; `parent` is Terraform's process id.
async fn stopped(stop: watch::Sender<bool>, parent: u32) {
    let mut flag = stop.subscribe();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = flag.wait_for(|s| *s) => return,
            Some(()) = async { term.as_mut()?.recv().await } => {
                stop.send_replace(true);
                return;
            }
            Some(()) = async { interrupt.as_mut()?.recv().await } => {
                tracing::debug!("ignoring SIGINT: Terraform stops its providers itself");
            }
            _ = tick.tick() => {
                if std::os::unix::process::parent_id() != parent {
                    tracing::info!("Terraform has exited; stopping");
                    stop.send_replace(true);
                    return;
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    AutoMtls(#[from] super::automtls::AutoMtlsError),
    #[error("cannot listen or write the handshake: {0}")]
    Io(#[from] std::io::Error),
    #[error("serving gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Serves the provider until it is told to stop.
pub async fn run(host: Host, env: crate::provider::Env) -> Result<(), ServeError> {
    // Taken before the handshake, after which Terraform may go at any time.
    let parent = std::os::unix::process::parent_id();
    let tls = match &host.client_cert {
        Some(pem) => Some(super::automtls::server(pem)?),
        None => None,
    };
    let listener = listen(&host).await?;
    let addr: SocketAddr = listener.local_addr()?;
    let line = handshake::line(addr, tls.as_ref().map(|t| t.cert_der.as_slice()));
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
    }
    let (stop, _) = watch::channel(false);
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("plugin", tonic_health::ServingStatus::Serving)
        .await;
    let incoming = tokio_stream::wrappers::ReceiverStream::new(incoming(listener, tls));
    let server = tonic::transport::Server::builder()
        .add_service(tf::provider_server::ProviderServer::new(Provider::new(
            env,
            stop.clone(),
        )))
        .add_service(gp::grpc_controller_server::GrpcControllerServer::new(
            Controller(stop.clone()),
        ))
        .add_service(gp::grpc_stdio_server::GrpcStdioServer::new(Stdio(
            stop.clone(),
        )))
        .add_service(gp::grpc_broker_server::GrpcBrokerServer::new(Broker(
            stop.clone(),
        )))
        .add_service(health_service)
        .serve_with_incoming_shutdown(incoming, stopped(stop.clone(), parent));
    let server = tokio::spawn(server);
    let mut flag = stop.subscribe();
    let _ = flag.wait_for(|s| *s).await;
    // Answers in flight get a moment to go out; then the plugin exits regardless.
    match tokio::time::timeout(Duration::from_secs(3), server).await {
        Ok(Ok(Ok(()))) | Err(_) => Ok(()),
        Ok(Ok(Err(e))) => Err(ServeError::Transport(e)),
        Ok(Err(e)) => Err(ServeError::Task(e)),
    }
}
