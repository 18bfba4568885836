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
        let mut upstream = Upstream {
            name: name.to_string(),
            port: crate::free_port(),
            failing: Arc::new(AtomicBool::new(false)),
            delay: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            task: None,
        };
        upstream.up().await;
        upstream
    }

    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind upstream");
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
