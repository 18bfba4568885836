//! State-of-the-world ADS, per stream and pure: requests and route updates
//! in, responses out. Follows the xDS protocol: version_info and nonce,
//! ACK/NACK, wildcard and named subscriptions, stale nonces ignored, no
//! resend of a NACKed version, no push on reconnect when nothing changed.

use super::by_type::ByType;
use super::protocol::{
    footprint, AdsProtocol, Feedback, Nonces, SortedWalk, Subscription, MAX_RESPONSE_BYTES,
};
use super::response::SotwResponse;
use super::sotw_request::SotwRequest;
use envoy_types::pb::envoy::config::core::v3::Node;
use meridian_routes::{set_version, type_url, Compiled, XdsResource};
use std::{collections::BTreeMap, sync::Arc};

#[derive(Debug, Default)]
struct TypeState {
    subscription: Subscription,
    /// The version and nonce of the last response sent.
    sent: Option<(String, String)>,
    /// A version the client refused; not sent again.
    nacked: Option<String>,
    /// What the last response changes in `held`, until the client answers.
    sent_resources: Option<Update>,
    /// What the client holds: the contents of the last response it ACKed.
    /// For RDS and EDS an update carries only what differs from it (the
    /// protocol lets these types omit the rest), so a resource in a NACKed
    /// response goes out again with the next one.
    held: Held,
    /// The last response is not answered yet: changes wait (flow control,
    /// at most one unanswered response per type) ...
    awaiting: bool,
    /// ... and this says one did, so the answer brings the newest state.
    dirty: bool,
    /// The compiled output this subscription's contents were last looked
    /// at in (sent, or found unchanged or refused): an output that changed
    /// nothing of this type since needs no look.
    evaluated: Option<u64>,
}

#[derive(Debug, Default)]
pub struct SotwStream {
    types: ByType<TypeState>,
    nonces: Nonces,
}

impl SotwStream {
    fn handle_request(
        &mut self,
        request: SotwRequest,
        compiled: &Arc<Compiled>,
    ) -> (Option<SotwResponse>, Option<Feedback>) {
        let first = !self.types.contains(&request.type_url);
        let state = self.types.entry(&request.type_url);
        let mut feedback = None;
        if !request.response_nonce.is_empty() {
            match &state.sent {
                Some((version, nonce)) if *nonce == request.response_nonce => {
                    state.awaiting = false;
                    feedback = Some(match &request.error_detail {
                        Some(error) => {
                            state.nacked = Some(version.clone());
                            Feedback::Nack {
                                type_url: request.type_url.clone(),
                                version: version.clone(),
                                error: error.message.clone(),
                            }
                        }
                        None => {
                            if let Some(update) = state.sent_resources.take() {
                                state.take(update, &request.type_url);
                            }
                            Feedback::Ack {
                                type_url: request.type_url.clone(),
                                version: request.version_info.clone(),
                            }
                        }
                    });
                }
                // A response to an older response of ours: superseded, ignore it.
                _ => return (None, None),
            }
        }
        // An answer usually repeats the names: compared in place, and a new
        // subscription built only when they differ.
        let names = request.resource_names.iter();
        let changed = !state
            .subscription
            .is_asked_by(names.clone(), &request.type_url)
            && {
                let asked = Subscription::asked_by(names, &request.type_url, compiled);
                let differs = asked != state.subscription;
                state.subscription = asked;
                differs
            };
        if changed {
            state.evaluated = None;
        }
        if first {
            // A client that reconnects already holding the current version needs nothing.
            let (version, _, all) = contents(&request.type_url, &state.subscription, compiled);
            if !request.version_info.is_empty() && request.version_info == version {
                let nonce = self.nonces.next();
                state.sent = Some((version.clone(), nonce));
                state.held = Held::Whole(Exact {
                    output: compiled.clone(),
                    all,
                });
                return (
                    None,
                    Some(Feedback::Ack {
                        type_url: request.type_url,
                        version,
                    }),
                );
            }
        }
        if first || changed {
            let type_url = request.type_url.clone();
            return (self.respond(&type_url, compiled, true), feedback);
        }
        if std::mem::take(&mut state.dirty) {
            // Changes came while the client was busy: one coalesced update.
            let type_url = request.type_url.clone();
            return (self.respond(&type_url, compiled, false), feedback);
        }
        (None, feedback)
    }

