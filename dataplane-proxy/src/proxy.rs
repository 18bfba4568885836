//! The proxy's moving parts: the accepted configuration, the listeners it
//! asks for, and the state dir it is saved to.

use crate::{
    coalesce::Coalesce,
    config::{ListenerKind, Resources, Snapshot},
    forward,
    forward::{BodyError, BoxError, ProxyBody},
    health_check,
    limits::{self, ConnectionGate, Limits},
    metrics::Metrics,
    runtime::Runtime,
    server::{self, Drain, Draining},
    state, tls,
    turn_writes::TurnWrites,
    upstreams::Upstreams,
    workers::{self, Workers},
    xds,
};
use arc_swap::ArcSwapOption;
use meridian_balance::Outcome;
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
};
use tokio::task::JoinHandle;

/// An open listener: what it serves, and its accept loop on each worker.
type Listener = (ListenerKind, Vec<JoinHandle<()>>);

pub struct Proxy {
    /// Read on every request without a lock; swapped on install.
    runtime: ArcSwapOption<Runtime>,
    /// Upstream connections of the inbound listeners (on the main runtime);
    /// outbound listeners use their worker's.
    pub upstreams: Upstreams,
    /// The threads that serve the outbound listeners.
    workers: Workers,
    pub metrics: Metrics,
    bind: IpAddr,
    state_dir: PathBuf,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// What clients may hold: slow and greedy ones are cut off or refused.
    limits: Limits,
    /// Every listener's client connections, bounded by `limits`.
    connections: ConnectionGate,
    listeners: Mutex<HashMap<u16, Listener>>,
    /// Tells open HTTP connections to finish up, on shutdown.
    drain: Drain,
    /// The active health checkers of the current configuration, by cluster.
    health_checks: Mutex<HashMap<String, (health_check::Checks, JoinHandle<()>)>>,
    me: std::sync::Weak<Proxy>,
}

impl Proxy {
    pub fn new(
        bind: IpAddr,
        state_dir: PathBuf,
        tls: Option<tokio_rustls::TlsAcceptor>,
        mesh: Option<crate::mesh_client::MeshTls>,
        limits: Limits,
        workers: usize,
    ) -> std::io::Result<Arc<Self>> {
        let workers = Workers::start(workers, mesh.as_ref())?;
        let metrics = Metrics::default();
        let connections = ConnectionGate::new(limits.max_connections, metrics.open_connections());
        Ok(Arc::new_cyclic(|me| Proxy {
            runtime: ArcSwapOption::empty(),
            upstreams: Upstreams::new(mesh),
            workers,
            metrics,
            bind,
            state_dir,
            tls,
            connections,
            limits,
            listeners: Mutex::new(HashMap::new()),
            health_checks: Mutex::new(HashMap::new()),
            drain: Drain::new(),
            me: me.clone(),
        }))
    }

    pub fn current(&self) -> Option<Arc<Runtime>> {
        self.runtime.load_full()
    }

