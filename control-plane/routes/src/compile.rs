//! The compiler: state and a proxy's locality in, xDS resources out. Per
//! service, output is cached against a fingerprint of exactly the objects it
//! was compiled from, so a change recompiles only the services it touches.

use crate::{
    cluster, endpoints, failover::Origin, listener, names, proto, route, type_url, version,
    MeshState, ServiceId,
};
use envoy_types::pb::{envoy::config::route::v3::VirtualHost, google::protobuf::Any};
use meridian_model::{
    spec::{Protocol, ServiceSpec},
    Resource, Spec,
};
use prost::{Message, Name};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::atomic::{AtomicU64, Ordering},
    sync::{Arc, OnceLock},
};

/// The proxy asking: its member cluster and, if it knows them, region and zone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ProxyLocality {
    pub cluster: String,
    pub region: String,
    pub zone: String,
}

impl ProxyLocality {
    /// The locality of a proxy in `cluster` (its verified member cluster)
    /// that claims `zone`: region and zone come from the `Cluster`
    /// resource, and the claim is taken only for what the resource leaves
    /// open (the zone of a cluster that spans zones, or everything of a
    /// cluster the mesh does not know yet), so a proxy cannot place itself
    /// in another region.
    pub fn of(state: &MeshState, cluster: &str, region: &str, zone: &str) -> Self {
        let (known_region, known_zone) = match state.cluster(cluster).map(|c| &c.spec) {
            Some(Spec::Cluster(c)) => (Some(c.region.clone()), c.zone.clone()),
            _ => (None, None),
        };
        ProxyLocality {
            cluster: cluster.to_string(),
            region: known_region.unwrap_or_else(|| region.to_string()),
            zone: known_zone.unwrap_or_else(|| zone.to_string()),
        }
    }
}

/// One compiled resource, ready to send. Its name and version are shared
/// (`Arc`) with every stream that records what its client holds.
#[derive(Debug, Clone, PartialEq)]
pub struct XdsResource {
    pub name: Arc<str>,
    pub version: Arc<str>,
    pub resource: Any,
}

impl XdsResource {
    fn new<M: Message + Name>(name: String, revision: u64, message: &M) -> Self {
        let resource = proto::any(message);
        XdsResource {
            version: version::version(revision, &resource.value).into(),
            name: name.into(),
            resource,
        }
    }
}

/// Everything one proxy gets, by type URL and name.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// Shared with the compiler's cache and earlier outputs: an output
    /// copies no resource bytes.
    by_type: BTreeMap<&'static str, BTreeMap<String, Arc<XdsResource>>>,
    /// This output's number, unique in the process (0 for one made by hand).
    id: u64,
    /// What differs from an earlier output for the same proxies, if known.
    changes: Option<Changes>,
    /// Per type, the version of all its resources together, worked out on
    /// first asking (an update that changes one type asks for that one).
    versions_of_all: BTreeMap<&'static str, OnceLock<String>>,
}

/// The names of each type added, changed or removed since output `since`.
#[derive(Debug, Clone)]
struct Changes {
    since: u64,
    by_type: BTreeMap<&'static str, BTreeSet<String>>,
}

