//! The proxy's drain: a signal to its open connections to finish up, and
//! the count of those still open, which the drain waits to reach zero.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Context;
use tokio::sync::{watch, Notify};

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

    /// Tells every connection to finish up (and every one opened after).
    pub fn request(&self) {
        self.signal.requested.store(true, Ordering::Release);
        self.signal.wake.notify_waiters();
    }

    /// Whether a drain was asked for.
    pub fn is_requested(&self) -> bool {
        self.signal.requested.load(Ordering::Acquire)
    }

    /// Asks for the drain, and waits until every connection has closed.
    pub async fn shutdown(&self) {
        self.request();
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

    /// Whether a drain was asked for.
    pub fn is_requested(&self) -> bool {
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
