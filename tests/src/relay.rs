//! A fault-injecting TCP relay: listens on a port of its own and forwards
//! each connection to a target, unless told to cut it, stall it, slow it
//! down or reset it. It works on bytes, so gRPC over HTTP/2, plaintext or
//! TLS, goes through it unchanged.
//!
//! A relay stands for one direction of one network link: the connections it
//! carries are those one side opens to the other (requests and their
//! answers), so cutting it alone is an asymmetric fault.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{ReadHalf, WriteHalf},
        TcpListener, TcpStream,
    },
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};

/// What the link does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes flow.
    Open,
    /// A partition that resets: open connections are closed at once (RST),
    /// new ones are accepted and held without a byte passing, as a SYN is
    /// retransmitted into a black hole, and go through once the link opens.
    Cut,
    /// A partition that stays silent: open connections stay open but no
    /// byte moves either way (the sender's buffers fill, as TCP retransmits
    /// into the void); new ones are held. Everything resumes on opening.
    Stall,
}

/// A link's faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    pub mode: Mode,
    /// Added to every chunk of bytes, each way.
    pub latency: Duration,
    /// Per mille of chunks held back by a retransmission timeout: what TCP
    /// turns a lost packet into (the bytes arrive, late and in order).
    pub loss: u32,
    /// Per mille of chunks on which the connection is reset instead, and of
    /// new connections refused.
    pub reset: u32,
}

/// How long a "lost" chunk waits: about a TCP retransmission timeout.
const RETRANSMISSION: Duration = Duration::from_millis(200);

impl Faults {
    pub const OPEN: Faults = Faults {
        mode: Mode::Open,
        latency: Duration::ZERO,
        loss: 0,
        reset: 0,
    };
}

/// The link state every connection watches; `generation` counts resets of
/// the open connections (cuts).
#[derive(Debug, Clone, Copy)]
struct State {
    faults: Faults,
    generation: u64,
}

pub struct Relay {
    /// Where to dial to go through the relay.
    pub addr: String,
    /// Where it forwards to.
    pub target: String,
    state: watch::Sender<State>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// A relay to `target` on a fresh port of 127.0.0.1, open. Must be
    /// called inside a Tokio runtime.
    pub fn start(target: &str, seed: u64) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a relay port");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("relay address").to_string();
        let listener = TcpListener::from_std(listener).expect("a Tokio listener");
        let (state, _) = watch::channel(State {
            faults: Faults::OPEN,
            generation: 0,
        });
        let accept = tokio::spawn(accept_loop(
            listener,
            target.to_string(),
            state.clone(),
            Arc::new(AtomicU64::new(seed | 1)),
        ));
        Relay {
            addr,
            target: target.to_string(),
            state,
            accept,
        }
    }

    pub fn faults(&self) -> Faults {
        self.state.borrow().faults
    }

    /// Sets the link's faults; going to `Cut` closes the open connections.
    pub fn set(&self, faults: Faults) {
        self.state.send_modify(|state| {
            if faults.mode == Mode::Cut && state.faults.mode != Mode::Cut {
                state.generation += 1;
            }
            state.faults = faults;
        });
    }

    /// Changes the mode only, keeping latency and loss.
    pub fn set_mode(&self, mode: Mode) {
        let faults = Faults {
            mode,
            ..self.faults()
        };
        self.set(faults);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        // Every connection ends with the relay.
        self.state.send_modify(|state| {
            state.faults.mode = Mode::Cut;
            state.generation += 1;
        });
    }
}

/// xorshift64*, one step; `seed` is shared by the relay's connections.
fn roll(seed: &AtomicU64, per_mille: u32) -> bool {
    if per_mille == 0 {
        return false;
    }
    let mut x = seed.load(Ordering::Relaxed);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    seed.store(x, Ordering::Relaxed);
    x.wrapping_mul(0x2545_f491_4f6c_dd1d) % 1_000 < u64::from(per_mille)
}

async fn accept_loop(
    listener: TcpListener,
    target: String,
    state: watch::Sender<State>,
    seed: Arc<AtomicU64>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let faults = state.borrow().faults;
        if roll(&seed, faults.reset) {
            reset(inbound);
            continue;
        }
        tokio::spawn(connection(
            inbound,
            target.clone(),
            state.subscribe(),
            seed.clone(),
        ));
    }
}

/// Closes with an RST rather than a FIN, as a connection lost in the network
/// is seen by the side that next sends on it.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// How a connection, or one direction of it, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Its sender finished and everything was delivered.
    Finished,
    /// Cut, reset, or an error on either side: the connection is torn down.
    Broken,
}

/// One connection: held while the link is not open, then forwarded both
/// ways until both sides are done, the link is cut, or a reset is rolled.
async fn connection(
    inbound: TcpStream,
    target: String,
    mut state: watch::Receiver<State>,
    seed: Arc<AtomicU64>,
) {
    // A held connection waits for the link to open (or the relay to go).
    if state
        .wait_for(|s| s.faults.mode == Mode::Open)
        .await
        .is_err()
    {
        return;
    }
    let generation = state.borrow().generation;
    let Ok(outbound) = TcpStream::connect(&target).await else {
        reset(inbound);
        return;
    };
    let (mut inbound, mut outbound) = (inbound, outbound);
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let end = {
        let (in_read, in_write) = inbound.split();
        let (out_read, out_write) = outbound.split();
        let forward = pump(in_read, out_write, state.clone(), seed.clone());
        let backward = pump(out_read, in_write, state.clone(), seed);
        let cut = state.wait_for(|s| s.generation != generation);
        tokio::select! {
            _ = cut => End::Broken,
            end = both(forward, backward) => end,
        }
    };
    if end == End::Broken {
        reset(inbound);
        reset(outbound);
    }
}