    /// Responses for every subscribed type whose contents changed and whose
    /// last response the client has answered; the others wait for it.
    fn handle_update(&mut self, compiled: &Arc<Compiled>) -> Vec<SotwResponse> {
        let types = self.types.type_urls();
        types
            .iter()
            .filter_map(|t| {
                let state = self.types.get_mut(t)?;
                if state.awaiting {
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
        force: bool,
    ) -> Option<SotwResponse> {
        let state = self.types.get_mut(type_url)?;
        let untouched = state
            .evaluated
            .and_then(|since| compiled.changed_since(since, type_url))
            .is_some_and(|names| names.is_empty());
        state.evaluated = Some(compiled.id());
        if !force && untouched {
            // Nothing of this type changed since the last look: the same answer, none.
            return None;
        }
        // Listeners and clusters go out whole; the other types' updates
        // carry only what differs from what the client holds, in parts of
        // about MAX_RESPONSE_BYTES, the next once the client answered.
        let in_parts = !type_url::is_full_state(type_url);
        let quick = match in_parts && !force {
            true => changes_only(state, compiled, type_url),
            false => None,
        };
        let (sending, update, version, complete, all) = match quick {
            Some((_, update, _)) if update.sent.is_empty() && update.dropped.is_empty() => {
                // The client holds the current contents already.
                return None;
            }
            Some((sending, update, all)) => {
                let version = match all {
                    true => compiled.version_of_all(type_url),
                    false => update.version_after(state.all_held(type_url)),
                };
                (sending, update, version, true, all)
            }
            None => {
                let (version, chosen, all) = contents(type_url, &state.subscription, compiled);
                let unchanged = state.sent.as_ref().is_some_and(|(v, _)| *v == version);
                if !force && unchanged {
                    return None;
                }
                if force && in_parts {
                    state.held = Held::default();
                }
                let mut sending = Vec::new();
                let mut bytes = 0;
                let mut complete = true;
                for resource in chosen.iter().filter(|r| {
                    !in_parts || state.held(type_url, &r.name).map(|(_, v)| v) != Some(&r.version)
                }) {
                    if in_parts && bytes >= MAX_RESPONSE_BYTES {
                        complete = false;
                        break;
                    }
                    bytes += resource.resource.value.len();
                    sending.push(*resource);
                }
                // What the response changes in what the client holds,
                // and the version of what it then holds.
                let update = if in_parts {
                    Update::new(state.all_held(type_url).map(|(n, _)| n), &chosen, &sending)
                } else {
                    Update::default()
                };
                let version = if complete {
                    version
                } else {
                    update.version_after(state.all_held(type_url))
                };
                (sending, update, version, complete, all)
            }
        };
        let unchanged = state.sent.as_ref().is_some_and(|(v, _)| *v == version);
        if !force && (unchanged || state.nacked.as_deref() == Some(version.as_str())) {
            return None;
        }
        if !complete {
            // The rest goes out when the client answers, after a full look.
            state.dirty = true;
            state.evaluated = None;
        }
        state.sent_resources = Some(Update {
            makes_exact: complete.then(|| Exact {
                output: compiled.clone(),
                all,
            }),
            ..update
        });
        let nonce = self.nonces.next();
        state.sent = Some((version.clone(), nonce.clone()));
        state.awaiting = true;
        Some(SotwResponse {
            version_info: version,
            // Shared, not copied: encoded straight from the compiled resources.
            resources: sending.into_iter().cloned().collect(),
            type_url: type_url.to_string(),
            nonce,
        })
    }
}

impl AdsProtocol for SotwStream {
    type Request = SotwRequest;
    type Response = SotwResponse;
    const NAME: &'static str = "sotw";
    const SUPERSEDES: bool = true;

    fn node(request: &SotwRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn names_count(request: &SotwRequest) -> usize {
        request.resource_names.len()
    }

    fn on_request(
        &mut self,
        request: SotwRequest,
        compiled: &Arc<Compiled>,
        _system_version: &str,
    ) -> (Option<SotwResponse>, Option<Feedback>) {
        self.handle_request(request, compiled)
    }

    fn on_update(&mut self, compiled: &Arc<Compiled>, _system_version: &str) -> Vec<SotwResponse> {
        self.handle_update(compiled)
    }

    fn subscribed(&self) -> (usize, usize) {
        footprint(self.types.values().map(|t| &t.subscription))
    }

    fn sent(response: &Self::Response) -> (&str, &str, usize) {
        (
            &response.type_url,
            &response.version_info,
            response.resources.len(),
        )
    }
}

/// Per resource, the version a client holds: names and versions shared
/// with the compiled resources. Kept only for the types whose updates carry
/// what differs (RDS, EDS); listeners and clusters always go out whole.
type Versions = BTreeMap<Arc<str>, Arc<str>>;

/// What a client holds of one type's subscription.
#[derive(Debug)]
enum Held {
    /// Exactly what a compiled output has for the subscription. The output
    /// (shared with every stream that holds it) stands for the list, so a
    /// stream keeps none of its own; and an update from an output compared
    /// with that one looks only at the names that changed since.
    Whole(Exact),
    /// A list of its own: after a part of a larger update, or a first view
    /// (empty until the client takes its first part).
    Listed(Versions),
}

impl Default for Held {
    fn default() -> Self {
        Held::Listed(Versions::new())
    }
}

impl TypeState {
    /// The resource `name` as the client holds it: its shared name and version.
    fn held(&self, type_url: &str, name: &str) -> Option<(&Arc<str>, &Arc<str>)> {
        match &self.held {
            Held::Whole(exact) => exact
                .output
                .get_shared(type_url, name)
                .filter(|_| self.subscription.wants(name))
                .map(|r| (&r.name, &r.version)),
            Held::Listed(list) => list.get_key_value(name),
        }
    }

    /// Everything the client holds, in name order.
    fn all_held<'s>(
        &'s self,
        type_url: &str,
    ) -> Box<dyn Iterator<Item = (&'s Arc<str>, &'s Arc<str>)> + 's> {
        match &self.held {
            Held::Whole(exact) => Box::new(exact.contents(type_url, &self.subscription)),
            Held::Listed(list) => Box::new(list.iter()),
        }
    }

    /// The client took `update`: it holds an output whole, or the list
    /// (written out from the output it held, if it did) changes by hand.
    fn take(&mut self, update: Update, type_url: &str) {
        if let Some(exact) = update.makes_exact {
            self.held = Held::Whole(exact);
            return;
        }
        let mut list = match std::mem::take(&mut self.held) {
            Held::Listed(list) => list,
            Held::Whole(exact) => exact
                .contents(type_url, &self.subscription)
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect(),
        };
        for name in &update.dropped {
            list.remove(name);
        }
        list.extend(update.sent);
        self.held = Held::Listed(list);
    }
}

/// What one response changes in what a client holds.
#[derive(Debug, Default, Clone)]
struct Update {
    /// The resources it carries, with their versions, in name order.
    sent: Vec<(Arc<str>, Arc<str>)>,
    /// The resources held before that the subscription no longer gets.
    dropped: Vec<Arc<str>>,
    /// The compiled output whose contents the client holds exactly once it
    /// takes this (None for a part of a larger update).
    makes_exact: Option<Exact>,
}

/// A compiled output whose contents, for a type's subscription, a client
/// holds exactly.
#[derive(Debug, Clone)]
struct Exact {
    output: Arc<Compiled>,
    /// The subscription wants every resource of the type in it: its
    /// version is then the output's version of them all, worked out once
    /// for every stream.
    all: bool,
}

impl Exact {
    /// The output's resources of `type_url` that `subscription` wants, in
    /// name order: what the client holds.
    fn contents<'a>(
        &'a self,
        type_url: &str,
        subscription: &'a Subscription,
    ) -> impl Iterator<Item = (&'a Arc<str>, &'a Arc<str>)> + 'a {
        self.output
            .of_type(type_url)
            .into_iter()
            .flatten()
            .filter(|(name, _)| subscription.wants(name))
            .map(|(_, r)| (&r.name, &r.version))
    }
}

