//! A scripted delta ADS server for proxy tests: serves whatever resources
//! the test sets, pushes changes to every stream, and records the ACKs and
//! NACKs (with their error) that clients send back. It lets a test send a
//! proxy what a correct control plane never would.

use envoy_types::pb::{
    envoy::service::discovery::v3::{
        aggregated_discovery_service_server::{
            AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
        },
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
        Resource,
    },
    google::protobuf::Any,
};
use std::{
    collections::{BTreeMap, BTreeSet},
    pin::Pin,
    sync::{Arc, Mutex},
};
use tokio::sync::{mpsc, watch};
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status, Streaming};

#[derive(Default)]
struct Shared {
    /// type URL → name → resource.
    resources: Mutex<BTreeMap<String, BTreeMap<String, Any>>>,
    nacks: Mutex<Vec<String>>,
}

pub struct FakeXds {
    pub addr: String,
    shared: Arc<Shared>,
    version: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

struct Service {
    shared: Arc<Shared>,
    version: watch::Receiver<u64>,
    /// Offer only state of the world (delta answers UNIMPLEMENTED).
    sotw_only: bool,
}

impl FakeXds {
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// A server that offers only state-of-the-world ADS.
    pub async fn start_sotw_only() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(sotw_only: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let shared = Arc::new(Shared::default());
        let (version, rx) = watch::channel(0);
        let service = Service {
            shared: shared.clone(),
            version: rx,
            sotw_only,
        };
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        FakeXds {
            addr,
            shared,
            version,
            task,
        }
    }

    /// Sets a resource (encoded as the test likes) and pushes it to every stream.
    pub fn set(&self, type_url: &str, name: &str, resource: Any) {
        self.shared
            .resources
            .lock()
            .expect("lock")
            .entry(type_url.to_string())
            .or_default()
            .insert(name.to_string(), resource);
        self.version.send_modify(|v| *v += 1);
    }

    /// Serves what the route compiler makes of `manifests` for a proxy in
    /// `cluster`, as a control plane would; returns it, for tests to alter.
    pub fn set_compiled(&self, manifests: &str, cluster: &str) -> meridian_routes::Compiled {
        use meridian_routes::{compile, type_url, MeshState, ProxyLocality};
        let resources = meridian_model::parse_manifests(manifests)
            .expect("valid manifests")
            .into_iter()
            .map(|mut r| {
                r.metadata.revision = Some(1);
                r
            });
        let state = MeshState::from_resources(resources);
        let compiled = compile(&state, &ProxyLocality::of(&state, cluster, "", ""));
        for t in type_url::ALL {
            for (name, resource) in compiled.of_type(t).into_iter().flatten() {
                self.set(t, name, resource.resource.clone());
            }
        }
        compiled
    }

    /// The errors of the NACKs received so far.
    pub fn nacks(&self) -> Vec<String> {
        self.shared.nacks.lock().expect("lock").clone()
    }
}

impl Drop for FakeXds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn response(
    shared: &Shared,
    type_url: &str,
    names: &BTreeSet<String>,
    wildcard: bool,
    nonce: u64,
) -> DeltaDiscoveryResponse {
    let resources = shared.resources.lock().expect("lock");
    let items = resources
        .get(type_url)
        .map(|m| {
            m.iter()
                .filter(|(name, _)| wildcard || names.contains(*name))
                .map(|(name, any)| Resource {
                    name: name.clone(),
                    version: format!("v{nonce}"),
                    resource: Some(any.clone()),
                    ..Default::default()
                })
                .collect()
        })
        .unwrap_or_default();
    DeltaDiscoveryResponse {
        type_url: type_url.to_string(),
        resources: items,
        nonce: nonce.to_string(),
        system_version_info: nonce.to_string(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream =
        Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
    type DeltaAggregatedResourcesStream =
        Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        if !self.sotw_only {
            return Err(Status::unimplemented(
                "this test server speaks delta xDS only",
            ));
        }
        let (tx, rx) = mpsc::channel(16);
        let shared = self.shared.clone();
        let mut version = self.version.clone();
        let mut requests = request.into_inner();
        tokio::spawn(async move {
            let mut subscriptions: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut nonce = 0u64;
            loop {
                let to_send: Vec<String> = tokio::select! {
                    request = requests.message() => {
                        let Ok(Some(request)) = request else { return };
                        if let Some(error) = &request.error_detail {
                            shared.nacks.lock().expect("lock").push(error.message.clone());
                        }
                        let changed = subscriptions.get(&request.type_url) != Some(&request.resource_names);
                        subscriptions.insert(request.type_url.clone(), request.resource_names.clone());
                        if changed { vec![request.type_url.clone()] } else { Vec::new() }
                    }
                    changed = version.changed() => {
                        if changed.is_err() { return }
                        subscriptions.keys().cloned().collect()
                    }
                };
                for type_url in to_send {
                    nonce += 1;
                    let names = subscriptions.get(&type_url).cloned().unwrap_or_default();
                    let resources = shared
                        .resources
                        .lock()
                        .expect("lock")
                        .get(&type_url)
                        .map(|m| {
                            m.iter()
                                .filter(|(name, _)| names.is_empty() || names.contains(name))
                                .map(|(_, any)| any.clone())
                                .collect()
                        })
                        .unwrap_or_default();
                    let response = DiscoveryResponse {
                        version_info: format!("v{nonce}"),
                        resources,
                        type_url: type_url.clone(),
                        nonce: nonce.to_string(),
                        ..Default::default()
                    };
                    if tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        if self.sotw_only {
            return Err(Status::unimplemented(
                "this test server speaks state of the world only",
            ));
        }
        let (tx, rx) = mpsc::channel(16);
        let shared = self.shared.clone();
        let mut version = self.version.clone();
        let mut requests = request.into_inner();
        tokio::spawn(async move {
            // type URL → (wildcard, names)
            let mut subscriptions: BTreeMap<String, (bool, BTreeSet<String>)> = BTreeMap::new();
            let mut nonce = 0u64;
            loop {
                let to_send: Vec<String> = tokio::select! {
                    request = requests.message() => {
                        let Ok(Some(request)) = request else { return };
                        if let Some(error) = &request.error_detail {
                            shared.nacks.lock().expect("lock").push(error.message.clone());
                        }
                        let first = !subscriptions.contains_key(&request.type_url);
                        let entry = subscriptions.entry(request.type_url.clone()).or_default();
                        if first && request.resource_names_subscribe.is_empty() {
                            entry.0 = true;
                        }
                        entry.1.extend(request.resource_names_subscribe.iter().cloned());
                        if first || !request.resource_names_subscribe.is_empty() {
                            vec![request.type_url.clone()]
                        } else {
                            Vec::new()
                        }
                    }
                    changed = version.changed() => {
                        if changed.is_err() { return }
                        subscriptions.keys().cloned().collect()
                    }
                };
                for type_url in to_send {
                    nonce += 1;
                    let (wildcard, names) =
                        subscriptions.get(&type_url).cloned().unwrap_or_default();
                    if tx
                        .send(Ok(response(&shared, &type_url, &names, wildcard, nonce)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
