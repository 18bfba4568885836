//! The HTTP server of one accepted client connection, outbound and inbound:
//! HTTP/1.1 by hyper's server, HTTP/2 by the h2 crate driven from the
//! connection's own task (`h2`), told apart by the client's first bytes.
//! Both honour the [`Limits`] and finish gracefully when the proxy drains.

mod date;
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
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Context;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify};

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

/// The proxy's signal to its open connections to finish up, and the count
/// of those still open.
pub struct Drain {
    signal: Arc<Signal>,
    open: watch::Sender<()>,
}

/// One connection's view of the [`Drain`]; the connection counts as open
/// while it holds this.
pub struct Draining {
    signal: Arc<Signal>,
    _open: watch::Receiver<()>,
}

#[derive(Default)]
struct Signal {
    requested: AtomicBool,
    wake: Notify,
}

impl Drain {
    pub fn new() -> Self {
        Drain {
            signal: Arc::default(),
            open: watch::channel(()).0,
        }
    }

    pub fn watch(&self) -> Draining {
        Draining {
            signal: self.signal.clone(),
            _open: self.open.subscribe(),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.receiver_count()
    }

    /// Tells every connection to finish up and waits until all have closed.
    pub async fn shutdown(&self) {
        self.signal.requested.store(true, Ordering::Release);
        self.signal.wake.notify_waiters();
        self.open.closed().await;
    }
}

impl Draining {
    /// This connection's check for a drain, cheap enough for every poll.
    pub fn check(&self) -> DrainCheck<'_> {
        DrainCheck {
            draining: self,
            wait: Box::pin(self.requested()),
            watching: false,
            started: false,
        }
    }

    /// Completes once a drain is asked for.
    async fn requested(&self) {
        let woken = self.signal.wake.notified();
        let mut woken = std::pin::pin!(woken);
        // Registered before the check, so no request falls between them.
        woken.as_mut().enable();
        if !self.is_requested() {
            woken.await;
        }
    }

    fn is_requested(&self) -> bool {
        self.signal.requested.load(Ordering::Acquire)
    }
}

/// Polled once, the wait for a drain wakes the connection's task when one
/// is asked for; after that a flag tells (polling the wait again would take
/// a lock on every poll of the connection).
pub struct DrainCheck<'a> {
    draining: &'a Draining,
    wait: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    watching: bool,
    started: bool,
}

impl DrainCheck<'_> {
    /// True once, at the first poll after a drain was asked for.
    pub fn poll_started(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.watching {
            self.watching = true;
            let _ = self.wait.as_mut().poll(cx);
        }
        if self.started || !self.draining.is_requested() {
            return false;
        }
        self.started = true;
        true
    }
}

#[cfg(test)]
mod tests;
