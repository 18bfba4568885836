//! Delta (incremental) ADS.

use super::{check, connect, failed, node, resource_name, wanted, Apply, Ended, XdsConfig};
use crate::config::{Resources, Snapshot, CLUSTER, LISTENER};
use envoy_types::pb::{
    envoy::service::discovery::v3::{
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
        DeltaDiscoveryRequest, DeltaDiscoveryResponse,
    },
    google::rpc::Status as RpcStatus,
};
use meridian_identity::backoff::Backoff;
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The resources with `response` applied, and the configuration they make,
/// or why they are refused (NACK).
pub(super) fn candidate(
    resources: &Resources,
    response: &DeltaDiscoveryResponse,
) -> Result<(Resources, Snapshot), String> {
    let candidate = merged(resources, response)?;
    let snapshot = check(&candidate, &response.type_url)?;
    Ok((candidate, snapshot))
}

/// Applies a response to a copy of the resources; each must decode as the
/// response's type, even one no cluster names yet.
fn merged(resources: &Resources, response: &DeltaDiscoveryResponse) -> Result<Resources, String> {
    let mut candidate = resources.clone();
    let map = candidate.entry(response.type_url.clone()).or_default();
    for name in &response.removed_resources {
        map.remove(name);
    }
    for resource in &response.resources {
        if let Some(any) = &resource.resource {
            resource_name(&response.type_url, &any.value)?;
            map.insert(
                resource.name.clone(),
                (resource.version.clone(), any.value.clone()),
            );
        }
    }
    Ok(candidate)
}

pub(super) async fn run_session(
    config: &XdsConfig,
    server: &str,
    resources: &mut Resources,
    apply: &dyn Apply,
    backoff: &mut Backoff,
) -> Result<(), Ended> {
    let channel = connect(config, server).await?;
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
        tx.send(request).await.map_err(failed)?;
    }
    if let Ok(snapshot) = Snapshot::build(resources, false) {
        for (type_url, names) in wanted(&snapshot) {
            if names.is_empty() {
                continue;
            }
            let request = DeltaDiscoveryRequest {
                type_url: type_url.into(),
                resource_names_subscribe: names.iter().cloned().collect(),
                initial_resource_versions: initial(type_url, resources),
                ..Default::default()
            };
            tx.send(request).await.map_err(failed)?;
            subscribed.insert(type_url, names);
        }
    }
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut responses = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    tracing::info!(%server, "xDS stream open");
    while let Some(response) = responses.message().await? {
        // The server answers: the stream works, so a later failure starts the backoff over.
        backoff.reset();
        let (ack, followups) = match candidate(resources, &response) {
            Ok((candidate, snapshot)) => {
                let mut followups = Vec::new();
                for (type_url, names) in wanted(&snapshot) {
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
        tx.send(reply).await.map_err(failed)?;
        for request in followups {
            tx.send(request).await.map_err(failed)?;
        }
    }
    Ok(())
}
