//! The HTTP server of one accepted client connection, outbound and inbound:
//! HTTP/1.1 by hyper's server, HTTP/2 by the h2 crate driven from the
//! connection's own task (`h2`), told apart by the client's first bytes.
//! Both honour the [`Limits`] and finish gracefully when the proxy drains.

pub mod h2;
mod h2_body;
mod preface;

use crate::forward::{BodyError, BoxError, ProxyBody};
use crate::limits::{Limits, MAX_HEADERS};
use bytes::Bytes;
use hyper::body::Body;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// What answers a connection's requests, whichever protocol carried them.
pub trait Handler: Clone + Send + 'static {
    fn call<B>(
        &self,
        request: Request<B>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + use<Self, B>
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BodyError> + Into<BoxError>;
}

/// Serves `io` until the client closes it, it fails, or it has finished up
/// after a drain.
pub async fn serve<I, H>(
    io: I,
    handler: H,
    limits: &Limits,
    mut drain: Draining,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let (http2, io) = tokio::time::timeout(limits.header_read_timeout, preface::read(io))
        .await
        .map_err(|_| "no request in time")??;
    if http2 {
        return h2::serve(io, handler, limits, drain, h2::KEEPALIVE).await;
    }
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(MAX_HEADERS)
        // hyper's floor for its read buffer is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8 * 1024));
    let service = hyper::service::service_fn(move |request| {
        let response = handler.call(request);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let connection = http1.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result.map_err(Into::into),
        () = drain.requested() => connection.as_mut().graceful_shutdown(),
    }
    connection.await.map_err(Into::into)
}

/// The proxy's signal to its open connections to finish up, and the count
/// of those still open.
pub struct Drain(watch::Sender<bool>);

/// One connection's view of the [`Drain`]; the connection counts as open
/// while it holds this.
pub struct Draining(watch::Receiver<bool>);

impl Drain {
    pub fn new() -> Self {
        Drain(watch::channel(false).0)
    }

    pub fn watch(&self) -> Draining {
        Draining(self.0.subscribe())
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.0.receiver_count()
    }

    /// Tells every connection to finish up and waits until all have closed.
    pub async fn shutdown(&self) {
        self.0.send_replace(true);
        self.0.closed().await;
    }
}

impl Draining {
    /// Completes once a drain is asked for (never, if the proxy is gone).
    pub async fn requested(&mut self) {
        if self.0.wait_for(|drain| *drain).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests;
