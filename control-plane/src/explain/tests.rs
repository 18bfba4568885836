//! Explanations of small meshes: tiers, shares, splits, and the errors.

use super::*;
use meridian_model::parse_manifests;

/// Clusters east (us-east-1a) and west (us-west-2a), web.shop with the
/// given endpoint healths in each, a failover order east then west, and
/// `extra` manifests.
fn mesh(east: &[&str], west: &[&str], extra: &str) -> MeshState {
    let endpoints = |cluster: &str, zone: &str, base: u8, healths: &[&str]| {
        let items: Vec<String> = healths
            .iter()
            .enumerate()
            .map(|(i, h)| {
                format!("{{address: 10.0.{base}.{i}, port: 80, zone: {zone}, health: {h}}}")
            })
            .collect();
        format!(
            "kind: Endpoints\nmetadata: {{name: web, namespace: shop, cluster: {cluster}}}\nspec: {{endpoints: [{}]}}\n---\n",
            items.join(", ")
        )
    };
    let text = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1, zone: us-east-1a}}\n---\n\
         kind: Cluster\nmetadata: {{name: west}}\nspec: {{region: us-west-2, zone: us-west-2a}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: 8080}}\n---\n\
         {}{}\
         kind: FailoverPolicy\nmetadata: {{name: web-order, namespace: shop}}\nspec: {{service: shop/web, order: [east, west]}}\n{extra}",
        endpoints("east", "us-east-1a", 1, east),
        endpoints("west", "us-west-2a", 2, west),
    );
    MeshState::from_resources(parse_manifests(&text).expect("valid mesh"))
}

fn web() -> ServiceId {
    ServiceId::new("shop", "web")
}

/// Each tier's (clusters, share rounded to a tenth of a percent).
fn shares(backend: &pb::ExplainBackend) -> Vec<(Vec<String>, f64)> {
    backend
        .tiers
        .iter()
        .map(|t| {
            (
                t.localities.iter().map(|l| l.cluster.clone()).collect(),
                (t.share_percent * 10.0).round() / 10.0,
            )
        })
        .collect()
}

#[test]
fn a_healthy_local_tier_takes_everything_and_says_why() {
    let state = mesh(&["healthy", "healthy"], &["healthy"], "");
    let explained = explain(&state, &web(), "east", "").expect("explained");
    assert_eq!(
        (explained.region.as_str(), explained.zone.as_str()),
        ("us-east-1", "us-east-1a")
    );
    assert!(explained.splits.is_empty());
    let [backend] = explained.backends.as_slice() else {
        panic!("one backend: {explained:?}")
    };
    assert_eq!(backend.split_percent, 100.0);
    assert_eq!(backend.failover_policy, "shop/web-order");
    assert_eq!(backend.overprovisioning_factor, 1.4);
    assert_eq!(
        shares(backend),
        vec![(vec!["east".into()], 100.0), (vec!["west".into()], 0.0)]
    );
    assert_eq!(backend.tiers[0].localities[0].reason, "the proxy's zone");
    assert_eq!(
        backend.tiers[1].localities[0].reason,
        "failover order 2 of 2 (west)"
    );
    let endpoints = &backend.tiers[0].localities[0].endpoints;
    assert_eq!(endpoints.len(), 2);
    assert_eq!(
        (
            endpoints[0].address.as_str(),
            endpoints[0].weight,
            endpoints[0].health.as_str()
        ),
        ("10.0.1.0:80", 1, "healthy")
    );
}

#[test]
fn traffic_spills_as_the_local_tier_loses_health() {
    let half = mesh(&["healthy", "unhealthy"], &["healthy"], "");
    let explained = explain(&half, &web(), "east", "").expect("explained");
    let backend = &explained.backends[0];
    assert_eq!(
        shares(backend),
        vec![(vec!["east".into()], 70.0), (vec!["west".into()], 30.0)]
    );
    assert_eq!(backend.tiers[0].healthy_weight, 1);
    assert_eq!(backend.tiers[0].total_weight, 2);
    assert!((backend.tiers[0].health_percent - 70.0).abs() < 1e-9);
    assert_eq!(
        backend.tiers[0].localities[0].endpoints[1].health,
        "unhealthy"
    );

    let dead = mesh(&["unhealthy", "draining"], &["healthy"], "");
    let explained = explain(&dead, &web(), "east", "").expect("explained");
    assert_eq!(
        shares(&explained.backends[0]),
        vec![(vec!["east".into()], 0.0), (vec!["west".into()], 100.0)]
    );
}

