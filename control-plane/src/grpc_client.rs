//! Outgoing gRPC channels to other control-plane nodes (one per node and
//! address, shared) and connections of other protocols to them, over the
//! process's dialer (mutual TLS, or plaintext with `--insecure`), set once
//! at start-up. Over TLS the server must prove to be the very node dialled.
//! A node listed in `--peer-address` is dialled at that address instead of
//! its member address.

use meridian_identity::spiffe::Identity;
use meridian_identity::tls::{ClientStream, Dialer};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use tonic::transport::Channel;

static DIALER: OnceLock<Dialer> = OnceLock::new();
static PEER_ADDRESSES: OnceLock<BTreeMap<u64, String>> = OnceLock::new();
static CHANNELS: OnceLock<Mutex<HashMap<(u64, String), Channel>>> = OnceLock::new();

/// Sets how this process dials its peers, and where it dials those whose
/// member address it cannot use; the first call wins.
pub fn init(dialer: Dialer, peer_addresses: BTreeMap<u64, String>) {
    let _ = DIALER.set(dialer);
    let _ = PEER_ADDRESSES.set(peer_addresses);
}

/// A lazily connecting channel to node `node_id` at `addr` (`HOST:PORT`),
/// or at its `--peer-address` if it has one; the first call connects.
pub fn channel(node_id: u64, addr: &str) -> Result<Channel, ChannelError> {
    let addr = dialled_address(node_id, addr);
    let channels = CHANNELS.get_or_init(Default::default);
    let mut channels = channels.lock().unwrap_or_else(|p| p.into_inner());
    let key = (node_id, addr.to_string());
    if let Some(channel) = channels.get(&key) {
        return Ok(channel.clone());
    }
    let channel = DIALER
        .get_or_init(Dialer::insecure)
        .expecting(Identity::Node(node_id))?
        .channel(addr)?;
    channels.insert(key, channel.clone());
    Ok(channel)
}

/// A connection to node `node_id` (at `addr` or its `--peer-address`) for
/// a protocol of its own (`alpn`), connected now; over TLS the server must
/// prove to be that node.
pub async fn stream(node_id: u64, addr: &str, alpn: &[u8]) -> std::io::Result<ClientStream> {
    let addr = dialled_address(node_id, addr);
    DIALER
        .get_or_init(Dialer::insecure)
        .expecting(Identity::Node(node_id))
        .map_err(std::io::Error::other)?
        .stream(addr, alpn)
        .await
}

/// Where node `node_id`, a member at `addr`, is dialled.
fn dialled_address(node_id: u64, addr: &str) -> &str {
    PEER_ADDRESSES
        .get()
        .and_then(|peers| peers.get(&node_id))
        .map_or(addr, String::as_str)
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}
