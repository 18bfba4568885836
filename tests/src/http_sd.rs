//! A Prometheus `http_sd` endpoint for tests: serves a body the test sets,
//! answers `If-None-Match` with 304, counts requests, and can go down and
//! come back on the same port.

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Mutex,
};

#[derive(Default)]
struct Shared {
    body: Mutex<String>,
    requests: AtomicU64,
    not_modified: AtomicU64,
}

pub struct HttpSdServer {
    pub port: u16,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn etag(body: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("\"{hash:016x}\"")
}

async fn targets(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let body = shared.body.lock().expect("lock").clone();
    let tag = etag(&body);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(tag.as_str())
    {
        shared.not_modified.fetch_add(1, Ordering::Relaxed);
        return StatusCode::NOT_MODIFIED.into_response();
    }
    (
        [
            (header::ETAG, tag),
            (header::CONTENT_TYPE, "application/json".to_string()),
        ],
        body,
    )
        .into_response()
}

impl HttpSdServer {
    pub async fn start(body: &str) -> Self {
        let mut server = HttpSdServer {
            port: crate::free_port(),
            shared: Arc::new(Shared::default()),
            task: None,
        };
        server.set(body);
        server.up().await;
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/targets", self.port)
    }

    pub fn set(&self, body: &str) {
        *self.shared.body.lock().expect("lock") = body.to_string();
    }

    pub fn not_modified(&self) -> u64 {
        self.shared.not_modified.load(Ordering::Relaxed)
    }

    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind http_sd port");
        let app = Router::new()
            .route("/targets", get(targets))
            .with_state(self.shared.clone());
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    pub async fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for HttpSdServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
