//! A worker's socket writes leave together, at the end of its turn.
//!
//! A turn of a worker's runtime polls every task its last look at the
//! sockets woke: each reads a request or a response and writes what it made
//! of it. Written at once, those writes alternate with the reads, and a peer
//! on another core (the client, the upstream) is woken by one, handles it,
//! sleeps and is woken again by the next (2.6 times HAProxy's wake-ups per
//! request here, docs/benchmarks.md). HAProxy reads what a turn brings and
//! then sends what it made. `TurnWrites` does the same for a TCP connection:
//! a write is copied into the connection's own buffer (kept between turns up
//! to 4 KiB) and the connection queued on its thread; the thread's flushing
//! task (`flush`, woken by the first connection queued, so it runs after
//! every task already woken) writes them all out. A flush returns at once
//! for bytes so queued. A socket the flushing task finds full keeps the rest
//! for its connection's task, which is woken to write it (before it next
//! reads, flushes or writes); writes too large to hold, shutdowns, and every
//! write on a thread without a flushing task (the main runtime, tests) go
//! out as they come, after what is held.

use hyper_util::client::legacy::connect::{Connected, Connection};
use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Bytes a connection holds for the end of the turn; more, and it writes
/// them itself.
const HOLD_LIMIT: usize = 64 * 1024;
/// The largest buffer a connection keeps once all is written (hyper keeps
/// a read buffer of 8 KiB per connection); a larger one is freed.
const KEPT_CAPACITY: usize = 4 * 1024;
/// The room a connection whose turns outgrow `KEPT_CAPACITY` (an HTTP/2
/// connection answering many streams a turn) takes at once: grown by
/// doubling from a few KiB, its buffer was copied four times a turn
/// (`realloc`, 1,700 instructions per h2c request).
const BURST_CAPACITY: usize = 32 * 1024;
/// Burst buffers a thread keeps for its connections' next turns: taken
/// from the allocator and given back on every turn, each cost about 4,700
/// instructions (glibc's `malloc` of 32 KiB, then its `free`), about 900
/// per h2c request. A connection that once held more than it keeps takes
/// one for every turn since: an HTTP/2 connection's turns alternate
/// between many responses and few, and a buffer of a few KiB taken for
/// the few cost glibc as much (its cache holds nothing over 1 KiB).
const SPARE_BUFFERS: usize = 64;

thread_local! {
    /// This thread's turn: `None` when no `flush` task runs on it.
    static TURN: RefCell<Option<Turn>> = const { RefCell::new(None) };
}

#[derive(Default)]
struct Turn {
    /// Connections with bytes held, in the order they wrote.
    queued: Vec<Arc<Shared>>,
    /// The flushing task, while it waits for a connection to queue.
    flusher: Option<Waker>,
    /// Empty burst buffers, for the next connection whose turn needs one.
    spare: Vec<Vec<u8>>,
}

/// An empty buffer with room for a burst: one this thread kept, or new.
fn burst_buffer() -> Vec<u8> {
    TURN.try_with(|turn| turn.borrow_mut().as_mut()?.spare.pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(BURST_CAPACITY))
}

/// Keeps an emptied burst buffer for this thread's next bursts, while
/// there is room among its spares (a larger one is freed).
fn give_back(mut buffer: Vec<u8>) {
    if !(BURST_CAPACITY..=2 * BURST_CAPACITY).contains(&buffer.capacity()) {
        return;
    }
    buffer.clear();
    let _ = TURN.try_with(|turn| {
        if let Some(turn) = turn.borrow_mut().as_mut() {
            if turn.spare.len() < SPARE_BUFFERS {
                turn.spare.push(buffer);
            }
        }
    });
}

/// A TCP connection whose writes wait for the end of its worker's turn.
pub struct TurnWrites {
    read: OwnedReadHalf,
    shared: Arc<Shared>,
}

/// What the connection and its worker's flushing task share.
struct Shared {
    write: OwnedWriteHalf,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    /// Of `bytes`, how many are written.
    sent: usize,
    /// In its worker's queue: the flushing task writes `bytes`.
    queued: bool,
    /// What the flushing task met writing; the next write returns it.
    failed: Option<io::Error>,
    /// The connection's task, woken when the flushing task left it bytes
    /// (a full socket) or an error.
    waker: Option<Waker>,
    /// A turn held more than `KEPT_CAPACITY`: every turn's room is a burst
    /// buffer since, one of the thread's spares.
    bursty: bool,
}

