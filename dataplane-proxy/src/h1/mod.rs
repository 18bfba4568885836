//! meridian-proxy's own HTTP/1.1 upstream client. A request's task writes
//! the head and body straight to a connection from its worker's pool and
//! reads the response head; the response body is read from the same
//! connection as the downstream side pulls it, which then goes back to the
//! pool. No connection task, no channel between tasks and no lock shared
//! between workers: what hyper-util's pooled client cost per request (the
//! way pingora's `proxy_h1` works). HTTP/2 upstreams keep hyper's client.

mod chunked;
mod codec;
mod conn;
#[cfg(test)]
mod no_panic;
mod pool;
#[cfg(test)]
mod tests;

pub use codec::replay_needed;
pub use conn::{Client, Connector, IdleConnections};
pub use pool::IDLE_TIMEOUT;