    /// Serves `snapshot` from now on: swaps the runtime, opens and closes listeners.
    pub fn install(&self, snapshot: Snapshot) {
        let ports: Vec<(u16, ListenerKind)> = snapshot
            .listeners
            .iter()
            .map(|(p, k)| (*p, k.clone()))
            .collect();
        let runtime = Arc::new(Runtime::new(
            snapshot,
            self.current().as_deref(),
            &self.metrics,
        ));
        self.metrics.config_installed();
        let wanted = health_check::wanted(&runtime);
        self.runtime.store(Some(runtime));
        // Checkers of unchanged clusters keep running (and counting); the
        // rest stop, and new ones start.
        let mut checkers = self.health_checks.lock().unwrap_or_else(|p| p.into_inner());
        checkers.retain(|cluster, (checks, task)| {
            let keep = wanted.get(cluster) == Some(checks);
            if !keep {
                task.abort();
            }
            keep
        });
        for (cluster, checks) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = checkers.entry(cluster) {
                let task = health_check::spawn(self.me.clone(), slot.key().clone(), checks.clone());
                slot.insert((checks, task));
            }
        }
        drop(checkers);
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.retain(|port, (kind, tasks)| {
            let keep = ports.iter().any(|(p, k)| p == port && k == kind);
            if !keep {
                tracing::info!(port, "closing listener");
                tasks.iter().for_each(JoinHandle::abort);
            }
            keep
        });
        for (port, kind) in ports {
            if listeners.contains_key(&port) {
                continue;
            }
            let Some(me) = self.me.upgrade() else { return };
            let addr = SocketAddr::new(self.bind, port);
            let tasks = match &kind {
                ListenerKind::Http(_) => self
                    .workers
                    .spawn_each(|worker| serve(me.clone(), addr, worker)),
                ListenerKind::Tcp(cluster) => self
                    .workers
                    .spawn_each(|worker| serve_tcp(me.clone(), addr, worker, cluster.clone())),
            };
            listeners.insert(port, (kind, tasks));
        }
    }

    /// What clients may hold of this proxy.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Room for one more client connection, held for its life; `None` (and
    /// counted) at `--max-connections`: the caller closes the connection.
    pub fn admit(&self) -> Option<limits::Admission> {
        let permit = self.connections.enter();
        if permit.is_none() {
            self.metrics.connection_refused();
        }
        permit
    }

    pub fn is_draining(&self) -> bool {
        self.drain.is_requested()
    }

    /// A new connection's view of the drain; it counts as open while held.
    pub fn watch_drain(&self) -> Draining {
        self.drain.watch()
    }

    /// Graceful drain: stop accepting, let open HTTP connections finish their
    /// requests and close, for at most `deadline`.
    pub async fn drain(&self, deadline: std::time::Duration) {
        // `/ready` answers 503 from here on.
        self.drain.request();
        for (_, (_, tasks)) in self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            tasks.iter().for_each(JoinHandle::abort);
        }
        let open = self.drain.open();
        tracing::info!(open, "draining connections");
        if tokio::time::timeout(deadline, self.drain.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("drain deadline reached; closing the remaining connections");
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

/// Binds `addr` for one worker: shared with the other workers' listeners
/// when there are several.
fn bind(proxy: &Proxy, addr: SocketAddr) -> Option<tokio::net::TcpListener> {
    match workers::listen(addr, proxy.workers.len() > 1) {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen");
            None
        }
    }
}

/// One worker's accept loop of an HTTP listener.
async fn serve(proxy: Arc<Proxy>, addr: SocketAddr, worker: usize) {
    let Some(listener) = bind(&proxy, addr) else {
        return;
    };
    if worker == 0 {
        tracing::info!(%addr, workers = proxy.workers.len(), "listening");
    }
    let port = addr.port();
    let accepted = proxy.metrics.worker_connections(worker);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                limits::after_accept_error(&e).await;
                continue;
            }
        };
        let Some(permit) = proxy.admit() else {
            continue;
        };
        accepted.inc();
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // A connection that sends nothing is closed after the header
            // timeout, and until it speaks costs no more than this task.
            let mut first = [0u8; 1];
            let peeked =
                tokio::time::timeout(proxy.limits.header_read_timeout, stream.peek(&mut first))
                    .await;
            let Ok(Ok(1)) = peeked else {
                tracing::debug!(%peer, "no request in time; closing");
                return;
            };
            // Boxed: what serving takes is allocated once the client spoke.
            Box::pin(serve_connection(
                proxy, stream, peer, port, worker, first[0],
            ))
            .await;
        });
    }
}