impl Held {
    fn unsent(&self) -> &[u8] {
        &self.bytes[self.sent..]
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.sent = 0;
        // An idle connection keeps no room a burst needed: its thread does.
        if self.bytes.capacity() > KEPT_CAPACITY {
            give_back(std::mem::take(&mut self.bytes));
        }
    }

    /// Writes what the socket takes of the unsent bytes: `Ok(true)` once
    /// all are written (the buffer cleared), `Ok(false)` when it is full.
    fn write_to(&mut self, socket: &OwnedWriteHalf) -> io::Result<bool> {
        while !self.unsent().is_empty() {
            match socket.try_write(self.unsent()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                // Readiness cleared: the next look waits for room.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.clear();
        Ok(true)
    }

    /// Room for `len` more bytes: all a connection keeps while its turns'
    /// bytes fit it, a burst buffer once they did not (and as `Vec` grows
    /// past a burst buffer).
    fn make_room(&mut self, len: usize) {
        let needed = self.bytes.len() + len;
        if needed <= self.bytes.capacity() {
            return;
        }
        self.bursty |= needed > KEPT_CAPACITY;
        if self.bursty && needed <= BURST_CAPACITY {
            let mut burst = burst_buffer();
            burst.extend_from_slice(&self.bytes);
            self.bytes = burst;
            return;
        }
        // What a connection keeps, at once: grown by doubling, a buffer
        // overshot it and was freed at the turn's end, to be grown again.
        if needed <= KEPT_CAPACITY {
            self.bytes.reserve_exact(KEPT_CAPACITY - self.bytes.len());
            return;
        }
        self.bytes.reserve(len);
    }

    fn remember(&mut self, waker: &Waker) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.waker = Some(waker.clone());
        }
    }
}

