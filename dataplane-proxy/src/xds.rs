//! The proxy's delta ADS client: subscribes to clusters and listeners, then
//! to the load assignments and route configurations they name; applies each
//! response only if the whole configuration still holds together (ACK), and
//! otherwise keeps the previous one and says why (NACK). Moves to the next
//! control plane on failure; reconnects presenting the versions it holds.

use crate::config::{ListenerKind, Resources, Snapshot, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use envoy_types::pb::{
    envoy::{
        config::core::v3::{Locality, Node},
        service::discovery::v3::{
            aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
            DeltaDiscoveryRequest, DeltaDiscoveryResponse,
        },
    },
    google::rpc::Status as RpcStatus,
};
use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Debug, Clone)]
pub struct XdsConfig {
    pub servers: Vec<String>,
    pub node_id: String,
    pub cluster: String,
    pub region: String,
    pub zone: String,
}

/// Receives every configuration the client accepted.
pub trait Apply: Send + Sync {
    fn apply(&self, resources: &Resources, snapshot: Snapshot);
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

/// Names the dependent types need, given the accepted resources.
fn wanted(resources: &Resources, snapshot: &Snapshot) -> BTreeMap<&'static str, BTreeSet<String>> {
    let _ = resources;
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

/// Applies a response to a copy of the resources.
fn merged(resources: &Resources, response: &DeltaDiscoveryResponse) -> Resources {
    let mut candidate = resources.clone();
    let map = candidate.entry(response.type_url.clone()).or_default();
    for name in &response.removed_resources {
        map.remove(name);
    }
    for resource in &response.resources {
        if let Some(any) = &resource.resource {
            map.insert(
                resource.name.clone(),
                (resource.version.clone(), any.value.clone()),
            );
        }
    }
    candidate
}

pub async fn run(config: XdsConfig, mut resources: Resources, apply: &dyn Apply) {
    let mut backoff = Duration::from_millis(100);
    for server in config.servers.iter().cycle() {
        match session(&config, server, &mut resources, apply).await {
            Ok(()) => tracing::warn!(%server, "xDS stream closed"),
            Err(e) => {
                tracing::warn!(%server, error = %e, "xDS stream failed; keeping the last good configuration")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn session(
    config: &XdsConfig,
    server: &str,
    resources: &mut Resources,
    apply: &dyn Apply,
) -> Result<(), String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{server}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    let initial =
        |type_url: &str, resources: &Resources| -> std::collections::HashMap<String, String> {
            resources
                .get(type_url)
                .map(|m| m.iter().map(|(n, (v, _))| (n.clone(), v.clone())).collect())
                .unwrap_or_default()
        };
    let mut subscribed: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    for type_url in [CLUSTER, LISTENER] {
        let request = DeltaDiscoveryRequest {
            node: Some(node(config)),
            type_url: type_url.into(),
            initial_resource_versions: initial(type_url, resources),
            ..Default::default()
        };
        tx.send(request).await.map_err(|e| e.to_string())?;
    }
    if let Ok(snapshot) = Snapshot::build(resources, false) {
        for (type_url, names) in wanted(resources, &snapshot) {
            if names.is_empty() {
                continue;
            }
            let request = DeltaDiscoveryRequest {
                type_url: type_url.into(),
                resource_names_subscribe: names.iter().cloned().collect(),
                initial_resource_versions: initial(type_url, resources),
                ..Default::default()
            };
            tx.send(request).await.map_err(|e| e.to_string())?;
            subscribed.insert(type_url, names);
        }
    }
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut responses = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    tracing::info!(%server, "xDS stream open");
    while let Some(response) = responses.message().await.map_err(|e| e.to_string())? {
        let candidate = merged(resources, &response);
        let strict = response.type_url == ROUTE;
        let (ack, followups) = match Snapshot::build(&candidate, strict) {
            Ok(snapshot) => {
                let mut followups = Vec::new();
                for (type_url, names) in wanted(&candidate, &snapshot) {
                    let before = subscribed.get(type_url).cloned().unwrap_or_default();
                    if before != names {
                        followups.push(DeltaDiscoveryRequest {
                            type_url: type_url.into(),
                            resource_names_subscribe: names.difference(&before).cloned().collect(),
                            resource_names_unsubscribe: before
                                .difference(&names)
                                .cloned()
                                .collect(),
                            ..Default::default()
                        });
                        subscribed.insert(type_url, names);
                    }
                }
                apply.apply(&candidate, snapshot);
                *resources = candidate;
                (None, followups)
            }
            Err(error) => {
                tracing::warn!(type_url = %response.type_url, %error, "refusing an xDS update (NACK)");
                (Some(error), Vec::new())
            }
        };
        let reply = DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            error_detail: ack.map(|message| RpcStatus {
                code: 3,
                message,
                details: vec![],
            }),
            ..Default::default()
        };
        tx.send(reply).await.map_err(|e| e.to_string())?;
        for request in followups {
            tx.send(request).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
