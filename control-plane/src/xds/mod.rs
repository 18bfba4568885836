//! The xDS server: Envoy's Aggregated Discovery Service, state of the world
//! and delta, served by every control-plane node from its own replica.

mod by_type;
mod delta;
mod distribution;
mod fields;
pub mod mesh;
mod protocol;
mod push;
pub mod registry;
mod requests;
mod response;
mod sotw;
mod sotw_request;
pub mod standing;
mod table;
mod wire;

pub use wire::AdsServer;

use crate::authz::{caller_in, may_subscribe, refused, Caller};
use crate::metrics::Metrics;
use envoy_types::pb::envoy::config::core::v3::Node as XdsNode;
use meridian_proto::v1::Proxy;
use meridian_routes::ProxyLocality;
use mesh::MeshSnapshot;
use protocol::{check_subscriptions, AdsProtocol, Feedback, MAX_NAMES_PER_REQUEST};
use registry::{unix_ms, Registry};
use standing::Standing;
use std::sync::{Arc, Mutex};
use table::RouteTable;
use tokio::sync::{mpsc, watch};
use tonic::Status;

pub struct XdsService {
    node_id: u64,
    /// Streams working out a response at once, at most, to a change or to
    /// a request: a change does not wake 10,000 streams onto two cores
    /// together, nor do 10,000 proxies connecting at once fill the
    /// runtime's queue ahead of Raft's work.
    turns: Arc<tokio::sync::Semaphore>,
    metrics: Arc<Metrics>,
    mesh: watch::Receiver<Arc<MeshSnapshot>>,
    table: Arc<RouteTable>,
    registry: Arc<Registry>,
}

impl XdsService {
    pub fn new(
        node_id: u64,
        mesh: watch::Receiver<Arc<MeshSnapshot>>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        trust_domain: Option<String>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let table = Arc::new(RouteTable::new(trust_domain));
        let mesh = compile_ahead(mesh, table.clone());
        XdsService {
            node_id,
            turns: Arc::new(tokio::sync::Semaphore::new(cores * 2)),
            metrics,
            mesh,
            table,
            registry,
        }
    }

    /// A new stream's context; `extensions` are its request's (who called).
    fn stream_context(&self, extensions: &http::Extensions) -> StreamContext {
        StreamContext {
            node_id: self.node_id,
            turns: self.turns.clone(),
            mesh: self.mesh.clone(),
            table: self.table.clone(),
            registry: self.registry.clone(),
            registration: None,
            proxy_id: String::new(),
            protocol: "",
            standing: None,
            revision: 0,
            caller: caller_in(extensions),
            metrics: self.metrics.clone(),
        }
    }
}

/// Responses a stream may have waiting to be written: with at most one
/// unanswered response per type (of at most 16), a handful.
const RESPONSE_BUFFER: usize = 16;

/// Where a stream's task hands its responses (and its end, if an error) to
/// be written. Boxed: the channel allocates its slots whether used or not,
/// 32 at a time, and a response or status inline is a few hundred bytes.
type Outbox<T> = mpsc::Sender<Box<Result<T, Status>>>;

/// The push pipeline: each new mesh snapshot is compiled for every
/// locality served, once, on a blocking thread, before the streams see it;
/// the returned receiver publishes snapshots whose routes are ready.
fn compile_ahead(
    mut mesh: watch::Receiver<Arc<MeshSnapshot>>,
    table: Arc<RouteTable>,
) -> watch::Receiver<Arc<MeshSnapshot>> {
    let (ready, ready_rx) = watch::channel(mesh.borrow_and_update().clone());
    tokio::spawn(async move {
        while mesh.changed().await.is_ok() {
            let snapshot = mesh.borrow_and_update().clone();
            let (table, compiling) = (table.clone(), snapshot.clone());
            if let Err(e) = tokio::task::spawn_blocking(move || table.compile_all(&compiling)).await
            {
                tracing::error!(error = %e, "compiling routes ahead of the streams failed");
            }
            if ready.send(snapshot).is_err() {
                return;
            }
        }
    });
    ready_rx
}

