//! An HTTP/2 client connection, served by the h2 crate from the
//! connection's own task: its streams are futures polled by that task (no
//! task spawned per stream), each waiting for the handler's response,
//! then sending it as the client's flow control allows. A client's
//! RST_STREAM drops its request's future, which cancels the upstream call.
//! Idle or busy, the connection is pinged now and then; a client that does
//! not answer in time is gone, and its connection is closed.

use super::{h2_body::RequestBody, Draining, Handler};
use crate::forward::{BoxError, ProxyBody};
use crate::limits::Limits;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{Ping, PingPong, Reason, SendStream};
use hyper::body::Body;
use hyper::header::{HeaderValue, CONTENT_LENGTH, DATE};
use hyper::Response;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep, Instant, Sleep};

/// How often a connection is pinged, and how long the answer may take: a
/// client that vanished (a half-open connection) is closed.
pub const KEEPALIVE: KeepAliveTimes = KeepAliveTimes {
    every: Duration::from_secs(30),
    within: Duration::from_secs(10),
};

/// A connection's ping interval, and the time its answer may take.
#[derive(Clone, Copy)]
pub struct KeepAliveTimes {
    pub every: Duration,
    pub within: Duration,
}

/// Bytes a client may send ahead on a stream, and on the connection, as
/// hyper's server allows (HTTP/2's own default is 64 KiB).
const WINDOW: u32 = 1024 * 1024;

pub async fn serve<I, H>(
    io: I,
    handler: H,
    limits: &Limits,
    drain: Draining,
    keep_alive: KeepAliveTimes,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let mut connection = tokio::time::timeout(limits.header_read_timeout, builder.handshake(io))
        .await
        .map_err(|_| "no HTTP/2 settings in time")??;
    let mut keep_alive = KeepAlive::new(connection.ping_pong(), keep_alive);
    let mut streams = FuturesUnordered::new();
    let mut drain = drain.check();
    poll_fn(|cx| loop {
        if drain.poll_started(cx) {
            connection.graceful_shutdown();
        }
        if keep_alive.poll_timed_out(cx).is_ready() {
            tracing::debug!("HTTP/2 keep-alive ping unanswered; closing the connection");
            connection.abrupt_shutdown(Reason::NO_ERROR);
        }
        // The streams first: what they send, the connection writes below.
        while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
        match ready!(connection.poll_accept(cx)) {
            Some(Ok((request, respond))) => {
                let (head, recv) = request.into_parts();
                let body = RequestBody::new(recv, &head.headers);
                let response = handler.call(hyper::Request::from_parts(head, body));
                streams.push(answer(response, respond));
            }
            Some(Err(e)) => return Poll::Ready(Err(e.into())),
            None => return Poll::Ready(Ok(())),
        }
    })
    .await
}

/// One stream: the handler's response, sent back unless the client reset
/// the stream first.
async fn answer<F>(response: F, mut respond: SendResponse<Bytes>)
where
    F: Future<Output = Response<ProxyBody>>,
{
    let response = {
        let mut response = pin!(response);
        let answered = poll_fn(|cx| match response.as_mut().poll(cx) {
            Poll::Ready(response) => Poll::Ready(Some(response)),
            Poll::Pending => respond.poll_reset(cx).map(|_| None),
        });
        match answered.await {
            Some(response) => response,
            None => return,
        }
    };
    let (parts, mut body) = response.into_parts();
    let mut head = Response::from_parts(parts, ());
    let headers = head.headers_mut();
    if !headers.contains_key(DATE) {
        headers.insert(DATE, super::date::now());
    }
    let end = body.is_end_stream();
    if !end {
        if let Some(len) = body.size_hint().exact() {
            headers
                .entry(CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(len));
        }
    }
    match respond.send_response(head, end) {
        Ok(mut send) if !end => {
            let mut sent = false;
            poll_fn(|cx| poll_send_body(&mut body, &mut send, &mut sent, cx)).await;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::debug!(error = %e, "the response head could not be sent");
            respond.send_reset(Reason::INTERNAL_ERROR);
        }
    }
}