/// For a client holding exactly an earlier output's contents, which the
/// compiled output was compared with: the resources to send and what they
/// change, from the names that changed alone, not a walk of every name.
/// Also whether the subscription still wants every resource of the type.
/// None when the client's holdings are not known that way, or the changes
/// are too large for one response (the full look sends them in parts).
fn changes_only<'a>(
    state: &TypeState,
    compiled: &'a Compiled,
    type_url: &str,
) -> Option<(Vec<&'a Arc<XdsResource>>, Update, bool)> {
    let Held::Whole(held_of) = &state.held else {
        return None;
    };
    let changed = compiled.changed_since(held_of.output.id(), type_url)?;
    let all = compiled.of_type(type_url);
    let present = |name: &str| all.is_some_and(|all| all.contains_key(name));
    // Wanting all before, it still does unless a name now present is not wanted.
    let wants_all = held_of.all
        && changed
            .iter()
            .all(|n| !present(n) || state.subscription.wants(n));
    let mut sending = Vec::new();
    let mut dropped = Vec::new();
    let mut bytes = 0;
    for name in changed.iter().filter(|n| state.subscription.wants(n)) {
        match all.and_then(|all| all.get(name)) {
            Some(resource) => {
                if state.held(type_url, &resource.name).map(|(_, v)| v) != Some(&resource.version) {
                    bytes += resource.resource.value.len();
                    sending.push(resource);
                }
            }
            None => dropped.extend(state.held(type_url, name).map(|(n, _)| n.clone())),
        }
    }
    if bytes > MAX_RESPONSE_BYTES {
        return None;
    }
    let update = Update::of(&sending, dropped);
    Some((sending, update, wants_all))
}