/// Everything one stream's task needs.
struct StreamContext {
    node_id: u64,
    turns: Arc<tokio::sync::Semaphore>,
    mesh: watch::Receiver<Arc<MeshSnapshot>>,
    table: Arc<RouteTable>,
    registry: Arc<Registry>,
    /// The registry entry and locality, once the first request named the node.
    registration: Option<(u64, ProxyLocality)>,
    /// The proxy's node id, once the first request named it.
    proxy_id: String,
    /// "sotw" or "delta", once registered.
    protocol: &'static str,
    /// Where the proxy stands per type, kept here and read by the registry
    /// when the proxies are listed (once registered).
    standing: Option<Arc<Mutex<Standing>>>,
    /// The mesh revision of the routes compiled last.
    revision: u64,
    /// Who opened the stream, and the metrics to count a refusal in.
    caller: Caller,
    metrics: Arc<Metrics>,
}

impl StreamContext {
    /// A turn to work out a response, held until it drops (see `XdsService::turns`).
    async fn turn(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.turns
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the control plane is shutting down"))
    }

    /// Registers the proxy on its first request; later requests may omit the node.
    fn register<P: AdsProtocol>(&mut self, node: Option<&XdsNode>) -> Result<(), Status> {
        if self.registration.is_some() {
            return Ok(());
        }
        let node = node.ok_or_else(|| {
            Status::invalid_argument("the first request on a stream must carry node")
        })?;
        let locality = node.locality.clone().unwrap_or_default();
        let cluster = if node.cluster.is_empty() {
            locality.sub_zone.clone()
        } else {
            node.cluster.clone()
        };
        may_subscribe(&self.caller, &cluster, &node.id).map_err(|refusal| {
            refused(
                &self.metrics,
                "/envoy.service.discovery.v3.AggregatedDiscoveryService",
                None,
                &refusal,
            )
        })?;
        let proxy = ProxyLocality::of(
            &self.mesh.borrow().state,
            &cluster,
            &locality.region,
            &locality.zone,
        );
        self.table.acquire(&proxy);
        let protocol = P::NAME;
        let standing = Arc::new(Mutex::new(Standing::new(P::SUPERSEDES)));
        let listed = Proxy {
            node_id: node.id.clone(),
            cluster,
            region: proxy.region.clone(),
            zone: proxy.zone.clone(),
            control_plane_node: self.node_id,
            protocol: protocol.to_string(),
            identity: match &self.caller {
                Caller::Verified(id) => id.to_string(),
                _ => String::new(),
            },
            connected_unix_seconds: crate::unix_now(),
            ..Default::default()
        };
        let id = self.registry.register(listed, standing.clone());
        self.standing = Some(standing);
        tracing::info!(node = %node.id, protocol, "xDS stream opened");
        self.metrics.pipeline.xds.stream(protocol, 1);
        self.protocol = protocol;
        self.registration = Some((id, proxy));
        self.proxy_id.clone_from(&node.id);
        Ok(())
    }

    /// The routes for this stream's proxy from the latest snapshot, its
    /// version, and the snapshot itself.
    fn compiled(&mut self) -> (Arc<meridian_routes::Compiled>, String, Arc<MeshSnapshot>) {
        let snapshot = self.mesh.borrow().clone();
        self.revision = snapshot.revision;
        let proxy = self
            .registration
            .as_ref()
            .map(|(_, p)| p.clone())
            .unwrap_or_default();
        (
            self.table.get(&snapshot, &proxy),
            snapshot.revision.to_string(),
            snapshot,
        )
    }

    /// After a request: what the proxy answered, and the response to it.
    fn record<P: AdsProtocol>(
        &mut self,
        feedback: Option<Feedback>,
        response: Option<&P::Response>,
    ) {
        let Some(standing) = &self.standing else {
            return;
        };
        let (now, revision) = (unix_ms(), self.revision);
        let mut standing = standing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(feedback) = &feedback {
            if let Feedback::Nack {
                type_url,
                version,
                error,
            } = feedback
            {
                tracing::warn!(node = %self.proxy_id, %type_url, %version, %error, "proxy NACKed");
            }
            standing.answered(feedback, revision, now);
        }
        if let Some(response) = response {
            let (type_url, version, _) = P::sent(response);
            standing.sent(type_url, version, revision, now);
        }
    }

