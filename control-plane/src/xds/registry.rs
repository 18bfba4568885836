//! The proxies connected to this node, with where each stands: what it was
//! sent, ACKed or NACKed per type, and the mesh revision it holds.

use super::{
    mesh::MeshSnapshot,
    standing::{self, Standing},
};
use meridian_proto::v1::Proxy;
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

#[derive(Default)]
pub struct Registry {
    next_id: AtomicU64,
    streams: Mutex<BTreeMap<u64, Entry>>,
}

/// One connected proxy: what it said when its stream opened, and where it
/// stands, which its stream keeps up to date and the listing reads. Each
/// response and answer touches only its own stream's standing, not this
/// node-wide map.
struct Entry {
    proxy: Proxy,
    standing: Arc<Mutex<Standing>>,
}

impl Registry {
    pub fn register(&self, proxy: Proxy, standing: Arc<Mutex<Standing>>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Entry { proxy, standing });
        id
    }

    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Every proxy as of now, against `mesh`, this node's latest snapshot:
    /// how long each type has been behind, and the revision each holds.
    pub fn list(&self, mesh: &MeshSnapshot) -> Vec<Proxy> {
        let now = unix_ms();
        let (revision, through) = (mesh.revision, mesh.through());
        let entries: Vec<(Proxy, Arc<Mutex<Standing>>)> = self
            .lock()
            .values()
            .map(|e| (e.proxy.clone(), e.standing.clone()))
            .collect();
        entries
            .into_iter()
            .map(|(mut proxy, standing)| {
                standing
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .describe(&mut proxy);
                standing::as_listed(&mut proxy.types, now, revision, through);
                proxy.revision = standing::held_revision(&proxy.types);
                proxy
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The wall clock in Unix milliseconds: when a proxy fell behind, as every
/// node can show it.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
