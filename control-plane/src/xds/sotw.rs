//! State-of-the-world ADS, per stream and pure: requests and route updates
//! in, responses out. Follows the xDS protocol: version_info and nonce,
//! ACK/NACK, wildcard and named subscriptions, stale nonces ignored, no
//! resend of a NACKed version, no push on reconnect when nothing changed.

use super::protocol::{Feedback, Nonces, Subscription};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use meridian_routes::{set_version, type_url, Compiled};
use std::collections::BTreeMap;

#[derive(Debug, Default)]
struct TypeState {
    subscription: Subscription,
    /// The version and nonce of the last response sent.
    sent: Option<(String, String)>,
    /// A version the client refused; not sent again.
    nacked: Option<String>,
}

#[derive(Debug, Default)]
pub struct SotwStream {
    types: BTreeMap<String, TypeState>,
    nonces: Nonces,
}

impl SotwStream {
    pub fn on_request(&mut self, request: DiscoveryRequest, compiled: &Compiled) -> (Option<DiscoveryResponse>, Option<Feedback>) {
        let first = !self.types.contains_key(&request.type_url);
        let state = self.types.entry(request.type_url.clone()).or_default();
        let mut feedback = None;
        if !request.response_nonce.is_empty() {
            match &state.sent {
                Some((version, nonce)) if *nonce == request.response_nonce => {
                    feedback = Some(match &request.error_detail {
                        Some(error) => {
                            state.nacked = Some(version.clone());
                            Feedback::Nack {
                                type_url: request.type_url.clone(),
                                version: version.clone(),
                                error: error.message.clone(),
                            }
                        }
                        None => Feedback::Ack {
                            type_url: request.type_url.clone(),
                            version: request.version_info.clone(),
                        },
                    });
                }
                // A response to an older response of ours: superseded, ignore it.
                _ => return (None, None),
            }
        }
        let subscription = Subscription {
            wildcard: request.resource_names.iter().any(|n| n == "*")
                || (request.resource_names.is_empty() && type_url::is_full_state(&request.type_url)),
            names: request.resource_names.iter().filter(|n| *n != "*").cloned().collect(),
        };
        let changed = subscription != state.subscription;
        state.subscription = subscription;
        if first {
            // A client that reconnects already holding the current version needs nothing.
            let (version, _) = contents(&request.type_url, &state.subscription, compiled);
            if !request.version_info.is_empty() && request.version_info == version {
                let nonce = self.nonces.next();
                state.sent = Some((version.clone(), nonce));
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
        (None, feedback)
    }

    /// Responses for every subscribed type whose contents changed.
    pub fn on_update(&mut self, compiled: &Compiled) -> Vec<DiscoveryResponse> {
        let types: Vec<String> = self.types.keys().cloned().collect();
        types.iter().filter_map(|t| self.respond(t, compiled, false)).collect()
    }

    fn respond(&mut self, type_url: &str, compiled: &Compiled, force: bool) -> Option<DiscoveryResponse> {
        let state = self.types.get_mut(type_url)?;
        let (version, resources) = contents(type_url, &state.subscription, compiled);
        let unchanged = state.sent.as_ref().is_some_and(|(v, _)| *v == version);
        if (unchanged && !force) || state.nacked.as_deref() == Some(version.as_str()) && !force {
            return None;
        }
        let nonce = self.nonces.next();
        state.sent = Some((version.clone(), nonce.clone()));
        Some(DiscoveryResponse {
            version_info: version,
            resources,
            type_url: type_url.to_string(),
            nonce,
            ..Default::default()
        })
    }
}

/// The version and resources a subscription gets. Unknown types get nothing:
/// the server has no resources of that type.
fn contents(
    type_url: &str,
    subscription: &Subscription,
    compiled: &Compiled,
) -> (String, Vec<envoy_types::pb::google::protobuf::Any>) {
    let Some(all) = compiled.of_type(type_url) else {
        return (set_version(std::iter::empty()), Vec::new());
    };
    let chosen: Vec<_> = all.values().filter(|r| subscription.wants(&r.name)).collect();
    let version = set_version(chosen.iter().map(|r| (r.name.as_str(), r.version.as_str())));
    (version, chosen.into_iter().map(|r| r.resource.clone()).collect())
}
