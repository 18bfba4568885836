//! A stand-in for `cargo fuzz` (which needs a nightly toolchain): property
//! tests that feed the proxy's xDS client what a control plane, or
//! something posing as one, could send, and assert that each response is
//! answered, accepted (ACK) or refused (NACK), without panicking; that what
//! does not decode is refused; and that what is accepted can be served: a
//! runtime built, requests routed, hosts picked, failed and ejected. Three
//! kinds of input: any bytes as a resource of each type (and as a whole
//! response); the resources the route compiler makes for a mesh with random
//! bytes changed, inserted or removed (one resource, or a whole encoded
//! response); and Envoy messages built from the fields the proxy reads with
//! values of every kind. A longer run:
//! `PROPTEST_CASES=20000 cargo test -p meridian-proxy --bin meridian-proxy decoders_no_panic`.

mod messages;

use super::{delta, resource_name, sotw, wanted};
use crate::config::{Resources, Snapshot, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{Cluster, OutlierDetection},
            core::v3::{address, socket_address::PortSpecifier, Address, SocketAddress},
            endpoint::v3::{
                lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint,
                LocalityLbEndpoints,
            },
        },
        service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse, Resource},
    },
    google::protobuf::{Any, Duration as ProtoDuration, UInt32Value},
};
use meridian_balance::Outcome;
use meridian_mutation::{edits, mutate};
use meridian_routes::{Compiler, MeshState, ProxyLocality};
use proptest::prelude::*;
use prost::Message;
use std::{sync::OnceLock, time::Instant};

const MESH: &str = include_str!("../../../examples/mesh.yaml");

/// More of what the compiler makes: TCP, hash policies, mutual TLS with
/// allowed clusters.
const MORE: &str = "
kind: Service
metadata: {name: db, namespace: shop}
spec: {protocol: tcp, port: 5432}
---
kind: Service
metadata: {name: cart, namespace: shop}
spec: {protocol: http, port: 8080, lb: ring_hash, hashOn: 'header:x-user'}
---
kind: Service
metadata: {name: pay, namespace: shop}
spec: {protocol: http, port: 8080, lb: maglev, allowedClusters: [us-east-1a], transport: {mtls: true}}
---
kind: Endpoints
metadata: {name: cart, namespace: shop, cluster: us-east-1a}
spec: {endpoints: [{address: 10.0.0.9, port: 80}, {address: '::1', port: 81, weight: 3}]}
";

const TYPES: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

/// A type the proxy never asks for.
const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// What the compiler sends a proxy in us-east-1a, as the proxy holds it.
fn compiled() -> &'static Resources {
    static COMPILED: OnceLock<Resources> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let manifests = meridian_model::parse_manifests(&format!("{MESH}\n---\n{MORE}"))
            .expect("the example mesh parses");
        let state = MeshState::from_resources(manifests.into_iter().map(|mut r| {
            r.metadata.revision = Some(1);
            r
        }));
        let proxy = ProxyLocality::of(&state, "us-east-1a", "", "");
        let compiled = Compiler::new(Some("mesh.test".into())).compile(&state, &proxy);
        let mut resources = Resources::new();
        for type_url in TYPES {
            for (name, resource) in compiled.of_type(type_url).into_iter().flatten() {
                resources.entry(type_url.to_string()).or_default().insert(
                    name.clone(),
                    (
                        resource.version.to_string(),
                        resource.resource.value.clone(),
                    ),
                );
            }
        }
        let snapshot = Snapshot::build(&resources, true).expect("the compiled mesh is accepted");
        assert!(snapshot.clusters.len() >= 5 && snapshot.listeners.len() >= 2);
        resources
    })
}

/// Every compiled resource: (type, name, encoding).
fn compiled_list() -> Vec<(&'static str, String, Vec<u8>)> {
    TYPES
        .iter()
        .flat_map(|&t| {
            compiled()
                .get(t)
                .into_iter()
                .flatten()
                .map(move |(name, (_, bytes))| (t, name.clone(), bytes.clone()))
        })
        .collect()
}