/// Sends the response's body as the client's window allows; done at its
/// end, at a reset from the client, or when the body fails (the stream is
/// then reset: the client must not take a cut body for a whole one).
/// `sent` says whether a chunk went out before.
fn poll_send_body(
    body: &mut ProxyBody,
    send: &mut SendStream<Bytes>,
    sent: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<()> {
    loop {
        // After a chunk, room for at least a byte before more is taken
        // from the body; the chunks themselves wait in h2 for the rest of
        // their room. The first goes out as it comes (most bodies are one
        // chunk): h2 holds at most that one chunk beyond the window.
        if *sent {
            send.reserve_capacity(1);
            if send.capacity() == 0 {
                loop {
                    match ready!(send.poll_capacity(cx)) {
                        Some(Ok(0)) => {}
                        Some(Ok(_)) => break,
                        Some(Err(_)) | None => return Poll::Ready(()),
                    }
                }
            } else if send.poll_reset(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        let frame = match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            // A client's reset ends the wait for the first chunk too.
            Poll::Pending if !*sent && send.poll_reset(cx).is_ready() => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "the response body failed; resetting the stream");
                send.send_reset(Reason::INTERNAL_ERROR);
                return Poll::Ready(());
            }
            None => {
                let _ = send.send_data(Bytes::new(), true);
                return Poll::Ready(());
            }
        };
        match frame.into_data() {
            Ok(data) => {
                let end = body.is_end_stream();
                if send.send_data(data, end).is_err() || end {
                    return Poll::Ready(());
                }
                *sent = true;
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.reserve_capacity(0);
                    let _ = send.send_trailers(trailers);
                }
                return Poll::Ready(());
            }
        }
    }
}

/// The connection's pings, each to be answered in time.
struct KeepAlive {
    ping_pong: Option<PingPong>,
    times: KeepAliveTimes,
    next: Deadline,
    awaiting_pong: bool,
}

impl KeepAlive {
    fn new(ping_pong: Option<PingPong>, times: KeepAliveTimes) -> Self {
        KeepAlive {
            ping_pong,
            times,
            next: Deadline::after(times.every),
            awaiting_pong: false,
        }
    }

    /// Ready, once, when a ping went unanswered for too long.
    fn poll_timed_out(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(ping_pong) = &mut self.ping_pong else {
            return Poll::Pending;
        };
        if self.awaiting_pong {
            match ping_pong.poll_pong(cx) {
                Poll::Ready(Ok(_)) => {
                    self.awaiting_pong = false;
                    self.next.set(self.times.every);
                }
                // The connection is failing: it ends by itself.
                Poll::Ready(Err(_)) => return Poll::Pending,
                Poll::Pending => {}
            }
        }
        ready!(self.next.poll_passed(cx));
        if self.awaiting_pong {
            self.ping_pong = None;
            return Poll::Ready(());
        }
        if ping_pong.send_ping(Ping::opaque()).is_err() {
            return Poll::Pending;
        }
        self.awaiting_pong = true;
        self.next.set(self.times.within);
        // Registers the new deadline and the pong's wake-up.
        self.poll_timed_out(cx)
    }
}

/// A timer polled once per setting: armed, it wakes the task when it
/// fires, and until then a flag says it has not (polling a `Sleep` on every
/// turn of a busy connection cost more).
struct Deadline {
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

impl Deadline {
    fn after(wait: Duration) -> Self {
        Deadline {
            timer: Box::pin(sleep(wait)),
            armed: false,
        }
    }

    fn set(&mut self, wait: Duration) {
        self.timer.as_mut().reset(Instant::now() + wait);
        self.armed = false;
    }

    fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.armed && !self.timer.is_elapsed() {
            return Poll::Pending;
        }
        self.armed = true;
        self.timer.as_mut().poll(cx)
    }
}
