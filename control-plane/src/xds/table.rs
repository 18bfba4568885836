//! Compiled routes shared by every stream on this node: one compile per
//! proxy locality and snapshot, however many proxies share that locality.
//! A locality's routes live while a stream uses them, so memory follows the
//! proxies connected now, not every locality a proxy ever claimed.

use super::mesh::MeshSnapshot;
use meridian_routes::{Compiled, Compiler, ProxyLocality};
use meridian_telemetry::{self as telemetry, KeyValue, SpanKind};
use std::{collections::HashMap, sync::Arc, sync::Mutex};

pub struct RouteTable {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    compiler: Compiler,
    localities: HashMap<ProxyLocality, Entry>,
}

#[derive(Default)]
struct Entry {
    /// Streams serving this locality.
    users: usize,
    /// The routes compiled last, and the snapshot generation they are of.
    latest: Option<(u64, Arc<Compiled>)>,
}

impl RouteTable {
    /// A table compiling for the mesh `trust_domain` (None: plaintext control plane).
    pub fn new(trust_domain: Option<String>) -> Self {
        RouteTable {
            inner: Mutex::new(Inner {
                compiler: Compiler::new(trust_domain),
                localities: HashMap::new(),
            }),
        }
    }

    /// A stream starts serving `proxy`.
    pub fn acquire(&self, proxy: &ProxyLocality) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.localities.entry(proxy.clone()).or_default().users += 1;
    }

    /// A stream serving `proxy` ended; with the last one, its routes and
    /// the compiler's cache for it go.
    pub fn release(&self, proxy: &ProxyLocality, snapshot: &MeshSnapshot) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = inner.localities.get_mut(proxy) else {
            return;
        };
        entry.users = entry.users.saturating_sub(1);
        if entry.users > 0 {
            return;
        }
        inner.localities.remove(proxy);
        let live: Vec<ProxyLocality> = inner.localities.keys().cloned().collect();
        inner.compiler.retain(&snapshot.state, &live);
    }

    /// The routes of `proxy` for `snapshot`, compiled once per snapshot
    /// generation (not revision: a relist can repeat a revision).
    pub fn get(&self, snapshot: &MeshSnapshot, proxy: &ProxyLocality) -> Arc<Compiled> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((generation, compiled)) =
            inner.localities.get(proxy).and_then(|e| e.latest.as_ref())
        {
            if *generation == snapshot.generation {
                return compiled.clone();
            }
        }
        let cx = snapshot.trace.as_deref().map(|trace| {
            telemetry::start(
                "routes.compile",
                SpanKind::Internal,
                &telemetry::propagation::from_string(trace),
                vec![
                    KeyValue::new("meridian.cluster", proxy.cluster.clone()),
                    KeyValue::new("meridian.revision", snapshot.revision as i64),
                ],
            )
        });
        let mut compiled = inner.compiler.compile(&snapshot.state, proxy);
        drop(cx);
        // Compared with the locality's last output once here, so each of
        // its streams looks only at the names that changed.
        if let Some((_, previous)) = inner.localities.get(proxy).and_then(|e| e.latest.as_ref()) {
            compiled.note_changes_since(previous);
        }
        let compiled = Arc::new(compiled);
        // Kept only for a locality a stream has acquired.
        if let Some(entry) = inner.localities.get_mut(proxy) {
            entry.latest = Some((snapshot.generation, compiled.clone()));
        }
        compiled
    }

    /// Compiles `snapshot` for every locality a stream serves, ahead of the
    /// streams (the push pipeline runs it off the runtime's workers): each
    /// locality once, however many proxies share it.
    pub fn compile_all(&self, snapshot: &MeshSnapshot) {
        let localities: Vec<ProxyLocality> = {
            let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner
                .localities
                .iter()
                .filter(|(_, e)| e.users > 0)
                .map(|(l, _)| l.clone())
                .collect()
        };
        for locality in localities {
            self.get(snapshot, &locality);
        }
    }

    /// Localities with compiled routes, and origins in the compiler's cache.
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.localities.len(), inner.compiler.cached_origins())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_model::parse_manifests;
    use meridian_routes::{type_url, MeshState};

    /// The mesh with web on `port`, its objects written at `written`, as
    /// published at `revision` in the `generation`th snapshot.
    fn snapshot(port: u16, written: u64, revision: u64, generation: u64) -> MeshSnapshot {
        let text = format!(
            "kind: Cluster\nmetadata: {{name: c1}}\nspec: {{region: r1}}\n---\n\
             kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}}}\n"
        );
        let resources = parse_manifests(&text)
            .expect("mesh")
            .into_iter()
            .map(|mut r| {
                r.metadata.revision = Some(written);
                r
            });
        MeshSnapshot {
            state: MeshState::from_resources(resources),
            revision,
            generation,
            ..Default::default()
        }
    }

    fn listeners(compiled: &Compiled) -> Vec<String> {
        compiled
            .of_type(type_url::LISTENER)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_new_generation_with_a_repeated_revision_is_compiled_again() {
        let table = RouteTable::new(None);
        let proxy = ProxyLocality {
            cluster: "c1".into(),
            ..Default::default()
        };
        table.acquire(&proxy);
        // A relist of a state written up to 6 is published as revision 7 ...
        let before = table.get(&snapshot(8080, 6, 7, 1), &proxy);
        assert!(listeners(&before).contains(&"outbound_8080".to_string()));
        // ... and the next change, written at 7, is published as 7 too.
        let after = table.get(&snapshot(9090, 7, 7, 2), &proxy);
        assert!(
            listeners(&after).contains(&"outbound_9090".to_string()),
            "{:?}",
            listeners(&after)
        );
    }

    #[test]
    fn compile_all_prepares_every_served_locality_once() {
        let table = RouteTable::new(None);
        let served = |cluster: &str| ProxyLocality {
            cluster: cluster.into(),
            ..Default::default()
        };
        table.acquire(&served("c1"));
        table.acquire(&served("c2"));
        let mesh = snapshot(8080, 1, 1, 1);
        table.compile_all(&mesh);
        let first = table.get(&mesh, &served("c1"));
        table.compile_all(&mesh);
        assert!(
            Arc::ptr_eq(&first, &table.get(&mesh, &served("c1"))),
            "the same generation is compiled once"
        );
        let next = snapshot(9090, 2, 2, 2);
        table.compile_all(&next);
        assert!(listeners(&table.get(&next, &served("c2"))).contains(&"outbound_9090".to_string()));
    }

    #[test]
    fn a_locality_is_forgotten_when_its_last_stream_ends() {
        let table = RouteTable::new(None);
        let mesh = snapshot(8080, 1, 1, 1);
        let claimed = |zone: &str| ProxyLocality {
            cluster: "c1".into(),
            region: "r1".into(),
            zone: zone.into(),
        };
        for zone in ["a", "b", "c"] {
            table.acquire(&claimed(zone));
            table.get(&mesh, &claimed(zone));
        }
        table.acquire(&claimed("a"));
        assert_eq!(table.sizes(), (3, 3));
        for zone in ["a", "b", "c"] {
            table.release(&claimed(zone), &mesh);
        }
        assert_eq!(table.sizes(), (1, 1), "zone a has a stream left");
        table.release(&claimed("a"), &mesh);
        assert_eq!(table.sizes(), (0, 0));
    }
}
