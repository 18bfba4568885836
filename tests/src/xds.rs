//! ADS clients for the tests, in both protocol variants: they subscribe the
//! way Envoy does (CDS and LDS wildcard, then EDS and RDS by the names those
//! name), ACK what they get, and keep the resources they hold.

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::Cluster,
            core::v3::{Locality, Node},
            listener::v3::{filter::ConfigType, Listener},
        },
        extensions::filters::network::http_connection_manager::v3::{
            http_connection_manager::RouteSpecifier, HttpConnectionManager,
        },
        service::discovery::v3::{
            aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
            DeltaDiscoveryRequest, DiscoveryRequest,
        },
    },
    google::{protobuf::Any, rpc::Status as RpcStatus},
};
use prost::Message;
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// What a client holds: per type, resource name to (version, resource).
#[derive(Debug, Default, Clone)]
pub struct Held {
    pub resources: BTreeMap<String, BTreeMap<String, (String, Any)>>,
    /// State of the world: the version_info last accepted per type.
    pub type_versions: BTreeMap<String, String>,
    /// Every response received: (type URL, version).
    pub responses: Vec<(String, String)>,
    /// When each response in `responses` arrived.
    pub received_at: Vec<std::time::Instant>,
    /// Bytes of resources received in all responses.
    pub bytes: u64,
    /// Set when the stream ends: its status.
    pub ended: Option<String>,
    /// Keep load assignments by name and version only, without their
    /// bodies: ten thousand clients of a large mesh fit in memory.
    pub drop_endpoint_bodies: bool,
}

impl Held {
    /// What is kept of `resource`, of `type_url`.
    fn kept(&self, type_url: &str, resource: &Any) -> Any {
        if self.drop_endpoint_bodies && type_url == ENDPOINT {
            Any {
                type_url: resource.type_url.clone(),
                value: Vec::new(),
            }
        } else {
            resource.clone()
        }
    }

    /// Name to resource bytes, across types: what two clients compare.
    pub fn contents(&self) -> BTreeMap<(String, String), Vec<u8>> {
        self.resources
            .iter()
            .flat_map(|(t, m)| {
                m.iter()
                    .map(move |(n, (_, any))| ((t.clone(), n.clone()), any.value.clone()))
            })
            .collect()
    }

    pub fn decode<M: Message + Default>(&self, type_url: &str, name: &str) -> Option<M> {
        let (_, any) = self.resources.get(type_url)?.get(name)?;
        M::decode(any.value.as_slice()).ok()
    }
}

pub fn node(id: &str, cluster: &str) -> Node {
    Node {
        id: id.to_string(),
        cluster: cluster.to_string(),
        locality: Some(Locality::default()),
        ..Default::default()
    }
}

