//! Incremental (delta) ADS, per stream and pure: only what changed is sent,
//! removals are named, and a client that reconnects with the versions it
//! holds (`initial_resource_versions`) gets only what differs.

use super::protocol::{Feedback, Nonces, Subscription};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use meridian_routes::{type_url, Compiled};
use std::collections::BTreeMap;

#[derive(Debug, Default)]
struct TypeState {
    subscription: Subscription,
    /// What the client holds (as far as we know): name to version.
    known: BTreeMap<String, String>,
    /// Nonces of responses not yet answered, with the system version they carried.
    pending: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
pub struct DeltaStream {
    types: BTreeMap<String, TypeState>,
    nonces: Nonces,
    system_version: String,
}

impl DeltaStream {
    pub fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        compiled: &Compiled,
        system_version: &str,
    ) -> (Option<DeltaDiscoveryResponse>, Option<Feedback>) {
        self.system_version = system_version.to_string();
        let first = !self.types.contains_key(&request.type_url);
        let state = self.types.entry(request.type_url.clone()).or_default();
        let mut feedback = None;
        if !request.response_nonce.is_empty() {
            if let Some(version) = state.pending.remove(&request.response_nonce) {
                feedback = Some(match &request.error_detail {
                    Some(error) => Feedback::Nack {
                        type_url: request.type_url.clone(),
                        version,
                        error: error.message.clone(),
                    },
                    None => Feedback::Ack {
                        type_url: request.type_url.clone(),
                        version,
                    },
                });
            }
        }
        if first {
            state.known = request.initial_resource_versions.clone().into_iter().collect();
            if request.resource_names_subscribe.is_empty() && type_url::is_full_state(&request.type_url) {
                state.subscription.wildcard = true;
            }
        }
        for name in &request.resource_names_subscribe {
            if name == "*" {
                state.subscription.wildcard = true;
            } else {
                state.subscription.names.insert(name.clone());
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == "*" {
                state.subscription.wildcard = false;
            } else {
                state.subscription.names.remove(name);
            }
            state.known.remove(name);
        }
        // Re-subscribing to a name makes us send it again even if we think the client has it.
        for name in &request.resource_names_subscribe {
            if !first {
                state.known.remove(name);
            }
        }
        let type_url = request.type_url.clone();
        (self.respond(&type_url, compiled, first), feedback)
    }

    pub fn on_update(&mut self, compiled: &Compiled, system_version: &str) -> Vec<DeltaDiscoveryResponse> {
        self.system_version = system_version.to_string();
        let types: Vec<String> = self.types.keys().cloned().collect();
        types.iter().filter_map(|t| self.respond(t, compiled, false)).collect()
    }

    fn respond(&mut self, type_url: &str, compiled: &Compiled, always: bool) -> Option<DeltaDiscoveryResponse> {
        let state = self.types.get_mut(type_url)?;
        let empty = BTreeMap::new();
        let current = compiled.of_type(type_url).unwrap_or(&empty);
        let mut resources = Vec::new();
        for (name, resource) in current.iter().filter(|(name, _)| state.subscription.wants(name)) {
            if state.known.get(name) != Some(&resource.version) {
                state.known.insert(name.clone(), resource.version.clone());
                resources.push(Resource {
                    name: name.clone(),
                    version: resource.version.clone(),
                    resource: Some(resource.resource.clone()),
                    ..Default::default()
                });
            }
        }
        let removed: Vec<String> = state
            .known
            .keys()
            .filter(|name| !current.contains_key(*name) || !state.subscription.wants(name))
            .cloned()
            .collect();
        for name in &removed {
            state.known.remove(name);
        }
        if resources.is_empty() && removed.is_empty() && !always {
            return None;
        }
        let nonce = self.nonces.next();
        state.pending.insert(nonce.clone(), self.system_version.clone());
        Some(DeltaDiscoveryResponse {
            system_version_info: self.system_version.clone(),
            resources,
            type_url: type_url.to_string(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        })
    }
}
