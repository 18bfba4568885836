//! The proxy's admin port: /ready, /config_dump, /clusters, /metrics.

use crate::proxy::Proxy;
use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/config_dump", get(config_dump))
        .route("/clusters", get(clusters))
        .route(
            "/metrics",
            get(|State(proxy): State<Arc<Proxy>>| async move { proxy.metrics.render() }),
        )
        .with_state(proxy)
}

async fn ready(State(proxy): State<Arc<Proxy>>) -> (StatusCode, &'static str) {
    if proxy.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    match proxy.current() {
        Some(_) => (StatusCode::OK, "ready\n"),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no configuration yet\n"),
    }
}

async fn config_dump(State(proxy): State<Arc<Proxy>>) -> Json<Value> {
    Json(match proxy.current() {
        Some(runtime) => serde_json::to_value(&runtime.snapshot).unwrap_or(Value::Null),
        None => Value::Null,
    })
}

async fn clusters(State(proxy): State<Arc<Proxy>>) -> Json<Value> {
    let hosts = proxy.current().map(|r| r.hosts()).unwrap_or_default();
    Json(json!({ "hosts": hosts }))
}
