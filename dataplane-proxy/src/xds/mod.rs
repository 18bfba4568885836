//! The proxy's xDS client: delta ADS, or state of the world where the server
//! offers only that. Subscribes to clusters and listeners, then to the load
//! assignments and route configurations they name; applies each response
//! only if the whole configuration still holds together (ACK), and otherwise
//! keeps the previous one and says why (NACK). Moves to the next control
//! plane on failure; reconnects presenting what it holds.

#[cfg(test)]
mod decoders_no_panic;
mod delta;
mod sotw;

use crate::config::{ListenerKind, Resources, Snapshot, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster,
    core::v3::{Locality, Node},
    endpoint::v3::ClusterLoadAssignment,
    listener::v3::Listener,
    route::v3::RouteConfiguration,
};
use meridian_identity::backoff::Backoff;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
pub struct XdsConfig {
    pub servers: Vec<String>,
    /// Mutual TLS with the proxy's certificate, or plaintext.
    pub dialer: meridian_identity::tls::Dialer,
    pub node_id: String,
    pub cluster: String,
    pub region: String,
    pub zone: String,
}

/// Receives every configuration the client accepted.
pub trait Apply: Send + Sync {
    fn apply(&self, resources: &Resources, snapshot: Snapshot);
}

/// Why a session ended.
pub enum Ended {
    /// The server does not offer this protocol variant.
    Unimplemented,
    Failed(String),
    Closed,
}

impl From<tonic::Status> for Ended {
    fn from(status: tonic::Status) -> Self {
        if status.code() == tonic::Code::Unimplemented {
            Ended::Unimplemented
        } else {
            Ended::Failed(status.to_string())
        }
    }
}

/// A channel to a control plane.
async fn connect(config: &XdsConfig, server: &str) -> Result<tonic::transport::Channel, Ended> {
    config.dialer.connect(server).await.map_err(failed)
}

fn failed(e: impl std::fmt::Display) -> Ended {
    Ended::Failed(e.to_string())
}

fn node(config: &XdsConfig) -> Node {
    Node {
        id: config.node_id.clone(),
        cluster: config.cluster.clone(),
        locality: Some(Locality {
            region: config.region.clone(),
            zone: config.zone.clone(),
            sub_zone: String::new(),
        }),
        user_agent_name: "meridian-proxy".into(),
        ..Default::default()
    }
}

/// Names the dependent types need, given an accepted configuration.
fn wanted(snapshot: &Snapshot) -> BTreeMap<&'static str, BTreeSet<String>> {
    let eds: BTreeSet<String> = snapshot.clusters.keys().cloned().collect();
    let rds: BTreeSet<String> = snapshot
        .listeners
        .values()
        .filter_map(|kind| match kind {
            ListenerKind::Http(route) => Some(route.clone()),
            ListenerKind::Tcp(_) => None,
        })
        .collect();
    BTreeMap::from([(ENDPOINT, eds), (ROUTE, rds)])
}

/// The name inside a resource of `type_url`, or why it is refused: it does
/// not decode as that type, or the type is not one the proxy asks for.
fn resource_name(type_url: &str, bytes: &[u8]) -> Result<String, String> {
    let name = match type_url {
        CLUSTER => Cluster::decode(bytes).map(|m| m.name),
        ENDPOINT => ClusterLoadAssignment::decode(bytes).map(|m| m.cluster_name),
        LISTENER => Listener::decode(bytes).map(|m| m.name),
        ROUTE => RouteConfiguration::decode(bytes).map(|m| m.name),
        other => return Err(format!("unexpected type {other}")),
    };
    name.map_err(|e| format!("{type_url}: a resource does not decode: {e}"))
}

/// Checks a candidate resource set; a route update must not name unknown clusters.
fn check(candidate: &Resources, type_url: &str) -> Result<Snapshot, String> {
    Snapshot::build(candidate, type_url == ROUTE)
}

pub async fn run(config: XdsConfig, mut resources: Resources, apply: &dyn Apply) {
    let mut backoff = Backoff::default();
    let mut sotw_only = std::collections::HashSet::new();
    for server in config.servers.iter().cycle() {
        let session = if sotw_only.contains(server) {
            sotw::run_session(&config, server, &mut resources, apply, &mut backoff).await
        } else {
            delta::run_session(&config, server, &mut resources, apply, &mut backoff).await
        };
        let ended = session.err().unwrap_or(Ended::Closed);
        match ended {
            Ended::Unimplemented if !sotw_only.contains(server) => {
                tracing::info!(%server, "the server offers no delta xDS; using state of the world");
                sotw_only.insert(server.clone());
                continue;
            }
            Ended::Unimplemented => tracing::warn!(%server, "the server offers no ADS at all"),
            Ended::Closed => tracing::warn!(%server, "xDS stream closed"),
            Ended::Failed(e) => {
                tracing::warn!(%server, error = %e, "xDS stream failed; keeping the last good configuration")
            }
        }
        backoff.wait().await;
    }
}
