//! One HTTP/1.1 exchange on an upstream connection, driven by the
//! request's own task: the head and body are written, the response head
//! read, and the response body then reads from the same connection as the
//! downstream side pulls it. When the body ends cleanly the connection
//! goes back to its worker's pool.

use super::chunked::{ChunkedDecoder, Decoded};
use super::codec::{self, BodyFraming, CodecError, RequestFraming, ResponseHead};
use super::pool::Pool;
use crate::forward::{whole_body, BodyError, BoxError, ProxyBody, TryError, TryRequest};
use crate::turn_writes::TurnWrites;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::http::uri::Authority;
use hyper::{Method, Response};
use std::future::{poll_fn, Future};
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How much room a read asks for.
const READ_CHUNK: usize = 16 * 1024;
/// Below this much free room a read asks for more. Not on every read: the
/// buffer is shared with the heads and bodies split off it, so asking for a
/// whole `READ_CHUNK` each time allocated a new one for every other response.
const READ_ROOM: usize = 2 * 1024;
/// Request body bytes gathered before they are written.
const WRITE_BATCH: usize = 64 * 1024;

/// What an upstream connection is: plaintext TCP or mutual TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Io for T {}

pub type IdleConnections = Pool<Connection>;

pub struct Connection {
    io: Box<dyn Io>,
    /// The authority it was made to: its pool key.
    key: Arc<str>,
    /// Bytes read and not yet taken.
    read: BytesMut,
    /// The request head (and small bodies) being written.
    write: Vec<u8>,
    /// Whether a close now means the upstream closed it while it was idle:
    /// it came from the pool and has heard nothing since.
    maybe_stale: bool,
}

impl Connection {
    fn new(io: Box<dyn Io>, key: &str) -> Self {
        Connection {
            io,
            key: key.into(),
            read: BytesMut::new(),
            write: Vec::new(),
            maybe_stale: false,
        }
    }

    /// Whether an idle connection can carry a request: the upstream has
    /// neither closed it nor sent anything unasked.
    pub(super) fn still_idle(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }

    /// Writes the request (its head already in `write`) and reads the
    /// response head, skipping interim (1xx) responses.
    async fn exchange(
        &mut self,
        method: &Method,
        body: &mut ProxyBody,
        framing: RequestFraming,
    ) -> Result<ResponseHead, Failure> {
        if let Some(mut early) = self.send_body(method, body, framing).await? {
            // Answered before the request was whole: the rest of it is not
            // sent, and the connection is out of step.
            early.keep_alive = false;
            return Ok(early);
        }
        poll_fn(|cx| self.poll_head(cx, method)).await
    }

