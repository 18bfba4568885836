//! Writes of HTTP/2 connections gathered into fewer system calls.
//!
//! h2 writes a DATA frame of 256 bytes or more on its own: the frames
//! buffered before it and its payload leave in one `writev`, and the next
//! frame waits for that write. A connection carrying many concurrent
//! streams of small responses so makes one write per response, where
//! HAProxy makes one per batch. `Coalesce` takes those writes (a batch with
//! a payload chained after it, and whatever follows them) into a buffer of
//! its own, and lets a flush asked for while h2 is still writing pass: what
//! the connection's turn produced leaves in one write when it next reads,
//! or at the first flush with nothing new written before it (the task is
//! woken to make sure one comes). A batch h2 made itself, with nothing
//! gathered before it, goes straight through (no frame was chained: there
//! is nothing to gain), and HTTP/1.1 connections (no HTTP/2 preface) pass
//! through untouched. The HTTP/2 clients' upstream connections gather
//! their writes the same way (`Gathered`). A worker's plaintext client
//! connections do without: `TurnWrites` holds every write of a turn, which
//! gathers them as well, with one copy and no extra turn; under TLS,
//! gathering first still makes fewer, larger records.

use crate::turn_writes::TurnWrites;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What an HTTP/2 client sends first (RFC 9113, section 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes gathered before they are written whatever the flushes say; a
/// write larger than this goes straight through when nothing is gathered.
const GATHER_LIMIT: usize = 64 * 1024;

pub struct Coalesce<T> {
    inner: T,
    /// Whether writes are gathered: decided by the first bytes read.
    mode: Mode,
    /// Bytes taken from the writer and not yet written; `sent` of them are.
    gathered: Vec<u8>,
    sent: usize,
    /// Bytes were gathered since the last flush: a flush now lets them
    /// wait for the rest of the turn.
    wrote: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing read yet: `matched` bytes of the preface seen so far.
    Undecided {
        matched: usize,
    },
    Gather,
    PassThrough,
}

impl<T> Coalesce<T> {
    pub fn new(inner: T) -> Self {
        Coalesce {
            inner,
            mode: Mode::Undecided { matched: 0 },
            gathered: Vec::new(),
            sent: 0,
            wrote: false,
        }
    }

    /// For a connection known to speak HTTP/2 (a client's, to an upstream):
    /// its writes are gathered from the start.
    pub fn gathering(inner: T) -> Self {
        Coalesce {
            mode: Mode::Gather,
            ..Coalesce::new(inner)
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Follows the first bytes read: the HTTP/2 preface turns gathering
    /// on, anything else leaves the connection as it is.
    fn saw(&mut self, bytes: &[u8]) {
        let Mode::Undecided { matched } = self.mode else {
            return;
        };
        let expected = &PREFACE[matched..];
        let n = bytes.len().min(expected.len());
        self.mode = if bytes[..n] != expected[..n] {
            Mode::PassThrough
        } else if matched + n == PREFACE.len() {
            Mode::Gather
        } else {
            Mode::Undecided {
                matched: matched + n,
            }
        };
    }

    fn unsent(&self) -> usize {
        self.gathered.len() - self.sent
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes out everything gathered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.gathered.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &self.gathered[self.sent..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.sent += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.gathered.clear();
        self.sent = 0;
        // A connection idle again keeps no room a burst needed.
        if self.gathered.capacity() > GATHER_LIMIT {
            self.gathered = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes, writing out what is gathered first
    /// when they would not fit; `false` when they are too many to gather
    /// and should go straight through.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.unsent() + len > GATHER_LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(len <= GATHER_LIMIT))
    }
}

/// What hyper's client pool asks of a connection: as the socket under it.
impl<T: Connection> Connection for Coalesce<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

/// Makes `C`'s connections (an HTTP/2 client's) gather their writes, and
/// hold them for the end of the worker's turn (`TurnWrites`).
#[derive(Clone)]
pub struct Gathered<C>(pub C);

impl<C> tower::Service<hyper::Uri> for Gathered<C>
where
    C: tower::Service<hyper::Uri, Response = TokioIo<TcpStream>>,
    C::Future: Send + 'static,
{
    type Response = TokioIo<Coalesce<TurnWrites>>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            Ok(TokioIo::new(Coalesce::gathering(TurnWrites::new(
                io.into_inner(),
            ))))
        })
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // What the turn wrote leaves before the connection reads (a full
        // socket keeps it for the next flush).
        if this.unsent() > 0 {
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(this.mode, Mode::Undecided { .. }) {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                this.saw(new);
            }
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // One buffer is h2 writing out what it batched itself: straight
        // through, unless it must follow what is gathered.
        if this.mode != Mode::Gather || this.unsent() == 0 {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        if !ready!(this.poll_room(cx, buf.len()))? {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        this.gathered.extend_from_slice(buf);
        this.wrote = true;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Several buffers are h2's batch and a DATA frame's payload chained
        // after it: the write h2 would make once per frame, gathered. One
        // buffer goes as in `poll_write`.
        let pieces = bufs.iter().filter(|b| !b.is_empty()).count();
        if this.mode != Mode::Gather || (this.unsent() == 0 && pieces < 2) {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        let len = bufs.iter().map(|b| b.len()).sum();
        if !ready!(this.poll_room(cx, len))? {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for buf in bufs {
            this.gathered.extend_from_slice(buf);
        }
        this.wrote = true;
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        // Gathering takes slices as cheaply as one buffer; otherwise the
        // connection writes as its socket does.
        self.mode == Mode::Gather || self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.unsent() > 0 {
            if std::mem::take(&mut this.wrote) {
                // h2 may have more to write in this turn; the task runs
                // again, so a flush with nothing new before it comes.
                cx.waker().wake_by_ref();
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    /// A connection that hands out `incoming` and records each write.
    #[derive(Default)]
    struct Recorded {
        incoming: Vec<u8>,
        writes: Vec<Vec<u8>>,
        shut: bool,
    }

    impl AsyncRead for Recorded {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.incoming.len().min(buf.remaining());
            buf.put_slice(&self.incoming[..n]);
            self.incoming.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Recorded {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = joined.len();
            self.writes.push(joined);
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    struct Harness {
        io: Coalesce<Recorded>,
        wakes: Arc<Wakes>,
        waker: Waker,
    }

    impl Harness {
        fn reading(incoming: &[u8]) -> Self {
            let wakes = Arc::new(Wakes::default());
            let mut harness = Harness {
                io: Coalesce::new(Recorded {
                    incoming: incoming.to_vec(),
                    ..Default::default()
                }),
                waker: Waker::from(wakes.clone()),
                wakes,
            };
            while !harness.io.inner.incoming.is_empty() {
                harness.read(7);
            }
            harness
        }

        fn read(&mut self, room: usize) -> Vec<u8> {
            let mut cx = Context::from_waker(&self.waker);
            let mut bytes = vec![0u8; room];
            let mut buf = ReadBuf::new(&mut bytes);
            let polled = Pin::new(&mut self.io).poll_read(&mut cx, &mut buf);
            assert!(matches!(polled, Poll::Ready(Ok(()))));
            buf.filled().to_vec()
        }

        fn write(&mut self, bytes: &[u8]) {
            let mut cx = Context::from_waker(&self.waker);
            let polled = Pin::new(&mut self.io).poll_write(&mut cx, bytes);
            assert!(matches!(polled, Poll::Ready(Ok(n)) if n == bytes.len()));
        }

        fn write_vectored(&mut self, parts: &[&[u8]]) {
            let mut cx = Context::from_waker(&self.waker);
            let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
            let total: usize = parts.iter().map(|p| p.len()).sum();
            let polled = Pin::new(&mut self.io).poll_write_vectored(&mut cx, &slices);
            assert!(matches!(polled, Poll::Ready(Ok(n)) if n == total));
        }

        fn flush(&mut self) {
            let mut cx = Context::from_waker(&self.waker);
            let polled = Pin::new(&mut self.io).poll_flush(&mut cx);
            assert!(matches!(polled, Poll::Ready(Ok(()))));
        }

        fn writes(&self) -> &[Vec<u8>] {
            &self.io.inner.writes
        }

        fn wakes(&self) -> usize {
            self.wakes.0.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn an_http2_turn_of_several_responses_leaves_in_one_write() {
        // The preface arrives in pieces (seven bytes a read).
        let mut h2 = Harness::reading(PREFACE);
        assert_eq!(h2.io.mode, Mode::Gather);
        // h2's turn: a response's frames, a flush after its chained DATA
        // frame, the next response, and the flush that ends the turn.
        h2.write_vectored(&[b"HEADERS+DATA head 1,", b"payload 1;"]);
        h2.flush();
        h2.write_vectored(&[b"HEADERS+DATA head 2,", b"payload 2;"]);
        h2.flush();
        assert!(h2.writes().is_empty(), "nothing leaves within the turn");
        assert_eq!(h2.wakes(), 2, "the task is woken to come back for it");
        // The next turn reads first: everything leaves, in one write.
        assert!(h2.read(64).is_empty());
        assert_eq!(
            h2.writes(),
            [b"HEADERS+DATA head 1,payload 1;HEADERS+DATA head 2,payload 2;".to_vec()]
        );
    }

    #[test]
    fn a_flush_with_nothing_new_before_it_writes_what_is_gathered() {
        let mut h2 = Harness::reading(PREFACE);
        h2.write_vectored(&[b"HEADERS+DATA head,", b"payload;"]);
        // What h2 batched after it follows it, in order.
        h2.write(b"PING");
        h2.flush();
        assert!(h2.writes().is_empty());
        // The woken task flushes again without writing (h2 polls its codec's
        // flush on every turn): now it leaves.
        h2.flush();
        assert_eq!(h2.writes(), [b"HEADERS+DATA head,payload;PING".to_vec()]);
        // And a flush with nothing gathered neither wakes nor writes.
        let wakes = h2.wakes();
        h2.flush();
        assert_eq!((h2.writes().len(), h2.wakes()), (1, wakes));
    }

    #[test]
    fn a_batch_of_h2_s_own_with_nothing_gathered_goes_straight_through() {
        // Frames h2 batched itself (no payload chained after them): one
        // buffer, written at once, with no copy and no extra turn.
        let mut h2 = Harness::reading(PREFACE);
        h2.write(b"HEADERS,HEADERS,small DATA");
        h2.write_vectored(&[b"SETTINGS", b""]);
        h2.flush();
        assert_eq!(
            h2.writes(),
            [b"HEADERS,HEADERS,small DATA".to_vec(), b"SETTINGS".to_vec()]
        );
        assert_eq!(h2.wakes(), 0);
    }

    #[test]
    fn shutting_down_writes_what_is_gathered_first() {
        let mut h2 = Harness::reading(PREFACE);
        h2.write_vectored(&[b"DATA head,", b"payload;"]);
        h2.write(b"GOAWAY");
        let mut cx = Context::from_waker(&h2.waker);
        let polled = Pin::new(&mut h2.io).poll_shutdown(&mut cx);
        assert!(matches!(polled, Poll::Ready(Ok(()))));
        assert_eq!(h2.writes(), [b"DATA head,payload;GOAWAY".to_vec()]);
        assert!(h2.io.inner.shut);
    }

    #[test]
    fn a_write_too_large_to_gather_goes_straight_after_what_is_gathered() {
        let mut h2 = Harness::reading(PREFACE);
        h2.write_vectored(&[b"small,", b"payload"]);
        let large = vec![b'x'; GATHER_LIMIT + 1];
        h2.write(&large);
        assert_eq!(h2.writes(), [b"small,payload".to_vec(), large]);
    }

    #[test]
    fn http1_connections_pass_through() {
        let mut h1 = Harness::reading(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h1.io.mode, Mode::PassThrough);
        h1.write(b"HTTP/1.1 200 OK\r\n");
        h1.write_vectored(&[b"content-length: 0\r\n", b"\r\n"]);
        assert_eq!(
            h1.writes().len(),
            2,
            "each write reaches the socket at once"
        );
        assert_eq!(h1.wakes(), 0);
        // A request starting like the preface and then not is HTTP/1.1 too.
        let pri = Harness::reading(b"PRI * HTTP/1.1\r\n\r\n");
        assert_eq!(pri.io.mode, Mode::PassThrough);
    }
}
