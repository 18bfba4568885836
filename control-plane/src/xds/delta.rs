//! Incremental (delta) ADS, per stream and pure: only what changed is sent,
//! removals are named, and a client that reconnects with the versions it
//! holds (`initial_resource_versions`) gets only what differs.

use super::protocol::{footprint, AdsProtocol, Feedback, Nonces, Subscription, MAX_RESPONSE_BYTES};
use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource},
};
use meridian_routes::{type_url, Compiled, XdsResource};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Default)]
struct TypeState {
    subscription: Subscription,
    /// What the client holds (as far as we know): name to version, shared
    /// with the compiled resources.
    known: BTreeMap<Arc<str>, Arc<str>>,
    /// Responses not yet answered, by nonce (at most one: changes wait for
    /// the answer, flow control) ...
    pending: BTreeMap<String, Sent>,
    /// ... and this says changes waited, so the answer brings the newest state.
    dirty: bool,
    /// The compiled output whose wanted resources `known` holds exactly,
    /// when it does: the next output's diff then looks only at the names
    /// that output says changed, not at every resource.
    synced: Option<u64>,
}

/// One response as the stream remembers it until the client answers.
#[derive(Debug)]
struct Sent {
    system_version: String,
    /// Each resource it sent (with its version) or removed (`None`), and
    /// the version the client held before: restored if the client refuses
    /// the response, so a NACKed resource is not counted as held.
    changes: Vec<Change>,
}

/// A resource's name, the version a response sent (`None`: removed), and
/// the version the client held before.
type Change = (Arc<str>, Option<Arc<str>>, Option<Arc<str>>);

#[derive(Debug, Default)]
pub struct DeltaStream {
    types: BTreeMap<String, TypeState>,
    nonces: Nonces,
    system_version: String,
}

impl DeltaStream {
    fn handle_request(
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
            if let Some(sent) = state.pending.remove(&request.response_nonce) {
                feedback = Some(match &request.error_detail {
                    Some(error) => {
                        state.forget(sent.changes);
                        Feedback::Nack {
                            type_url: request.type_url.clone(),
                            version: sent.system_version,
                            error: error.message.clone(),
                        }
                    }
                    None => Feedback::Ack {
                        type_url: request.type_url.clone(),
                        version: sent.system_version,
                    },
                });
            }
        }
        let refused = matches!(feedback, Some(Feedback::Nack { .. }));
        let resubscribed = !request.resource_names_subscribe.is_empty()
            || !request.resource_names_unsubscribe.is_empty();
        if first || refused || resubscribed {
            // What the client holds is no longer a compiled output's whole.
            state.synced = None;
        }
        if first {
            state.known = request
                .initial_resource_versions
                .iter()
                .map(|(name, version)| (name.as_str().into(), version.as_str().into()))
                .collect();
            if request.resource_names_subscribe.is_empty()
                && type_url::is_full_state(&request.type_url)
            {
                state.subscription.wildcard = true;
            }
        }
        for name in &request.resource_names_subscribe {
            if name == "*" {
                state.subscription.wildcard = true;
            } else {
                state.subscription.add(name, &request.type_url, compiled);
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == "*" {
                state.subscription.wildcard = false;
            } else {
                state.subscription.names.remove(name.as_str());
            }
            state.known.remove(name.as_str());
        }
        // Re-subscribing to a name makes us send it again even if we think the client has it.
        for name in &request.resource_names_subscribe {
            if !first {
                state.known.remove(name.as_str());
            }
        }
        let dirty = state.pending.is_empty() && std::mem::take(&mut state.dirty);
        if refused && !first && !resubscribed && !dirty {
            // What was refused goes out again with the next change, not in a loop now.
            return (None, feedback);
        }
        let type_url = request.type_url.clone();
        (self.respond(&type_url, compiled, first), feedback)
    }

    fn handle_update(
        &mut self,
        compiled: &Compiled,
        system_version: &str,
    ) -> Vec<DeltaDiscoveryResponse> {
        self.system_version = system_version.to_string();
        let types: Vec<String> = self.types.keys().cloned().collect();
        types
            .iter()
            .filter_map(|t| {
                let state = self.types.get_mut(t)?;
                if !state.pending.is_empty() {
                    state.dirty = true;
                    return None;
                }
                self.respond(t, compiled, false)
            })
            .collect()
    }