/// The route configurations a listener refers to.
fn rds_names(any: &Any) -> Vec<String> {
    let Ok(listener) = Listener::decode(any.value.as_slice()) else {
        return Vec::new();
    };
    let configs = listener
        .api_listener
        .and_then(|a| a.api_listener)
        .into_iter()
        .chain(
            listener
                .filter_chains
                .into_iter()
                .flat_map(|c| c.filters)
                .filter_map(|f| match f.config_type {
                    Some(ConfigType::TypedConfig(any)) => Some(any),
                    _ => None,
                }),
        );
    configs
        .filter(|c| c.type_url.ends_with("HttpConnectionManager"))
        .filter_map(|c| HttpConnectionManager::decode(c.value.as_slice()).ok())
        .filter_map(|h| match h.route_specifier {
            Some(RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
            _ => None,
        })
        .collect()
}

fn eds_names(any: &Any) -> Vec<String> {
    Cluster::decode(any.value.as_slice())
        .ok()
        .and_then(|c| c.eds_cluster_config)
        .map(|e| vec![e.service_name])
        .unwrap_or_default()
}

/// Names the dependent type needs, given what the client holds.
fn dependent_names(held: &Held, parent: &str) -> BTreeSet<String> {
    let extract: fn(&Any) -> Vec<String> = if parent == CLUSTER {
        eds_names
    } else {
        rds_names
    };
    held.resources
        .get(parent)
        .map(|m| m.values().flat_map(|(_, any)| extract(any)).collect())
        .unwrap_or_default()
}

/// A running client; dropping it closes its stream.
pub struct AdsClient {
    held: Arc<Mutex<Held>>,
    /// Cleared by [`AdsClient::stop_answering`].
    answering: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl AdsClient {
    /// From now on the client keeps its stream open and takes what it is
    /// sent, but neither ACKs nor NACKs nor asks for anything again: a proxy
    /// that has stopped making progress.
    pub fn stop_answering(&self) {
        self.answering.store(false, Ordering::Relaxed);
    }

    pub fn held(&self) -> Held {
        self.held.lock().expect("lock").clone()
    }

    /// Looks at what the client holds without copying it.
    pub fn with<T>(&self, look: impl FnOnce(&Held) -> T) -> T {
        look(&self.held.lock().expect("lock"))
    }
}

impl Drop for AdsClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A state-of-the-world client. With `previous`, it reconnects as Envoy does:
/// presenting the versions and names it holds. `nack` makes it refuse every CDS response.
pub async fn sotw(
    addr: &str,
    node: Node,
    previous: Option<Held>,
    nack: bool,
) -> Result<AdsClient, tonic::transport::Error> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(sotw_on(channel, node, previous, nack).await)
}

/// [`sotw`] on a channel made elsewhere (over mTLS, say).
pub async fn sotw_on(
    channel: tonic::transport::Channel,
    node: Node,
    previous: Option<Held>,
    nack: bool,
) -> AdsClient {
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let previous = previous.unwrap_or_default();
    let mut subscribed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(64);
    for type_url in [CLUSTER, LISTENER, ENDPOINT, ROUTE] {
        let names: BTreeSet<String> = previous
            .resources
            .get(type_url)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let dependent = type_url == ENDPOINT || type_url == ROUTE;
        if dependent && names.is_empty() {
            continue;
        }
        if dependent {
            subscribed.insert(type_url.to_string(), names.clone());
        }
        let _ = tx
            .send(DiscoveryRequest {
                node: Some(node.clone()),
                type_url: type_url.to_string(),
                version_info: previous
                    .type_versions
                    .get(type_url)
                    .cloned()
                    .unwrap_or_default(),
                resource_names: if dependent {
                    names.into_iter().collect()
                } else {
                    Vec::new()
                },
                ..Default::default()
            })
            .await;
    }
    let held = Arc::new(Mutex::new(Held {
        resources: previous.resources,
        type_versions: previous.type_versions,
        drop_endpoint_bodies: previous.drop_endpoint_bodies,
        ..Default::default()
    }));
    let shared = held.clone();
    let answering = Arc::new(AtomicBool::new(true));
    let answer = answering.clone();
    let task = tokio::spawn(async move {
        let mut responses = match client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(status) => {
                shared.lock().expect("lock").ended = Some(status.to_string());
                return;
            }
        };
        loop {
            let response = match responses.message().await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(status) => {
                    shared.lock().expect("lock").ended = Some(status.to_string());
                    return;
                }
            };
            let refuse = nack && response.type_url == CLUSTER;
            let followups = {
                let mut h = shared.lock().expect("lock");
                h.responses
                    .push((response.type_url.clone(), response.version_info.clone()));
                h.received_at.push(std::time::Instant::now());
                h.bytes += response
                    .resources
                    .iter()
                    .map(|r| r.value.len() as u64)
                    .sum::<u64>();
                if !refuse {
                    let map: BTreeMap<String, (String, Any)> = response
                        .resources
                        .iter()
                        .map(|any| {
                            (
                                resource_name(&response.type_url, any),
                                (
                                    response.version_info.clone(),
                                    h.kept(&response.type_url, any),
                                ),
                            )
                        })
                        .collect();
                    if response.type_url == CLUSTER || response.type_url == LISTENER {
                        h.resources.insert(response.type_url.clone(), map);
                    } else {
                        // RDS and EDS updates carry only what changed; what
                        // is no longer wanted was dropped when it stopped
                        // being asked for (below), and a response sent
                        // before that brings none of it back.
                        let wanted = subscribed.get(&response.type_url);
                        let held = h.resources.entry(response.type_url.clone()).or_default();
                        held.extend(
                            map.into_iter()
                                .filter(|(name, _)| wanted.is_some_and(|w| w.contains(name))),
                        );
                    }
                    h.type_versions
                        .insert(response.type_url.clone(), response.version_info.clone());
                }
                let mut followups = Vec::new();
                for (parent, child) in [(CLUSTER, ENDPOINT), (LISTENER, ROUTE)] {
                    if response.type_url == parent {
                        let names = dependent_names(&h, parent);
                        if subscribed.get(child) != Some(&names) {
                            if let Some(held) = h.resources.get_mut(child) {
                                held.retain(|name, _| names.contains(name));
                            }
                            subscribed.insert(child.to_string(), names.clone());
                            followups.push(DiscoveryRequest {
                                type_url: child.to_string(),
                                resource_names: names.into_iter().collect(),
                                version_info: h
                                    .type_versions
                                    .get(child)
                                    .cloned()
                                    .unwrap_or_default(),
                                ..Default::default()
                            });
                        }
                    }
                }
                followups
            };
            if !answer.load(Ordering::Relaxed) {
                continue;
            }
            let ack = DiscoveryRequest {
                type_url: response.type_url.clone(),
                version_info: if refuse {
                    String::new()
                } else {
                    response.version_info.clone()
                },
                response_nonce: response.nonce.clone(),
                resource_names: subscribed
                    .get(&response.type_url)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default(),
                error_detail: refuse.then(|| RpcStatus {
                    code: 3,
                    message: "test client refuses clusters".into(),
                    details: vec![],
                }),
                ..Default::default()
            };
            if tx.send(ack).await.is_err() {
                break;
            }
            for request in followups {
                if tx.send(request).await.is_err() {
                    break;
                }
            }
        }
    });
    AdsClient {
        held,
        answering,
        task,
    }
}