/// Outputs compare by what they hold, not by their numbers.
impl PartialEq for Compiled {
    fn eq(&self, other: &Self) -> bool {
        self.by_type == other.by_type
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static NOTHING: BTreeSet<String> = BTreeSet::new();

impl Compiled {
    /// This output's number.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The names of `type_url` added, changed or removed since output
    /// `since` (none since this very output): a stream that held all of
    /// `since` need look at no others. `None` when this output was not
    /// compared with `since`.
    pub fn changed_since(&self, since: u64, type_url: &str) -> Option<&BTreeSet<String>> {
        if since == self.id && since != 0 {
            return Some(&NOTHING);
        }
        let changes = self
            .changes
            .as_ref()
            .filter(|c| c.since == since && since != 0)?;
        Some(changes.by_type.get(type_url).unwrap_or(&NOTHING))
    }

    /// Compares this output with `previous` (the last for the same
    /// proxies), once, so each stream looks only at what changed.
    pub fn note_changes_since(&mut self, previous: &Compiled) {
        let mut by_type: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
        let types: BTreeSet<&'static str> = self
            .by_type
            .keys()
            .chain(previous.by_type.keys())
            .copied()
            .collect();
        let empty = BTreeMap::new();
        for type_url in types {
            let now = self.by_type.get(type_url).unwrap_or(&empty);
            let before = previous.by_type.get(type_url).unwrap_or(&empty);
            let changed: BTreeSet<String> = now
                .iter()
                .filter(|(name, r)| before.get(*name).map(|b| &b.version) != Some(&r.version))
                .map(|(name, _)| name.clone())
                .chain(
                    before
                        .keys()
                        .filter(|name| !now.contains_key(*name))
                        .cloned(),
                )
                .collect();
            if !changed.is_empty() {
                by_type.insert(type_url, changed);
            }
        }
        self.changes = Some(Changes {
            since: previous.id,
            by_type,
        });
    }

    /// The version of every resource of `type_url` together: what a
    /// state-of-the-world subscription to all of them is sent. Worked out
    /// once per output, however many streams of its proxies ask.
    pub fn version_of_all(&self, type_url: &str) -> String {
        match (
            self.versions_of_all.get(type_url),
            self.by_type.get(type_url),
        ) {
            (Some(version), Some(all)) => version
                .get_or_init(|| version::set_version(all.values().map(|r| (&*r.name, &*r.version))))
                .clone(),
            _ => version::set_version(std::iter::empty()),
        }
    }

    pub fn of_type(&self, type_url: &str) -> Option<&BTreeMap<String, Arc<XdsResource>>> {
        self.by_type.get(type_url)
    }

    /// The resource of `type_url` named `name`, to share.
    pub fn get_shared(&self, type_url: &str, name: &str) -> Option<&Arc<XdsResource>> {
        self.of_type(type_url).and_then(|m| m.get(name))
    }

    pub fn get(&self, type_url: &str, name: &str) -> Option<&XdsResource> {
        self.get_shared(type_url, name).map(|r| &**r)
    }

    fn insert(&mut self, type_url: &'static str, resource: impl Into<Arc<XdsResource>>) {
        let resource = resource.into();
        self.versions_of_all.insert(type_url, OnceLock::new());
        self.by_type
            .entry(type_url)
            .or_default()
            .insert(resource.name.to_string(), resource);
    }
}

/// What one service compiles to for one origin.
#[derive(Debug, Clone)]
struct ServiceOutput {
    fingerprint: u64,
    /// What the outbound resources of the service's port are versioned by.
    revision: u64,
    port: u16,
    protocol: Protocol,
    resources: Vec<(&'static str, Arc<XdsResource>)>,
    virtual_host: VirtualHost,
}

/// A port's outbound resources and the service outputs they were made from.
#[derive(Debug)]
struct PortOutput {
    services: Vec<Arc<ServiceOutput>>,
    resources: Vec<(&'static str, Arc<XdsResource>)>,
}

impl PortOutput {
    fn made_from(&self, services: &[(ServiceId, Arc<ServiceOutput>)]) -> bool {
        self.services.len() == services.len()
            && self
                .services
                .iter()
                .zip(services)
                .all(|(kept, (_, now))| Arc::ptr_eq(kept, now))
    }
}

/// Compiles, remembering per-origin, per-service output between calls.
#[derive(Debug, Default)]
pub struct Compiler {
    cache: HashMap<Origin, HashMap<ServiceId, Arc<ServiceOutput>>>,
    /// Per origin and port, the outbound listener and routes, kept while
    /// the port's services' outputs are the very same.
    ports: HashMap<Origin, HashMap<u16, PortOutput>>,
    /// The mesh's trust domain, which mutual TLS between proxies names;
    /// without one (a plaintext control plane) services are not sent mTLS settings.
    trust_domain: Option<String>,
    /// How many services were compiled (not taken from the cache) so far.
    pub compiled_services: u64,
}

impl Compiler {
    pub fn new(trust_domain: Option<String>) -> Self {
        Compiler {
            trust_domain,
            ..Default::default()
        }
    }

    pub fn compile(&mut self, state: &MeshState, proxy: &ProxyLocality) -> Compiled {
        let origin = origin(state, proxy);
        let previous = self.cache.remove(&origin).unwrap_or_default();
        let mut current = HashMap::new();
        let mut compiled = Compiled::default();
        let mut ports: BTreeMap<u16, Vec<(ServiceId, Arc<ServiceOutput>)>> = BTreeMap::new();
        for (id, resource) in state.services() {
            let Spec::Service(spec) = &resource.spec else {
                continue;
            };
            if !reachable(state, &id, spec, &proxy.cluster) {
                continue;
            }
            let (fingerprint, revisions) = inputs(state, &id, resource);
            let output = match previous.get(&id) {
                Some(cached) if cached.fingerprint == fingerprint => cached.clone(),
                _ => {
                    self.compiled_services += 1;
                    Arc::new(compile_service(
                        state,
                        (&id, spec),
                        &origin,
                        self.trust_domain.as_deref(),
                        fingerprint,
                        revisions,
                    ))
                }
            };
            for (type_url, resource) in &output.resources {
                compiled.insert(type_url, resource.clone());
            }
            ports
                .entry(output.port)
                .or_default()
                .push((id.clone(), output.clone()));
            current.insert(id, output);
        }
        let mut previous_ports = self.ports.remove(&origin).unwrap_or_default();
        let mut current_ports = HashMap::new();
        for (port, services) in ports {
            let output = match previous_ports.remove(&port) {
                Some(kept) if kept.made_from(&services) => kept,
                _ => PortOutput {
                    resources: outbound(port, &services),
                    services: services.into_iter().map(|(_, s)| s).collect(),
                },
            };
            for (type_url, resource) in &output.resources {
                compiled.insert(type_url, resource.clone());
            }
            current_ports.insert(port, output);
        }
        self.ports.insert(origin.clone(), current_ports);
        self.cache.insert(origin, current);
        compiled.id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        compiled
    }
}

impl Compiler {
    /// Drops the cached output of every origin but those of `live`, the
    /// localities still served, so memory follows the proxies connected
    /// now rather than every locality ever claimed.
    pub fn retain(&mut self, state: &MeshState, live: &[ProxyLocality]) {
        let keep: std::collections::HashSet<Origin> =
            live.iter().map(|proxy| origin(state, proxy)).collect();
        self.cache.retain(|origin, _| keep.contains(origin));
        self.ports.retain(|origin, _| keep.contains(origin));
    }

    /// How many origins have cached output.
    pub fn cached_origins(&self) -> usize {
        self.cache.len()
    }
}

/// A one-off compile, without a cache.
pub fn compile(state: &MeshState, proxy: &ProxyLocality) -> Compiled {
    Compiler::default().compile(state, proxy)
}

/// Where a proxy stands, for ranking: its locality as [`ProxyLocality::of`] decides it.
fn origin(state: &MeshState, proxy: &ProxyLocality) -> Origin {
    let ProxyLocality {
        cluster,
        region,
        zone,
    } = ProxyLocality::of(state, &proxy.cluster, &proxy.region, &proxy.zone);
    Origin {
        region,
        zone,
        cluster,
    }
}

/// The revisions a service's resources are versioned by: each resource takes
/// the highest revision among the objects it is actually built from, so a
/// change to endpoints does not re-version the service's cluster or routes.
#[derive(Debug, Clone, Copy, Default)]
struct Revisions {
    /// The Service object: cluster and listeners.
    service: u64,
    /// Endpoints, their clusters and the failover policy: the load assignment.
    endpoints: u64,
    /// Service and traffic split: the route configuration.
    routes: u64,
}

/// A digest of the keys and revisions of every object the service's output
/// depends on (the cache key), and the per-resource revisions.
fn inputs(state: &MeshState, id: &ServiceId, service: &Resource) -> (u64, Revisions) {
    let mut digest = version::Digest::default();
    let mut note = |r: &Resource| {
        let meta = &r.metadata;
        digest.field(r.kind().as_str().as_bytes());
        digest.field(meta.namespace.as_deref().unwrap_or_default().as_bytes());
        digest.field(meta.name.as_bytes());
        digest.field(meta.cluster.as_deref().unwrap_or_default().as_bytes());
        digest.field(&r.revision().to_le_bytes());
        r.revision()
    };
    note(service);
    let mut endpoints = 0;
    for e in state.endpoints(id) {
        endpoints = endpoints.max(note(e));
        if let Some(c) = e.metadata.cluster.as_deref().and_then(|c| state.cluster(c)) {
            endpoints = endpoints.max(note(c));
        }
    }
    if let Some(policy) = state.failover_for(id) {
        endpoints = endpoints.max(note(policy));
    }
    let split = crate::split::flatten(state, id)
        .map(|f| f.splits.into_iter().map(|s| note(s)).max().unwrap_or(0))
        .unwrap_or(0);
    let revisions = Revisions {
        service: service.revision(),
        endpoints,
        routes: service.revision().max(split),
    };
    (digest.0, revisions)
}

/// Whether proxies of `cluster` may reach the service: the service allows
/// the cluster, and so does every service its split sends to or through.
fn reachable(state: &MeshState, id: &ServiceId, spec: &ServiceSpec, cluster: &str) -> bool {
    if !spec.allows_cluster(cluster) {
        return false;
    }
    let Some(split) = crate::split::flatten(state, id) else {
        return true;
    };
    let mut services = split.backends.iter().map(|(s, _)| s).chain(&split.via);
    services.all(|backend| match state.service(backend).map(|r| &r.spec) {
        Some(Spec::Service(backend_spec)) => backend_spec.allows_cluster(cluster),
        _ => true,
    })
}

fn compile_service(
    state: &MeshState,
    (id, spec): (&ServiceId, &ServiceSpec),
    origin: &Origin,
    trust_domain: Option<&str>,
    fingerprint: u64,
    revisions: Revisions,
) -> ServiceOutput {
    let name = names::service(id);
    let cluster = cluster::cluster(id, spec, trust_domain);
    let assignment = endpoints::load_assignment(state, id, origin);
    let mut resources = vec![
        (
            type_url::CLUSTER,
            Arc::new(XdsResource::new(name.clone(), revisions.service, &cluster)),
        ),
        (
            type_url::ENDPOINT,
            Arc::new(XdsResource::new(
                name.clone(),
                revisions.endpoints,
                &assignment,
            )),
        ),
    ];
    if spec.protocol != Protocol::Tcp {
        let routes = route::service_routes(state, id, spec);
        resources.push((
            type_url::ROUTE,
            Arc::new(XdsResource::new(name.clone(), revisions.routes, &routes)),
        ));
        for listener_name in [name.clone(), names::service_with_port(id, spec.port)] {
            let listener = listener::api_listener(listener_name.clone(), id);
            resources.push((
                type_url::LISTENER,
                Arc::new(XdsResource::new(
                    listener_name,
                    revisions.service,
                    &listener,
                )),
            ));
        }
    }
    ServiceOutput {
        fingerprint,
        revision: revisions.routes,
        port: spec.port,
        protocol: spec.protocol,
        resources,
        virtual_host: route::virtual_host(state, id, spec),
    }
}

/// The outbound listener of `port` and, for HTTP, its route configuration
/// over every service on the port. HTTP services share a port, routed by
/// authority; a TCP service takes a port only if no HTTP service is on it,
/// and the first by name wins.
fn outbound(
    port: u16,
    services: &[(ServiceId, Arc<ServiceOutput>)],
) -> Vec<(&'static str, Arc<XdsResource>)> {
    let revision = services.iter().map(|(_, s)| s.revision).max().unwrap_or(0);
    let http: Vec<&(ServiceId, Arc<ServiceOutput>)> = services
        .iter()
        .filter(|(_, s)| s.protocol != Protocol::Tcp)
        .collect();
    let name = names::outbound(port);
    if http.is_empty() {
        return services
            .first()
            .map(|(id, _)| {
                let listener = listener::outbound_tcp(port, id);
                (
                    type_url::LISTENER,
                    Arc::new(XdsResource::new(name, revision, &listener)),
                )
            })
            .into_iter()
            .collect();
    }
    let virtual_hosts = http.iter().map(|(_, s)| s.virtual_host.clone()).collect();
    let routes = route::outbound_routes(port, virtual_hosts);
    vec![
        (
            type_url::ROUTE,
            Arc::new(XdsResource::new(name.clone(), revision, &routes)),
        ),
        (
            type_url::LISTENER,
            Arc::new(XdsResource::new(
                name,
                revision,
                &listener::outbound_http(port),
            )),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(name: &str, version: &str) -> XdsResource {
        XdsResource {
            name: name.into(),
            version: version.into(),
            resource: Any::default(),
        }
    }

    #[test]
    fn the_version_of_all_of_a_type_is_its_set_version() {
        let compiled = output(&[("b", "2-0b"), ("a", "1-0a")], 1);
        assert_eq!(
            compiled.version_of_all(type_url::ENDPOINT),
            version::set_version([("a", "1-0a"), ("b", "2-0b")])
        );
        assert_eq!(
            compiled.version_of_all(type_url::CLUSTER),
            version::set_version([("web", "1")])
        );
        assert_eq!(
            compiled.version_of_all(type_url::ROUTE),
            version::set_version(std::iter::empty())
        );
        // Worked out once, and again after the type changes.
        let mut compiled = compiled;
        compiled.insert(type_url::ENDPOINT, resource("c", "3-0c"));
        assert_eq!(
            compiled.version_of_all(type_url::ENDPOINT),
            version::set_version([("a", "1-0a"), ("b", "2-0b"), ("c", "3-0c")])
        );
        assert_eq!(
            compiled.version_of_all(type_url::CLUSTER),
            version::set_version([("web", "1")])
        );
    }

    fn output(endpoints: &[(&str, &str)], id: u64) -> Compiled {
        let mut compiled = Compiled {
            id,
            ..Compiled::default()
        };
        compiled.insert(type_url::CLUSTER, resource("web", "1"));
        for (name, version) in endpoints {
            compiled.insert(type_url::ENDPOINT, resource(name, version));
        }
        compiled
    }

    fn mesh(web_revision: u64) -> MeshState {
        let text = "kind: Cluster\nmetadata: {name: c1}\nspec: {region: r1}\n---\n\
             kind: Service\nmetadata: {name: web, namespace: shop}\nspec: {protocol: http, port: 8080}\n---\n\
             kind: Service\nmetadata: {name: api, namespace: shop}\nspec: {protocol: http, port: 8080}\n";
        MeshState::from_resources(
            meridian_model::parse_manifests(text)
                .expect("mesh")
                .into_iter()
                .map(|mut r| {
                    let web = r.metadata.name == "web";
                    r.metadata.revision = Some(if web { web_revision } else { 1 });
                    r
                }),
        )
    }

    #[test]
    fn a_ports_outbound_resources_are_rebuilt_only_when_a_service_on_it_changes() {
        let proxy = ProxyLocality {
            cluster: "c1".into(),
            ..Default::default()
        };
        let mut compiler = Compiler::default();
        let outbound = |c: &Compiled| {
            c.of_type(type_url::ROUTE)
                .and_then(|m| m.get("outbound_8080"))
                .cloned()
                .expect("outbound routes")
        };
        let first = compiler.compile(&mesh(1), &proxy);
        let again = compiler.compile(&mesh(1), &proxy);
        assert!(
            Arc::ptr_eq(&outbound(&first), &outbound(&again)),
            "nothing changed: kept"
        );
        let changed = compiler.compile(&mesh(5), &proxy);
        assert_ne!(
            outbound(&changed).version,
            outbound(&first).version,
            "web changed: rebuilt"
        );
        assert_eq!(
            changed,
            compile(&mesh(5), &proxy),
            "the same as a compile from nothing"
        );
    }

    #[test]
    fn an_output_names_what_changed_since_the_one_before() {
        let before = output(&[("a", "1"), ("b", "1"), ("gone", "1")], 7);
        let mut after = output(&[("a", "1"), ("b", "2"), ("new", "1")], 8);
        assert_eq!(
            after.changed_since(7, type_url::ENDPOINT),
            None,
            "not compared yet"
        );
        after.note_changes_since(&before);
        let changed: Vec<&String> = after
            .changed_since(7, type_url::ENDPOINT)
            .expect("compared with 7")
            .iter()
            .collect();
        assert_eq!(changed, ["b", "gone", "new"]);
        assert_eq!(
            after.changed_since(7, type_url::CLUSTER).map(|c| c.len()),
            Some(0)
        );
        assert_eq!(
            after.changed_since(6, type_url::ENDPOINT),
            None,
            "another output"
        );
        assert_eq!(
            after.changed_since(8, type_url::ENDPOINT).map(|c| c.len()),
            Some(0),
            "nothing since itself"
        );
        assert_eq!(
            after,
            output(&[("a", "1"), ("b", "2"), ("new", "1")], 9),
            "compared by content"
        );
    }
}