impl TurnWrites {
    pub fn new(stream: TcpStream) -> Self {
        let (read, write) = stream.into_split();
        TurnWrites {
            read,
            shared: Arc::new(Shared {
                write,
                held: Mutex::new(Held::default()),
            }),
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        lock(&self.shared)
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, Held> {
    // Taken by the connection's task and its thread's flushing task, never
    // at once.
    shared.held.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Writes out the held bytes, waiting (with `cx`) while the socket is full.
    fn poll_drain(&self, held: &mut Held, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = held.failed.take() {
            return Poll::Ready(Err(e));
        }
        while !held.write_to(&self.write)? {
            ready!(self.write.as_ref().poll_write_ready(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// The flushing task's write: what the socket takes now. What it does
    /// not (a full socket), or an error, is left to the connection's task,
    /// which is woken for it.
    fn flush(&self) {
        let mut held = lock(self);
        held.queued = false;
        match held.write_to(&self.write) {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => held.failed = Some(e),
        }
        let owner = held.waker.take();
        drop(held);
        if let Some(owner) = owner {
            owner.wake();
        }
    }
}

/// Whether this thread has a flushing task (and so a turn to wait for).
fn turn_running() -> bool {
    TURN.with_borrow(|turn| turn.is_some())
}

/// Puts `shared` in this thread's queue, waking the flushing task for the
/// first one of a turn.
fn enqueue(shared: &Arc<Shared>) {
    let flusher = TURN.with_borrow_mut(|turn| {
        let turn = turn.as_mut()?;
        turn.queued.push(shared.clone());
        turn.flusher.take()
    });
    if let Some(flusher) = flusher {
        flusher.wake();
    }
}

/// The task that writes out each turn's held bytes: one per worker thread,
/// for as long as its runtime runs (writes on a thread without one are not
/// held).
pub async fn flush() {
    /// Dropped with the task: the thread's writes are no longer held.
    struct Running;
    impl Drop for Running {
        fn drop(&mut self) {
            TURN.with_borrow_mut(|turn| *turn = None);
        }
    }
    TURN.with_borrow_mut(|turn| *turn = Some(Turn::default()));
    let _running = Running;
    let mut writing = Vec::new();
    poll_fn(|cx| loop {
        // Until a turn queues nothing more: then wait for the next.
        let waiting = TURN.with_borrow_mut(|turn| match turn {
            Some(turn) if turn.queued.is_empty() => {
                turn.flusher = Some(cx.waker().clone());
                true
            }
            Some(turn) => {
                std::mem::swap(&mut turn.queued, &mut writing);
                false
            }
            None => true,
        });
        if waiting {
            return Poll::<()>::Pending;
        }
        for shared in writing.drain(..) {
            shared.flush();
        }
    })
    .await
}

/// What hyper's client pool asks of a connection (an HTTP/2 upstream's).
impl Connection for TurnWrites {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for TurnWrites {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        {
            // Bytes the flushing task could not write go before reading
            // (or the error it met comes out here).
            let mut held = this.held();
            if !held.queued && (!held.unsent().is_empty() || held.failed.is_some()) {
                if let Poll::Ready(Err(e)) = this.shared.poll_drain(&mut held, cx) {
                    return Poll::Ready(Err(e));
                }
            }
        }
        Pin::new(&mut this.read).poll_read(cx, buf)
    }
}

impl TurnWrites {
    /// Holds `len` bytes (put by `put`) for the end of the turn, or, when
    /// there is no turn or they are too many, writes them with `direct`.
    fn poll_hold(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
        put: impl FnOnce(&mut Vec<u8>),
        direct: impl Fn(&OwnedWriteHalf) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let mut held = self.held();
        held.remember(cx.waker());
        if let Some(e) = held.failed.take() {
            return Poll::Ready(Err(e));
        }
        let holding = turn_running() && len <= HOLD_LIMIT;
        if !held.unsent().is_empty() && (!holding || held.unsent().len() + len > HOLD_LIMIT) {
            ready!(self.shared.poll_drain(&mut held, cx))?;
        }
        if !holding {
            drop(held);
            loop {
                ready!(self.shared.write.as_ref().poll_write_ready(cx))?;
                match direct(&self.shared.write) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    written => return Poll::Ready(written),
                }
            }
        }
        held.make_room(len);
        put(&mut held.bytes);
        if !held.queued {
            held.queued = true;
            drop(held);
            enqueue(&self.shared);
        }
        Poll::Ready(Ok(len))
    }
}

impl AsyncWrite for TurnWrites {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_hold(
            cx,
            buf.len(),
            |held| held.extend_from_slice(buf),
            |write| write.try_write(buf),
        )
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.get_mut().poll_hold(
            cx,
            len,
            |held| bufs.iter().for_each(|b| held.extend_from_slice(b)),
            |write| write.try_write_vectored(bufs),
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut held = self.held();
        held.remember(cx.waker());
        if held.queued {
            // The flushing task writes them when the turn ends.
            return Poll::Ready(Ok(()));
        }
        self.shared.poll_drain(&mut held, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        {
            let mut held = this.held();
            ready!(this.shared.poll_drain(&mut held, cx))?;
        }
        // As a `TcpStream`'s would: the write side only. (`OwnedWriteHalf`'s
        // own needs it `&mut`, and the flushing task shares it.)
        let socket = socket2::SockRef::from(this.shared.write.as_ref());
        Poll::Ready(socket.shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpSocket};

    /// A connection over loopback: the `TurnWrites` end and its peer. With
    /// `small_buffers`, a few KiB fill both sockets.
    async fn connection(small_buffers: bool) -> (TurnWrites, TcpStream) {
        let socket = TcpSocket::new_v4().expect("socket");
        if small_buffers {
            socket.set_recv_buffer_size(4096).expect("receive buffer");
        }
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind");
        let listener: TcpListener = socket.listen(1).expect("listen");
        let client = TcpSocket::new_v4().expect("socket");
        if small_buffers {
            client.set_send_buffer_size(4096).expect("send buffer");
        }
        let addr = listener.local_addr().expect("address");
        let (connected, accepted) = tokio::join!(client.connect(addr), listener.accept());
        let (peer, _) = accepted.expect("accepted");
        (TurnWrites::new(connected.expect("connected")), peer)
    }

    async fn read_to_end(mut peer: TcpStream) -> Vec<u8> {
        let mut bytes = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), peer.read_to_end(&mut bytes))
            .await
            .expect("the bytes and the end in time")
            .expect("read");
        bytes
    }

    fn nothing_arrived(peer: &TcpStream) -> bool {
        let mut buf = [0u8; 16];
        matches!(peer.try_read(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    #[tokio::test]
    async fn a_turns_writes_leave_together_when_it_ends() {
        let flusher = tokio::spawn(flush());
        let (mut first, first_peer) = connection(false).await;
        let (mut second, second_peer) = connection(false).await;
        assert!(turn_running(), "the flushing task has started");
        first.write_all(b"first response").await.expect("written");
        first.flush().await.expect("flushed");
        second.write_all(b"second").await.expect("written");
        second.write_all(b" response").await.expect("written");
        second.flush().await.expect("flushed");
        // Held: the peers have nothing yet, though each write and flush
        // said it was done.
        assert!(nothing_arrived(&first_peer) && nothing_arrived(&second_peer));
        // The turn ends when this task waits: both leave.
        drop((first, second));
        assert_eq!(read_to_end(first_peer).await, b"first response");
        assert_eq!(read_to_end(second_peer).await, b"second response");
        flusher.abort();
    }

    #[tokio::test]
    async fn a_written_out_connection_keeps_no_large_buffer() {
        let flusher = tokio::spawn(flush());
        let (mut conn, peer) = connection(false).await;
        let large = vec![b'x'; 20_000];
        conn.write_all(&large).await.expect("written");
        assert!(conn.held().bytes.capacity() >= large.len(), "held");
        tokio::task::yield_now().await;
        assert_eq!(conn.held().bytes.capacity(), 0, "freed once written");
        // The turn after a large one starts with room for a large one.
        conn.write_all(b"small").await.expect("written");
        assert_eq!(conn.held().bytes.capacity(), BURST_CAPACITY);
        tokio::task::yield_now().await;
        assert_eq!(conn.held().bytes.capacity(), 0, "freed once written");
        // And every turn after it.
        for _ in 0..3 {
            conn.write_all(b"small").await.expect("written");
            assert_eq!(conn.held().bytes.capacity(), BURST_CAPACITY);
            tokio::task::yield_now().await;
            assert_eq!(conn.held().bytes.capacity(), 0, "the thread's again");
        }
        drop(conn);
        assert_eq!(read_to_end(peer).await.len(), large.len() + 5 * 4);
        flusher.abort();
    }

    #[tokio::test]
    async fn turns_of_a_few_responses_keep_their_buffer() {
        let flusher = tokio::spawn(flush());
        let (mut conn, peer) = connection(false).await;
        let response = vec![b'r'; 1_200];
        for turn in 0..3 {
            for _ in 0..3 {
                conn.write_all(&response).await.expect("written");
            }
            assert_eq!(conn.held().bytes.capacity(), KEPT_CAPACITY, "turn {turn}");
            tokio::task::yield_now().await;
            let kept = conn.held().bytes.capacity();
            assert_eq!(kept, KEPT_CAPACITY, "kept after turn {turn}");
        }
        drop(conn);
        assert_eq!(read_to_end(peer).await.len(), 9 * response.len());
        flusher.abort();
    }

    #[tokio::test]
    async fn a_turn_of_many_responses_is_not_copied_as_it_grows() {
        let flusher = tokio::spawn(flush());
        let (mut conn, peer) = connection(false).await;
        // An HTTP/2 connection answering ten streams in a turn: how many
        // times its buffer grows (each a `realloc`, and a copy).
        let response = vec![b'r'; 1_200];
        let mut turn = async || {
            let mut growths = 0;
            let mut capacity = conn.held().bytes.capacity();
            for _ in 0..10 {
                conn.write_all(&response).await.expect("written");
                let now = conn.held().bytes.capacity();
                growths += usize::from(now != capacity);
                capacity = now;
            }
            tokio::task::yield_now().await;
            growths
        };
        let first = turn().await;
        assert!(first <= 4, "the first turn grew {first} times");
        // The next such turn takes its room once.
        assert_eq!(turn().await, 1, "the next turn grew more than once");
        drop(conn);
        assert_eq!(read_to_end(peer).await.len(), 20 * response.len());
        flusher.abort();
    }

    #[tokio::test]
    async fn a_thread_keeps_burst_buffers_for_the_next_bursts() {
        let flusher = tokio::spawn(flush());
        let (mut first, first_peer) = connection(false).await;
        let (mut second, second_peer) = connection(false).await;
        let spares = || TURN.with_borrow(|turn| turn.as_ref().map_or(0, |t| t.spare.len()));
        let burst = vec![b'b'; 20_000];
        first.write_all(&burst).await.expect("written");
        let buffer = first.held().bytes.as_ptr();
        tokio::task::yield_now().await;
        assert_eq!(spares(), 1, "the written-out burst buffer is the thread's");
        assert_eq!(first.held().bytes.capacity(), 0, "not the connection's");
        second.write_all(&burst).await.expect("written");
        assert_eq!(
            second.held().bytes.as_ptr(),
            buffer,
            "the next burst takes it"
        );
        assert_eq!(spares(), 0);
        tokio::task::yield_now().await;
        assert_eq!(spares(), 1);
        give_back(Vec::with_capacity(HOLD_LIMIT * 4));
        assert_eq!(spares(), 1, "a larger one is freed");
        // As many as a thread keeps, and no more.
        for _ in 0..SPARE_BUFFERS + 5 {
            give_back(Vec::with_capacity(BURST_CAPACITY));
        }
        assert_eq!(spares(), SPARE_BUFFERS);
        drop((first, second));
        assert_eq!(read_to_end(first_peer).await, burst);
        assert_eq!(read_to_end(second_peer).await, burst);
        flusher.abort();
    }

    #[tokio::test]
    async fn without_a_flushing_task_writes_go_straight_out() {
        let (mut conn, peer) = connection(false).await;
        conn.write_all(b"at once").await.expect("written");
        let mut buf = [0u8; 16];
        let n = peer.try_read(&mut buf).expect("already there");
        assert_eq!(&buf[..n], b"at once");
    }

    #[tokio::test]
    async fn a_full_socket_leaves_the_rest_to_the_connection_in_order() {
        // Small sockets: the flushing task finds them full and hands what
        // is left back to the connection, which waits for room. Small
        // writes and ones too large to hold (which go straight out after
        // what is held) interleave.
        let flusher = tokio::spawn(flush());
        let (mut conn, peer) = connection(true).await;
        let mut sent = Vec::new();
        let mut reader = None;
        let mut peer = Some(peer);
        let writing = async {
            for i in 0..300 {
                let piece = piece(i);
                conn.write_all(&piece).await?;
                conn.flush().await?;
                sent.extend_from_slice(&piece);
                if i == 40 {
                    // The turn ends with 28 KB held; the reader starts after.
                    tokio::task::yield_now().await;
                    reader = peer.take().map(|peer| tokio::spawn(read_to_end(peer)));
                }
            }
            conn.shutdown().await
        };
        tokio::time::timeout(Duration::from_secs(10), writing)
            .await
            .expect("written in time")
            .expect("written");
        let received = reader.expect("started").await.expect("the reader");
        assert_eq!(received.len(), sent.len());
        assert!(received == sent, "every byte, in order");
        flusher.abort();
    }

    /// The `i`th piece of the test above: small, or every 50th too large
    /// to hold.
    fn piece(i: usize) -> Vec<u8> {
        let len = if i % 50 == 49 { HOLD_LIMIT + 1000 } else { 700 };
        (0..len).map(|j| (i * 7 + j) as u8).collect()
    }

    #[tokio::test]
    async fn a_connection_waiting_for_its_answer_writes_what_the_turn_left() {
        // A request larger than small sockets take, written in a turn, and
        // the connection then waiting to read the answer (as the HTTP/1.1
        // client does): the flushing task writes what fits and wakes the
        // connection for the rest.
        let flusher = tokio::spawn(flush());
        let (mut conn, mut peer) = connection(true).await;
        let request = vec![7u8; 40_000];
        let answering = tokio::spawn(async move {
            let mut received = vec![0u8; 40_000];
            peer.read_exact(&mut received).await?;
            peer.write_all(b"answer").await?;
            Ok::<_, io::Error>(received)
        });
        conn.write_all(&request).await.expect("written");
        conn.flush().await.expect("flushed");
        let mut answer = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut answer))
            .await
            .expect("the whole request went and the answer came, in time")
            .expect("read");
        assert_eq!(&answer, b"answer");
        assert_eq!(
            answering.await.expect("the peer").expect("its side"),
            request
        );
        flusher.abort();
    }

    #[tokio::test]
    async fn shutting_down_sends_what_is_held_first() {
        let flusher = tokio::spawn(flush());
        let (mut conn, peer) = connection(false).await;
        conn.write_all(b"last response").await.expect("written");
        conn.shutdown().await.expect("shut down");
        // Out before the end, without waiting for the turn.
        assert_eq!(read_to_end(peer).await, b"last response");
        flusher.abort();
    }

    #[tokio::test]
    async fn a_write_to_a_closed_peer_fails() {
        let flusher = tokio::spawn(flush());
        let (mut conn, peer) = connection(false).await;
        drop(peer);
        let failed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let written = async {
                    conn.write_all(b"into the void").await?;
                    conn.flush().await
                };
                if let Err(e) = written.await {
                    return e;
                }
                // The turn ends; its write meets the closed socket.
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("an error in time, not bytes held for ever");
        assert!(
            matches!(
                failed.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "{failed}"
        );
        flusher.abort();
    }
}
