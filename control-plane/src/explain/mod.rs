//! `meridian explain`: how a proxy in one locality routes one service now.
//! Read from the routes such a proxy is sent (compiled by meridian-routes
//! for its locality, the split from its route configuration, the tiers from
//! its load assignment) and weighed with meridian-balance's priority loads,
//! so the explanation cannot drift from what proxies do. Pure: no I/O.

mod tiers;

use envoy_types::pb::envoy::config::{
    endpoint::v3::ClusterLoadAssignment,
    route::v3::{route::Action, route_action::ClusterSpecifier, RouteConfiguration},
};
use meridian_model::{Resource, Spec};
use meridian_proto::v1 as pb;
use meridian_routes::{
    compile, failover::Origin, names, split, type_url, Compiled, MeshState, ProxyLocality,
    ServiceId,
};
use prost::Message;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExplainError {
    #[error("no service {0}")]
    UnknownService(String),
    #[error("no cluster named '{0}' in the mesh")]
    UnknownCluster(String),
    #[error(
        "service {service} is not sent to proxies of cluster '{cluster}': its allowedClusters \
         (or those of a service its split sends to) leave that cluster out"
    )]
    NotReachable { service: String, cluster: String },
    #[error("the compiled {what} of {service} does not decode: {error}")]
    Undecodable {
        what: &'static str,
        service: String,
        error: String,
    },
}

/// `namespace/name`.
fn display(id: &ServiceId) -> String {
    format!("{}/{}", id.namespace, id.name)
}

fn resource_name(resource: &Resource) -> String {
    let namespace = resource.metadata.namespace.as_deref().unwrap_or_default();
    format!("{namespace}/{}", resource.metadata.name)
}

/// How a proxy of `cluster` that claims `zone` (may be empty) routes `service`.
pub fn explain(
    state: &MeshState,
    service: &ServiceId,
    cluster: &str,
    zone: &str,
) -> Result<pb::ExplainResponse, ExplainError> {
    if state.service(service).is_none() {
        return Err(ExplainError::UnknownService(display(service)));
    }
    if state.cluster(cluster).is_none() {
        return Err(ExplainError::UnknownCluster(cluster.to_string()));
    }
    let locality = ProxyLocality::of(state, cluster, "", zone);
    let mut notes = Vec::new();
    if !zone.is_empty() && locality.zone != zone {
        notes.push(format!(
            "cluster {cluster} is in zone '{}': the zone a proxy claims is taken only when its cluster spans zones",
            locality.zone
        ));
    }
    let compiled = compile(state, &locality);
    let name = names::service(service);
    if compiled.get(type_url::CLUSTER, &name).is_none() {
        return Err(ExplainError::NotReachable {
            service: display(service),
            cluster: cluster.to_string(),
        });
    }
    let splits: Vec<String> = split::flatten(state, service)
        .iter()
        .flat_map(|f| f.splits.iter().map(|s| resource_name(s)))
        .collect();
    let (weighted, splits) = match route_clusters(&compiled, &name, service)? {
        Some(weighted) => (weighted, splits),
        None => {
            if let Some(top) = splits.first() {
                notes.push(format!(
                    "TrafficSplit {top} does not apply: a TCP service's traffic goes to its own endpoints"
                ));
            }
            (vec![(name.clone(), 1)], Vec::new())
        }
    };
    if let Some(top) = splits.first() {
        let own =
            state.endpoints(service).next().is_some() || state.failover_for(service).is_some();
        if own {
            notes.push(format!(
                "{}'s own endpoints and failover policy take no traffic: TrafficSplit {top} sends it all to the backends",
                display(service)
            ));
        }
    }
    let total: u64 = weighted.iter().map(|(_, w)| u64::from(*w)).sum();
    let origin = Origin {
        region: locality.region.clone(),
        zone: locality.zone.clone(),
        cluster: locality.cluster.clone(),
    };
    let backends = weighted
        .iter()
        .map(|(cluster_name, weight)| {
            let id = service_named(state, cluster_name);
            let percent = match total {
                0 => 0.0,
                _ => 100.0 * f64::from(*weight) / total as f64,
            };
            backend(
                state,
                &compiled,
                &origin,
                cluster_name,
                id,
                *weight,
                percent,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(pb::ExplainResponse {
        service: display(service),
        cluster: locality.cluster,
        region: locality.region,
        zone: locality.zone,
        splits,
        backends,
        revision: 0,
        node_id: 0,
        notes,
    })
}

/// The clusters the service's route sends to, with weights; `None` for a
/// TCP service, which has no route configuration.
fn route_clusters(
    compiled: &Compiled,
    name: &str,
    service: &ServiceId,
) -> Result<Option<Vec<(String, u32)>>, ExplainError> {
    let Some(resource) = compiled.get(type_url::ROUTE, name) else {
        return Ok(None);
    };
    let routes = RouteConfiguration::decode(resource.resource.value.as_slice()).map_err(|e| {
        ExplainError::Undecodable {
            what: "route configuration",
            service: display(service),
            error: e.to_string(),
        }
    })?;
    let action = routes
        .virtual_hosts
        .iter()
        .flat_map(|vh| &vh.routes)
        .find_map(|route| match &route.action {
            Some(Action::Route(action)) => action.cluster_specifier.as_ref(),
            _ => None,
        });
    Ok(Some(match action {
        Some(ClusterSpecifier::WeightedClusters(weighted)) => weighted
            .clusters
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.weight.as_ref().map(|w| w.value).unwrap_or(0),
                )
            })
            .collect(),
        Some(ClusterSpecifier::Cluster(cluster)) => vec![(cluster.clone(), 1)],
        _ => vec![(name.to_string(), 1)],
    }))
}

