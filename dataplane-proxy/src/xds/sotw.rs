//! State-of-the-world ADS, for servers that offer only that: clusters and
//! listeners arrive whole (what is missing is gone); route configurations and
//! load assignments arrive as the server has them (what is missing is unchanged).

use super::{check, connect, failed, node, resource_name, wanted, Apply, Ended, XdsConfig};
use crate::config::{Resources, Snapshot, CLUSTER, LISTENER};
use envoy_types::pb::{
    envoy::service::discovery::v3::{
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DiscoveryRequest,
        DiscoveryResponse,
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
    response: &DiscoveryResponse,
) -> Result<(Resources, Snapshot), String> {
    let candidate = merged(resources, response)?;
    let snapshot = check(&candidate, &response.type_url)?;
    Ok((candidate, snapshot))
}

fn merged(resources: &Resources, response: &DiscoveryResponse) -> Result<Resources, String> {
    let mut candidate = resources.clone();
    let mut incoming = BTreeMap::new();
    for any in &response.resources {
        incoming.insert(
            // State of the world does not carry the name beside the resource.
            resource_name(&response.type_url, &any.value)?,
            (response.version_info.clone(), any.value.clone()),
        );
    }
    let map = candidate.entry(response.type_url.clone()).or_default();
    if response.type_url == CLUSTER || response.type_url == LISTENER {
        *map = incoming;
    } else {
        map.extend(incoming);
    }
    Ok(candidate)
}

fn request(
    type_url: &str,
    names: &BTreeSet<String>,
    version: String,
    nonce: String,
) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: names.iter().cloned().collect(),
        version_info: version,
        response_nonce: nonce,
        ..Default::default()
    }
}

pub(super) async fn run_session(
    config: &XdsConfig,
    server: &str,
    resources: &mut Resources,
    apply: &dyn Apply,
    backoff: &mut Backoff,
) -> Result<(), Ended> {
    let channel = connect(config, server).await?;
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    // Per type: the names asked for, and the version and nonce last accepted.
    let mut subscribed: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    let mut accepted: BTreeMap<String, String> = BTreeMap::new();
    let mut first = DiscoveryRequest {
        node: Some(node(config)),
        ..request(CLUSTER, &BTreeSet::new(), String::new(), String::new())
    };
    tx.send(first.clone()).await.map_err(failed)?;
    first.type_url = LISTENER.into();
    tx.send(first).await.map_err(failed)?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    tracing::info!(%server, "xDS stream open (state of the world)");
    while let Some(response) = responses.message().await? {
        // The server answers: the stream works, so a later failure starts the backoff over.
        backoff.reset();
        let type_url = response.type_url.clone();
        let names = subscribed
            .get(type_url.as_str())
            .cloned()
            .unwrap_or_default();
        let outcome = candidate(resources, &response);
        let mut followups = Vec::new();
        let reply = match outcome {
            Ok((candidate, snapshot)) => {
                for (child, wanted_names) in wanted(&snapshot) {
                    if subscribed.get(child) != Some(&wanted_names) {
                        let version = accepted.get(child).cloned().unwrap_or_default();
                        followups.push(request(child, &wanted_names, version, String::new()));
                        subscribed.insert(child, wanted_names);
                    }
                }
                apply.apply(&candidate, snapshot);
                *resources = candidate;
                accepted.insert(type_url.clone(), response.version_info.clone());
                request(
                    &type_url,
                    &names,
                    response.version_info.clone(),
                    response.nonce.clone(),
                )
            }
            Err(error) => {
                tracing::warn!(%type_url, %error, "refusing an xDS update (NACK)");
                let version = accepted.get(&type_url).cloned().unwrap_or_default();
                DiscoveryRequest {
                    error_detail: Some(RpcStatus {
                        code: 3,
                        message: error,
                        details: vec![],
                    }),
                    ..request(&type_url, &names, version, response.nonce.clone())
                }
            }
        };
        tx.send(reply).await.map_err(failed)?;
        for followup in followups {
            tx.send(followup).await.map_err(failed)?;
        }
    }
    Ok(())
}