impl Update {
    /// From holding `held` (names in order) to `chosen` (in name order) by
    /// sending `sending`.
    fn new<'h>(
        held: impl Iterator<Item = &'h Arc<str>>,
        chosen: &[&Arc<XdsResource>],
        sending: &[&Arc<XdsResource>],
    ) -> Update {
        let mut still = SortedWalk::new(chosen.iter().map(|r| &*r.name));
        let dropped = held.filter(|name| !still.contains(name)).cloned().collect();
        Update::of(sending, dropped)
    }

    /// Sending `sending` (in name order) and dropping `dropped`.
    fn of(sending: &[&Arc<XdsResource>], dropped: Vec<Arc<str>>) -> Update {
        Update {
            sent: sending
                .iter()
                .map(|r| (r.name.clone(), r.version.clone()))
                .collect(),
            dropped,
            makes_exact: None,
        }
    }

    /// The version of what a client holding `held` (in name order) holds
    /// after taking this: both walked in name order, nothing copied.
    fn version_after<'h>(
        &self,
        held: impl Iterator<Item = (&'h Arc<str>, &'h Arc<str>)>,
    ) -> String {
        let mut dropped = SortedWalk::new(self.dropped.iter().map(|n| &**n));
        let kept = held
            .filter(|(name, _)| !dropped.contains(name))
            .map(|(n, v)| (&**n, &**v));
        let sent = self.sent.iter().map(|(n, v)| (&**n, &**v));
        set_version(merged(kept, sent))
    }
}

/// Two name-ordered sequences of (name, version) as one, the second's
/// version taking the place of the first's for a name in both.
fn merged<'a>(
    first: impl Iterator<Item = (&'a str, &'a str)>,
    second: impl Iterator<Item = (&'a str, &'a str)>,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    let (mut first, mut second) = (first.peekable(), second.peekable());
    std::iter::from_fn(move || match (first.peek(), second.peek()) {
        (Some(a), Some(b)) if a.0 < b.0 => first.next(),
        (Some(a), Some(b)) if a.0 == b.0 => {
            first.next();
            second.next()
        }
        (_, Some(_)) => second.next(),
        (Some(_), None) => first.next(),
        (None, None) => None,
    })
}