/// A delta client that applies every increment.
pub async fn delta(addr: &str, node: Node) -> Result<AdsClient, tonic::transport::Error> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(delta_on(channel, node).await)
}

/// [`delta`] on a channel made elsewhere (over mTLS, say).
pub async fn delta_on(channel: tonic::transport::Channel, node: Node) -> AdsClient {
    delta_with(channel, node, Held::default()).await
}

/// [`delta_on`], starting from `held` (empty, with its settings).
pub async fn delta_with(channel: tonic::transport::Channel, node: Node, held: Held) -> AdsClient {
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let held = Arc::new(Mutex::new(held));
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(64);
    for type_url in [CLUSTER, LISTENER] {
        let _ = tx
            .send(DeltaDiscoveryRequest {
                node: Some(node.clone()),
                type_url: type_url.to_string(),
                ..Default::default()
            })
            .await;
    }
    let shared = held.clone();
    let answering = Arc::new(AtomicBool::new(true));
    let answer = answering.clone();
    let task = tokio::spawn(async move {
        let mut responses = match client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(status) => {
                shared.lock().expect("lock").ended = Some(status.to_string());
                return;
            }
        };
        let mut subscribed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        loop {
            let response = match responses.message().await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(status) => {
                    shared.lock().expect("lock").ended = Some(status.to_string());
                    return;
                }
            };
            let followups = {
                let mut h = shared.lock().expect("lock");
                h.responses.push((
                    response.type_url.clone(),
                    response.system_version_info.clone(),
                ));
                h.received_at.push(std::time::Instant::now());
                h.bytes += response
                    .resources
                    .iter()
                    .filter_map(|r| r.resource.as_ref())
                    .map(|r| r.value.len() as u64)
                    .sum::<u64>();
                let kept: Vec<(String, (String, Any))> = response
                    .resources
                    .iter()
                    .filter_map(|resource| {
                        let any = resource.resource.as_ref()?;
                        Some((
                            resource.name.clone(),
                            (resource.version.clone(), h.kept(&response.type_url, any)),
                        ))
                    })
                    .collect();
                let map = h.resources.entry(response.type_url.clone()).or_default();
                map.extend(kept);
                for name in &response.removed_resources {
                    map.remove(name);
                }
                let mut followups = Vec::new();
                for (parent, child) in [(CLUSTER, ENDPOINT), (LISTENER, ROUTE)] {
                    if response.type_url == parent {
                        let names = dependent_names(&h, parent);
                        let before = subscribed.get(child).cloned().unwrap_or_default();
                        if before != names {
                            followups.push(DeltaDiscoveryRequest {
                                type_url: child.to_string(),
                                resource_names_subscribe: names
                                    .difference(&before)
                                    .cloned()
                                    .collect(),
                                resource_names_unsubscribe: before
                                    .difference(&names)
                                    .cloned()
                                    .collect(),
                                ..Default::default()
                            });
                            subscribed.insert(child.to_string(), names);
                        }
                    }
                }
                followups
            };
            if !answer.load(Ordering::Relaxed) {
                continue;
            }
            let ack = DeltaDiscoveryRequest {
                type_url: response.type_url.clone(),
                response_nonce: response.nonce.clone(),
                ..Default::default()
            };
            if tx.send(ack).await.is_err() {
                break;
            }
            for request in followups {
                if tx.send(request).await.is_err() {
                    break;
                }
            }
        }
    });
    AdsClient {
        held,
        answering,
        task,
    }
}