/// The service an xDS cluster name stands for.
fn service_named(state: &MeshState, cluster_name: &str) -> ServiceId {
    state
        .services()
        .map(|(id, _)| id)
        .find(|id| names::service(id) == cluster_name)
        .unwrap_or_else(|| ServiceId::new("", cluster_name))
}

fn backend(
    state: &MeshState,
    compiled: &Compiled,
    origin: &Origin,
    cluster_name: &str,
    id: ServiceId,
    weight: u32,
    percent: f64,
) -> Result<pb::ExplainBackend, ExplainError> {
    let assignment = match compiled.get(type_url::ENDPOINT, cluster_name) {
        Some(resource) => ClusterLoadAssignment::decode(resource.resource.value.as_slice())
            .map_err(|e| ExplainError::Undecodable {
                what: "load assignment",
                service: display(&id),
                error: e.to_string(),
            })?,
        None => ClusterLoadAssignment::default(),
    };
    let policy = state.failover_for(&id).and_then(|r| match &r.spec {
        Spec::FailoverPolicy(p) => Some((resource_name(r), p.order.clone())),
        _ => None,
    });
    let (policy_name, order) = policy.unwrap_or_default();
    let weighed = tiers::weigh(state, &assignment, origin, &order);
    let mut notes = weighed.notes;
    let left_out = zero_weight_endpoints(state, &id);
    if left_out > 0 {
        notes.push(format!(
            "{left_out} endpoint(s) with weight 0 take no traffic and are not sent"
        ));
    }
    Ok(pb::ExplainBackend {
        service: display(&id),
        split_weight: weight,
        split_percent: percent,
        failover_policy: policy_name,
        failover_order: order,
        overprovisioning_factor: weighed.factor,
        tiers: weighed.tiers,
        notes,
    })
}

/// Endpoints of the service with weight 0, which compilation leaves out.
fn zero_weight_endpoints(state: &MeshState, id: &ServiceId) -> usize {
    state
        .endpoints(id)
        .filter_map(|r| match &r.spec {
            Spec::Endpoints(e) => Some(e.endpoints.iter().filter(|ep| ep.weight == 0).count()),
            _ => None,
        })
        .sum()
}

#[cfg(test)]
mod tests;