/// One client connection on an HTTP listener on `port`, whose first byte is
/// `first`: TLS when it opens a handshake and the proxy has a certificate.
async fn serve_connection(
    proxy: Arc<Proxy>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    port: u16,
    worker: usize,
    first: u8,
) {
    let draining = proxy.watch_drain();
    let limits = proxy.limits.clone();
    let tls = proxy.tls.clone();
    let handler = Outbound {
        proxy,
        port,
        peer,
        worker,
    };
    // Its writes wait for the end of the worker's turn (`TurnWrites`).
    let stream = TurnWrites::new(stream);
    // Garbage, truncated requests and bad frames end this connection only.
    let result = match tls {
        Some(acceptor) if first == tls::HANDSHAKE => {
            match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            {
                Ok(tls_stream) => {
                    server::serve(Coalesce::new(tls_stream), handler, &limits, draining).await
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            }
        }
        // Plaintext, HTTP/2 needs no `Coalesce`: its writes are held for the
        // end of the turn, which gathers them all the same.
        _ => server::serve(stream, handler, &limits, draining).await,
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// An outbound listener's requests, forwarded by the route table.
#[derive(Clone)]
struct Outbound {
    proxy: Arc<Proxy>,
    port: u16,
    peer: SocketAddr,
    worker: usize,
}

impl server::Handler for Outbound {
    fn call<B>(
        &self,
        request: hyper::Request<B>,
    ) -> impl std::future::Future<Output = hyper::Response<ProxyBody>> + Send + use<B>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<BodyError> + Into<BoxError>,
    {
        let this = self.clone();
        // The head behind its `Arc` before the future takes it (see
        // `forward::handle`).
        let (head, body) = request.into_parts();
        let head = std::sync::Arc::new(head);
        // Boxed: hyper moves a request's future into its dispatcher
        // (HTTP/1.1), and an HTTP/2 stream's future is moved into the
        // connection's set of streams; each move of the unboxed future
        // copied kilobytes (memmove was 7.6% of the proxy under HTTP/2 load).
        Box::pin(async move {
            let proxy = &this.proxy;
            forward::handle(
                proxy.current(),
                &proxy.workers.get(this.worker).upstreams,
                &proxy.metrics,
                this.port,
                this.peer,
                head,
                body,
            )
            .await
        })
    }
}

/// A raw TCP listener: each connection goes to one host of the cluster.
async fn serve_tcp(proxy: Arc<Proxy>, addr: SocketAddr, worker: usize, cluster: String) {
    let Some(listener) = bind(&proxy, addr) else {
        return;
    };
    if worker == 0 {
        tracing::info!(%addr, %cluster, "listening (tcp)");
    }
    loop {
        let (mut inbound, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                limits::after_accept_error(&e).await;
                continue;
            }
        };
        let Some(permit) = proxy.admit() else {
            continue;
        };
        let (proxy, cluster) = (proxy.clone(), cluster.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let Some(runtime) = proxy.current() else {
                return;
            };
            let Some(state) = runtime.cluster(&cluster) else {
                proxy.metrics.count(&cluster, "", "no_healthy_upstream");
                return;
            };
            let hash = meridian_balance::hash64(peer.ip().to_string().as_bytes());
            // A connect failure moves on to a host not tried yet.
            let mut failed = Vec::new();
            for _ in 0..3 {
                let Some(host) = state.pick_host(crate::random::three(), Some(hash), &failed)
                else {
                    proxy.metrics.count(&cluster, "", "no_healthy_upstream");
                    return;
                };
                let connect = tokio::time::timeout(
                    state.config.connect_timeout,
                    tokio::net::TcpStream::connect(host.address),
                )
                .await;
                match connect {
                    Ok(Ok(mut outbound)) => {
                        state.report(host.address, Outcome::Status(200));
                        proxy
                            .metrics
                            .count(&cluster, host.locality, "tcp_connection");
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                    Ok(Err(_)) | Err(_) => {
                        if state.report(host.address, Outcome::Unreachable) {
                            host.metrics.ejected();
                        }
                        proxy
                            .metrics
                            .count(&cluster, host.locality, "upstream_error");
                        failed.push(host.id);
                    }
                }
            }
        });
    }
}
