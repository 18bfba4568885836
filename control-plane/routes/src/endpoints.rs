//! EDS: one `ClusterLoadAssignment` per service, for the asking proxy's
//! locality: endpoints grouped by locality, localities ranked into failover
//! priorities, with the service's overprovisioning factor.

use crate::{
    failover::{priorities, Locality, Origin},
    names, proto, MeshState, ServiceId,
};
use envoy_types::pb::envoy::config::{
    core::v3::{HealthStatus, Locality as EnvoyLocality},
    endpoint::v3::{
        cluster_load_assignment::Policy, lb_endpoint::HostIdentifier, ClusterLoadAssignment,
        Endpoint, LbEndpoint, LocalityLbEndpoints,
    },
};
use meridian_model::{
    spec::{Health, DEFAULT_OVERPROVISIONING_FACTOR},
    Spec,
};
use std::collections::BTreeMap;

fn health_status(health: Health) -> HealthStatus {
    match health {
        Health::Healthy => HealthStatus::Healthy,
        Health::Unhealthy => HealthStatus::Unhealthy,
        Health::Draining => HealthStatus::Draining,
    }
}

pub fn load_assignment(
    state: &MeshState,
    id: &ServiceId,
    origin: &Origin,
) -> ClusterLoadAssignment {
    // Endpoints by locality. Weight-0 endpoints take no traffic and are left out.
    let mut by_locality: BTreeMap<Locality, Vec<LbEndpoint>> = BTreeMap::new();
    for resource in state.endpoints(id) {
        let Spec::Endpoints(spec) = &resource.spec else {
            continue;
        };
        let cluster_name = resource.metadata.cluster.clone().unwrap_or_default();
        let (region, cluster_zone) = match state.cluster(&cluster_name).map(|c| &c.spec) {
            Some(Spec::Cluster(c)) => (c.region.clone(), c.zone.clone().unwrap_or_default()),
            _ => (String::new(), String::new()),
        };
        for ep in spec.endpoints.iter().filter(|ep| ep.weight > 0) {
            let locality = Locality {
                region: region.clone(),
                zone: ep.zone.clone().unwrap_or_else(|| cluster_zone.clone()),
                cluster: cluster_name.clone(),
            };
            by_locality.entry(locality).or_default().push(LbEndpoint {
                host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                    address: Some(proto::socket_address(&ep.address, ep.port)),
                    ..Default::default()
                })),
                health_status: health_status(ep.health) as i32,
                load_balancing_weight: Some(proto::u32_value(ep.weight)),
                ..Default::default()
            });
        }
    }

    let policy = state.failover_for(id).and_then(|r| match &r.spec {
        Spec::FailoverPolicy(p) => Some(p.clone()),
        _ => None,
    });
    let order = policy.as_ref().map(|p| p.order.clone()).unwrap_or_default();
    let factor = policy
        .as_ref()
        .map(|p| p.effective_overprovisioning_factor())
        .unwrap_or(DEFAULT_OVERPROVISIONING_FACTOR);

    let ranked = priorities(origin, by_locality.keys(), &order);
    let mut endpoints = Vec::new();
    for (priority, group) in ranked.iter().enumerate() {
        for locality in group {
            let lb_endpoints = by_locality.remove(locality).unwrap_or_default();
            let weight: u64 = lb_endpoints
                .iter()
                .map(|e| {
                    u64::from(
                        e.load_balancing_weight
                            .as_ref()
                            .map(|w| w.value)
                            .unwrap_or(1),
                    )
                })
                .sum();
            endpoints.push(LocalityLbEndpoints {
                locality: Some(EnvoyLocality {
                    region: locality.region.clone(),
                    zone: locality.zone.clone(),
                    sub_zone: locality.cluster.clone(),
                }),
                lb_endpoints,
                load_balancing_weight: Some(proto::u32_value(
                    u32::try_from(weight.max(1)).unwrap_or(u32::MAX),
                )),
                priority: u32::try_from(priority).unwrap_or(u32::MAX),
                ..Default::default()
            });
        }
    }
    ClusterLoadAssignment {
        cluster_name: names::service(id),
        endpoints,
        policy: Some(Policy {
            // Envoy's field is a percentage: 140 means 1.4.
            overprovisioning_factor: Some(proto::u32_value((factor * 100.0).round() as u32)),
            ..Default::default()
        }),
        ..Default::default()
    }
}
