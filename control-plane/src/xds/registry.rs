//! The proxies connected to this node, with what each has ACKed or NACKed.

use meridian_proto::v1::Proxy;
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

#[derive(Default)]
pub struct Registry {
    next_id: AtomicU64,
    streams: Mutex<BTreeMap<u64, Proxy>>,
}

impl Registry {
    pub fn register(&self, proxy: Proxy) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, proxy);
        id
    }

    pub fn update(&self, id: u64, change: impl FnOnce(&mut Proxy)) {
        if let Some(proxy) = self.lock().get_mut(&id) {
            change(proxy);
        }
    }

    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub fn list(&self) -> Vec<Proxy> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Proxy>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
}