/// A state-of-the-world response: every compiled resource of the type,
/// those named in `replace` with other bytes.
fn sotw_response(type_url: &str, replace: &[(String, Vec<u8>)]) -> DiscoveryResponse {
    let mut resources: Vec<Any> = compiled()
        .get(type_url)
        .into_iter()
        .flatten()
        .filter(|(name, _)| !replace.iter().any(|(n, _)| n == *name))
        .map(|(_, (_, bytes))| typed(type_url, bytes.clone()))
        .collect();
    resources.extend(
        replace
            .iter()
            .map(|(_, bytes)| typed(type_url, bytes.clone())),
    );
    DiscoveryResponse {
        version_info: "v2".into(),
        resources,
        type_url: type_url.into(),
        nonce: "2".into(),
        ..Default::default()
    }
}

fn delta_response(type_url: &str, resources: &[(String, Vec<u8>)]) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: type_url.into(),
        resources: resources
            .iter()
            .map(|(name, bytes)| Resource {
                name: name.clone(),
                version: "v2".into(),
                resource: Some(typed(type_url, bytes.clone())),
                ..Default::default()
            })
            .collect(),
        nonce: "2".into(),
        ..Default::default()
    }
}

fn typed(type_url: &str, value: Vec<u8>) -> Any {
    Any {
        type_url: type_url.into(),
        value,
    }
}

/// The runtime the proxy serves before the response, with a host of each
/// cluster already failing, so that what carries over is exercised.
fn previous() -> Runtime {
    let snapshot = Snapshot::build(compiled(), true).expect("the compiled mesh is accepted");
    serve(snapshot, None)
}

/// Authorities a request could carry.
const AUTHORITIES: &[&str] = &[
    "checkout.shop",
    "checkout.shop:8080",
    "CHECKOUT.SHOP",
    "",
    ":",
    "[::1]:8080",
    "ünïcödé",
];

/// What the proxy does with a configuration it accepted, short of opening
/// sockets: the names it subscribes to next, /config_dump, the runtime
/// (balancers, outlier trackers, breakers, carried over from the one
/// before), health checks, and requests routed, balanced, failed and
/// ejected. Every duration it accepted can be added to the clock, as the
/// forwarding, health checks and ejections do.
fn serve(snapshot: Snapshot, previous: Option<&Runtime>) -> Runtime {
    let _ = wanted(&snapshot);
    let _ = serde_json::to_value(&snapshot);
    let now = Instant::now();
    for route in snapshot.routes.values().flatten().flat_map(|v| &v.routes) {
        let timeouts = [
            route.timeout,
            route.retry.as_ref().and_then(|r| r.per_try_timeout),
        ];
        for timeout in timeouts.into_iter().flatten() {
            assert!(
                now.checked_add(timeout).is_some(),
                "route timeout {timeout:?}"
            );
        }
    }
    for (name, cluster) in &snapshot.clusters {
        let mut durations = vec![cluster.connect_timeout];
        durations.extend(
            cluster
                .health_check
                .iter()
                .flat_map(|h| [h.interval, h.timeout]),
        );
        durations.extend(
            cluster
                .outlier
                .iter()
                .flat_map(|o| [o.base_ejection, o.interval, o.max_ejection]),
        );
        for duration in durations {
            assert!(
                now.checked_add(duration).is_some(),
                "cluster {name}: {duration:?}"
            );
        }
    }
    let runtime = Runtime::new(snapshot, previous, &Metrics::default());
    let _ = crate::health_check::wanted(&runtime);
    let snapshot = &runtime.snapshot;
    for port in snapshot.listeners.keys() {
        for authority in AUTHORITIES {
            for path in ["/", "/x", ""] {
                if let Some(route) = runtime.routes(*port).and_then(|t| t.route(authority, path)) {
                    let _ = route.pick(crate::random::next());
                }
            }
        }
    }
    let outcomes = [
        Outcome::Unreachable,
        Outcome::Failed,
        Outcome::Status(503),
        Outcome::Status(200),
    ];
    for name in snapshot.clusters.keys() {
        let Some(cluster) = runtime.cluster(name) else {
            continue;
        };
        let mut failed = Vec::new();
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let hash = (i % 2 == 0).then_some(i as u64);
            let Some(host) = cluster.pick_host(crate::random::three(), hash, &failed) else {
                break;
            };
            cluster.report(host.address, outcome);
            cluster.set_check(host.address, i % 2 == 1);
            failed.push(host.id);
        }
        let breaker = &cluster.breaker;
        let _ = breaker.admit().map(|_| breaker.admit_retry());
    }
    let _ = runtime.hosts();
    runtime
}

