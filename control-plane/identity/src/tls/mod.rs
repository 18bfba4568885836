//! Mutual TLS for every gRPC connection: credentials that can be rotated in
//! place, the server's acceptor and the clients' dialer.

mod client;
mod credentials;
pub mod io;
mod server;
mod verify;

pub use client::{
    client_config, control_plane_node, mesh_proxy, server_list, ClientStream, DialError, Dialer,
    ServerCheck, Unreachable,
};
pub(crate) use credentials::read;
pub use credentials::{provider, Bundle, Credentials, Leaf, Loaded, TlsError, TlsFiles};
pub use server::{
    incoming, incoming_beside, server_config, Beside, Conn, Peer, PeerIdentity, GRPC_ALPN,
};
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_reaches_loopback_only() {
        assert!(require_loopback("--xds", "127.0.0.1:7400").is_ok());
        assert!(require_loopback("--xds", "localhost:7400").is_ok());
        let refused = require_loopback("--xds", "10.1.2.3:7400").expect_err("not loopback");
        assert!(refused.to_string().contains("--xds"), "{refused}");
        assert!(require_loopback("--xds", "no-port").is_err());
    }

    #[test]
    fn tls_flags_are_all_or_nothing_and_exclude_insecure() {
        let some = |p: &str| Some(std::path::PathBuf::from(p));
        assert!(TlsFiles::select(true, None, None, None)
            .expect("insecure")
            .is_none());
        assert!(TlsFiles::select(true, some("c"), None, None).is_err());
        assert!(TlsFiles::select(false, some("c"), some("k"), None).is_err());
        assert!(TlsFiles::select(false, None, None, None).is_err());
        assert!(TlsFiles::select(false, some("c"), some("k"), some("b"))
            .expect("tls")
            .is_some());
    }
}
