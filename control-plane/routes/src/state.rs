//! The mesh as route compilation needs it: resources indexed by the service
//! they belong to. Kept up to date from the state machine's change events.

use imbl::OrdMap;
use meridian_model::{Kind, Resource, ResourceKey, Spec};
use std::sync::Arc;

/// A service: (namespace, name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    pub namespace: String,
    pub name: String,
}

impl ServiceId {
    pub fn new(namespace: &str, name: &str) -> Self {
        ServiceId {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// Parses `namespace/name`, or `name` in `default_namespace`.
    pub fn parse(text: &str, default_namespace: &str) -> Self {
        match text.split_once('/') {
            Some((ns, name)) => ServiceId::new(ns, name),
            None => ServiceId::new(default_namespace, text),
        }
    }
}

/// Every resource, by key, plus the indexes compilation uses. A persistent
/// map: a clone (one per published snapshot) shares its structure and
/// costs O(1), a change copies only its path, O(log n) (a `BTreeMap` clone
/// copied every key and was most of a busy control plane's CPU).
#[derive(Debug, Clone, Default)]
pub struct MeshState {
    resources: OrdMap<ResourceKey, Arc<Resource>>,
}

impl MeshState {
    pub fn from_resources(resources: impl IntoIterator<Item = Resource>) -> Self {
        let mut state = MeshState::default();
        for resource in resources {
            state.put(resource);
        }
        state
    }

    pub fn put(&mut self, resource: Resource) {
        self.resources.insert(resource.key(), Arc::new(resource));
    }

    pub fn remove(&mut self, key: &ResourceKey) {
        self.resources.remove(key);
    }

    fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Arc<Resource>> {
        let start = ResourceKey {
            kind,
            namespace: String::new(),
            name: String::new(),
            cluster: String::new(),
        };
        self.resources
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, r)| r)
    }

    pub fn services(&self) -> impl Iterator<Item = (ServiceId, &Arc<Resource>)> {
        self.of_kind(Kind::Service).map(|r| {
            let key = r.key();
            (ServiceId::new(&key.namespace, &key.name), r)
        })
    }

    pub fn service(&self, id: &ServiceId) -> Option<&Arc<Resource>> {
        self.resources.get(&ResourceKey {
            kind: Kind::Service,
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            cluster: String::new(),
        })
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<Resource>> {
        self.resources.get(&ResourceKey {
            kind: Kind::Cluster,
            namespace: String::new(),
            name: name.to_string(),
            cluster: String::new(),
        })
    }

    /// The service's `Endpoints` objects, one per member cluster.
    pub fn endpoints(&self, id: &ServiceId) -> impl Iterator<Item = &Arc<Resource>> {
        let start = ResourceKey {
            kind: Kind::Endpoints,
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            cluster: String::new(),
        };
        let (namespace, name) = (id.namespace.clone(), id.name.clone());
        self.resources
            .range(start..)
            .take_while(move |(k, _)| {
                k.kind == Kind::Endpoints && k.namespace == namespace && k.name == name
            })
            .map(|(_, r)| r)
    }

    /// The split whose target is this service, if any.
    pub fn split_for(&self, id: &ServiceId) -> Option<&Arc<Resource>> {
        self.of_kind(Kind::TrafficSplit).find(|r| match &r.spec {
            Spec::TrafficSplit(s) => {
                ServiceId::parse(
                    &s.service,
                    r.metadata.namespace.as_deref().unwrap_or_default(),
                ) == *id
            }
            _ => false,
        })
    }

    /// The failover policy of this service, if any.
    pub fn failover_for(&self, id: &ServiceId) -> Option<&Arc<Resource>> {
        self.of_kind(Kind::FailoverPolicy).find(|r| match &r.spec {
            Spec::FailoverPolicy(p) => {
                ServiceId::parse(
                    &p.service,
                    r.metadata.namespace.as_deref().unwrap_or_default(),
                ) == *id
            }
            _ => false,
        })
    }
}