/// Whether `bytes` decode as a resource of `type_url` the proxy asks for.
fn decodes(type_url: &str, bytes: &[u8]) -> bool {
    resource_name(type_url, bytes).is_ok()
}

/// Answers `resources` sent for `type_url` both ways, over delta and state
/// of the world, and serves what is accepted; a resource that does not
/// decode must be refused.
fn answer(type_url: &str, resources: &[(String, Vec<u8>)]) -> Result<(), TestCaseError> {
    let previous = previous();
    let undecodable = resources.iter().any(|(_, bytes)| !decodes(type_url, bytes));
    let delta = delta::candidate(compiled(), &delta_response(type_url, resources));
    let sotw = sotw::candidate(compiled(), &sotw_response(type_url, resources));
    for (protocol, outcome) in [("delta", delta), ("state of the world", sotw)] {
        match outcome {
            Ok((_, snapshot)) => {
                prop_assert!(
                    !undecodable,
                    "{protocol}: a resource that does not decode was accepted"
                );
                serve(snapshot, Some(&previous));
            }
            Err(error) => prop_assert!(!error.is_empty()),
        }
    }
    Ok(())
}

fn type_url() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(TYPES.to_vec()).prop_map(str::to_string),
        1 => Just(SECRET.to_string()),
        1 => "\\PC{0,24}",
    ]
}

/// A set of generated resources, by type, named as their messages name them.
fn generated() -> impl Strategy<Value = Vec<(&'static str, String, Vec<u8>)>> {
    (
        prop::collection::vec(messages::cluster(), 0..4),
        prop::collection::vec(messages::load_assignment(), 0..4),
        prop::collection::vec(messages::route_configuration(), 0..3),
        prop::collection::vec(messages::listener(), 0..3),
    )
        .prop_map(|(clusters, assignments, routes, listeners)| {
            let mut all = Vec::new();
            all.extend(
                clusters
                    .iter()
                    .map(|m| (CLUSTER, m.name.clone(), m.encode_to_vec())),
            );
            all.extend(
                assignments
                    .iter()
                    .map(|m| (ENDPOINT, m.cluster_name.clone(), m.encode_to_vec())),
            );
            all.extend(
                routes
                    .iter()
                    .map(|m| (ROUTE, m.name.clone(), m.encode_to_vec())),
            );
            all.extend(
                listeners
                    .iter()
                    .map(|m| (LISTENER, m.name.clone(), m.encode_to_vec())),
            );
            all
        })
}

proptest! {
    #[test]
    fn any_bytes_as_a_resource_are_answered(
        type_url in type_url(),
        name in messages::name(),
        bytes in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        answer(&type_url, &[(name, bytes)])?;
    }

    #[test]
    fn any_bytes_as_a_response_are_answered(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let previous = previous();
        if let Ok(response) = DiscoveryResponse::decode(bytes.as_slice()) {
            if let Ok((_, snapshot)) = sotw::candidate(compiled(), &response) {
                serve(snapshot, Some(&previous));
            }
        }
        if let Ok(response) = DeltaDiscoveryResponse::decode(bytes.as_slice()) {
            if let Ok((_, snapshot)) = delta::candidate(compiled(), &response) {
                serve(snapshot, Some(&previous));
            }
        }
    }

    #[test]
    fn a_mutated_compiled_resource_is_answered(
        resource in prop::sample::select(compiled_list()),
        edits in edits(1..8),
    ) {
        let (type_url, name, bytes) = resource;
        answer(type_url, &[(name, mutate(&bytes, &edits))])?;
    }

    #[test]
    fn a_mutated_compiled_response_is_answered(
        type_url in prop::sample::select(TYPES.to_vec()),
        edits in edits(1..16),
    ) {
        let previous = previous();
        let sotw = sotw_response(type_url, &[]).encode_to_vec();
        if let Ok(response) = DiscoveryResponse::decode(mutate(&sotw, &edits).as_slice()) {
            if let Ok((_, snapshot)) = sotw::candidate(compiled(), &response) {
                serve(snapshot, Some(&previous));
            }
        }
        let all: Vec<(String, Vec<u8>)> = compiled_list()
            .into_iter()
            .filter(|(t, _, _)| *t == type_url)
            .map(|(_, name, bytes)| (name, bytes))
            .collect();
        let delta = delta_response(type_url, &all).encode_to_vec();
        if let Ok(response) = DeltaDiscoveryResponse::decode(mutate(&delta, &edits).as_slice()) {
            if let Ok((_, snapshot)) = delta::candidate(compiled(), &response) {
                serve(snapshot, Some(&previous));
            }
        }
    }

    #[test]
    fn generated_resources_are_answered(resources in generated()) {
        // On their own, as a proxy restarted with them saved would hold them.
        let mut held = Resources::new();
        for (type_url, name, bytes) in &resources {
            held.entry(type_url.to_string())
                .or_default()
                .insert(name.clone(), ("v1".into(), bytes.clone()));
        }
        for strict in [false, true] {
            if let Ok(snapshot) = Snapshot::build(&held, strict) {
                serve(snapshot, None);
            }
        }
        // Sent to a proxy holding the compiled mesh, one type at a time.
        for type_url in TYPES {
            let of_type: Vec<(String, Vec<u8>)> = resources
                .iter()
                .filter(|(t, _, _)| *t == type_url)
                .map(|(_, name, bytes)| (name.clone(), bytes.clone()))
                .collect();
            answer(type_url, &of_type)?;
        }
    }
}

