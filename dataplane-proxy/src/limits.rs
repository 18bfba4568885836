//! What clients may hold of the proxy: connections, streams per HTTP/2
//! connection, header bytes and count, and time to send a request's head.
//! A client that exceeds them is cut off or refused; everyone else is
//! served as before. One `Limits` for every listener, outbound and inbound.

use prometheus_client::metrics::gauge::Gauge;
use std::{sync::Arc, time::Duration};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Headers per request (HTTP/1.1), as Envoy's and hyper's default.
pub const MAX_HEADERS: usize = 100;

#[derive(Debug, Clone)]
pub struct Limits {
    /// How long a client has to send a request's head (and, on a new
    /// connection, its first byte and TLS handshake); HTTP/1.1 keep-alive
    /// connections idle between requests are closed after as long.
    pub header_read_timeout: Duration,
    /// Open client connections, every listener together.
    pub max_connections: usize,
    /// Concurrent streams a client may open on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// A request's head, in bytes (HTTP/1.1: the read buffer; HTTP/2: the
    /// decoded header list). Larger: 431.
    pub max_header_bytes: usize,
}

/// The proxy's open client connections, bounded: a connection holds an
/// [`Admission`] for its life; past the limit a new one is closed at once.
#[derive(Clone)]
pub struct ConnectionGate {
    permits: Arc<Semaphore>,
    /// How many are held now, for the metrics.
    open: Gauge,
}

/// One client connection's place under `--max-connections`, given back
/// when it drops.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl ConnectionGate {
    pub fn new(max_connections: usize, open: Gauge) -> Self {
        ConnectionGate {
            permits: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            open,
        }
    }

    /// A place for one more connection, or `None` at the limit.
    pub fn enter(&self) -> Option<Admission> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        self.open.inc();
        Some(Admission {
            _permit: permit,
            open: self.open.clone(),
        })
    }
}

/// What an accept loop does after `accept` failed: out of file descriptors
/// (or another resource) it waits a little for connections to close
/// instead of spinning on the error.
pub async fn after_accept_error(error: &std::io::Error) {
    tracing::warn!(%error, "accept failed; pausing the listener");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_admits_up_to_its_limit_and_again_once_one_leaves() {
        let open = Gauge::default();
        let gate = ConnectionGate::new(2, open.clone());
        let first = gate.enter().expect("first");
        let _second = gate.enter().expect("second");
        assert!(gate.enter().is_none(), "a third past the limit");
        assert_eq!(open.get(), 2, "the refused one is not counted");
        drop(first);
        assert_eq!(open.get(), 1);
        assert!(gate.enter().is_some(), "admitted once one closed");
    }
}