    /// After a mesh update: every type was compared with the routes of
    /// `self.revision`, and `responses` go out for those that changed.
    /// Recorded as they are handed to the stream (a send fails only once
    /// the stream is gone, and the proxy's entry with it).
    fn pushed<P: AdsProtocol>(&mut self, responses: &[P::Response]) {
        let Some(standing) = &self.standing else {
            return;
        };
        let (now, revision) = (unix_ms(), self.revision);
        let mut standing = standing.lock().unwrap_or_else(|p| p.into_inner());
        let mut types = Vec::with_capacity(responses.len());
        for response in responses {
            let (type_url, version, _) = P::sent(response);
            standing.sent(type_url, version, revision, now);
            types.push(type_url);
        }
        standing.evaluated(revision, &types);
    }
}

impl Drop for StreamContext {
    fn drop(&mut self) {
        if let Some((id, proxy)) = &self.registration {
            self.registry.remove(*id);
            self.table.release(proxy, &self.mesh.borrow());
            self.metrics.pipeline.xds.stream(self.protocol, -1);
        }
    }
}

fn check_names(count: usize) -> Result<(), Status> {
    if count > MAX_NAMES_PER_REQUEST {
        return Err(Status::invalid_argument(format!(
            "a request may name at most {MAX_NAMES_PER_REQUEST} resources, this one names {count}"
        )));
    }
    Ok(())
}

/// One stream's loop, for either protocol: requests from the client and
/// mesh changes in, responses out.
async fn run_stream<P: AdsProtocol>(
    mut ctx: StreamContext,
    mut requests: requests::Requests<P::Request>,
    tx: Outbox<P::Response>,
) -> Result<(), Status> {
    let mut stream = P::default();
    let mut pushes = push::Pushes::default();
    let metrics = ctx.metrics.pipeline.xds.clone();
    loop {
        let responses = tokio::select! {
            request = requests.message() => {
                let Some(request) = request? else { return Ok(()) };
                check_names(P::names_count(&request))?;
                let _turn = ctx.turn().await?;
                ctx.register::<P>(P::node(&request))?;
                let (compiled, version, _) = ctx.compiled();
                let (response, feedback) = stream.on_request(request, &compiled, &version);
                if let Some(feedback) = &feedback {
                    match (feedback, pushes.answered(feedback)) {
                        (_, Some(push::Answer::Acked(Some(took)))) => metrics.acked_after(took),
                        (Feedback::Nack { type_url, .. }, _) => metrics.nacked(type_url),
                        _ => {}
                    }
                }
                ctx.record::<P>(feedback, response.as_ref());
                let (types, names) = stream.subscribed();
                check_subscriptions(types, names).map_err(Status::resource_exhausted)?;
                response.into_iter().collect()
            }
            changed = ctx.mesh.changed() => {
                if changed.is_err() {
                    return Err(Status::unavailable("the control plane is shutting down"));
                }
                if ctx.registration.is_none() {
                    continue;
                }
                let _turn = ctx.turn().await?;
                let (compiled, version, snapshot) = ctx.compiled();
                let responses = stream.on_update(&compiled, &version);
                ctx.pushed::<P>(&responses);
                let distribution = snapshot.distribution(ctx.node_id);
                for response in &responses {
                    let (type_url, version, resources) = P::sent(response);
                    let span = distribution.and_then(|d| {
                        d.pushed(ctx.node_id, &ctx.proxy_id, type_url, version, resources)
                    });
                    pushes.sent(type_url, snapshot.applied_at, distribution.cloned(), span);
                }
                responses
            }
        };
        for response in responses {
            metrics.pushed(P::sent(&response).0);
            if tx.send(Box::new(Ok(response))).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Runs a stream's loop; an error ends only this stream, with its status.
fn spawn_stream<T: Send + 'static>(
    tx: Outbox<T>,
    run: impl std::future::Future<Output = Result<(), Status>> + Send + 'static,
) {
    // Boxed: awaited by value inside the task's future, the loop's future
    // (about 1.9 KiB) was laid out there twice, as captured and as awaited
    // (3.8 KiB a stream; boxed, 200 bytes and the loop's own).
    let run = Box::pin(run);
    tokio::spawn(async move {
        if let Err(status) = run.await {
            tracing::debug!(code = ?status.code(), message = status.message(), "xDS stream ended with an error");
            let _ = tx.send(Box::new(Err(status))).await;
        }
    });
}