/// The version and resources a subscription gets, and whether that is
/// every resource of the type. Unknown types get nothing: the server has no
/// resources of that type.
fn contents<'a>(
    type_url: &str,
    subscription: &Subscription,
    compiled: &'a Compiled,
) -> (String, Vec<&'a Arc<XdsResource>>, bool) {
    let Some(all) = compiled.of_type(type_url) else {
        return (set_version(std::iter::empty()), Vec::new(), true);
    };
    let chosen: Vec<&Arc<XdsResource>> = subscription.chosen(all).map(|(_, r)| r).collect();
    let every = chosen.len() == all.len();
    let version = match every {
        true => compiled.version_of_all(type_url),
        false => set_version(chosen.iter().map(|r| (&*r.name, &*r.version))),
    };
    (version, chosen, every)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::protocol::fixtures::{
        compiled, compiled_at, large_mesh, large_mesh_of, stepped,
    };
    use envoy_types::pb::google::rpc::Status as RpcStatus;

    fn request(type_url: &str, names: &[&str], version: &str, nonce: &str) -> SotwRequest {
        SotwRequest {
            type_url: type_url.into(),
            resource_names: names.iter().collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_busy_client_gets_one_coalesced_update_when_it_answers() {
        let mut stream = SotwStream::default();
        let (first, _) =
            stream.handle_request(request(type_url::CLUSTER, &[], "", ""), &compiled(8080, 1));
        let first = first.expect("initial response");
        // Two changes while the first response is unanswered: nothing queued.
        assert!(stream.handle_update(&compiled(8081, 2)).is_empty());
        assert!(stream.handle_update(&compiled(8082, 3)).is_empty());
        // The ACK brings the newest state, once.
        let latest = compiled(8082, 3);
        let (update, feedback) = stream.handle_request(
            request(type_url::CLUSTER, &[], &first.version_info, &first.nonce),
            &latest,
        );
        assert!(matches!(feedback, Some(Feedback::Ack { .. })));
        let update = update.expect("the coalesced update");
        let (expected, _, _) = contents(type_url::CLUSTER, &Subscription::wildcard(), &latest);
        assert_eq!(update.version_info, expected);
        let (again, _) = stream.handle_request(
            request(type_url::CLUSTER, &[], &update.version_info, &update.nonce),
            &latest,
        );
        assert!(again.is_none(), "nothing more to send");
    }

    #[test]
    fn an_output_that_leaves_a_type_untouched_needs_no_look_and_changes_nothing() {
        // cart changes (its revision), checkout's cluster does not.
        let v1 = compiled_at(8080, 1, 1);
        let mut v2 = compiled_at(8080, 1, 2);
        Arc::make_mut(&mut v2).note_changes_since(&v1);
        let mut v3 = compiled_at(8081, 3, 2);
        Arc::make_mut(&mut v3).note_changes_since(&v2);
        let run = |v2: &Arc<Compiled>, v3: &Arc<Compiled>| {
            let mut stream = SotwStream::default();
            let (first, _) =
                stream.handle_request(request(type_url::ENDPOINT, &["checkout.shop"], "", ""), &v1);
            let first = first.expect("initial response");
            stream.handle_request(
                request(
                    type_url::ENDPOINT,
                    &["checkout.shop"],
                    &first.version_info,
                    &first.nonce,
                ),
                &v1,
            );
            let untouched = stream.handle_update(v2).len();
            let changed: Vec<String> = stream
                .handle_update(v3)
                .iter()
                .map(|r| r.version_info.clone())
                .collect();
            (untouched, changed)
        };
        let unmarked = (compiled_at(8080, 1, 2), compiled_at(8081, 3, 2));
        assert_eq!(run(&v2, &v3), run(&unmarked.0, &unmarked.1));
        assert_eq!(run(&v2, &v3).0, 0, "cart's change is not checkout's");
    }

    #[test]
    fn an_update_from_the_changed_names_alone_is_the_update_from_a_full_look() {
        const STEPS: u64 = 8;
        // The same outputs twice: once compared each with the one before
        // (the quick path), once not (every update a full look).
        let mut noted: Vec<Compiled> = Vec::new();
        for step in 1..=STEPS {
            let mut output = stepped(step);
            if let Some(previous) = noted.last() {
                output.note_changes_since(previous);
            }
            noted.push(output);
        }
        let noted: Vec<Arc<Compiled>> = noted.into_iter().map(Arc::new).collect();
        let unmarked: Vec<Arc<Compiled>> = (1..=STEPS).map(|s| Arc::new(stepped(s))).collect();
        let run = |names: &[&str], outputs: &[Arc<Compiled>], expect_quick: bool| {
            let mut stream = SotwStream::default();
            let mut seen = Vec::new();
            let (first, _) =
                stream.handle_request(request(type_url::ENDPOINT, names, "", ""), &outputs[0]);
            let mut last = first.expect("initial");
            let mut held_version = String::new();
            for (step, output) in outputs.iter().enumerate() {
                // The client refuses step 3's update and takes the others.
                let mut answer = request(type_url::ENDPOINT, names, &held_version, &last.nonce);
                if step == 3 {
                    answer.error_detail = Some(RpcStatus {
                        code: 3,
                        ..Default::default()
                    });
                } else {
                    held_version.clone_from(&last.version_info);
                    answer.version_info.clone_from(&held_version);
                }
                stream.handle_request(answer, output);
                if let Some(next) = outputs.get(step + 1) {
                    let state = &stream.types[type_url::ENDPOINT];
                    // After the refusal the client holds step 2's contents,
                    // which step 4 was not compared with: a full look.
                    assert_eq!(
                        changes_only(state, next, type_url::ENDPOINT).is_some(),
                        expect_quick && step != 3,
                        "step {step}"
                    );
                    if let Some(update) = stream.handle_update(next).pop() {
                        let mut sent: Vec<Vec<u8>> = update
                            .resources
                            .iter()
                            .map(|r| r.resource.value.clone())
                            .collect();
                        sent.sort();
                        seen.push((step, update.version_info.clone(), sent));
                        last = update;
                    }
                }
            }
            seen
        };
        // Some of the services and one that never is; every service there
        // is, s4 coming and going; all but s4, wanted all at odd steps.
        let some = ["nowhere.shop", "s0.shop", "s1.shop", "s2.shop", "s4.shop"];
        let every = ["s0.shop", "s1.shop", "s2.shop", "s3.shop", "s4.shop"];
        let but_s4 = ["s0.shop", "s1.shop", "s2.shop", "s3.shop"];
        for names in [&some[..], &every, &but_s4] {
            let quick = run(names, &noted, true);
            assert!(quick.len() >= 5, "{names:?}: {} updates", quick.len());
            assert_eq!(quick, run(names, &unmarked, false), "{names:?}");
        }
    }

    #[test]
    fn wildcard_ack_update_and_nack() {
        let v1 = compiled(8080, 1);
        let mut stream = SotwStream::default();
        let (response, _) = stream.handle_request(request(type_url::CLUSTER, &[], "", ""), &v1);
        let response = response.expect("initial response");
        assert_eq!(
            response.resources.len(),
            2,
            "wildcard CDS gets every cluster"
        );

        let (again, feedback) = stream.handle_request(
            request(
                type_url::CLUSTER,
                &[],
                &response.version_info,
                &response.nonce,
            ),
            &v1,
        );
        assert!(again.is_none(), "an ACK needs no response");
        assert!(matches!(feedback, Some(Feedback::Ack { .. })));
        assert!(
            stream.handle_update(&v1).is_empty(),
            "nothing changed, nothing sent"
        );

        let v2 = compiled(8081, 2);
        let pushed = stream.handle_update(&v2);
        assert_eq!(pushed.len(), 1);
        let mut nack = request(
            type_url::CLUSTER,
            &[],
            &response.version_info,
            &pushed[0].nonce,
        );
        nack.error_detail = Some(RpcStatus {
            code: 3,
            message: "bad cluster".into(),
            ..Default::default()
        });
        let (resent, feedback) = stream.handle_request(nack, &v2);
        assert!(resent.is_none(), "a NACKed version is not sent again");
        assert!(
            matches!(feedback, Some(Feedback::Nack { ref error, .. }) if error == "bad cluster")
        );
        assert!(stream.handle_update(&v2).is_empty(), "no NACK loop");
        assert_eq!(
            stream.handle_update(&compiled(8082, 3)).len(),
            1,
            "a newer version goes out"
        );
    }

    #[test]
    fn an_acked_update_leaves_the_client_holding_what_it_was_sent_and_nothing_dropped() {
        let resource = |name: &str, version: &str| {
            Arc::new(XdsResource {
                name: name.into(),
                version: version.into(),
                resource: Default::default(),
            })
        };
        let (a2, c1, e1) = (resource("a", "2"), resource("c", "1"), resource("e", "1"));
        let held: Versions = [("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")]
            .iter()
            .map(|(n, v)| (Arc::from(*n), Arc::from(*v)))
            .collect();
        let mut state = TypeState {
            held: Held::Listed(held),
            ..Default::default()
        };
        let eds = type_url::ENDPOINT;
        // b and d are no longer wanted, a changed, c did not, e is new.
        let update = Update::new(
            state.all_held(eds).map(|(n, _)| n),
            &[&a2, &c1, &e1],
            &[&a2, &e1],
        );
        state.take(update, eds);
        let now: Vec<(&str, &str)> = state.all_held(eds).map(|(n, v)| (&**n, &**v)).collect();
        assert_eq!(now, [("a", "2"), ("c", "1"), ("e", "1")]);
    }

    #[test]
    fn a_client_holding_an_output_whole_takes_a_large_change_as_one_holding_the_list() {
        let eds = type_url::ENDPOINT;
        // Half the services, then all: the first half unchanged.
        let (half, mesh) = (large_mesh_of(10), large_mesh());
        let (full_version, _, _) = contents(eds, &Subscription::wildcard(), &mesh);
        // The same steps twice: holding the first output whole, and holding
        // it written out as a list.
        let run = |listed: bool| {
            let mut stream = SotwStream::default();
            let mut asking = request(eds, &["*"], "", "");
            while let Some(part) = stream.handle_request(asking.clone(), &half).0 {
                asking.version_info = part.version_info;
                asking.response_nonce = part.nonce;
            }
            let state = stream.types.get_mut(eds).expect("subscribed");
            let Held::Whole(exact) = &state.held else {
                panic!("an ACKed complete response leaves the output held whole");
            };
            if listed {
                let list = exact.contents(eds, &state.subscription);
                state.held = Held::Listed(list.map(|(n, v)| (n.clone(), v.clone())).collect());
            }
            // Too large a change for one response: it goes out in parts.
            let mut next = stream.handle_update(&mesh).pop();
            let mut seen = Vec::new();
            while let Some(response) = next {
                let mut sent: Vec<Vec<u8>> = response
                    .resources
                    .iter()
                    .map(|r| r.resource.value.clone())
                    .collect();
                sent.sort();
                seen.push((response.version_info.clone(), sent));
                asking.version_info = response.version_info;
                asking.response_nonce = response.nonce;
                next = stream.handle_request(asking.clone(), &mesh).0;
            }
            assert!(
                matches!(stream.types[eds].held, Held::Whole(_)),
                "the last part leaves the new output held whole"
            );
            seen
        };
        let whole = run(false);
        assert!(whole.len() > 1, "in parts: {}", whole.len());
        assert_eq!(whole.last().map(|(v, _)| v), Some(&full_version));
        assert_eq!(whole, run(true));
    }

    #[test]
    fn a_large_first_view_goes_out_in_answered_parts_and_ends_on_the_full_version() {
        let mesh = large_mesh();
        let all = mesh.of_type(type_url::ENDPOINT).expect("endpoints");
        let total: usize = all.values().map(|r| r.resource.value.len()).sum();
        assert!(
            total > 3 * MAX_RESPONSE_BYTES,
            "the fixture is large: {total}"
        );
        let largest = all
            .values()
            .map(|r| r.resource.value.len())
            .max()
            .unwrap_or(0);
        let (full_version, _, _) = contents(type_url::ENDPOINT, &Subscription::wildcard(), &mesh);
        let mut stream = SotwStream::default();
        let mut asking = request(type_url::ENDPOINT, &["*"], "", "");
        let mut received = std::collections::BTreeSet::new();
        let mut versions = Vec::new();
        loop {
            let (response, _) = stream.handle_request(asking.clone(), &mesh);
            let Some(response) = response else { break };
            let bytes: usize = response
                .resources
                .iter()
                .map(|r| r.resource.value.len())
                .sum();
            assert!(
                bytes <= MAX_RESPONSE_BYTES + largest,
                "{bytes} bytes in one response"
            );
            assert!(
                stream.handle_update(&mesh).is_empty(),
                "nothing more before the client answers"
            );
            received.extend(response.resources.iter().map(|r| r.resource.value.clone()));
            versions.push(response.version_info.clone());
            asking.version_info = response.version_info;
            asking.response_nonce = response.nonce;
        }
        assert_eq!(received.len(), all.len(), "every resource arrives, once");
        assert!(versions.len() > 3, "in several responses: {versions:?}");
        assert_eq!(
            versions.last(),
            Some(&full_version),
            "the last part carries the full version"
        );
        assert!(
            !versions[..versions.len() - 1].contains(&full_version),
            "a part is not the whole: a client that reconnects after one gets the rest"
        );
        // A client that reconnects after the first part gets everything again.
        let reconnect = request(type_url::ENDPOINT, &["*"], &versions[0], "");
        let (response, _) = SotwStream::default().handle_request(reconnect, &mesh);
        assert!(response.is_some_and(|r| !r.resources.is_empty()));
    }

    #[test]
    fn a_resource_in_a_nacked_update_goes_out_again_with_the_next() {
        let names = ["checkout.shop", "cart.shop"];
        let mut stream = SotwStream::default();
        let v1 = compiled_at(8080, 1, 1);
        let (first, _) = stream.handle_request(request(type_url::ROUTE, &names, "", ""), &v1);
        let first = first.expect("initial");
        stream.handle_request(
            request(type_url::ROUTE, &names, &first.version_info, &first.nonce),
            &v1,
        );
        // checkout's routes change, and the client refuses them.
        let pushed = stream.handle_update(&compiled_at(8080, 2, 1));
        assert_eq!(pushed[0].resources.len(), 1, "only checkout changed");
        let mut nack = request(
            type_url::ROUTE,
            &names,
            &first.version_info,
            &pushed[0].nonce,
        );
        nack.error_detail = Some(RpcStatus {
            code: 3,
            message: "unknown cluster".into(),
            ..Default::default()
        });
        stream.handle_request(nack, &compiled_at(8080, 2, 1));
        // Then only cart changes: the client still holds checkout's old
        // routes, so checkout's new ones go out too.
        let next = stream.handle_update(&compiled_at(8080, 2, 2));
        assert_eq!(next.len(), 1);
        assert_eq!(
            next[0].resources.len(),
            2,
            "checkout (refused before) and cart"
        );
    }

    #[test]
    fn named_subscriptions_and_stale_nonces() {
        let v1 = compiled(8080, 1);
        let mut stream = SotwStream::default();
        let (response, _) =
            stream.handle_request(request(type_url::ENDPOINT, &["checkout.shop"], "", ""), &v1);
        let response = response.expect("response");
        assert_eq!(response.resources.len(), 1);
        let (stale, feedback) =
            stream.handle_request(request(type_url::ENDPOINT, &["cart.shop"], "", "999"), &v1);
        assert!(
            stale.is_none() && feedback.is_none(),
            "a stale nonce is ignored"
        );
        let (more, _) = stream.handle_request(
            request(
                type_url::ENDPOINT,
                &["checkout.shop", "cart.shop"],
                &response.version_info,
                &response.nonce,
            ),
            &v1,
        );
        let more = more.expect("new subscription answered");
        assert_eq!(more.resources.len(), 2);

        // An update carries only the load assignment that changed.
        stream.handle_request(
            request(
                type_url::ENDPOINT,
                &["checkout.shop", "cart.shop"],
                &more.version_info,
                &more.nonce,
            ),
            &v1,
        );
        let update = stream.handle_update(&compiled(8081, 2));
        assert_eq!(update.len(), 1);
        assert_eq!(
            update[0].resources.len(),
            1,
            "only checkout's endpoints changed"
        );
    }

    #[test]
    fn reconnect_with_current_version_gets_no_push() {
        let v1 = compiled(8080, 1);
        let mut first = SotwStream::default();
        let (response, _) = first.handle_request(request(type_url::LISTENER, &[], "", ""), &v1);
        let version = response.expect("response").version_info;
        let mut second = SotwStream::default();
        let (response, feedback) =
            second.handle_request(request(type_url::LISTENER, &[], &version, ""), &v1);
        assert!(
            response.is_none(),
            "nothing to send to a client that is current"
        );
        assert!(matches!(feedback, Some(Feedback::Ack { .. })));
        assert_eq!(second.handle_update(&compiled(8081, 2)).len(), 1);
    }

    #[test]
    fn unknown_types_get_an_empty_answer() {
        let mut stream = SotwStream::default();
        let (response, _) = stream.handle_request(
            request("type.googleapis.com/no.Such", &["x"], "", ""),
            &compiled(8080, 1),
        );
        assert!(response.expect("answered").resources.is_empty());
    }
}
