//! Incremental (delta) ADS, per stream and pure: only what changed is sent,
//! removals are named, and a client that reconnects with the versions it
//! holds (`initial_resource_versions`) gets only what differs.

use super::by_type::ByType;
use super::protocol::{footprint, AdsProtocol, Feedback, Nonces, Subscription, MAX_RESPONSE_BYTES};
use super::response::DeltaResponse;
use envoy_types::pb::envoy::{
    config::core::v3::Node, service::discovery::v3::DeltaDiscoveryRequest,
};
use meridian_routes::{type_url, Compiled, XdsResource};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Default)]
struct TypeState {
    subscription: Subscription,
    /// What the client holds (as far as we know): name to version, shared
    /// with the compiled resources. Empty while `whole` stands for it.
    known: BTreeMap<Arc<str>, Arc<str>>,
    /// The compiled output whose wanted resources the client holds exactly,
    /// when it does. It then stands for `known`: a stream keeps no list of
    /// its own (the output is shared with every stream that holds it), and
    /// the next output's diff looks only at the names that output says
    /// changed, not at every resource.
    whole: Option<Arc<Compiled>>,
    /// Responses not yet answered, with their nonces (usually none or one:
    /// changes wait for the answer, flow control) ...
    pending: Vec<(String, Sent)>,
    /// ... and this says changes waited, so the answer brings the newest state.
    dirty: bool,
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
    types: ByType<TypeState>,
    nonces: Nonces,
    system_version: String,
}