/// Both ends finished, or either broke.
async fn both(
    a: impl std::future::Future<Output = End>,
    b: impl std::future::Future<Output = End>,
) -> End {
    tokio::pin!(a);
    tokio::pin!(b);
    tokio::select! {
        end = &mut a => if end == End::Broken { end } else { b.await },
        end = &mut b => if end == End::Broken { end } else { a.await },
    }
}

/// Moves bytes from `from` to `to` with the link's faults: each chunk
/// delivered `latency` (plus a retransmission, if "lost") after it was read,
/// in order, nothing moving while the link stalls.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    state: watch::Receiver<State>,
    seed: Arc<AtomicU64>,
) -> End {
    let (chunks, mut deliveries) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut writer_state = state.clone();
    let writer = async move {
        while let Some((at, bytes)) = deliveries.recv().await {
            tokio::time::sleep_until(at).await;
            let open = writer_state
                .wait_for(|s| s.faults.mode != Mode::Stall)
                .await
                .is_ok();
            if !open || to.write_all(&bytes).await.is_err() {
                return End::Broken;
            }
        }
        // The sender finished and all it sent is delivered: pass its FIN on.
        let _ = to.shutdown().await;
        End::Finished
    };
    let mut reader_state = state;
    let reader = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        let mut last = Instant::now();
        loop {
            if reader_state
                .wait_for(|s| s.faults.mode != Mode::Stall)
                .await
                .is_err()
            {
                return End::Broken;
            }
            let read = match from.read(&mut buffer).await {
                // Dropping `chunks` lets the writer drain and finish.
                Ok(0) => return End::Finished,
                Ok(n) => n,
                Err(_) => return End::Broken,
            };
            let faults = reader_state.borrow().faults;
            if roll(&seed, faults.reset) {
                return End::Broken;
            }
            let mut delay = faults.latency;
            if roll(&seed, faults.loss) {
                delay += RETRANSMISSION;
            }
            // In order: never before the chunk ahead of it.
            last = last.max(Instant::now() + delay);
            if chunks.send((last, buffer[..read].to_vec())).is_err() {
                return End::Broken;
            }
        }
    };
    both(reader, writer).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that echoes every connection's bytes back.
    async fn echo() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(text).await?;
        let mut back = vec![0u8; text.len()];
        stream.read_exact(&mut back).await?;
        Ok(back)
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn forwards_cuts_and_heals() {
        let relay = Relay::start(&echo().await, 1);
        let mut open = TcpStream::connect(&relay.addr).await.expect("connect");
        assert_eq!(
            round_trip(&mut open, b"hello").await.expect("echo"),
            b"hello"
        );

        // A cut closes the open connection...
        relay.set_mode(Mode::Cut);
        let closed = tokio::time::timeout(WAIT, round_trip(&mut open, b"again")).await;
        assert!(matches!(closed, Ok(Err(_))), "{closed:?}");
        // ...and holds a new one without a byte passing.
        let mut held = TcpStream::connect(&relay.addr).await.expect("accepted");
        held.write_all(b"waiting").await.expect("write");
        let mut back = [0u8; 7];
        let silent =
            tokio::time::timeout(Duration::from_millis(300), held.read_exact(&mut back)).await;
        assert!(silent.is_err(), "bytes passed a cut link");
        // Healed, the held connection goes through with what it sent.
        relay.set(Faults::OPEN);
        tokio::time::timeout(WAIT, held.read_exact(&mut back))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(&back, b"waiting");
    }

    #[tokio::test]
    async fn a_stall_keeps_connections_and_loses_nothing() {
        let relay = Relay::start(&echo().await, 2);
        let mut stream = TcpStream::connect(&relay.addr).await.expect("connect");
        assert_eq!(round_trip(&mut stream, b"one").await.expect("echo"), b"one");
        relay.set_mode(Mode::Stall);
        stream.write_all(b"two").await.expect("write");
        let mut back = [0u8; 3];
        let silent =
            tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut back)).await;
        assert!(silent.is_err(), "bytes passed a stalled link");
        relay.set_mode(Mode::Open);
        tokio::time::timeout(WAIT, stream.read_exact(&mut back))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(&back, b"two");
    }

    #[tokio::test]
    async fn latency_and_loss_delay_bytes_in_order() {
        let relay = Relay::start(&echo().await, 3);
        relay.set(Faults {
            latency: Duration::from_millis(30),
            loss: 200,
            ..Faults::OPEN
        });
        let mut stream = TcpStream::connect(&relay.addr).await.expect("connect");
        let started = std::time::Instant::now();
        for i in 0..5u8 {
            let sent = [i; 100];
            assert_eq!(round_trip(&mut stream, &sent).await.expect("echo"), sent);
        }
        // Each round trip crosses the relay twice: at least 10 × 30 ms.
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn resets_break_connections() {
        let relay = Relay::start(&echo().await, 4);
        relay.set(Faults {
            reset: 1_000,
            ..Faults::OPEN
        });
        let mut stream = TcpStream::connect(&relay.addr).await.expect("connect");
        let broken = tokio::time::timeout(WAIT, round_trip(&mut stream, b"x")).await;
        assert!(matches!(broken, Ok(Err(_))), "{broken:?}");
    }
}