#[test]
fn the_other_cluster_sees_its_own_tier_first() {
    let state = mesh(&["healthy"], &["healthy"], "");
    let explained = explain(&state, &web(), "west", "").expect("explained");
    let backend = &explained.backends[0];
    assert_eq!(
        shares(backend),
        vec![(vec!["west".into()], 100.0), (vec!["east".into()], 0.0)]
    );
    assert_eq!(
        backend.tiers[1].localities[0].reason,
        "failover order 1 of 2 (east)"
    );
}

#[test]
fn a_split_names_its_backends_with_their_percent_and_tiers() {
    let extra = "---\nkind: Service\nmetadata: {name: web-v2, namespace: shop}\nspec: {protocol: http, port: 8080}\n---\n\
                 kind: Endpoints\nmetadata: {name: web-v2, namespace: shop, cluster: west}\nspec: {endpoints: [{address: 10.0.9.1, port: 80}]}\n---\n\
                 kind: Service\nmetadata: {name: web-v1, namespace: shop}\nspec: {protocol: http, port: 8080}\n---\n\
                 kind: Endpoints\nmetadata: {name: web-v1, namespace: shop, cluster: east}\nspec: {endpoints: [{address: 10.0.8.1, port: 80}]}\n---\n\
                 kind: TrafficSplit\nmetadata: {name: web-canary, namespace: shop}\nspec: {service: web, backends: [{service: web-v1, weight: 80}, {service: web-v2, weight: 20}]}\n";
    let state = mesh(&["healthy"], &["healthy"], extra);
    let explained = explain(&state, &web(), "east", "").expect("explained");
    assert_eq!(explained.splits, vec!["shop/web-canary".to_string()]);
    let found: Vec<(String, u32, f64)> = explained
        .backends
        .iter()
        .map(|b| (b.service.clone(), b.split_weight, b.split_percent))
        .collect();
    assert_eq!(
        found,
        vec![
            ("shop/web-v1".to_string(), 80, 80.0),
            ("shop/web-v2".to_string(), 20, 20.0)
        ]
    );
    assert!(
        explained.notes[0]
            .starts_with("shop/web's own endpoints and failover policy take no traffic"),
        "{:?}",
        explained.notes
    );
    let v2 = &explained.backends[1];
    assert!(v2.failover_policy.is_empty());
    assert_eq!(shares(v2), vec![(vec!["west".into()], 100.0)]);
    assert_eq!(
        v2.tiers[0].localities[0].reason,
        "outside the proxy's region (no failover policy)"
    );
}

#[test]
fn stale_clusters_and_overridden_zones_are_noted() {
    let mut state = mesh(&["healthy"], &["healthy"], "");
    let mut west = state.cluster("west").expect("west").as_ref().clone();
    west.status = Some(meridian_model::Status {
        stale: true,
        ..Default::default()
    });
    state.put(west);
    let explained = explain(&state, &web(), "east", "us-east-1c").expect("explained");
    assert_eq!(explained.zone, "us-east-1a");
    assert!(
        explained.notes[0].contains("cluster east is in zone 'us-east-1a'"),
        "{:?}",
        explained.notes
    );
    let backend = &explained.backends[0];
    assert!(backend.tiers[1].localities[0].stale);
    assert!(
        backend
            .notes
            .iter()
            .any(|n| n.starts_with("cluster west is stale")),
        "{:?}",
        backend.notes
    );
}

#[test]
fn unknown_names_and_unreachable_services_are_refused() {
    let state = mesh(&["healthy"], &["healthy"], "");
    assert_eq!(
        explain(&state, &ServiceId::new("shop", "nope"), "east", ""),
        Err(ExplainError::UnknownService("shop/nope".into()))
    );
    assert_eq!(
        explain(&state, &web(), "mars", ""),
        Err(ExplainError::UnknownCluster("mars".into()))
    );
    let extra = "---\nkind: Service\nmetadata: {name: admin, namespace: shop}\nspec: {protocol: http, port: 9090, allowedClusters: [west]}\n";
    let state = mesh(&["healthy"], &["healthy"], extra);
    assert!(matches!(
        explain(&state, &ServiceId::new("shop", "admin"), "east", ""),
        Err(ExplainError::NotReachable { .. })
    ));
}
