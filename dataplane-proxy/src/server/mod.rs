//! The HTTP server of one accepted client connection, outbound and inbound:
//! HTTP/1.1 by hyper's server, HTTP/2 by the h2 crate driven from the
//! connection's own task (`h2`), told apart by the client's first bytes.
//! Both honour the [`Limits`] and finish gracefully when the proxy drains.

mod date;
mod drain;
mod h2;
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

pub use drain::{Drain, Draining};

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
    drain: Draining,
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
    let mut connection = std::pin::pin!(http1.serve_connection(TokioIo::new(io), service));
    let mut drain = drain.check();
    std::future::poll_fn(|cx| {
        if drain.poll_started(cx) {
            connection.as_mut().graceful_shutdown();
        }
        connection.as_mut().poll(cx)
    })
    .await
    .map_err(Into::into)
}

#[cfg(test)]
mod tests;