impl DeltaStream {
    fn handle_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        compiled: &Arc<Compiled>,
        system_version: &str,
    ) -> (Option<DeltaResponse>, Option<Feedback>) {
        self.system_version = system_version.to_string();
        let first = !self.types.contains(&request.type_url);
        let state = self.types.entry(&request.type_url);
        let mut feedback = None;
        if !request.response_nonce.is_empty() {
            if let Some(sent) = state.answered(&request.response_nonce) {
                feedback = Some(match &request.error_detail {
                    Some(error) => {
                        state.forget(&request.type_url, sent.changes);
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
            state.listed(&request.type_url);
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
        let subscribing = request.resource_names_subscribe.iter().map(String::as_str);
        if subscribing.clone().any(|name| name == "*") {
            state.subscription.wildcard = true;
        }
        state.subscription.add(
            subscribing.filter(|name| *name != "*"),
            &request.type_url,
            compiled,
        );
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
        compiled: &Arc<Compiled>,
        system_version: &str,
    ) -> Vec<DeltaResponse> {
        self.system_version = system_version.to_string();
        let types = self.types.type_urls();
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
        compiled: &Arc<Compiled>,
        always: bool,
    ) -> Option<DeltaResponse> {
        let state = self.types.get_mut(type_url)?;
        let empty = BTreeMap::new();
        let current = compiled.of_type(type_url).unwrap_or(&empty);
        // Holding all of the previous output, only what changed since needs a look.
        let changed = state
            .whole
            .as_ref()
            .and_then(|held| compiled.changed_since(held.id(), type_url));
        if changed.is_none() {
            state.listed(type_url);
        }
        let state = &*state;
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
            let held = state.held(type_url, name);
            if held.map(|(_, version)| version) != Some(&resource.version) {
                if bytes >= MAX_RESPONSE_BYTES {
                    // The rest goes out once the client has answered this one.
                    truncated = true;
                    break;
                }
                bytes += resource.resource.value.len();
                changes.push((
                    resource.name.clone(),
                    Some(resource.version.clone()),
                    held.map(|(_, version)| version.clone()),
                ));
                // Shared, not copied: encoded straight from the compiled resource.
                resources.push(resource.clone());
            }
        }
        // None of these was a candidate: gone from the output or no longer wanted.
        let gone = |name: &str| !current.contains_key(name) || !subscription.wants(name);
        let held_and_gone: Vec<(&Arc<str>, &Arc<str>)> = match changed {
            Some(names) => names
                .iter()
                .filter(|name| gone(name))
                .filter_map(|name| state.held(type_url, name))
                .collect(),
            None => state.known.iter().filter(|(name, _)| gone(name)).collect(),
        };
        let removed: Vec<String> = held_and_gone.iter().map(|(n, _)| n.to_string()).collect();
        changes.extend(
            held_and_gone
                .into_iter()
                .map(|(name, held)| (name.clone(), None, Some(held.clone()))),
        );
        let state = self.types.get_mut(type_url)?;
        if truncated {
            state.dirty = true;
            let known = state.listed(type_url);
            for (name, sent, _) in &changes {
                match sent {
                    Some(version) => known.insert(name.clone(), version.clone()),
                    None => known.remove(name),
                };
            }
        } else {
            // The client holds exactly this output's wanted resources once it takes these.
            state.known.clear();
            state.whole = Some(compiled.clone());
        }
        if resources.is_empty() && removed.is_empty() && !always {
            return None;
        }
        let nonce = self.nonces.next();
        state.pending.push((
            nonce.clone(),
            Sent {
                system_version: self.system_version.clone(),
                changes,
            },
        ));
        Some(DeltaResponse {
            system_version_info: self.system_version.clone(),
            resources,
            type_url: type_url.to_string(),
            removed_resources: removed,
            nonce,
        })
    }
}

impl TypeState {
    /// The response answered with `nonce`, no longer pending.
    fn answered(&mut self, nonce: &str) -> Option<Sent> {
        let i = self.pending.iter().position(|(n, _)| n == nonce)?;
        let (_, sent) = self.pending.remove(i);
        if self.pending.is_empty() {
            // Its room goes too: most streams wait for no answer most of the time.
            self.pending = Vec::new();
        }
        Some(sent)
    }

    /// The resource `name` as the client holds it: its shared name and version.
    fn held(&self, type_url: &str, name: &str) -> Option<(&Arc<str>, &Arc<str>)> {
        match &self.whole {
            Some(output) => output
                .get_shared(type_url, name)
                .filter(|_| self.subscription.wants(name))
                .map(|r| (&r.name, &r.version)),
            None => self.known.get_key_value(name),
        }
    }

    /// What the client holds as a list of its own, to change by hand: the
    /// output it held whole, if it did, is written out first.
    fn listed(&mut self, type_url: &str) -> &mut BTreeMap<Arc<str>, Arc<str>> {
        if let Some(output) = self.whole.take() {
            self.known = output
                .of_type(type_url)
                .into_iter()
                .flatten()
                .filter(|(name, _)| self.subscription.wants(name))
                .map(|(_, r)| (r.name.clone(), r.version.clone()))
                .collect();
        }
        &mut self.known
    }

    /// Takes back what a refused response sent or removed: the client holds
    /// what it held before, unless a later response changed the resource.
    fn forget(&mut self, type_url: &str, changes: Vec<Change>) {
        let known = self.listed(type_url);
        for (name, sent, previous) in changes {
            if known.get(&name) != sent.as_ref() {
                continue;
            }
            match previous {
                Some(version) => known.insert(name, version),
                None => known.remove(&name),
            };
        }
    }
}

impl AdsProtocol for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaResponse;
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
        compiled: &Arc<Compiled>,
        system_version: &str,
    ) -> (Option<DeltaResponse>, Option<Feedback>) {
        self.handle_request(request, compiled, system_version)
    }

    fn on_update(&mut self, compiled: &Arc<Compiled>, system_version: &str) -> Vec<DeltaResponse> {
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
    use crate::xds::protocol::fixtures::{compiled, compiled_at, large_mesh, stepped};
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
                .map(|r| &r.resource)
                .map(|a| a.value.len())
                .sum();
            let largest = response
                .resources
                .iter()
                .map(|r| &r.resource)
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
        let added: Vec<&str> = update.resources.iter().map(|r| &*r.name).collect();
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
        v1: &Arc<Compiled>,
        v2: &Arc<Compiled>,
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
        let mut sent: Vec<String> = response
            .resources
            .iter()
            .map(|r| r.name.to_string())
            .collect();
        let mut removed = response.removed_resources.clone();
        sent.sort();
        removed.sort();
        (sent, removed)
    }

    #[test]
    fn a_stream_that_held_the_last_output_looks_only_at_what_changed_alike() {
        let v1 = compiled(8080, 1);
        let unmarked = compiled(8081, 2);
        let mut marked = Compiled::clone(&unmarked);
        marked.note_changes_since(&v1);
        let marked = Arc::new(marked);
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
    fn a_stream_that_holds_an_output_whole_keeps_no_list_and_sends_what_a_full_look_sends() {
        const STEPS: u64 = 8;
        // The same outputs twice: once compared each with the one before
        // (the quick path), once not (every update a full look).
        let mut noted: Vec<Arc<Compiled>> = Vec::new();
        for step in 1..=STEPS {
            let mut output = stepped(step);
            if let Some(previous) = noted.last() {
                output.note_changes_since(previous);
            }
            noted.push(Arc::new(output));
        }
        let unmarked: Vec<Arc<Compiled>> = (1..=STEPS).map(|s| Arc::new(stepped(s))).collect();
        let run = |names: &[&str], outputs: &[Arc<Compiled>], expect_quick: bool| {
            let mut stream = DeltaStream::default();
            let mut seen = Vec::new();
            let (first, _) =
                stream.handle_request(request(type_url::ENDPOINT, names, ""), &outputs[0], "0");
            let mut last = first.expect("initial");
            for (step, output) in outputs.iter().enumerate() {
                // The client refuses step 3's update and takes the others.
                let mut answer = request(type_url::ENDPOINT, &[], &last.nonce);
                if step == 3 {
                    answer.error_detail = Some(envoy_types::pb::google::rpc::Status {
                        code: 3,
                        ..Default::default()
                    });
                }
                stream.handle_request(answer, output, "0");
                let state = &stream.types[type_url::ENDPOINT];
                // Held whole, no list of its own; after the refusal a list
                // of what the client kept.
                assert_eq!(state.whole.is_some(), step != 3, "step {step}");
                assert_eq!(state.known.is_empty(), step != 3, "step {step}");
                if let Some(next) = outputs.get(step + 1) {
                    let quick = state
                        .whole
                        .as_ref()
                        .is_some_and(|w| next.changed_since(w.id(), type_url::ENDPOINT).is_some());
                    assert_eq!(quick, expect_quick && step != 3, "step {step}");
                    if let Some(update) = stream.handle_update(next, "0").pop() {
                        let mut sent: Vec<(String, Vec<u8>)> = update
                            .resources
                            .iter()
                            .map(|r| (r.name.to_string(), r.resource.value.clone()))
                            .collect();
                        sent.sort();
                        let mut removed = update.removed_resources.clone();
                        removed.sort();
                        seen.push((step, sent, removed));
                        last = update;
                    }
                }
            }
            seen
        };
        // Some of the services and one that never is; every service there
        // is, s4 coming and going; everything.
        let some = ["nowhere.shop", "s0.shop", "s1.shop", "s2.shop", "s4.shop"];
        let every = ["s0.shop", "s1.shop", "s2.shop", "s3.shop", "s4.shop"];
        for names in [&some[..], &every, &["*"]] {
            let quick = run(names, &noted, true);
            assert!(quick.len() >= 5, "{names:?}: {} updates", quick.len());
            assert_eq!(quick, run(names, &unmarked, false), "{names:?}");
        }
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
        let names: Vec<&str> = response.resources.iter().map(|r| &*r.name).collect();
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
        let changed: Vec<&str> = update[0].resources.iter().map(|r| &*r.name).collect();
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
        let mut sent: Vec<&str> = next[0].resources.iter().map(|r| &*r.name).collect();
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
            .map(|r| (r.name.to_string(), r.version.to_string()))
            .collect();
        let mut second = DeltaStream::default();
        let mut reconnect = request(type_url::CLUSTER, &[], "");
        reconnect.initial_resource_versions = known;
        let (response, _) = second.handle_request(reconnect, &v1, "1");
        let response = response.expect("first request is always answered");
        assert!(response.resources.is_empty() && response.removed_resources.is_empty());
    }
}
