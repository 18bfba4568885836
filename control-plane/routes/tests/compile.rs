//! Route compilation: properties over generated meshes, and golden outputs.

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::Cluster,
        endpoint::v3::{lb_endpoint::HostIdentifier, ClusterLoadAssignment},
        listener::v3::{filter::ConfigType, Listener},
        route::v3::{route::Action, route_action::ClusterSpecifier, RouteConfiguration},
    },
    extensions::filters::network::http_connection_manager::v3::{
        http_connection_manager::RouteSpecifier, HttpConnectionManager,
    },
};
use meridian_model::{parse_manifests, Resource};
use meridian_routes::{compile, type_url, Compiled, Compiler, MeshState, ProxyLocality};
use proptest::prelude::*;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};

fn decode<M: Message + Default>(compiled: &Compiled, type_url: &str) -> BTreeMap<String, M> {
    compiled
        .of_type(type_url)
        .map(|m| {
            m.iter()
                .map(|(name, r)| {
                    (
                        name.clone(),
                        M::decode(r.resource.value.as_slice()).expect("decodes"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn with_revisions(resources: Vec<Resource>) -> Vec<Resource> {
    resources
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.metadata.revision = Some(i as u64 + 1);
            r
        })
        .collect()
}

/// Checks that hold for any mesh and any proxy.
fn check_invariants(
    state: &MeshState,
    proxy: &ProxyLocality,
    splits: &BTreeMap<String, Vec<(String, u32)>>,
) {
    let compiled = compile(state, proxy);
    assert_eq!(
        compiled,
        compile(state, proxy),
        "compilation is deterministic"
    );

    let clusters: BTreeMap<String, Cluster> = decode(&compiled, type_url::CLUSTER);
    let assignments: BTreeMap<String, ClusterLoadAssignment> =
        decode(&compiled, type_url::ENDPOINT);
    let routes: BTreeMap<String, RouteConfiguration> = decode(&compiled, type_url::ROUTE);
    let listeners: BTreeMap<String, Listener> = decode(&compiled, type_url::LISTENER);

    for (name, cluster) in &clusters {
        let eds_name = &cluster
            .eds_cluster_config
            .as_ref()
            .expect("eds config")
            .service_name;
        assert!(
            assignments.contains_key(eds_name),
            "cluster {name} refers to missing EDS {eds_name}"
        );
    }
    for (name, cla) in &assignments {
        let mut seen = BTreeSet::new();
        let mut priorities = BTreeSet::new();
        for locality in &cla.endpoints {
            priorities.insert(locality.priority);
            assert!(locality
                .load_balancing_weight
                .as_ref()
                .is_some_and(|w| w.value > 0));
            for ep in &locality.lb_endpoints {
                let Some(HostIdentifier::Endpoint(e)) = &ep.host_identifier else {
                    panic!("no endpoint")
                };
                let addr = format!("{:?}", e.address);
                assert!(seen.insert(addr.clone()), "{addr} appears twice in {name}");
            }
        }
        let expected: BTreeSet<u32> = (0..priorities.len() as u32).collect();
        assert_eq!(
            priorities, expected,
            "priorities of {name} are contiguous from 0"
        );
    }
    for (name, config) in &routes {
        for vhost in &config.virtual_hosts {
            for r in &vhost.routes {
                let Some(Action::Route(action)) = &r.action else {
                    panic!("no route action")
                };
                match action.cluster_specifier.as_ref().expect("cluster") {
                    ClusterSpecifier::Cluster(c) => {
                        assert!(clusters.contains_key(c), "{name} routes to missing {c}")
                    }
                    ClusterSpecifier::WeightedClusters(w) => {
                        for c in &w.clusters {
                            assert!(
                                clusters.contains_key(&c.name),
                                "{name} splits to missing {}",
                                c.name
                            );
                        }
                        let got: Vec<(String, u32)> = w
                            .clusters
                            .iter()
                            .map(|c| {
                                (
                                    c.name.clone(),
                                    c.weight.as_ref().map(|w| w.value).unwrap_or(0),
                                )
                            })
                            .collect();
                        assert_eq!(
                            Some(&got),
                            splits.get(&vhost.name),
                            "split weights of {}",
                            vhost.name
                        );
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
    for (name, listener) in &listeners {
        let hcm_any = match (&listener.api_listener, listener.filter_chains.first()) {
            (Some(api), _) => api.api_listener.clone(),
            (None, Some(chain)) => chain.filters.first().and_then(|f| match &f.config_type {
                Some(ConfigType::TypedConfig(any)) => Some(any.clone()),
                _ => None,
            }),
            (None, None) => panic!("listener {name} has neither api listener nor filter chain"),
        };
        let any = hcm_any.expect("listener config");
        if any.type_url.ends_with("HttpConnectionManager") {
            let hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("hcm");
            let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
                panic!("no rds")
            };
            assert!(
                routes.contains_key(&rds.route_config_name),
                "{name} refers to missing route {}",
                rds.route_config_name
            );
        }
    }
}

fn arb_mesh() -> impl Strategy<Value = (String, BTreeMap<String, Vec<(String, u32)>>)> {
    let service = (
        prop_oneof!["round_robin", "least_request", "ring_hash", "maglev"],
        prop_oneof!["http", "grpc", "tcp"],
        prop_oneof![Just(8080u16), Just(9090u16)],
    );
    let endpoints = proptest::collection::vec(
        (
            0u8..4,
            0u8..6,
            1u32..4,
            prop_oneof!["healthy", "unhealthy", "draining"],
        ),
        0..8,
    );
    (
        proptest::collection::vec(service, 1..4),
        proptest::collection::vec(endpoints, 4),
        proptest::option::of((1u32..10, 0u32..10)),
        proptest::option::of(proptest::sample::subsequence(vec!["c0", "c1", "c2", "c3"], 1..4)),
    )
        .prop_map(|(services, endpoint_sets, split, order)| {
            let mut docs = Vec::new();
            for (i, (region, zone)) in [("r0", "z0"), ("r0", "z1"), ("r1", "z2"), ("r1", "z3")].iter().enumerate() {
                docs.push(format!("kind: Cluster\nmetadata: {{name: c{i}}}\nspec: {{region: {region}, zone: {zone}}}"));
            }
            for (i, (lb, protocol, port)) in services.iter().enumerate() {
                let hash = if lb == "ring_hash" || lb == "maglev" { ", hashOn: source_ip" } else { "" };
                docs.push(format!("kind: Service\nmetadata: {{name: s{i}, namespace: ns}}\nspec: {{protocol: {protocol}, port: {port}, lb: {lb}{hash}}}"));
            }
            for (c, set) in endpoint_sets.iter().enumerate() {
                let mut unique = BTreeMap::new();
                for (svc, host, weight, health) in set {
                    unique.insert((svc % services.len() as u8, *host), (*weight, health.clone()));
                }
                let mut by_service: BTreeMap<u8, Vec<String>> = BTreeMap::new();
                for ((svc, host), (weight, health)) in unique {
                    by_service.entry(svc).or_default().push(format!("{{address: 10.{c}.0.{host}, port: 80, weight: {weight}, health: {health}}}"));
                }
                for (svc, eps) in by_service {
                    docs.push(format!("kind: Endpoints\nmetadata: {{name: s{svc}, namespace: ns, cluster: c{c}}}\nspec: {{endpoints: [{}]}}", eps.join(", ")));
                }
            }
            let mut splits = BTreeMap::new();
            if let (Some((w1, w2)), true) = (split, services.len() >= 3) {
                let mut backends = vec![("s1.ns".to_string(), w1)];
                if w2 > 0 {
                    backends.push(("s2.ns".to_string(), w2));
                }
                docs.push(format!("kind: TrafficSplit\nmetadata: {{name: s0, namespace: ns}}\nspec: {{service: ns/s0, backends: [{{service: s1, weight: {w1}}}, {{service: s2, weight: {w2}}}]}}"));
                if services[0].1 != "tcp" {
                    splits.insert("s0.ns".to_string(), backends);
                }
            }
            if let Some(order) = order {
                docs.push(format!("kind: FailoverPolicy\nmetadata: {{name: s0, namespace: ns}}\nspec: {{service: ns/s0, order: [{}]}}", order.join(", ")));
            }
            (docs.join("\n---\n"), splits)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn compiled_meshes_are_consistent((text, splits) in arb_mesh(), proxy_cluster in prop_oneof!["c0", "c2", "elsewhere"]) {
        let resources = with_revisions(parse_manifests(&text).expect("generated manifests are valid"));
        let state = MeshState::from_resources(resources);
        let proxy = ProxyLocality { cluster: proxy_cluster, ..Default::default() };
        check_invariants(&state, &proxy, &splits);
    }

    #[test]
    fn the_cache_never_changes_the_answer((text, _) in arb_mesh(), drop_at in 0usize..20) {
        let resources = with_revisions(parse_manifests(&text).expect("valid"));
        let proxy = ProxyLocality { cluster: "c0".into(), ..Default::default() };
        let mut compiler = Compiler::default();
        let mut state = MeshState::from_resources(resources.clone());
        prop_assert_eq!(compiler.compile(&state, &proxy), compile(&state, &proxy));
        // Change one endpoint set (or remove it) and compile again through the cache.
        if let Some(victim) = resources.iter().filter(|r| r.kind() == meridian_model::Kind::Endpoints).nth(drop_at % 4) {
            state.remove(&victim.key());
        }
        prop_assert_eq!(compiler.compile(&state, &proxy), compile(&state, &proxy));
    }
}

#[test]
fn priorities_follow_the_failover_policy() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/mesh.yaml"
    ))
    .expect("example mesh");
    let state = MeshState::from_resources(with_revisions(parse_manifests(&text).expect("valid")));
    for (cluster, local_zone, remote_zone) in [
        ("us-east-1a", "us-east-1a", "us-west-2a"),
        ("us-west-2a", "us-west-2a", "us-east-1a"),
    ] {
        let compiled = compile(
            &state,
            &ProxyLocality {
                cluster: cluster.into(),
                ..Default::default()
            },
        );
        let cla: BTreeMap<String, ClusterLoadAssignment> = decode(&compiled, type_url::ENDPOINT);
        let checkout = &cla["checkout.shop"];
        let zone_of = |p: u32| -> Vec<String> {
            checkout
                .endpoints
                .iter()
                .filter(|l| l.priority == p)
                .map(|l| l.locality.clone().unwrap_or_default().zone)
                .collect()
        };
        assert_eq!(zone_of(0), vec![local_zone.to_string()]);
        assert_eq!(zone_of(1), vec![remote_zone.to_string()]);
        assert_eq!(
            checkout
                .policy
                .as_ref()
                .and_then(|p| p.overprovisioning_factor)
                .map(|f| f.value),
            Some(140)
        );
    }
}

#[test]
fn only_touched_services_are_recompiled() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/mesh.yaml"
    ))
    .expect("example mesh");
    let resources = with_revisions(parse_manifests(&text).expect("valid"));
    let mut state = MeshState::from_resources(resources.clone());
    let proxy = ProxyLocality {
        cluster: "us-east-1a".into(),
        ..Default::default()
    };
    let mut compiler = Compiler::default();
    compiler.compile(&state, &proxy);
    assert_eq!(compiler.compiled_services, 3);
    let mut v2 = resources
        .iter()
        .find(|r| r.metadata.name == "checkout-v2")
        .expect("v2")
        .clone();
    v2.metadata.revision = Some(100);
    state.put(v2);
    compiler.compile(&state, &proxy);
    assert_eq!(
        compiler.compiled_services, 4,
        "only checkout-v2 is compiled again"
    );
}

/// Pins the full output for the example mesh, seen from us-east-1a. Set
/// MERIDIAN_UPDATE_GOLDEN=1 to rewrite it after an intended change.
#[test]
fn golden_example_mesh() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/mesh.yaml"
    ))
    .expect("example mesh");
    let state = MeshState::from_resources(with_revisions(parse_manifests(&text).expect("valid")));
    let compiled = compile(
        &state,
        &ProxyLocality {
            cluster: "us-east-1a".into(),
            ..Default::default()
        },
    );
    let mut rendered = String::new();
    let clusters: BTreeMap<String, Cluster> = decode(&compiled, type_url::CLUSTER);
    let assignments: BTreeMap<String, ClusterLoadAssignment> =
        decode(&compiled, type_url::ENDPOINT);
    let routes: BTreeMap<String, RouteConfiguration> = decode(&compiled, type_url::ROUTE);
    let listeners: BTreeMap<String, Listener> = decode(&compiled, type_url::LISTENER);
    for (t, map) in type_url::ALL.iter().zip([
        clusters
            .iter()
            .map(|(n, m)| (n, format!("{m:#?}")))
            .collect::<Vec<_>>(),
        assignments
            .iter()
            .map(|(n, m)| (n, format!("{m:#?}")))
            .collect(),
        listeners
            .iter()
            .map(|(n, m)| (n, format!("{m:#?}")))
            .collect(),
        routes.iter().map(|(n, m)| (n, format!("{m:#?}"))).collect(),
    ]) {
        for (name, body) in map {
            let version = &compiled.get(t, name).expect("resource").version;
            rendered.push_str(&format!("=== {t} {name} {version}\n{body}\n"));
        }
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/example_mesh_us_east_1a.txt"
    );
    if std::env::var_os("MERIDIAN_UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &rendered).expect("write golden");
    }
    let golden =
        std::fs::read_to_string(path).expect("golden file (MERIDIAN_UPDATE_GOLDEN=1 creates it)");
    assert!(
        golden == rendered,
        "compiled output differs from {path}; rerun with MERIDIAN_UPDATE_GOLDEN=1 if intended"
    );
}

const RESTRICTED_MESH: &str = "kind: Cluster\nmetadata: {name: east}\nspec: {region: r}\n---\n\
kind: Cluster\nmetadata: {name: north}\nspec: {region: r}\n---\n\
kind: Service\nmetadata: {name: web, namespace: shop}\n\
spec: {protocol: http, port: 80, allowedClusters: [east], transport: {mtls: true}}\n---\n\
kind: Service\nmetadata: {name: public, namespace: shop}\nspec: {protocol: http, port: 81}\n---\n\
kind: Service\nmetadata: {name: front, namespace: shop}\nspec: {protocol: http, port: 82}\n---\n\
kind: TrafficSplit\nmetadata: {name: front, namespace: shop}\n\
spec: {service: front, backends: [{service: public, weight: 1}, {service: web, weight: 1}]}\n";

fn names(compiled: &Compiled, type_url: &str) -> BTreeSet<String> {
    compiled
        .of_type(type_url)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn proxies_see_only_the_services_their_cluster_may_reach() {
    let state = MeshState::from_resources(with_revisions(
        parse_manifests(RESTRICTED_MESH).expect("mesh"),
    ));
    let from = |cluster: &str| ProxyLocality {
        cluster: cluster.into(),
        ..Default::default()
    };
    let east = compile(&state, &from("east"));
    assert!(names(&east, type_url::CLUSTER).contains("web.shop"));
    assert!(names(&east, type_url::CLUSTER).contains("front.shop"));
    let north = compile(&state, &from("north"));
    let north_clusters = names(&north, type_url::CLUSTER);
    assert!(north_clusters.contains("public.shop"), "{north_clusters:?}");
    assert!(!north_clusters.contains("web.shop"), "web admits east only");
    assert!(
        !north_clusters.contains("front.shop"),
        "front splits to web"
    );
    assert!(!names(&north, type_url::LISTENER)
        .iter()
        .any(|l| l.starts_with("web.shop")));
}

#[test]
fn mtls_services_carry_the_mesh_transport_socket() {
    let state = MeshState::from_resources(with_revisions(
        parse_manifests(RESTRICTED_MESH).expect("mesh"),
    ));
    let east = ProxyLocality {
        cluster: "east".into(),
        ..Default::default()
    };
    let compiled = Compiler::new(Some("mesh.test".into())).compile(&state, &east);
    let clusters: BTreeMap<String, Cluster> = decode(&compiled, type_url::CLUSTER);
    let web = &clusters["web.shop"];
    let socket = web.transport_socket.as_ref().expect("web is mTLS");
    assert_eq!(socket.name, "envoy.transport_sockets.tls");
    assert!(clusters["public.shop"].transport_socket.is_none());
    assert!(
        web.metadata.is_some(),
        "allowed clusters travel with the cluster"
    );
    // A plaintext control plane still asks for mTLS: proxies without
    // certificates then refuse the service rather than downgrade it.
    let plaintext = compile(&state, &east);
    let clusters: BTreeMap<String, Cluster> = decode(&plaintext, type_url::CLUSTER);
    assert!(clusters["web.shop"].transport_socket.is_some());
}

const NESTED_MESH: &str = "kind: Cluster\nmetadata: {name: east}\nspec: {region: r}\n---\n\
kind: Cluster\nmetadata: {name: north}\nspec: {region: r}\n---\n\
kind: Service\nmetadata: {name: top, namespace: shop}\nspec: {protocol: http, port: 80}\n---\n\
kind: Service\nmetadata: {name: mid, namespace: shop}\nspec: {protocol: http, port: 80, allowedClusters: [east]}\n---\n\
kind: Service\nmetadata: {name: other, namespace: shop}\nspec: {protocol: http, port: 80}\n---\n\
kind: Service\nmetadata: {name: leaf1, namespace: shop}\nspec: {protocol: http, port: 80}\n---\n\
kind: Service\nmetadata: {name: leaf2, namespace: shop}\nspec: {protocol: http, port: 80}\n---\n\
kind: TrafficSplit\nmetadata: {name: top, namespace: shop}\n\
spec: {service: top, backends: [{service: mid, weight: 1}, {service: other, weight: 1}]}\n---\n\
kind: TrafficSplit\nmetadata: {name: mid, namespace: shop}\n\
spec: {service: mid, backends: [{service: leaf1, weight: 3}, {service: leaf2, weight: 3}]}\n";

/// The weighted clusters of `service`'s route in a compiled output.
fn weighted(compiled: &Compiled, service: &str) -> BTreeMap<String, u32> {
    let routes: BTreeMap<String, RouteConfiguration> = decode(compiled, type_url::ROUTE);
    let action = routes[service].virtual_hosts[0].routes[0]
        .action
        .clone()
        .expect("action");
    let Action::Route(action) = action else {
        panic!("a route action");
    };
    match action.cluster_specifier.expect("specifier") {
        ClusterSpecifier::WeightedClusters(w) => w
            .clusters
            .iter()
            .map(|c| (c.name.clone(), c.weight.as_ref().map_or(0, |w| w.value)))
            .collect(),
        other => panic!("weighted clusters expected, got {other:?}"),
    }
}

#[test]
fn nested_splits_are_flattened_with_weights_multiplied() {
    let state =
        MeshState::from_resources(with_revisions(parse_manifests(NESTED_MESH).expect("mesh")));
    let east = compile(
        &state,
        &ProxyLocality {
            cluster: "east".into(),
            ..Default::default()
        },
    );
    // top goes half to other and a quarter to each leaf, never to mid's own (empty) cluster.
    assert_eq!(
        weighted(&east, "top.shop"),
        BTreeMap::from([
            ("other.shop".to_string(), 500_000),
            ("leaf1.shop".to_string(), 250_000),
            ("leaf2.shop".to_string(), 250_000),
        ])
    );
    // A split of leaves only keeps the weights as written.
    assert_eq!(
        weighted(&east, "mid.shop"),
        BTreeMap::from([("leaf1.shop".to_string(), 3), ("leaf2.shop".to_string(), 3)])
    );
    // mid admits east only, so a proxy in north reaches neither mid nor top through it.
    let north = compile(
        &state,
        &ProxyLocality {
            cluster: "north".into(),
            ..Default::default()
        },
    );
    let clusters = names(&north, type_url::CLUSTER);
    assert!(!clusters.contains("top.shop"), "{clusters:?}");
    assert!(clusters.contains("leaf1.shop"), "{clusters:?}");
}

#[test]
fn a_change_to_a_nested_split_recompiles_the_outer_route() {
    let mut resources = with_revisions(parse_manifests(NESTED_MESH).expect("mesh"));
    let east = ProxyLocality {
        cluster: "east".into(),
        ..Default::default()
    };
    let mut compiler = Compiler::default();
    let before = compiler.compile(&MeshState::from_resources(resources.clone()), &east);
    let mid = resources
        .iter_mut()
        .find(|r| r.metadata.name == "mid" && r.kind() == meridian_model::Kind::TrafficSplit)
        .expect("mid's split");
    *mid = parse_manifests(
        "kind: TrafficSplit\nmetadata: {name: mid, namespace: shop}\n\
         spec: {service: mid, backends: [{service: leaf1, weight: 1}]}\n",
    )
    .expect("split")
    .remove(0);
    mid.metadata.revision = Some(99);
    let after = compiler.compile(&MeshState::from_resources(resources), &east);
    assert_ne!(
        before.get(type_url::ROUTE, "top.shop").map(|r| &r.version),
        after.get(type_url::ROUTE, "top.shop").map(|r| &r.version)
    );
    assert_eq!(
        weighted(&after, "top.shop"),
        BTreeMap::from([
            ("other.shop".to_string(), 500_000),
            ("leaf1.shop".to_string(), 500_000),
        ])
    );
}

#[test]
fn a_proxy_cannot_place_itself_in_another_region() {
    let state = MeshState::from_resources(with_revisions(
        parse_manifests(
            "kind: Cluster\nmetadata: {name: east}\nspec: {region: us-east-1, zone: us-east-1a}\n---\n\
             kind: Cluster\nmetadata: {name: spread}\nspec: {region: us-west-2}\n",
        )
        .expect("clusters"),
    ));
    let east = ProxyLocality::of(&state, "east", "eu-west-1", "eu-west-1b");
    assert_eq!(
        (east.region.as_str(), east.zone.as_str()),
        ("us-east-1", "us-east-1a")
    );
    // A cluster that spans zones leaves the zone to the proxy, not the region.
    let spread = ProxyLocality::of(&state, "spread", "eu-west-1", "us-west-2c");
    assert_eq!(
        (spread.region.as_str(), spread.zone.as_str()),
        ("us-west-2", "us-west-2c")
    );
    // A cluster the mesh does not know yet: the claim is all there is.
    let unknown = ProxyLocality::of(&state, "new", "r", "z");
    assert_eq!((unknown.region.as_str(), unknown.zone.as_str()), ("r", "z"));
}

/// The retry policy on `service`'s route: (retry_on, num_retries).
fn retries(compiled: &Compiled, service: &str) -> Option<(String, u32)> {
    let routes: BTreeMap<String, RouteConfiguration> = decode(compiled, type_url::ROUTE);
    let Some(Action::Route(action)) = routes[service].virtual_hosts[0].routes[0].action.clone()
    else {
        panic!("a route action");
    };
    action
        .retry_policy
        .map(|p| (p.retry_on, p.num_retries.map_or(0, |n| n.value)))
}

#[test]
fn services_without_retries_get_their_protocols_default() {
    let mesh = "kind: Cluster\nmetadata: {name: east}\nspec: {region: r}\n---\n\
kind: Service\nmetadata: {name: web, namespace: shop}\nspec: {protocol: http, port: 80}\n---\n\
kind: Service\nmetadata: {name: rpc, namespace: shop}\nspec: {protocol: grpc, port: 81}\n---\n\
kind: Service\nmetadata: {name: once, namespace: shop}\nspec: {protocol: grpc, port: 82, retries: {attempts: 1}}\n---\n\
kind: Service\nmetadata: {name: never, namespace: shop}\nspec: {protocol: grpc, port: 83, retries: {attempts: 0}}\n";
    let state = MeshState::from_resources(with_revisions(parse_manifests(mesh).expect("mesh")));
    let east = compile(
        &state,
        &ProxyLocality {
            cluster: "east".into(),
            ..Default::default()
        },
    );
    let grpc_codes = "connect-failure,reset,unavailable,cancelled".to_string();
    assert_eq!(
        retries(&east, "web.shop"),
        Some(("connect-failure,reset".into(), 1))
    );
    // Proxyless gRPC clients pass over neither tried hosts nor a failed
    // priority, and a server shutting down cancels the call it just took.
    assert_eq!(retries(&east, "rpc.shop"), Some((grpc_codes.clone(), 2)));
    assert_eq!(retries(&east, "once.shop"), Some((grpc_codes, 1)));
    assert_eq!(retries(&east, "never.shop"), None);
}
