//! Thread per core: each worker is a thread running a current-thread
//! runtime, with its own listener socket on every port (`SO_REUSEPORT`, the
//! kernel spreads connections over them) and its own upstream connection
//! pools. A request is served start to end on one thread: no work
//! stealing, no cross-thread wake-ups, no lock shared with other workers
//! on its path (the configuration is read through an `ArcSwap`). Each
//! worker also runs the task that writes out what its connections wrote in
//! a turn, at the turn's end (`turn_writes`).

use crate::mesh_client::MeshTls;
use crate::upstreams::Upstreams;
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

pub struct Worker {
    handle: Handle,
    /// Upstream connections of this worker's requests.
    pub upstreams: Upstreams,
}

pub struct Workers {
    workers: Vec<Worker>,
    /// Dropped, the workers' runtimes stop.
    _stop: tokio::sync::watch::Sender<()>,
}

impl Workers {
    /// Starts `count` workers (at least one).
    pub fn start(count: usize, mesh: Option<&MeshTls>) -> std::io::Result<Workers> {
        let (stop, stopped) = tokio::sync::watch::channel(());
        let mut workers = Vec::new();
        for index in 0..count.max(1) {
            let (ready, handle) = std::sync::mpsc::channel();
            let mut stopped = stopped.clone();
            let upstreams = Upstreams::new(mesh.cloned());
            let reap_idle = upstreams.reap_idle();
            std::thread::Builder::new()
                .name(format!("proxy-worker-{index}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(runtime.handle().clone()));
                    runtime.block_on(async move {
                        tokio::spawn(reap_idle);
                        tokio::spawn(crate::turn_writes::flush());
                        let _ = stopped.changed().await;
                    });
                })?;
            let handle = handle
                .recv()
                .map_err(|_| std::io::Error::other("a worker thread ended before starting"))??;
            workers.push(Worker { handle, upstreams });
        }
        Ok(Workers {
            workers,
            _stop: stop,
        })
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn get(&self, index: usize) -> &Worker {
        &self.workers[index % self.workers.len()]
    }

    /// Runs `task(index)` on every worker.
    pub fn spawn_each<F, T>(&self, task: F) -> Vec<JoinHandle<()>>
    where
        F: Fn(usize) -> T,
        T: Future<Output = ()> + Send + 'static,
    {
        self.workers
            .iter()
            .enumerate()
            .map(|(index, worker)| worker.handle.spawn(task(index)))
            .collect()
    }
}

/// A listener on `addr` for one worker, in its runtime: shared with the
/// other workers' through `SO_REUSEPORT` when there are several.
pub fn listen(addr: SocketAddr, shared: bool) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if shared {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}
