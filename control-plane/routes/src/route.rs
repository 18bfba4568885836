//! RDS: a `RouteConfiguration` per service (for its api listener), and one
//! per outbound port holding the virtual hosts of every HTTP service there.
//! Weighted splits, retries, timeouts and hash policies live here.

use crate::{names, proto, MeshState, ServiceId};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action,
    route_action::{
        hash_policy::{ConnectionProperties, Header, PolicySpecifier},
        ClusterSpecifier, HashPolicy,
    },
    route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
    RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::{
    config::route::v3::retry_policy::{self, RetryHostPredicate, RetryPriority},
    extensions::retry::{
        host::previous_hosts::v3::PreviousHostsPredicate,
        priority::previous_priorities::v3::PreviousPrioritiesConfig,
    },
};
use meridian_model::spec::{Protocol, RetryOn, RetryPolicy as ModelRetryPolicy, ServiceSpec};

fn retry_on(on: &[RetryOn]) -> String {
    let names: Vec<&str> = on
        .iter()
        .map(|r| match r {
            RetryOn::ConnectFailure => "connect-failure",
            RetryOn::Reset => "reset",
            RetryOn::Server5xx => "5xx",
            RetryOn::GatewayError => "gateway-error",
            RetryOn::Retriable4xx => "retriable-4xx",
        })
        .collect();
    if names.is_empty() {
        "connect-failure,reset".to_string()
    } else {
        names.join(",")
    }
}

/// The service's retries, or the default (`RetryPolicy::default_for`);
/// `attempts: 0` means none. A retry goes to a host not yet tried and, once
/// every host of a priority has failed, to the next priority.
fn retry_policy(spec: &ServiceSpec) -> Option<RetryPolicy> {
    let policy = spec
        .retries
        .clone()
        .unwrap_or_else(|| ModelRetryPolicy::default_for(spec.protocol));
    if policy.attempts == 0 {
        return None;
    }
    let mut retry_on = retry_on(&policy.on);
    let host_gone = policy.on.is_empty()
        || policy
            .on
            .iter()
            .any(|on| matches!(on, RetryOn::ConnectFailure | RetryOn::Reset));
    if spec.protocol == Protocol::Grpc && host_gone {
        // Proxyless gRPC clients retry by status only, so connect failures
        // and resets are also said the way they see them: UNAVAILABLE from a
        // dead endpoint, CANCELLED from a server shutting down on a call it
        // had just taken.
        retry_on.push_str(",unavailable,cancelled");
    }
    Some(RetryPolicy {
        retry_on,
        num_retries: Some(proto::u32_value(policy.attempts)),
        per_try_timeout: policy.per_try_timeout.map(|t| proto::duration(t.as_std())),
        retry_host_predicate: vec![RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".to_string(),
            config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
                proto::any(&PreviousHostsPredicate::default()),
            )),
        }],
        host_selection_retry_max_attempts: 5,
        retry_priority: Some(RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".to_string(),
            config_type: Some(retry_policy::retry_priority::ConfigType::TypedConfig(
                proto::any(&PreviousPrioritiesConfig {
                    update_frequency: 1,
                }),
            )),
        }),
        ..Default::default()
    })
}

fn hash_policy(spec: &ServiceSpec) -> Vec<HashPolicy> {
    if !spec.lb.is_hash() {
        return Vec::new();
    }
    let specifier = match spec
        .hash_on
        .as_deref()
        .and_then(|h| h.strip_prefix("header:"))
    {
        Some(header) => PolicySpecifier::Header(Header {
            header_name: header.to_ascii_lowercase(),
            ..Default::default()
        }),
        None => PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true }),
    };
    vec![HashPolicy {
        policy_specifier: Some(specifier),
        terminal: false,
    }]
}

/// The route action for a service: its own cluster, or the weighted
/// clusters of its split, nested splits flattened.
fn action(state: &MeshState, id: &ServiceId, spec: &ServiceSpec) -> RouteAction {
    let cluster_specifier = match crate::split::flatten(state, id) {
        Some(split) => {
            let clusters = split
                .backends
                .iter()
                .map(|(backend, weight)| ClusterWeight {
                    name: names::service(backend),
                    weight: Some(proto::u32_value(*weight)),
                    ..Default::default()
                })
                .collect();
            ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters,
                ..Default::default()
            })
        }
        None => ClusterSpecifier::Cluster(names::service(id)),
    };
    RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: spec.timeout.map(|t| proto::duration(t.as_std())),
        retry_policy: retry_policy(spec),
        hash_policy: hash_policy(spec),
        ..Default::default()
    }
}

pub fn virtual_host(state: &MeshState, id: &ServiceId, spec: &ServiceSpec) -> VirtualHost {
    VirtualHost {
        name: names::service(id),
        domains: names::domains(id, spec.port),
        routes: vec![Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix(String::new())),
                ..Default::default()
            }),
            action: Some(Action::Route(action(state, id, spec))),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The route configuration a service's api listener refers to.
pub fn service_routes(state: &MeshState, id: &ServiceId, spec: &ServiceSpec) -> RouteConfiguration {
    RouteConfiguration {
        name: names::service(id),
        virtual_hosts: vec![virtual_host(state, id, spec)],
        ..Default::default()
    }
}

/// The route configuration of an outbound port: every HTTP service on it, routed by authority.
pub fn outbound_routes(port: u16, virtual_hosts: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name: names::outbound(port),
        virtual_hosts,
        ..Default::default()
    }
}
