//! A load assignment read back as priority tiers: each tier's localities
//! and endpoints, why each locality has its priority, and the share of
//! traffic each tier receives (meridian-balance's priority loads, the
//! function meridian-proxy balances with).

use envoy_types::pb::envoy::config::{
    core::v3::{address, socket_address::PortSpecifier, HealthStatus},
    endpoint::v3::{lb_endpoint::HostIdentifier, ClusterLoadAssignment, LbEndpoint},
};
use meridian_balance::{priority_health, priority_loads};
use meridian_model::spec::DEFAULT_OVERPROVISIONING_FACTOR;
use meridian_proto::v1 as pb;
use meridian_routes::{
    failover::{placement, Locality, Origin, Placement},
    MeshState,
};
use std::collections::BTreeMap;

/// The tiers of one load assignment, its factor, and what to say about them.
pub struct Weighed {
    pub tiers: Vec<pb::ExplainTier>,
    pub factor: f64,
    pub notes: Vec<String>,
}

/// Reads `assignment` (compiled for a proxy at `origin`, with the failover
/// `order`) as tiers, in priority order.
pub fn weigh(
    state: &MeshState,
    assignment: &ClusterLoadAssignment,
    origin: &Origin,
    order: &[String],
) -> Weighed {
    // As meridian-proxy reads it: Envoy's percentage, 140 for 1.4.
    let factor = assignment
        .policy
        .as_ref()
        .and_then(|p| p.overprovisioning_factor.as_ref())
        .map(|f| f64::from(f.value) / 100.0)
        .unwrap_or(DEFAULT_OVERPROVISIONING_FACTOR);
    let mut by_priority: BTreeMap<u32, pb::ExplainTier> = BTreeMap::new();
    let mut stale = Vec::new();
    for group in &assignment.endpoints {
        let envoy = group.locality.clone().unwrap_or_default();
        let locality = Locality {
            region: envoy.region,
            zone: envoy.zone,
            cluster: envoy.sub_zone,
        };
        let is_stale = state
            .cluster(&locality.cluster)
            .and_then(|c| c.status.as_ref())
            .is_some_and(|s| s.stale);
        if is_stale && !stale.contains(&locality.cluster) {
            stale.push(locality.cluster.clone());
        }
        let tier = by_priority
            .entry(group.priority)
            .or_insert_with(|| pb::ExplainTier {
                priority: group.priority,
                ..Default::default()
            });
        let endpoints: Vec<pb::ExplainEndpoint> = group.lb_endpoints.iter().map(endpoint).collect();
        for e in endpoints.iter().filter(|e| e.weight > 0) {
            tier.total_weight += u64::from(e.weight);
            if counts_healthy(&e.health) {
                tier.healthy_weight += u64::from(e.weight);
            }
        }
        tier.localities.push(pb::ExplainLocality {
            reason: reason(placement(origin, &locality, order), order),
            region: locality.region,
            zone: locality.zone,
            cluster: locality.cluster,
            stale: is_stale,
            endpoints,
        });
    }
    let mut tiers: Vec<pb::ExplainTier> = by_priority.into_values().collect();
    let levels: Vec<(u64, u64)> = tiers
        .iter()
        .map(|t| (t.healthy_weight, t.total_weight))
        .collect();
    for (tier, load) in tiers.iter_mut().zip(priority_loads(&levels, factor)) {
        tier.health_percent = priority_health((tier.healthy_weight, tier.total_weight), factor);
        tier.share_percent = load;
    }
    let mut notes: Vec<String> = stale
        .iter()
        .map(|c| {
            format!(
                "cluster {c} is stale: its agent is gone, its endpoints are the last it reported"
            )
        })
        .collect();
    if tiers.is_empty() {
        notes.push("no endpoints: requests to it fail".to_string());
    } else if tiers.iter().all(|t| t.share_percent == 0.0) {
        notes.push("no endpoint is healthy: no tier can take traffic".to_string());
    }
    Weighed {
        tiers,
        factor,
        notes,
    }
}

/// Healthy as meridian-proxy counts it: healthy, or health unknown.
fn counts_healthy(health: &str) -> bool {
    matches!(health, "healthy" | "unknown")
}

fn endpoint(e: &LbEndpoint) -> pb::ExplainEndpoint {
    let address = match &e.host_identifier {
        Some(HostIdentifier::Endpoint(ep)) => {
            match ep.address.as_ref().and_then(|a| a.address.as_ref()) {
                Some(address::Address::SocketAddress(sa)) => match sa.port_specifier {
                    Some(PortSpecifier::PortValue(port)) if sa.address.contains(':') => {
                        format!("[{}]:{port}", sa.address)
                    }
                    Some(PortSpecifier::PortValue(port)) => format!("{}:{port}", sa.address),
                    _ => sa.address.clone(),
                },
                _ => String::new(),
            }
        }
        _ => String::new(),
    };
    let health = match HealthStatus::try_from(e.health_status) {
        Ok(HealthStatus::Healthy) => "healthy",
        Ok(HealthStatus::Unhealthy) => "unhealthy",
        Ok(HealthStatus::Draining) => "draining",
        _ => "unknown",
    };
    pb::ExplainEndpoint {
        address,
        weight: e
            .load_balancing_weight
            .as_ref()
            .map(|w| w.value)
            .unwrap_or(1),
        health: health.to_string(),
    }
}

/// Why a locality has its priority, in words.
fn reason(placement: Placement, order: &[String]) -> String {
    match placement {
        Placement::Zone => "the proxy's zone".to_string(),
        Placement::Region => "the proxy's region".to_string(),
        Placement::Order(i) => format!(
            "failover order {} of {} ({})",
            i + 1,
            order.len(),
            order.get(i).map(String::as_str).unwrap_or_default()
        ),
        Placement::Rest if order.is_empty() => {
            "outside the proxy's region (no failover policy)".to_string()
        }
        Placement::Rest => "not in the failover order".to_string(),
    }
}