// === Regressions: the minimal inputs of what these properties found ===

/// A cluster named `c` and its load assignment: two hosts, at `priority`.
fn two_hosts(cluster: Cluster, priority: u32) -> Resources {
    let host = |port| LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "10.0.0.1".into(),
                    port_specifier: Some(PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let assignment = ClusterLoadAssignment {
        cluster_name: "c".into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![host(1), host(2)],
            priority,
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut resources = Resources::new();
    let mut hold = |type_url: &str, bytes| {
        let held = ("1".to_string(), bytes);
        resources
            .entry(type_url.into())
            .or_default()
            .insert("c".into(), held);
    };
    hold(
        CLUSTER,
        Cluster {
            name: "c".into(),
            ..cluster
        }
        .encode_to_vec(),
    );
    hold(ENDPOINT, assignment.encode_to_vec());
    resources
}

/// The balancer keeps a level per priority up to the lowest: priority
/// 4294967295 asked for 446 GB and aborted the proxy while it installed
/// the configuration. Envoy's API bounds it at 128.
#[test]
fn a_priority_beyond_128_is_refused() {
    let refused = Snapshot::build(&two_hosts(Cluster::default(), u32::MAX), false);
    assert!(refused.is_err_and(|e| e.contains("priority 4294967295")));
    assert!(Snapshot::build(&two_hosts(Cluster::default(), 128), false).is_ok());
}

/// A duration the clock cannot add panicked where the proxy adds it: here
/// an ejection's end, when a host failed (a route's timeout did the same to
/// every request). Beyond protobuf's own bound, it is refused.
#[test]
fn a_duration_beyond_protobufs_range_is_refused() {
    let ejecting = |seconds| Cluster {
        outlier_detection: Some(OutlierDetection {
            base_ejection_time: Some(ProtoDuration { seconds, nanos: 0 }),
            max_ejection_percent: Some(UInt32Value { value: 100 }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let refused = Snapshot::build(&two_hosts(ejecting(i64::MAX), 0), false);
    assert!(refused.is_err_and(|e| e.contains("base_ejection_time")));
    // The longest protobuf allows is served, and ejects.
    let snapshot = Snapshot::build(&two_hosts(ejecting(315_576_000_000), 0), false);
    let runtime = Runtime::new(snapshot.expect("in range"), None, &Metrics::default());
    let cluster = runtime.cluster("c").expect("cluster c");
    assert!(cluster.report("10.0.0.1:1", Outcome::Unreachable));
}

/// Delta ACKed a resource that did not decode, or of a type the proxy never
/// asked for, as long as nothing named it yet; state of the world refused it.
#[test]
fn a_delta_resource_that_does_not_decode_is_refused() {
    for (type_url, bytes) in [(ENDPOINT, vec![0xff]), (SECRET, Vec::new())] {
        let response = delta_response(type_url, &[("unnamed".into(), bytes)]);
        assert!(
            delta::candidate(compiled(), &response).is_err(),
            "{type_url}"
        );
    }
}