    fn respond(
        &mut self,
        type_url: &str,
        compiled: &Compiled,
        always: bool,
    ) -> Option<DeltaDiscoveryResponse> {
        let state = self.types.get_mut(type_url)?;
        let empty = BTreeMap::new();
        let current = compiled.of_type(type_url).unwrap_or(&empty);
        // Holding all of the previous output, only what changed since needs a look.
        let changed = state
            .synced
            .and_then(|since| compiled.changed_since(since, type_url));
        let subscription = &state.subscription;
        let candidates: Box<dyn Iterator<Item = (&String, &Arc<XdsResource>)>> = match changed {
            Some(names) => Box::new(
                names
                    .iter()
                    .filter(|name| subscription.wants(name))
                    .filter_map(|name| current.get_key_value(name)),
            ),
            None => Box::new(subscription.chosen(current)),
        };
        let mut resources = Vec::new();
        let mut changes = Vec::new();
        let mut bytes = 0;
        let mut truncated = false;
        for (name, resource) in candidates {
            if state.known.get(name.as_str()) != Some(&resource.version) {
                if bytes >= MAX_RESPONSE_BYTES {
                    // The rest goes out once the client has answered this one.
                    state.dirty = true;
                    truncated = true;
                    break;
                }
                bytes += resource.resource.value.len();
                let previous = state
                    .known
                    .insert(resource.name.clone(), resource.version.clone());
                changes.push((
                    resource.name.clone(),
                    Some(resource.version.clone()),
                    previous,
                ));
                resources.push(Resource {
                    name: name.clone(),
                    version: resource.version.to_string(),
                    resource: Some(resource.resource.clone()),
                    ..Default::default()
                });
            }
        }
        let gone = |name: &str| !current.contains_key(name) || !state.subscription.wants(name);
        let removed: Vec<String> = match changed {
            Some(names) => names
                .iter()
                .filter(|name| state.known.contains_key(name.as_str()) && gone(name))
                .cloned()
                .collect(),
            None => state
                .known
                .keys()
                .filter(|name| gone(name))
                .map(|name| name.to_string())
                .collect(),
        };
        for name in &removed {
            if let Some((name, held)) = state.known.remove_entry(name.as_str()) {
                changes.push((name, None, Some(held)));
            }
        }
        state.synced = (!truncated).then(|| compiled.id());
        if resources.is_empty() && removed.is_empty() && !always {
            return None;
        }
        let nonce = self.nonces.next();
        state.pending.insert(
            nonce.clone(),
            Sent {
                system_version: self.system_version.clone(),
                changes,
            },
        );
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

impl TypeState {
    /// Takes back what a refused response sent or removed: the client holds
    /// what it held before, unless a later response changed the resource.
    fn forget(&mut self, changes: Vec<Change>) {
        for (name, sent, previous) in changes {
            if self.known.get(&name) != sent.as_ref() {
                continue;
            }
            match previous {
                Some(version) => self.known.insert(name, version),
                None => self.known.remove(&name),
            };
        }
    }
}

impl AdsProtocol for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const NAME: &'static str = "delta";
    const SUPERSEDES: bool = false;

    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn names_count(request: &DeltaDiscoveryRequest) -> usize {
        request.resource_names_subscribe.len() + request.initial_resource_versions.len()
    }

    fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        compiled: &Compiled,
        system_version: &str,
    ) -> (Option<DeltaDiscoveryResponse>, Option<Feedback>) {
        self.handle_request(request, compiled, system_version)
    }

    fn on_update(
        &mut self,
        compiled: &Compiled,
        system_version: &str,
    ) -> Vec<DeltaDiscoveryResponse> {
        self.handle_update(compiled, system_version)
    }

    fn subscribed(&self) -> (usize, usize) {
        footprint(self.types.values().map(|t| &t.subscription))
    }

