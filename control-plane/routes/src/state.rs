//! The mesh as route compilation needs it: resources indexed by the service
//! they belong to. Kept up to date from the state machine's change events.

use imbl::{OrdMap, OrdSet};
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
    /// Traffic splits and failover policies by the service they are for:
    /// (service, the policy's key). Found per service with a tree search,
    /// not a scan of every policy for every service compiled.
    splits: OrdSet<(ServiceId, ResourceKey)>,
    failovers: OrdSet<(ServiceId, ResourceKey)>,
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
        let key = resource.key();
        if let Some(old) = self.resources.get(&key).cloned() {
            self.index(&old, false);
        }
        self.index(&resource, true);
        self.resources.insert(key, Arc::new(resource));
    }

    pub fn remove(&mut self, key: &ResourceKey) {
        if let Some(old) = self.resources.remove(key) {
            self.index(&old, false);
        }
    }

    /// Adds `resource` to (or takes it out of) the policy index it belongs in.
    fn index(&mut self, resource: &Resource, add: bool) {
        let (index, service) = match &resource.spec {
            Spec::TrafficSplit(s) => (&mut self.splits, &s.service),
            Spec::FailoverPolicy(p) => (&mut self.failovers, &p.service),
            _ => return,
        };
        let namespace = resource.metadata.namespace.as_deref().unwrap_or_default();
        let entry = (ServiceId::parse(service, namespace), resource.key());
        if add {
            index.insert(entry);
        } else {
            index.remove(&entry);
        }
    }

    /// The policy of `kind` for service `id` in `index`: the first by key,
    /// as a scan of every policy in key order would find.
    fn policy_for(
        &self,
        index: &OrdSet<(ServiceId, ResourceKey)>,
        kind: Kind,
        id: &ServiceId,
    ) -> Option<&Arc<Resource>> {
        let first = ResourceKey {
            kind,
            namespace: String::new(),
            name: String::new(),
            cluster: String::new(),
        };
        let (service, key) = index.range((id.clone(), first)..).next()?;
        (service == id).then(|| self.resources.get(key)).flatten()
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
        self.policy_for(&self.splits, Kind::TrafficSplit, id)
    }

    /// The failover policy of this service, if any.
    pub fn failover_for(&self, id: &ServiceId) -> Option<&Arc<Resource>> {
        self.policy_for(&self.failovers, Kind::FailoverPolicy, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_model::parse_manifests;

    fn split(name: &str, service: &str) -> Resource {
        let text = format!(
            "kind: TrafficSplit\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{service: {service}, backends: [{{service: b, weight: 1}}]}}"
        );
        parse_manifests(&text).expect("valid").remove(0)
    }

    fn split_name(state: &MeshState, service: &str) -> Option<String> {
        state
            .split_for(&ServiceId::new("shop", service))
            .map(|r| r.metadata.name.clone())
    }

    #[test]
    fn a_policy_is_found_for_its_service_through_updates_and_removal() {
        let mut state = MeshState::from_resources([split("one", "web"), split("two", "api")]);
        assert_eq!(split_name(&state, "web").as_deref(), Some("one"));
        assert_eq!(split_name(&state, "api").as_deref(), Some("two"));
        assert_eq!(split_name(&state, "cart"), None);
        // Retargeted: found for the new service, no longer for the old.
        state.put(split("one", "cart"));
        assert_eq!(split_name(&state, "web"), None);
        assert_eq!(split_name(&state, "cart").as_deref(), Some("one"));
        // Two for one service: the first by key, as a scan in key order finds.
        state.put(split("a-first", "api"));
        assert_eq!(split_name(&state, "api").as_deref(), Some("a-first"));
        state.remove(&split("a-first", "api").key());
        assert_eq!(split_name(&state, "api").as_deref(), Some("two"));
        // Another namespace's service of the same name is another service.
        state.put(split("other", "elsewhere/web"));
        assert_eq!(split_name(&state, "web"), None);
        assert!(state
            .split_for(&ServiceId::new("elsewhere", "web"))
            .is_some());
        // A failover policy is not a split.
        assert!(state
            .failover_for(&ServiceId::new("shop", "cart"))
            .is_none());
    }
}