    /// Writes `write` (the head) and the body framed as `framing`; small
    /// bodies leave in the same write as the head. A response that comes
    /// while the upstream takes no more of the request ends the sending
    /// and is returned.
    async fn send_body(
        &mut self,
        method: &Method,
        body: &mut ProxyBody,
        framing: RequestFraming,
    ) -> Result<Option<ResponseHead>, Failure> {
        let mut sent = 0u64;
        if framing != RequestFraming::Empty {
            loop {
                // A body that is not ready yet lets what is gathered go first.
                let frame =
                    match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
                        Poll::Ready(frame) => frame,
                        Poll::Pending => {
                            if let Some(early) = self.flush_out(method).await? {
                                return Ok(Some(early));
                            }
                            // Waiting for the client, the upstream may answer
                            // (refusing a slow upload, say).
                            let next = poll_fn(|cx| {
                                if let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(cx) {
                                    return Poll::Ready(Ok(Ok(frame)));
                                }
                                self.poll_head(cx, method).map_ok(Err)
                            });
                            match next.await? {
                                Ok(frame) => frame,
                                Err(early) => return Ok(Some(early)),
                            }
                        }
                    };
                let data = match frame {
                    None => break,
                    Some(Err(e)) => return Err(Failure::ClientBody(e.0)),
                    // Trailers are not carried over HTTP/1.1 upstreams.
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => data,
                        _ => continue,
                    },
                };
                sent += data.len() as u64;
                if framing == RequestFraming::Chunked {
                    // Into the buffer itself: writing to a Vec cannot fail.
                    let _ = write!(self.write, "{:x}\r\n", data.len());
                }
                if data.len() >= WRITE_BATCH {
                    // Large pieces are written from where they are, not copied.
                    if let Some(early) = self.flush_out(method).await? {
                        return Ok(Some(early));
                    }
                    if let Some(early) = self.write_out(method, &data).await? {
                        return Ok(Some(early));
                    }
                } else {
                    self.write.extend_from_slice(&data);
                }
                if framing == RequestFraming::Chunked {
                    self.write.extend_from_slice(b"\r\n");
                }
                if self.write.len() >= WRITE_BATCH {
                    if let Some(early) = self.flush_out(method).await? {
                        return Ok(Some(early));
                    }
                }
            }
        }
        match framing {
            RequestFraming::Chunked => self.write.extend_from_slice(b"0\r\n\r\n"),
            RequestFraming::Length(length) if length != sent => {
                return Err(Failure::ClientBody(
                    format!("the request body has {sent} bytes, not the {length} it declared")
                        .into(),
                ))
            }
            _ => {}
        }
        self.flush_out(method).await
    }

    /// Writes out what `write` gathered (see `write_out`).
    async fn flush_out(&mut self, method: &Method) -> Result<Option<ResponseHead>, Failure> {
        let mut gathered = std::mem::take(&mut self.write);
        let written = self.write_out(method, &gathered).await;
        gathered.clear();
        // A connection kept idle keeps no room a large request needed.
        if gathered.capacity() <= 2 * WRITE_BATCH {
            self.write = gathered;
        }
        written
    }

    /// Writes `bytes`. While the upstream takes no more, what it sends is
    /// read: a response (past any 1xx) is returned, and the rest is not
    /// written. So is one found when a write fails.
    async fn write_out(
        &mut self,
        method: &Method,
        bytes: &[u8],
    ) -> Result<Option<ResponseHead>, Failure> {
        let mut written = 0;
        poll_fn(|cx| {
            while written < bytes.len() {
                match Pin::new(&mut self.io).poll_write(cx, &bytes[written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(Failure::Io(io::ErrorKind::WriteZero.into())))
                    }
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(match self.poll_head(cx, method) {
                            Poll::Ready(Ok(early)) => Ok(Some(early)),
                            _ => Err(self.closed(Some(e))),
                        })
                    }
                    Poll::Pending => return self.poll_head(cx, method).map_ok(Some),
                }
            }
            match ready!(Pin::new(&mut self.io).poll_flush(cx)) {
                Ok(()) => Poll::Ready(Ok(None)),
                Err(e) => Poll::Ready(Err(self.closed(Some(e)))),
            }
        })
        .await
    }

    /// The response head, once whole (interim 1xx responses skipped):
    /// after the request, or while it is still being written.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        method: &Method,
    ) -> Poll<Result<ResponseHead, Failure>> {
        loop {
            if let Some(head) = codec::parse_response(&mut self.read, method)? {
                if head.status.is_informational() {
                    continue;
                }
                return Poll::Ready(Ok(head));
            }
            make_room(&mut self.read);
            match ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut self.io),
                cx,
                &mut self.read
            )) {
                Ok(0) => return Poll::Ready(Err(self.closed(None))),
                Ok(_) => self.maybe_stale = false,
                Err(e) => return Poll::Ready(Err(self.closed(Some(e)))),
            }
        }
    }

    /// How the connection failed: closed by the upstream (`None`: at its
    /// end) or with `error`. Stale when it came from the pool and the
    /// upstream closed it before answering anything.
    fn closed(&self, error: Option<io::Error>) -> Failure {
        match error {
            _ if self.maybe_stale && error.as_ref().is_none_or(gone) => Failure::Stale,
            Some(e) => Failure::Io(e),
            None => Failure::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the upstream closed the connection before a response",
            )),
        }
    }
}

/// Room in `read` for the next read.
fn make_room(read: &mut BytesMut) {
    if read.capacity() - read.len() < READ_ROOM {
        read.reserve(READ_CHUNK);
    }
}

/// Whether an error says the upstream had closed the connection.
fn gone(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

/// How an exchange failed.
#[derive(Debug)]
enum Failure {
    /// A pooled connection had been closed before it heard anything: the
    /// upstream closed it while idle, so a request with no body is sent again on a new one.
    Stale,
    ClientBody(BoxError),
    Io(io::Error),
    Response(CodecError),
}

impl From<CodecError> for Failure {
    fn from(e: CodecError) -> Self {
        Failure::Response(e)
    }
}

impl From<Failure> for TryError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Stale => TryError::Failed("the upstream closed an idle connection".into()),
            Failure::ClientBody(e) => TryError::ClientBody(e),
            Failure::Io(e) => TryError::Failed(e.into()),
            Failure::Response(e) => TryError::Failed(e.into()),
        }
    }
}

/// How a connection is made.
#[derive(Clone)]
pub enum Connector {
    Plain,
    /// Service-to-service mutual TLS, offering HTTP/1.1 by ALPN.
    Mesh(tokio_rustls::TlsConnector),
}

/// Requests over HTTP/1.1 to any upstream, on connections from the
/// worker's pool.
#[derive(Clone)]
pub struct Client {
    idle: Arc<IdleConnections>,
    connector: Connector,
    connect_timeout: Duration,
}

impl Client {
    pub fn new(
        idle: Arc<IdleConnections>,
        connector: Connector,
        connect_timeout: Duration,
    ) -> Self {
        Client {
            idle,
            connector,
            connect_timeout,
        }
    }

