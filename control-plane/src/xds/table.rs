//! Compiled routes shared by every stream on this node: one compile per
//! proxy locality and snapshot, however many proxies share that locality.

use super::mesh::MeshSnapshot;
use meridian_routes::{Compiled, Compiler, ProxyLocality};
use std::{collections::HashMap, sync::Arc, sync::Mutex};

pub struct RouteTable {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    compiler: Compiler,
    latest: HashMap<ProxyLocality, (u64, Arc<Compiled>)>,
}

impl RouteTable {
    /// A table compiling for the mesh `trust_domain` (None: plaintext control plane).
    pub fn new(trust_domain: Option<String>) -> Self {
        RouteTable {
            inner: Mutex::new(Inner {
                compiler: Compiler::new(trust_domain),
                latest: HashMap::new(),
            }),
        }
    }

    pub fn get(&self, snapshot: &MeshSnapshot, proxy: &ProxyLocality) -> Arc<Compiled> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((revision, compiled)) = inner.latest.get(proxy) {
            if *revision == snapshot.revision {
                return compiled.clone();
            }
        }
        let compiled = Arc::new(inner.compiler.compile(&snapshot.state, proxy));
        inner
            .latest
            .insert(proxy.clone(), (snapshot.revision, compiled.clone()));
        compiled
    }
}
