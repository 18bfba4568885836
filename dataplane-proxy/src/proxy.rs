//! The proxy's moving parts: the accepted configuration, the listeners it
//! asks for, and the state dir it is saved to.

use crate::{
    config::{Resources, Snapshot},
    forward::{self, Upstreams},
    health_check,
    metrics::Metrics,
    runtime::Runtime,
    state, xds,
};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
};
use tokio::{net::TcpListener, task::JoinHandle};

pub struct Proxy {
    runtime: RwLock<Option<Arc<Runtime>>>,
    pub upstreams: Upstreams,
    pub metrics: Metrics,
    bind: IpAddr,
    state_dir: PathBuf,
    listeners: Mutex<HashMap<u16, JoinHandle<()>>>,
    /// The active health checkers of the current configuration.
    health_checks: Mutex<Vec<JoinHandle<()>>>,
    me: std::sync::Weak<Proxy>,
}

impl Proxy {
    pub fn new(bind: IpAddr, state_dir: PathBuf) -> Arc<Self> {
        Arc::new_cyclic(|me| Proxy {
            runtime: RwLock::new(None),
            upstreams: Upstreams::new(),
            metrics: Metrics::default(),
            bind,
            state_dir,
            listeners: Mutex::new(HashMap::new()),
            health_checks: Mutex::new(Vec::new()),
            me: me.clone(),
        })
    }

    pub fn current(&self) -> Option<Arc<Runtime>> {
        self.runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Serves `snapshot` from now on: swaps the runtime, opens and closes listeners.
    pub fn install(&self, snapshot: Snapshot) {
        let ports: Vec<u16> = snapshot.listeners.keys().copied().collect();
        let runtime = Arc::new(Runtime::new(snapshot));
        let checkers = health_check::spawn(&runtime);
        let previous = std::mem::replace(
            &mut *self.health_checks.lock().unwrap_or_else(|p| p.into_inner()),
            checkers,
        );
        for old in previous {
            old.abort();
        }
        *self.runtime.write().unwrap_or_else(|p| p.into_inner()) = Some(runtime);
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.retain(|port, task| {
            let keep = ports.contains(port);
            if !keep {
                tracing::info!(port, "closing listener");
                task.abort();
            }
            keep
        });
        for port in ports {
            if listeners.contains_key(&port) {
                continue;
            }
            let Some(me) = self.me.upgrade() else { return };
            let addr = SocketAddr::new(self.bind, port);
            listeners.insert(port, tokio::spawn(serve(me, addr)));
        }
    }

    /// Starts from the saved state, if there is one that holds together.
    pub fn restore(&self) -> Resources {
        let resources = state::load(&self.state_dir);
        if resources.is_empty() {
            return resources;
        }
        match Snapshot::build(&resources, false) {
            Ok(snapshot) => {
                tracing::info!(
                    listeners = snapshot.listeners.len(),
                    clusters = snapshot.clusters.len(),
                    "serving the saved configuration"
                );
                self.install(snapshot);
                resources
            }
            Err(e) => {
                tracing::warn!(error = %e, "the saved configuration does not hold together; ignoring it");
                Resources::new()
            }
        }
    }
}

impl xds::Apply for Proxy {
    fn apply(&self, resources: &Resources, snapshot: Snapshot) {
        self.install(snapshot);
        if let Err(e) = state::save(&self.state_dir, resources) {
            tracing::warn!(error = %e, dir = %self.state_dir.display(), "saving the configuration failed");
        }
    }
}

async fn serve(proxy: Arc<Proxy>, addr: SocketAddr) {
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen");
            return;
        }
    };
    tracing::info!(%addr, "listening");
    let port = addr.port();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let proxy = proxy.clone();
                async move {
                    let runtime = proxy.current();
                    Ok::<_, Infallible>(
                        forward::handle(
                            runtime,
                            &proxy.upstreams,
                            &proxy.metrics,
                            port,
                            peer,
                            request,
                        )
                        .await,
                    )
                }
            });
            // Garbage, truncated requests and bad frames end this connection only.
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
