//! Mutual TLS for every gRPC connection: credentials that can be rotated in
//! place, the server's acceptor and the clients' dialer.

mod client;
mod credentials;
mod io;
mod server;
mod verify;

pub use client::{client_config, control_plane_node, mesh_proxy, Dialer, ServerCheck};
pub use credentials::{provider, Bundle, Credentials, Leaf, Loaded, TlsError, TlsFiles};
pub use server::{incoming, server_config, Conn, Peer, PeerIdentity, GRPC_ALPN};
pub use verify::{verify_peer, Usage};

/// Plaintext is for one machine only: `addr` (`HOST:PORT`) must resolve to
/// loopback addresses.
pub fn require_loopback(flag: &str, addr: &str) -> Result<(), TlsError> {
    use std::net::ToSocketAddrs;
    let resolved: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| TlsError::Invalid(format!("{flag}: cannot resolve '{addr}': {e}")))?
        .collect();
    if !resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback()) {
        Ok(())
    } else {
        Err(TlsError::Invalid(format!(
            "{flag}: {addr} is not a loopback address; --insecure (plaintext) only reaches 127.0.0.1 or ::1"
        )))
    }
}