    fn sent(response: &Self::Response) -> (&str, &str, usize) {
        (
            &response.type_url,
            &response.system_version_info,
            response.resources.len() + response.removed_resources.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::protocol::fixtures::{compiled, compiled_at, large_mesh};
    use meridian_routes::type_url;

    fn request(type_url: &str, subscribe: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            resource_names_subscribe: subscribe.iter().map(|n| n.to_string()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_large_first_view_goes_out_in_answered_chunks() {
        let mesh = large_mesh();
        let all = mesh.of_type(type_url::ENDPOINT).expect("endpoints").len();
        let total: usize = mesh
            .of_type(type_url::ENDPOINT)
            .expect("endpoints")
            .values()
            .map(|r| r.resource.value.len())
            .sum();
        assert!(
            total > 3 * MAX_RESPONSE_BYTES,
            "the fixture is large: {total}"
        );
        let mut stream = DeltaStream::default();
        let mut request = request(type_url::ENDPOINT, &["*"], "");
        let mut received = 0;
        let mut responses = 0;
        loop {
            let (response, _) = stream.handle_request(request, &mesh, "1");
            let Some(response) = response else { break };
            let bytes: usize = response
                .resources
                .iter()
                .filter_map(|r| r.resource.as_ref())
                .map(|a| a.value.len())
                .sum();
            let largest = response
                .resources
                .iter()
                .filter_map(|r| r.resource.as_ref())
                .map(|a| a.value.len())
                .max()
                .unwrap_or(0);
            assert!(
                bytes <= MAX_RESPONSE_BYTES + largest,
                "{bytes} bytes in one response"
            );
            received += response.resources.len();
            responses += 1;
            assert!(
                stream.handle_update(&mesh, "1").is_empty(),
                "nothing more before the client answers"
            );
            request = super::tests::request(type_url::ENDPOINT, &[], &response.nonce);
        }
        assert_eq!(received, all, "every resource arrives, once");
        assert!(responses > 3, "in several responses: {responses}");
    }

    #[test]
    fn a_busy_client_gets_one_coalesced_update_when_it_answers() {
        let mut stream = DeltaStream::default();
        let (first, _) = stream.handle_request(
            request(type_url::LISTENER, &[], ""),
            &compiled(8080, 1),
            "1",
        );
        let first = first.expect("initial");
        // Two changes while the first response is unanswered: nothing queued.
        assert!(stream.handle_update(&compiled(8081, 2), "2").is_empty());
        assert!(stream.handle_update(&compiled(8082, 3), "3").is_empty());
        // The ACK brings the newest state, once: 8082 added, 8080 removed,
        // and nothing of 8081, which the client never saw.
        let (update, _) = stream.handle_request(
            request(type_url::LISTENER, &[], &first.nonce),
            &compiled(8082, 3),
            "3",
        );
        let update = update.expect("the coalesced update");
        let added: Vec<&str> = update.resources.iter().map(|r| r.name.as_str()).collect();
        assert!(added.contains(&"outbound_8082"), "{added:?}");
        assert!(!added.contains(&"outbound_8081"), "{added:?}");
        assert!(update
            .removed_resources
            .contains(&"outbound_8080".to_string()));
        let (again, _) = stream.handle_request(
            request(type_url::LISTENER, &[], &update.nonce),
            &compiled(8082, 3),
            "3",
        );
        assert!(again.is_none(), "nothing more to send");
    }

    /// What one stream is sent when the output after `v1` arrives, having
    /// answered v1's response with `answer_error` (an ACK when `None`).
    fn next_response(
        v1: &Compiled,
        v2: &Compiled,
        answer_error: Option<&str>,
    ) -> (Vec<String>, Vec<String>) {
        let mut stream = DeltaStream::default();
        let (first, _) = stream.handle_request(request(type_url::LISTENER, &[], ""), v1, "1");
        let mut answer = request(type_url::LISTENER, &[], &first.expect("first").nonce);
        answer.error_detail = answer_error.map(|message| envoy_types::pb::google::rpc::Status {
            message: message.into(),
            ..Default::default()
        });
        stream.handle_request(answer, v1, "1");
        let update = stream.handle_update(v2, "2");
        let response = update.first().expect("an update");
        let mut sent: Vec<String> = response.resources.iter().map(|r| r.name.clone()).collect();
        let mut removed = response.removed_resources.clone();
        sent.sort();
        removed.sort();
        (sent, removed)
    }

    #[test]
    fn a_stream_that_held_the_last_output_looks_only_at_what_changed_alike() {
        let v1 = compiled(8080, 1);
        let unmarked = compiled(8081, 2);
        let mut marked = unmarked.clone();
        marked.note_changes_since(&v1);
        assert!(marked.changed_since(v1.id(), type_url::LISTENER).is_some());
        for answer in [None, Some("refused")] {
            // The same response whether the stream diffs every resource or
            // only the names the output says changed; after a NACK it holds
            // no output's whole and diffs everything.
            assert_eq!(
                next_response(&v1, &marked, answer),
                next_response(&v1, &unmarked, answer),
                "answered {answer:?}"
            );
        }
        let (sent, removed) = next_response(&v1, &marked, None);
        assert!(sent.contains(&"outbound_8081".to_string()), "{sent:?}");
        assert!(
            removed.contains(&"outbound_8080".to_string()),
            "{removed:?}"
        );
    }

    #[test]
    fn sends_only_changes_and_names_removals() {
        let mut stream = DeltaStream::default();
        let (response, _) = stream.handle_request(
            request(type_url::LISTENER, &[], ""),
            &compiled(8080, 1),
            "1",
        );
        let response = response.expect("initial");
        let names: Vec<&str> = response.resources.iter().map(|r| r.name.as_str()).collect();
        assert!(
            names.contains(&"outbound_8080") && names.contains(&"checkout.shop:8080"),
            "{names:?}"
        );
        let (ack, feedback) = stream.handle_request(
            request(type_url::LISTENER, &[], &response.nonce),
            &compiled(8080, 1),
            "1",
        );
        assert!(ack.is_none());
        assert!(matches!(feedback, Some(Feedback::Ack { .. })));

        let update = stream.handle_update(&compiled(8081, 2), "2");
        assert_eq!(update.len(), 1);
        let changed: Vec<&str> = update[0]
            .resources
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert!(
            changed.contains(&"outbound_8081") && changed.contains(&"checkout.shop:8081"),
            "{changed:?}"
        );
        assert!(
            !changed.contains(&"cart.shop"),
            "unchanged resources are not resent"
        );
        assert!(update[0]
            .removed_resources
            .contains(&"outbound_8080".to_string()));
        assert!(update[0]
            .removed_resources
            .contains(&"checkout.shop:8080".to_string()));
    }

    #[test]
    fn a_nacked_resource_is_not_held_and_goes_out_with_the_next_change() {
        let names = ["checkout.shop", "cart.shop"];
        let mut stream = DeltaStream::default();
        let v1 = compiled_at(8080, 1, 1);
        let (first, _) = stream.handle_request(request(type_url::ROUTE, &names, ""), &v1, "1");
        let first = first.expect("initial");
        assert_eq!(first.resources.len(), 2);
        stream.handle_request(request(type_url::ROUTE, &[], &first.nonce), &v1, "1");

        let v2 = compiled_at(8080, 2, 1);
        let pushed = stream.handle_update(&v2, "2");
        assert_eq!(pushed[0].resources.len(), 1, "only checkout changed");
        let mut nack = request(type_url::ROUTE, &[], &pushed[0].nonce);
        nack.error_detail = Some(envoy_types::pb::google::rpc::Status {
            code: 3,
            message: "unknown cluster".into(),
            ..Default::default()
        });
        let (resent, feedback) = stream.handle_request(nack, &v2, "2");
        assert!(resent.is_none(), "no NACK loop");
        assert!(matches!(feedback, Some(Feedback::Nack { .. })));

        // Only cart changes next; checkout's refused routes go out again with it.
        let next = stream.handle_update(&compiled_at(8080, 2, 2), "3");
        let mut sent: Vec<&str> = next[0].resources.iter().map(|r| r.name.as_str()).collect();
        sent.sort();
        assert_eq!(sent, ["cart.shop", "checkout.shop"]);
    }

    #[test]
    fn reconnect_with_known_versions_gets_only_differences() {
        let v1 = compiled(8080, 1);
        let mut first = DeltaStream::default();
        let (response, _) = first.handle_request(request(type_url::CLUSTER, &[], ""), &v1, "1");
        let known = response
            .expect("initial")
            .resources
            .into_iter()
            .map(|r| (r.name, r.version))
            .collect();
        let mut second = DeltaStream::default();
        let mut reconnect = request(type_url::CLUSTER, &[], "");
        reconnect.initial_resource_versions = known;
        let (response, _) = second.handle_request(reconnect, &v1, "1");
        let response = response.expect("first request is always answered");
        assert!(response.resources.is_empty() && response.removed_resources.is_empty());
    }
}
