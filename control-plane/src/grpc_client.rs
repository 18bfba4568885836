//! Outgoing gRPC channels to other control-plane nodes: one per address,
//! shared, over the process's dialer (mutual TLS, or plaintext with
//! `--insecure`), set once at start-up.

use meridian_identity::tls::Dialer;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use tonic::transport::Channel;

static DIALER: OnceLock<Dialer> = OnceLock::new();
static CHANNELS: OnceLock<Mutex<HashMap<String, Channel>>> = OnceLock::new();

/// Sets how this process dials its peers; the first call wins.
pub fn init(dialer: Dialer) {
    let _ = DIALER.set(dialer);
}

/// A lazily connecting channel to `addr` (`HOST:PORT`); the first call connects.
pub fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    let channels = CHANNELS.get_or_init(Default::default);
    let mut channels = channels.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(channel) = channels.get(addr) {
        return Ok(channel.clone());
    }
    let channel = DIALER.get_or_init(Dialer::insecure).channel(addr)?;
    channels.insert(addr.to_string(), channel.clone());
    Ok(channel)
}