/// The name inside a state-of-the-world resource: field 1 of each of the
/// four types (`name`, or a load assignment's `cluster_name`), read without
/// decoding the rest, as the last occurrence wins in protobuf. A load
/// assignment's endpoints are most of its bytes, and a thousand clients on
/// one core decoded all of them on every update only to learn its name.
fn resource_name(type_url: &str, any: &Any) -> String {
    use prost::encoding::{decode_key, skip_field, string, DecodeContext, WireType};
    if ![CLUSTER, ENDPOINT, LISTENER, ROUTE].contains(&type_url) {
        return String::new();
    }
    let mut bytes = any.value.as_slice();
    let mut name = String::new();
    while !bytes.is_empty() {
        let Ok((tag, wire_type)) = decode_key(&mut bytes) else {
            return String::new();
        };
        let read = if tag == 1 && wire_type == WireType::LengthDelimited {
            name.clear();
            string::merge(wire_type, &mut name, &mut bytes, DecodeContext::default())
        } else {
            skip_field(wire_type, tag, &mut bytes, DecodeContext::default())
        };
        if read.is_err() {
            return String::new();
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::{
        endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints},
        route::v3::RouteConfiguration,
    };

    fn any<M: Message>(message: &M) -> Any {
        Any {
            type_url: String::new(),
            value: message.encode_to_vec(),
        }
    }

    #[test]
    fn a_resource_name_is_read_as_a_full_decode_reads_it() {
        let assignment = ClusterLoadAssignment {
            cluster_name: "checkout.shop".into(),
            endpoints: vec![LocalityLbEndpoints::default(); 3],
            ..Default::default()
        };
        assert_eq!(resource_name(ENDPOINT, &any(&assignment)), "checkout.shop");
        let cluster = Cluster {
            name: "c".into(),
            ..Default::default()
        };
        assert_eq!(resource_name(CLUSTER, &any(&cluster)), "c");
        let listener = Listener {
            name: "l".into(),
            ..Default::default()
        };
        assert_eq!(resource_name(LISTENER, &any(&listener)), "l");
        let route = RouteConfiguration {
            name: "r".into(),
            ..Default::default()
        };
        assert_eq!(resource_name(ROUTE, &any(&route)), "r");
        // Field 1 twice: the last one is the name, as prost decodes it.
        let mut twice = any(&route);
        twice.value.extend(any(&cluster).value);
        assert_eq!(
            resource_name(ROUTE, &twice),
            RouteConfiguration::decode(twice.value.as_slice())
                .expect("decodes")
                .name
        );
        // Bytes that are no message, and a type without names.
        let garbage = Any {
            type_url: String::new(),
            value: vec![0x0a, 0xff],
        };
        assert_eq!(resource_name(ROUTE, &garbage), "");
        assert_eq!(resource_name("type.googleapis.com/other", &any(&route)), "");
    }
}