    /// Sends `request` to its authority; the response's body streams from
    /// the connection. The head is written from where it is (shared with the
    /// request's other tries). Not an `async fn`, which would keep the
    /// request twice in a future that is boxed and copied per request; the
    /// future owns a handle on the pool, so it borrows nothing.
    pub fn send(
        &self,
        request: TryRequest,
    ) -> impl Future<Output = Result<Response<ProxyBody>, TryError>> + Send + 'static {
        let client = self.clone();
        async move {
            let TryRequest {
                head,
                authority,
                mut body,
                replay,
            } = request;
            let authority = &authority;
            let framing = RequestFraming::of(&head.method, body.size_hint().exact());
            let target = crate::forward::path_and_query(&head.uri);
            // Without a Host header (an HTTP/2 client's request), the
            // authority the request named, else the host's.
            let host = head.uri.authority().unwrap_or(authority).as_str();
            // Connecting is boxed: the TLS handshake's state is large, and
            // would otherwise make every request's future as large.
            let mut conn =
                match client
                    .idle
                    .take(authority.as_str(), Instant::now(), Connection::still_idle)
                {
                    Some(conn) => conn,
                    None => Box::pin(client.connect(authority)).await?,
                };
            loop {
                conn.write.clear();
                codec::encode_request_head(
                    &mut conn.write,
                    &head.method,
                    target,
                    &head.headers,
                    Some(host),
                    framing,
                );
                match conn.exchange(&head.method, &mut body, framing).await {
                    Ok(head) => return Ok(client.response(conn, head)),
                    // Nothing was sent that cannot be sent again.
                    Err(Failure::Stale) if framing == RequestFraming::Empty || replay.is_some() => {
                        if let Some(whole) = &replay {
                            body = whole_body(whole.clone());
                        }
                        conn = Box::pin(client.connect(authority)).await?;
                    }
                    Err(failure) => return Err(failure.into()),
                }
            }
        }
    }

    async fn connect(&self, authority: &Authority) -> Result<Connection, TryError> {
        let connect = async {
            let tcp = TcpStream::connect(authority.as_str()).await?;
            tcp.set_nodelay(true)?;
            let tcp = TurnWrites::new(tcp);
            Ok::<Box<dyn Io>, io::Error>(match &self.connector {
                Connector::Plain => Box::new(tcp),
                Connector::Mesh(tls) => {
                    Box::new(crate::mesh_client::handshake(tls, authority.host(), tcp).await?)
                }
            })
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(io)) => Ok(Connection::new(io, authority.as_str())),
            Ok(Err(e)) => Err(TryError::Connect(e.into())),
            Err(_) => Err(TryError::Connect("connect timed out".into())),
        }
    }

    fn response(&self, conn: Connection, head: ResponseHead) -> Response<ProxyBody> {
        let ResponseHead {
            status,
            headers,
            keep_alive,
            framing,
        } = head;
        let mut body = ResponseBody {
            conn: Some(conn),
            framing: match framing {
                BodyFraming::Empty => Framing::Length(0),
                BodyFraming::Length(length) => Framing::Length(length),
                BodyFraming::Chunked => Framing::Chunked(ChunkedDecoder::default()),
                BodyFraming::UntilClose => Framing::UntilClose,
            },
            keep_alive,
            idle: self.idle.clone(),
        };
        if framing == BodyFraming::Empty {
            body.finish();
        }
        let mut response = Response::new(body.boxed());
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }
}

enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// A response body read from its connection, which returns to the pool
/// once the body has ended cleanly (and is closed if the body is dropped
/// before).
struct ResponseBody {
    conn: Option<Connection>,
    framing: Framing,
    keep_alive: bool,
    idle: Arc<IdleConnections>,
}

impl ResponseBody {
    fn finish(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            // Bytes beyond the response: the connection is out of step.
            if self.keep_alive && conn.read.is_empty() {
                conn.maybe_stale = true;
                let key = conn.key.clone();
                self.idle.put(&key, conn, Instant::now());
            }
        }
    }

    fn fail(
        &mut self,
        error: impl Into<BoxError>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.conn = None;
        Poll::Ready(Some(Err(BodyError(error.into()))))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.framing {
                Framing::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(remaining) if !conn.read.is_empty() => {
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(conn.read.len());
                    *remaining -= take as u64;
                    let data = conn.read.split_to(take).freeze();
                    if *remaining == 0 {
                        // Back to the pool now, not when asked again.
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Length(_) => {}
                Framing::Chunked(decoder) => match decoder.decode(&mut conn.read) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return this.fail(e),
                },
                Framing::UntilClose if !conn.read.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(conn.read.split().freeze()))));
                }
                Framing::UntilClose => {}
            }
            make_room(&mut conn.read);
            match ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.io),
                cx,
                &mut conn.read
            )) {
                Ok(0) if matches!(this.framing, Framing::UntilClose) => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this
                        .fail("the upstream closed the connection in the middle of the body")
                }
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.framing, Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(remaining) => SizeHint::with_exact(remaining),
            _ => SizeHint::default(),
        }
    }
}
