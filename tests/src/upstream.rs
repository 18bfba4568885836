//! Upstream HTTP servers for proxy tests: each answers with its own name,
//! and can be stopped and started again on its port.

use axum::{http::StatusCode, routing::any, Router};
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

pub struct Upstream {
    pub name: String,
    pub port: u16,
    failing: Arc<AtomicBool>,
    delay: Arc<std::sync::atomic::AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Upstream {
    pub async fn start(name: &str) -> Self {
        // `free_port` found the port free, but another process may bind it
        // before this one does: a port taken meanwhile is passed over.
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", crate::free_port())).await {
                Ok(listener) => break listener,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => panic!("bind upstream: {e}"),
            }
        };
        let mut upstream = Upstream {
            name: name.to_string(),
            port: listener.local_addr().expect("a bound address").port(),
            failing: Arc::new(AtomicBool::new(false)),
            delay: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            task: None,
        };
        upstream.serve(listener);
        upstream
    }

    /// Serves again on its port, after `down`.
    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind upstream");
        self.serve(listener);
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let name = self.name.clone();
        let failing = self.failing.clone();
        let delay = self.delay.clone();
        let app = Router::new().fallback(any(move || {
            let name = name.clone();
            let status = if failing.load(Ordering::Relaxed) {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            let delay = std::time::Duration::from_millis(delay.load(Ordering::Relaxed));
            async move {
                tokio::time::sleep(delay).await;
                (status, name)
            }
        }));
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    /// Takes this long to answer, from now on.
    pub fn slow(&self, delay: std::time::Duration) {
        self.delay
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Answers 500 from now on (or 200 again).
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }

    pub async fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// An upstream as a process of its own (`meridian-test-upstream`), so that
/// a test can kill it with SIGKILL as a real endpoint dies, and start it
/// again on the same port.
pub struct UpstreamProcess {
    pub name: String,
    pub port: u16,
    process: crate::process::Process,
}

impl UpstreamProcess {
    pub async fn start(root: &std::path::Path, name: &str) -> Self {
        let port = crate::free_port();
        let mut upstream = UpstreamProcess {
            name: name.to_string(),
            port,
            process: crate::process::Process::new(
                "meridian-test-upstream",
                vec![name.to_string(), port.to_string()],
                root.join(format!("upstream-{name}.log")),
                "info",
            ),
        };
        upstream.restart().await;
        upstream
    }

    /// Starts the process (again) and waits until it answers.
    pub async fn restart(&mut self) {
        self.process.start();
        let addr = format!("127.0.0.1:{}", self.port);
        crate::eventually(
            std::time::Duration::from_secs(10),
            "the upstream to answer",
            || async { crate::http::get(&addr, "/").await.map(|_| ()) },
        )
        .await;
    }

    /// Whether the upstream has received a request with this method.
    pub fn received(&self, method: &str) -> bool {
        self.process
            .log_tail(1_000)
            .contains(&format!("request {method} "))
    }

    /// SIGKILL: connections in flight are reset, new ones refused.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// A port where connection attempts hang, as at an endpoint whose host is
/// gone from the network: a listener that never accepts, with its one-slot
/// accept queue already full, so the kernel drops further SYNs.
pub struct Blackhole {
    pub port: u16,
    _listener: tokio::net::TcpListener,
    _queued: Vec<tokio::net::TcpStream>,
}

impl Blackhole {
    pub async fn start() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("the blackhole's address");
        let mut queued = Vec::new();
        for _ in 0..2 {
            let connect = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(stream)) =
                tokio::time::timeout(std::time::Duration::from_millis(200), connect).await
            {
                queued.push(stream);
            }
        }
        assert!(!queued.is_empty(), "the accept queue holds a connection");
        Blackhole {
            port: addr.port(),
            _listener: listener,
            _queued: queued,
        }
    }
}
